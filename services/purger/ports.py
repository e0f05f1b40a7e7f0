"""What the purger needs from outside, one Protocol each. adapters/mongo.py, s3.py, milvus.py and backups.py
implement them on the real stores, adapters/memory.py in memory (shared/fakes.py holds the retention store's fake).
One contract runs against both: tests/integration/test_purger_erasers.py (each store's eraser), test_purger_progress.py,
test_purger_ledger.py (with the MongoDB eraser), test_purger_backups.py and test_intake_client.py (the rules and holds,
read from intake)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from services.purger.model import Backup, LedgerChunk, PurgeRecord
from shared.datamap import Dataset
from shared.events import DatasetOutcome
from shared.retention import Hold, InForce, RuleSet


class Eraser(Protocol):
    """One kind of store (mongo, s3, milvus): erases a subject's records of a dataset, or tags them for the
    nightly purge (listing them in the ledger first)."""

    async def erase(
        self, dataset: Dataset, subject_id: str, *, request_id: str, now: datetime, purge_after: datetime
    ) -> DatasetOutcome: ...


class ChunkDeleter(Protocol):
    """A store other than MongoDB deleting a ledger chunk's records by primary key (the nightly job, through the
    ledger): PostgreSQL's eraser."""

    async def delete_ids(self, chunk: LedgerChunk) -> int: ...


class Progress(Protocol):
    """Each request's outcomes, round by round, and what has happened to it since (hard delete, backups)."""

    async def get(self, request_id: str) -> PurgeRecord | None: ...

    async def save_outcome(self, request_id: str, subject_id: str, round_: int, outcome: DatasetOutcome) -> None: ...

    async def complete_round(self, record: PurgeRecord, round_: int, at: datetime) -> PurgeRecord: ...

    async def with_retained(self, datasets: Sequence[str], subject_id: str | None) -> list[PurgeRecord]:
        """The requests that kept (by rule or hold) or were held in any of ``datasets``."""
        ...

    async def in_progress(self, subject_id: str | None) -> list[PurgeRecord]:
        """The requests whose erased data may still exist somewhere (their backups have not expired)."""
        ...

    async def set_held(self, request_id: str, held: Mapping[str, str]) -> None: ...

    async def retention_checked_at(self) -> datetime | None: ...

    async def set_retention_checked_at(self, at: datetime) -> None:
        """Only forward: an earlier moment than the one recorded changes nothing."""
        ...

    async def mark_hard_deleted(self, request_id: str, at: datetime) -> None: ...

    async def awaiting_backup_expiry(self) -> list[PurgeRecord]: ...

    async def mark_backups_expired(self, request_id: str, at: datetime) -> None: ...


class Ledger(Protocol):
    """The nightly job's work list: chunks of tagged records, each deleted at once by primary key."""

    def due(self, now: datetime) -> AsyncIterator[LedgerChunk]: ...

    async def count_due(self, now: datetime) -> tuple[int, int]:
        """(chunks, records) due now."""
        ...

    async def delete_chunk(self, chunk: LedgerChunk) -> int: ...

    async def request_totals(self, request_id: str) -> tuple[bool, dict[str, int]]:
        """(all done, records purged per dataset) over the request's chunks."""
        ...


class Backups(Protocol):
    async def live(self) -> list[Backup]:
        """The backups not yet expired, oldest first."""
        ...

    async def expire(self, backup: Backup, *, now: datetime) -> None: ...


class RetentionReader(Protocol):
    """The rules and holds in force, read (intake writes them) each time the purger is about to destroy."""

    async def rule_set(self) -> RuleSet: ...

    async def in_force(self, subject_id: str) -> InForce:
        """The rule set and this subject's unreleased holds, read together."""
        ...

    async def active_holds(self) -> list[Hold]: ...

    async def holds_ending(self, *, after: datetime | None, until: datetime) -> list[Hold]: ...
