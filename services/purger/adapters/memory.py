"""In-memory fakes of the purger's ports, for unit tests (the contract tests of ports.py run against them too)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from services.purger.model import Backup, LedgerChunk, PurgeRecord
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
    missing: set[str] = field(default_factory=set)  # datasets whose collection or bucket does not exist
    erase_calls: int = 0

    async def erase(
        self, dataset: Dataset, subject_id: str, *, request_id: str, now: datetime, purge_after: datetime
    ) -> DatasetOutcome:
        self.erase_calls += 1
        if dataset.name in self.fail_on:
            raise ConnectionError(f"{dataset.name}'s store is down")
        if dataset.name in self.missing:
            # As the real erasers word it (the Mongo one also names its database, which the fake has none of).
            if dataset.s3:
                error = f"the bucket '{dataset.s3.bucket}' does not exist"
            elif dataset.milvus:
                error = f"the collection '{dataset.milvus.collection}' does not exist in Milvus"
            elif dataset.postgres:
                error = f"the table '{dataset.postgres.table}' does not exist"
            else:
                error = f"the collection '{dataset.mongo.collection if dataset.mongo else dataset.name}' does not exist"
            return DatasetOutcome(dataset=dataset.name, store=dataset.store, outcome="failed", error=error)
        mine = sorted(r for r, s in self.records.get(dataset.name, {}).items() if s == subject_id)
        if dataset.mode == "erase":
            for record in mine:
                del self.records[dataset.name][record]
            return DatasetOutcome(
                dataset=dataset.name,
                store=dataset.store,
                outcome="erased",
                counts=_erased(dataset.store, len(mine)),
            )
        tags = self.tagged.setdefault(dataset.name, {})
        ids = [r for r in mine if tags.get(r, request_id) == request_id]
        # As the Mongo eraser: new chunks, after this request's existing ones, for the ids none of them lists yet.
        prefix = f"{request_id}:{dataset.name}:"
        mine_chunks = [c for c in self.chunks.values() if c.chunk_id.startswith(prefix)]
        listed = {i for c in mine_chunks for i in c.ids}
        new = [r for r in ids if r not in listed]
        for number, start in enumerate(range(0, len(new), self.chunk_size), start=len(mine_chunks)):
            chunk_id = f"{prefix}{number}"
            chunk = tuple(new[start : start + self.chunk_size])
            self.chunks[chunk_id] = LedgerChunk(
                chunk_id, request_id, subject_id, dataset.name, dataset.name, chunk, purge_after
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
    checked_at: datetime | None = None

    async def get(self, request_id: str) -> PurgeRecord | None:
        found = self.records.get(request_id)
        return None if found is None else _copy(found)

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
            _copy(r)
            for r in self.records.values()
            if (set(r.retained) | set(r.held)) & set(datasets) and (subject_id is None or r.subject_id == subject_id)
        ]

    async def in_progress(self, subject_id: str | None) -> list[PurgeRecord]:
        return [
            _copy(r)
            for r in self.records.values()
            if r.backups_expired_at is None and (subject_id is None or r.subject_id == subject_id)
        ]

    async def set_held(self, request_id: str, held: Mapping[str, str]) -> None:
        self.records[request_id].held = dict(held)

    async def retention_checked_at(self) -> datetime | None:
        return self.checked_at

    async def set_retention_checked_at(self, at: datetime) -> None:
        self.checked_at = at if self.checked_at is None else max(self.checked_at, at)

    async def mark_hard_deleted(self, request_id: str, at: datetime) -> None:
        record = self.records[request_id]
        if record.hard_deleted_at is None:
            record.hard_deleted_at = record.clean_since = at

    async def awaiting_backup_expiry(self) -> list[PurgeRecord]:
        return [_copy(r) for r in self.records.values() if r.clean_since is not None and r.backups_expired_at is None]

    async def mark_backups_expired(self, request_id: str, at: datetime) -> None:
        self.records[request_id].backups_expired_at = at


def _erased(store: str, count: int) -> DatasetCounts:
    """``count`` erased records in the unit the store's real eraser counts in: a record of an S3 dataset is one
    object version (the fake keeps no delete markers), one of a Milvus dataset a vector."""
    if store == "s3":
        return DatasetCounts(object_versions_deleted=count)
    if store == "milvus":
        return DatasetCounts(vectors_deleted=count)
    return DatasetCounts(records_erased=count)


def _copy(record: PurgeRecord) -> PurgeRecord:
    """A copy, as a database read would be: a reader's changes reach the store only through its writes."""
    return replace(
        record,
        rounds={n: dict(o) for n, o in record.rounds.items()},
        completed=dict(record.completed),
        held=dict(record.held),
    )


@dataclass
class InMemoryBackups:
    backups: list[Backup] = field(default_factory=list)

    def take(self, at: datetime, datasets: Sequence[str] = (), **_: Any) -> Backup:
        backup_id = f"bk_{len(self.backups)}"
        backup = Backup(backup_id, at, tuple(f"{backup_id}/{d}.jsonl.gz" for d in datasets), 0)
        self.backups.append(backup)
        return backup

    async def live(self) -> list[Backup]:
        return sorted((b for b in self.backups if b.expired_at is None), key=lambda b: b.created_at)

    async def expire(self, backup: Backup, *, now: datetime) -> None:
        self.backups = [replace(b, expired_at=now) if b.backup_id == backup.backup_id else b for b in self.backups]
