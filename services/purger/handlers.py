"""What the purger decides: for each dataset of the data map, erase it, tag it, keep it (rule, hold) or skip it
(exempt), and when to re-evaluate what was kept. The stores are reached through the ports below.

Every effect is idempotent: each dataset's outcome is recorded as soon as it is done, so a re-consumed event
finishes what was left and reports the very same outcomes, under the very same event id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from services.purger.adapters.backups import Backup
from services.purger.adapters.mongo import LedgerChunk, PurgeRecord
from shared import topics
from shared.consumer import Handler
from shared.datamap import DataMap, Dataset
from shared.events import (
    DatasetOutcome,
    DeletionBackupsExpired,
    DeletionHardDeleted,
    DeletionPurged,
    DeletionRequested,
    Event,
    HardDeletedDataset,
    LegalHoldReleased,
    RetentionRulesChanged,
)
from shared.retention import RetentionStore, retained_datasets

log = structlog.get_logger(__name__)

CONSUMES: tuple[str, ...] = (
    topics.DELETION_REQUESTED,
    topics.RETENTION_RULES_CHANGED,
    topics.LEGAL_HOLD_RELEASED,
)
PRODUCER = "purger"
_IDS = uuid.UUID("2b0f3c56-90a4-4f1e-bf0e-7d0f5f0e9a21")  # namespace of the purger's deterministic event ids


class Eraser(Protocol):
    async def erase(
        self, dataset: Dataset, subject_id: str, *, request_id: str, now: datetime, purge_after: datetime
    ) -> DatasetOutcome: ...


class Progress(Protocol):
    async def get(self, request_id: str) -> PurgeRecord | None: ...

    async def save_outcome(self, request_id: str, subject_id: str, round_: int, outcome: DatasetOutcome) -> None: ...

    async def complete_round(self, record: PurgeRecord, round_: int, at: datetime) -> PurgeRecord: ...

    async def with_retained(self, datasets: Sequence[str], subject_id: str | None) -> list[PurgeRecord]: ...

    async def mark_hard_deleted(self, request_id: str, at: datetime) -> None: ...

    async def awaiting_backup_expiry(self) -> list[PurgeRecord]: ...

    async def mark_backups_expired(self, request_id: str, at: datetime) -> None: ...


class Ledger(Protocol):
    def due(self, now: datetime) -> AsyncIterator[LedgerChunk]: ...

    async def count_due(self, now: datetime) -> tuple[int, int]: ...

    async def delete_chunk(self, chunk: LedgerChunk) -> int: ...

    async def request_totals(self, request_id: str) -> tuple[bool, dict[str, int]]: ...


@dataclass
class Purger:
    """The purger's dependencies, named."""

    datamap: DataMap
    erasers: Mapping[str, Eraser]  # by store: mongo, s3, milvus
    retention: RetentionStore
    progress: Progress
    ledger: Ledger
    clock: Callable[[], datetime]
    purge_after: timedelta


def purged_event(record: PurgeRecord, round_: int, datamap: DataMap) -> DeletionPurged:
    """The round's report: the same event (id, time, outcomes) however often it is rebuilt."""
    order = {name: i for i, name in enumerate(datamap.names)}
    outcomes = sorted(record.rounds[round_].values(), key=lambda o: order.get(o.dataset, len(order)))
    return DeletionPurged(
        event_id=uuid.uuid5(_IDS, f"{record.request_id}:purged:{round_}"),
        occurred_at=record.completed[round_],
        request_id=record.request_id,
        subject_id=record.subject_id,
        producer=PRODUCER,
        outcomes=tuple(outcomes),
    )


async def _run_round(p: Purger, record: PurgeRecord, round_: int, datasets: Sequence[Dataset]) -> PurgeRecord:
    """Decide and apply each dataset not yet done in this round, recording each outcome as soon as it is done."""
    now = p.clock()
    rules = (await p.retention.rule_set()).rules
    kept = retained_datasets(rules, await p.retention.holds_for(record.subject_id), now)
    done = record.rounds.setdefault(round_, {})
    for dataset in datasets:
        if dataset.name in done:
            continue
        started = time.monotonic()
        if dataset.exempt:
            outcome = DatasetOutcome(dataset=dataset.name, store=dataset.store, outcome="exempt")
        elif (why := kept.get(dataset.name)) is not None:
            outcome = DatasetOutcome(
                dataset=dataset.name,
                store=dataset.store,
                outcome="retained",
                rule_id=why.rule_id,
                legal_basis=why.legal_basis,
                legal_ref=why.legal_ref,
            )
        else:
            outcome = await p.erasers[dataset.store].erase(
                dataset, record.subject_id, request_id=record.request_id, now=now, purge_after=now + p.purge_after
            )
        await p.progress.save_outcome(record.request_id, record.subject_id, round_, outcome)
        done[dataset.name] = outcome
        log.info(
            "purge.dataset_done",
            request_id=record.request_id,
            dataset=dataset.name,
            outcome=outcome.outcome,
            counts=outcome.counts.model_dump(exclude_defaults=True),
            took_ms=round((time.monotonic() - started) * 1000),
        )
    return await p.progress.complete_round(record, round_, p.clock())


async def purge(event: DeletionRequested, p: Purger) -> Sequence[Event]:
    """Erase the subject from every dataset of the data map: one outcome per dataset."""
    record = await p.progress.get(event.request_id) or PurgeRecord(event.request_id, event.subject_id)
    if 0 not in record.completed:
        record = await _run_round(p, record, 0, p.datamap.datasets)
    return [purged_event(record, 0, p.datamap)]


async def reevaluate(p: Purger, datasets: Sequence[str], subject_id: str | None) -> list[Event]:
    """Erase what a released hold or a changed rule no longer keeps: a follow-up report per affected request."""
    reports: list[Event] = []
    now = p.clock()
    rules = (await p.retention.rule_set()).rules
    for record in await p.progress.with_retained(datasets, subject_id):
        kept = retained_datasets(rules, await p.retention.holds_for(record.subject_id), now)
        freed = [p.datamap.get(name) for name in record.retained if name not in kept and name in p.datamap.names]
        if not freed:
            continue
        round_ = record.last_round + 1
        record = await _run_round(p, record, round_, freed)
        reports.append(purged_event(record, round_, p.datamap))
        log.info("purge.reevaluated", request_id=record.request_id, datasets=[d.name for d in freed])
    return reports


async def on_hold_released(event: LegalHoldReleased, p: Purger) -> Sequence[Event]:
    return await reevaluate(p, event.datasets, event.subject_id)


async def on_rules_changed(event: RetentionRulesChanged, p: Purger) -> Sequence[Event]:
    # A change may end any rule's cover: look at every request that kept something under a rule.
    return await reevaluate(p, p.datamap.names, None)


@dataclass(frozen=True)
class NightlyReport:
    chunks: int
    records: int
    hard_deleted: tuple[DeletionHardDeleted, ...]


async def nightly_purge(
    p: Purger,
    *,
    pause_s: float,
    on_chunk: Callable[[LedgerChunk, int], Any] | None = None,
) -> NightlyReport:
    """Delete the tagged records that are due, chunk by chunk by primary key, then report each finished request.

    Killed at any point, it resumes where it stopped: a chunk is marked done only after its records are gone, and
    a request is reported (once, under a fixed event id) only when all of its chunks are done.
    """
    now = p.clock()
    chunks = records = 0
    touched: dict[str, str] = {}
    async for chunk in p.ledger.due(now):
        purged = await p.ledger.delete_chunk(chunk)
        chunks, records = chunks + 1, records + purged
        touched[chunk.request_id] = chunk.subject_id
        if on_chunk is not None:
            on_chunk(chunk, purged)
        if pause_s:
            await asyncio.sleep(pause_s)  # leave the database to live traffic between batches
    reports = []
    for request_id, subject_id in touched.items():
        done, totals = await p.ledger.request_totals(request_id)
        if not done:
            continue
        # The id names the totals: a replay is the same event, a later round's purge (a released hold) a new one.
        summary = ",".join(f"{d}={n}" for d, n in sorted(totals.items()))
        reports.append(
            DeletionHardDeleted(
                event_id=uuid.uuid5(_IDS, f"{request_id}:hard_deleted:{summary}"),
                occurred_at=now,
                request_id=request_id,
                subject_id=subject_id,
                producer=PRODUCER,
                datasets=tuple(HardDeletedDataset(dataset=d, records_purged=n) for d, n in sorted(totals.items())),
            )
        )
    return NightlyReport(chunks, records, tuple(reports))


async def reported_hard_deleted(p: Purger, report: NightlyReport) -> None:
    """After the reports are published: each request's live data is gone from this moment."""
    for event in report.hard_deleted:
        await p.progress.mark_hard_deleted(event.request_id, event.occurred_at)


def routes(p: Purger) -> Mapping[str, Handler]:
    """The registry of what the purger reacts to: topic -> handler."""

    async def requested(event: Event) -> Sequence[Event]:
        assert isinstance(event, DeletionRequested)
        return await purge(event, p)

    async def rules_changed(event: Event) -> Sequence[Event]:
        assert isinstance(event, RetentionRulesChanged)
        return await on_rules_changed(event, p)

    async def hold_released(event: Event) -> Sequence[Event]:
        assert isinstance(event, LegalHoldReleased)
        return await on_hold_released(event, p)

    return {
        topics.DELETION_REQUESTED: requested,
        topics.RETENTION_RULES_CHANGED: rules_changed,
        topics.LEGAL_HOLD_RELEASED: hold_released,
    }


class Backups(Protocol):
    async def live(self) -> list[Backup]: ...

    async def expire(self, backup: Backup, *, now: datetime) -> None: ...


async def expire_backups(p: Purger, backups: Backups, *, retention: timedelta) -> list[DeletionBackupsExpired]:
    """Delete the backups older than ``retention``; then report the requests no remaining backup holds."""
    now = p.clock()
    cutoff = now - retention
    remaining = []
    for backup in await backups.live():
        if backup.created_at < cutoff:
            await backups.expire(backup, now=now)
            log.info("backup.expired", backup_id=backup.backup_id, created_at=backup.created_at.isoformat())
        else:
            remaining.append(backup)
    oldest = min((b.created_at for b in remaining), default=None)
    return backups_expired_events(
        await p.progress.awaiting_backup_expiry(), oldest_backup=oldest, expired_before=cutoff, now=now
    )


def backups_expired_events(
    records: Sequence[PurgeRecord], *, oldest_backup: datetime | None, expired_before: datetime, now: datetime
) -> list[DeletionBackupsExpired]:
    """Requests whose erased data no longer appears in any backup: every backup older than the moment their
    live data was gone has expired (retained datasets are kept by definition, in backups as in live stores)."""
    return [
        DeletionBackupsExpired(
            event_id=uuid.uuid5(_IDS, f"{r.request_id}:backups_expired"),
            occurred_at=now,
            request_id=r.request_id,
            subject_id=r.subject_id,
            producer=PRODUCER,
            expired_before=expired_before,
        )
        for r in records
        if r.clean_since is not None and (oldest_backup is None or oldest_backup >= r.clean_since)
    ]
