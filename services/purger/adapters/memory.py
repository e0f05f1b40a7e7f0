"""In-memory fakes of the purger's ports, for unit tests (the Mongo adapters pass the same scenarios in integration)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from services.purger.adapters.backups import Backup
from services.purger.adapters.mongo import LedgerChunk, PurgeRecord
from shared.datamap import Dataset
from shared.events import DatasetCounts, DatasetOutcome


@dataclass
class InMemoryStores:
    """Records by dataset: {dataset: {record id: subject id}}, with tags; plays every store (and the ledger)."""

    records: dict[str, dict[str, str]] = field(default_factory=dict)
    tagged: dict[str, dict[str, str]] = field(default_factory=dict)  # dataset -> record id -> request id
    chunks: dict[str, LedgerChunk] = field(default_factory=dict)
    chunk_size: int = 2
    fail_on: set[str] = field(default_factory=set)  # datasets whose store is "down"
    erase_calls: int = 0

    async def erase(
        self, dataset: Dataset, subject_id: str, *, request_id: str, now: datetime, purge_after: datetime
    ) -> DatasetOutcome:
        self.erase_calls += 1
        if dataset.name in self.fail_on:
            raise ConnectionError(f"{dataset.name}'s store is down")
        mine = sorted(r for r, s in self.records.get(dataset.name, {}).items() if s == subject_id)
        if dataset.mode == "erase":
            for record in mine:
                del self.records[dataset.name][record]
            return DatasetOutcome(
                dataset=dataset.name,
                store=dataset.store,
                outcome="erased",
                counts=DatasetCounts(records_erased=len(mine)),
            )
        tags = self.tagged.setdefault(dataset.name, {})
        ids = [r for r in mine if tags.get(r, request_id) == request_id]
        for number, start in enumerate(range(0, len(ids), self.chunk_size)):
            chunk_id = f"{request_id}:{dataset.name}:{number}"
            self.chunks.setdefault(
                chunk_id,
                LedgerChunk(
                    chunk_id,
                    request_id,
                    subject_id,
                    dataset.name,
                    dataset.name,
                    tuple(ids[start : start + self.chunk_size]),
                    purge_after,
                ),
            )
        for record in ids:
            tags[record] = request_id
        if not ids:
            return DatasetOutcome(dataset=dataset.name, store=dataset.store, outcome="erased")
        return DatasetOutcome(
            dataset=dataset.name,
            store=dataset.store,
            outcome="tagged",
            counts=DatasetCounts(records_tagged=len(ids)),
            purge_after=purge_after,
        )

    def live(self, dataset: str, subject_id: str) -> list[str]:
        """What a live reader sees: the subject's records that are not tagged."""
        tags = self.tagged.get(dataset, {})
        return [r for r, s in self.records.get(dataset, {}).items() if s == subject_id and r not in tags]

    # The ledger port.
    async def due(self, now: datetime) -> AsyncIterator[LedgerChunk]:
        for chunk_id in sorted(self.chunks):
            chunk = self.chunks[chunk_id]
            if not chunk.done and chunk.purge_after <= now:
                yield chunk

    async def count_due(self, now: datetime) -> tuple[int, int]:
        due = [c for c in self.chunks.values() if not c.done and c.purge_after <= now]
        return len(due), sum(len(c.ids) for c in due)

    async def delete_chunk(self, chunk: LedgerChunk) -> int:
        for record in chunk.ids:
            self.records.get(chunk.dataset, {}).pop(record, None)
        self.chunks[chunk.chunk_id] = replace(chunk, done=True)
        return len(chunk.ids)

    async def request_totals(self, request_id: str) -> tuple[bool, dict[str, int]]:
        mine = [c for c in self.chunks.values() if c.request_id == request_id]
        totals: dict[str, int] = {}
        for c in mine:
            totals[c.dataset] = totals.get(c.dataset, 0) + (len(c.ids) if c.done else 0)
        return all(c.done for c in mine), totals


@dataclass
class InMemoryProgress:
    records: dict[str, PurgeRecord] = field(default_factory=dict)

    async def get(self, request_id: str) -> PurgeRecord | None:
        found = self.records.get(request_id)
        if found is None:
            return None
        # A copy, as a database read would be.
        return replace(found, rounds={n: dict(o) for n, o in found.rounds.items()}, completed=dict(found.completed))

    async def save_outcome(self, request_id: str, subject_id: str, round_: int, outcome: DatasetOutcome) -> None:
        record = self.records.setdefault(request_id, PurgeRecord(request_id, subject_id))
        record.rounds.setdefault(round_, {})[outcome.dataset] = outcome

    async def complete_round(self, record: PurgeRecord, round_: int, at: datetime) -> PurgeRecord:
        record.completed[round_] = at
        if record.clean_since is None and not record.tagged:
            record.clean_since = at
        stored = self.records[record.request_id]
        stored.completed[round_], stored.clean_since = at, record.clean_since
        return record

    async def with_retained(self, datasets: Sequence[str], subject_id: str | None) -> list[PurgeRecord]:
        return [
            r
            for r in self.records.values()
            if set(r.retained) & set(datasets) and (subject_id is None or r.subject_id == subject_id)
        ]

    async def mark_hard_deleted(self, request_id: str, at: datetime) -> None:
        record = self.records[request_id]
        if record.hard_deleted_at is None:
            record.hard_deleted_at = record.clean_since = at

    async def awaiting_backup_expiry(self) -> list[PurgeRecord]:
        return [r for r in self.records.values() if r.clean_since is not None and r.backups_expired_at is None]

    async def mark_backups_expired(self, request_id: str, at: datetime) -> None:
        self.records[request_id].backups_expired_at = at


@dataclass
class InMemoryBackups:
    backups: list[Backup] = field(default_factory=list)

    def take(self, at: datetime, **_: Any) -> Backup:
        backup = Backup(f"bk_{len(self.backups)}", at, (), 0)
        self.backups.append(backup)
        return backup

    async def live(self) -> list[Backup]:
        return [b for b in self.backups if b.expired_at is None]

    async def expire(self, backup: Backup, *, now: datetime) -> None:
        self.backups = [replace(b, expired_at=now) if b.backup_id == backup.backup_id else b for b in self.backups]
