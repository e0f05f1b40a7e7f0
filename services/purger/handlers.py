"""What the purger decides: for each dataset of the data map, erase it, tag it, keep it (rule, hold) or skip it
(exempt), and when to re-evaluate what was kept. The stores are reached through the ports of ports.py.

Retention is state, not an event: every destructive step here (the erase, the nightly hard delete, backup expiry)
asks the rules and holds in force at the moment it acts. Every ``deletion.purged`` reports the current outcome of
every dataset of the request, so no consumer has to guess what an omission means.

Every effect is idempotent: each dataset's outcome is recorded as soon as it is done, so a re-consumed event
finishes what was left and reports the very same outcomes, under the very same event id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from services.purger.model import LedgerChunk, PurgeRecord
from services.purger.ports import Backups, Eraser, Ledger, Progress, RetentionReader
from shared import topics
from shared.consumer import BatchRoute, Handler, PermanentError
from shared.datamap import DataMap, Dataset
from shared.events import (
    DatasetOutcome,
    DeletionBackupsExpired,
    DeletionHardDeleted,
    DeletionHeld,
    DeletionProcessorConfirmed,
    DeletionPurged,
    DeletionRequested,
    Event,
    HardDeletedDataset,
    LegalHoldPlaced,
    LegalHoldReleased,
    RetentionRulesChanged,
)
from shared.retention import Retention, retained_datasets

log = structlog.get_logger(__name__)

CONSUMES: tuple[str, ...] = (
    topics.DELETION_REQUESTED,
    topics.RETENTION_RULES_CHANGED,
    topics.LEGAL_HOLD_PLACED,
    topics.LEGAL_HOLD_RELEASED,
    topics.DELETION_PROCESSOR_CONFIRMED,
)
PRODUCER = "purger"
_IDS = uuid.UUID("2b0f3c56-90a4-4f1e-bf0e-7d0f5f0e9a21")  # namespace of the purger's deterministic event ids


@dataclass
class Purger:
    """The purger's dependencies, named."""

    datamap: DataMap
    erasers: Mapping[str, Eraser]  # by store: mongo, s3, milvus
    retention: RetentionReader
    progress: Progress
    ledger: Ledger
    clock: Callable[[], datetime]
    purge_after: timedelta


def purged_event(record: PurgeRecord, round_: int, datamap: DataMap) -> DeletionPurged:
    """The round's report: the outcome of every dataset as of that round (a follow-up repeats what it did not
    change), the same event (id, time, outcomes) however often it is rebuilt."""
    order = {name: i for i, name in enumerate(datamap.names)}
    outcomes = sorted(record.outcomes_as_of(round_).values(), key=lambda o: order.get(o.dataset, len(order)))
    return DeletionPurged(
        event_id=uuid.uuid5(_IDS, f"{record.request_id}:purged:{round_}"),
        occurred_at=record.completed[round_],
        request_id=record.request_id,
        subject_id=record.subject_id,
        producer=PRODUCER,
        outcomes=tuple(outcomes),
        round=round_,
        held=tuple(sorted(record.held)),
    )


async def retained_now(p: Purger, subject_id: str, now: datetime) -> dict[str, Retention]:
    """What the rules and holds in force at ``now`` keep of this subject, and why."""
    return (await p.retention.in_force(subject_id)).retained(now)


async def _run_round(p: Purger, record: PurgeRecord, round_: int, datasets: Sequence[Dataset]) -> PurgeRecord:
    """Decide and apply each dataset not yet done in this round, recording each outcome as soon as it is done."""
    now = p.clock()
    kept = await retained_now(p, record.subject_id, now)
    done = record.rounds.setdefault(round_, {})
    for dataset in datasets:
        if dataset.name in done:
            continue
        started = time.monotonic()
        if dataset.exempt:
            outcome = DatasetOutcome(dataset=dataset.name, store=dataset.store, outcome="exempt")
        elif (why := kept.get(dataset.name)) is None and dataset.processor is not None:
            # A processor erases its copy itself: notifier sends it the signed request, intake takes its answer.
            outcome = DatasetOutcome(dataset=dataset.name, store="processor", outcome="pending_confirmation")
        elif why is not None:
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


PARALLEL_REQUESTS = 16


async def purge_many(events: Sequence[DeletionRequested], p: Purger) -> list[Event]:
    """The requests one poll brought, side by side (at most ``PARALLEL_REQUESTS`` at once), so that stores which
    join concurrent deletes (Milvus) serve many subjects per call. Reports in the order of the requests; if one
    fails, the others are cancelled and the consumer loop takes each request on its own (purging is idempotent)."""
    gate = asyncio.Semaphore(PARALLEL_REQUESTS)

    async def one(event: DeletionRequested) -> Sequence[Event]:
        async with gate:
            return await purge(event, p)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(event)) for event in events]
    return [report for task in tasks for report in task.result()]


async def reevaluate(p: Purger, datasets: Sequence[str], subject_id: str | None) -> list[Event]:
    """Erase what a released or ended hold, or a changed or ended rule, no longer keeps: a follow-up report (of
    every dataset) per affected request. Datasets a later hold kept (``held``) are erased again once it is gone,
    so that keyvault destroys the keys it restored for the hold."""
    reports: list[Event] = []
    now = p.clock()
    for record in await p.progress.with_retained(datasets, subject_id):
        if 0 not in record.completed:
            continue  # the first round is still running; it reads the rules and holds itself
        kept = await retained_now(p, record.subject_id, now)
        names = [*record.retained, *(d for d in record.held if d not in record.retained)]
        freed = [p.datamap.get(name) for name in names if name not in kept and name in p.datamap.names]
        if not freed:
            continue
        round_ = record.last_round + 1
        record = await _run_round(p, record, round_, freed)
        record.held = {d: h for d, h in record.held.items() if d in kept}
        await p.progress.set_held(record.request_id, record.held)
        reports.append(purged_event(record, round_, p.datamap))
        log.info("purge.reevaluated", request_id=record.request_id, round=round_, datasets=[d.name for d in freed])
    return reports


async def on_hold_placed(event: LegalHoldPlaced, p: Purger) -> Sequence[Event]:
    """A hold placed after a request was purged: report it on each affected request (so its status and the audit
    log show it, and keyvault restores what keys it still can). The nightly purge skips the held records itself."""
    known = [d for d in event.datasets if d in p.datamap.names]
    reports: list[Event] = []
    for record in await p.progress.in_progress(event.subject_id):
        outcomes = record.saved_outcomes
        held = [d for d in known if d in outcomes and outcomes[d].outcome in ("erased", "tagged")]
        if not held:
            continue  # kept already (the purge saw the hold) or not reached yet (it will see it)
        await p.progress.set_held(record.request_id, {**record.held, **dict.fromkeys(held, event.hold_id)})
        live = [d for d in held if outcomes[d].outcome == "tagged" and record.hard_deleted_at is None]
        reports.append(
            DeletionHeld(
                event_id=uuid.uuid5(_IDS, f"{record.request_id}:held:{event.hold_id}"),
                occurred_at=event.occurred_at,
                request_id=record.request_id,
                subject_id=record.subject_id,
                producer=PRODUCER,
                hold_id=event.hold_id,
                datasets=tuple(held),
                records_kept=tuple(live),
                legal_basis=event.legal_basis,
                legal_ref=event.legal_ref,
            )
        )
        log.info("purge.held", request_id=record.request_id, hold_id=event.hold_id, datasets=held, records_kept=live)
    return reports


async def on_processor_confirmed(event: DeletionProcessorConfirmed, p: Purger) -> Sequence[Event]:
    """A processor's answer (or an operator's for it) becomes the dataset's outcome, in a follow-up round that
    reports every dataset again. A second answer for the same dataset changes nothing; a replay re-emits the round
    that recorded it."""
    record = await p.progress.get(event.request_id)
    if record is None or 0 not in record.completed:
        raise ProcessorAnswerError(f"the purger has not reported request {event.request_id} yet")
    for number in sorted(record.completed):
        answered = record.rounds.get(number, {}).get(event.dataset)
        if answered is not None and answered.confirmed_at is not None:
            return [purged_event(record, number, p.datamap)]  # recorded already (a replay)
    latest = record.saved_outcomes.get(event.dataset)
    if latest is None or latest.outcome != "pending_confirmation":
        raise ProcessorAnswerError(
            f"{event.dataset} of request {event.request_id} awaits no confirmation "
            f"(its outcome is {latest.outcome if latest else 'unknown'})"
        )
    round_ = max(record.rounds) if max(record.rounds) not in record.completed else record.last_round + 1
    outcome = DatasetOutcome(
        dataset=event.dataset,
        store="processor",
        outcome=event.outcome,
        error=event.reason if event.outcome == "refused" else None,
        note=event.reason if event.via == "operator" else None,
        confirmed_at=event.occurred_at,
        confirmed_via=event.via,
    )
    await p.progress.save_outcome(record.request_id, record.subject_id, round_, outcome)
    record.rounds.setdefault(round_, {})[event.dataset] = outcome
    record = await p.progress.complete_round(record, round_, p.clock())
    log.info("purge.processor_answered", request_id=record.request_id, dataset=event.dataset, outcome=event.outcome)
    return [purged_event(record, round_, p.datamap)]


class ProcessorAnswerError(PermanentError):
    """An answer the purger cannot record: the request is unknown, or the dataset awaits no confirmation."""


async def on_hold_released(event: LegalHoldReleased, p: Purger) -> Sequence[Event]:
    return await reevaluate(p, event.datasets, event.subject_id)


async def release_ended(p: Purger) -> list[Event]:
    """Act on the end dates of rules and holds: what a rule or hold stopped covering since the last check is
    erased, with a follow-up report. Runs every few minutes and with ``lethe purge --now``."""
    now = p.clock()
    since = await p.progress.retention_checked_at()
    rules = (await p.retention.rule_set()).rules
    ended_rules = [
        r for r in rules if r.expires_at is not None and r.expires_at <= now and (since is None or r.expires_at > since)
    ]
    ended_holds = await p.retention.holds_ending(after=since, until=now)
    reports: list[Event] = []
    if ended_rules:
        reports += await reevaluate(p, sorted({d for r in ended_rules for d in r.datasets}), None)
    for hold in ended_holds:
        reports += await reevaluate(p, hold.datasets, hold.subject_id)
    if ended_rules or ended_holds:
        log.info(
            "retention.ended",
            rules=[r.rule_id for r in ended_rules],
            holds=[h.hold_id for h in ended_holds],
            follow_ups=len(reports),
        )
    # Recorded after the follow-ups are decided; the wiring publishes them before the next check, and a crash
    # in between re-runs this window (reevaluate is idempotent: a freed dataset is no longer retained).
    await p.progress.set_retention_checked_at(now)
    return reports


async def on_rules_changed(event: RetentionRulesChanged, p: Purger) -> Sequence[Event]:
    """A change can free only the datasets no rule in force covers now: the requests that kept one of those are
    looked at again (a hold may still keep it). A request kept under a rule that still covers its dataset is not
    read at all, so a change costs what it can free, not a pass over every request that ever kept something."""
    covered = retained_datasets((await p.retention.rule_set()).rules, (), p.clock())
    uncovered = [name for name in p.datamap.names if name not in covered]
    return await reevaluate(p, uncovered, None) if uncovered else []


@dataclass(frozen=True)
class NightlyReport:
    chunks: int
    records: int
    hard_deleted: tuple[DeletionHardDeleted, ...]
    deferred: int = 0  # chunks of a dataset kept (a hold or rule in force now): left in the ledger for later


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
    chunks = records = deferred = 0
    touched: dict[str, str] = {}
    kept: dict[str, Retention] = {}
    kept_for: str | None = None
    async for chunk in p.ledger.due(now):
        # The ledger lists a request's chunks together: one look at the rules and holds per request.
        if chunk.request_id != kept_for:
            kept, kept_for = await retained_now(p, chunk.subject_id, p.clock()), chunk.request_id
        if (why := kept.get(chunk.dataset)) is not None:
            deferred += 1
            log.info("nightly.deferred", request_id=chunk.request_id, dataset=chunk.dataset, kept_by=why.rule_id)
            continue
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
    return NightlyReport(chunks, records, tuple(reports), deferred)


async def reported_hard_deleted(p: Purger, report: NightlyReport) -> None:
    """After the reports are published: each request's live data is gone from this moment."""
    for event in report.hard_deleted:
        await p.progress.mark_hard_deleted(event.request_id, event.occurred_at)


def routes(p: Purger) -> Mapping[str, Handler]:
    """The registry of what the purger reacts to: topic -> handler."""

    async def requested(events: Sequence[Event]) -> Sequence[Event]:
        assert all(isinstance(e, DeletionRequested) for e in events)
        return await purge_many([e for e in events if isinstance(e, DeletionRequested)], p)

    async def rules_changed(event: Event) -> Sequence[Event]:
        assert isinstance(event, RetentionRulesChanged)
        return await on_rules_changed(event, p)

    async def hold_placed(event: Event) -> Sequence[Event]:
        assert isinstance(event, LegalHoldPlaced)
        return await on_hold_placed(event, p)

    async def hold_released(event: Event) -> Sequence[Event]:
        assert isinstance(event, LegalHoldReleased)
        return await on_hold_released(event, p)

    async def processor_confirmed(event: Event) -> Sequence[Event]:
        assert isinstance(event, DeletionProcessorConfirmed)
        return await on_processor_confirmed(event, p)

    return {
        topics.DELETION_REQUESTED: BatchRoute(requested),  # a poll's requests side by side
        topics.RETENTION_RULES_CHANGED: rules_changed,
        topics.LEGAL_HOLD_PLACED: hold_placed,
        topics.LEGAL_HOLD_RELEASED: hold_released,
        topics.DELETION_PROCESSOR_CONFIRMED: processor_confirmed,
    }


async def expire_backups(p: Purger, backups: Backups, *, retention: timedelta) -> list[DeletionBackupsExpired]:
    """Delete the backups older than ``retention``; then report the requests no remaining backup holds.

    A backup that holds a dataset under a hold in force now is kept (deferred, not dropped): it may be the only
    copy left of what the hold keeps, erased live before the hold was placed."""
    now = p.clock()
    cutoff = now - retention
    held = {d for h in await p.retention.active_holds() if h.active(now) for d in h.datasets}
    remaining = []
    for backup in await backups.live():
        if backup.created_at < cutoff and (blocked := held & backup.datasets):
            log.info("backup.expiry_deferred", backup_id=backup.backup_id, held_datasets=sorted(blocked))
            remaining.append(backup)
        elif backup.created_at < cutoff:
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
