"""The purger's records: a request's progress round by round, a chunk of the purge ledger, and a backup."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.events import DatasetOutcome


@dataclass(frozen=True)
class LedgerChunk:
    """Up to one batch of tagged records of one request in one dataset, deleted together by primary key.
    ``collection`` is where they are: the MongoDB collection, or the PostgreSQL table (``store``)."""

    chunk_id: str
    request_id: str
    subject_id: str
    dataset: str
    collection: str
    ids: tuple[Any, ...]
    purge_after: datetime
    done: bool = False
    store: str = "mongo"


@dataclass
class PurgeRecord:
    """A request as the purger tracks it: the outcomes of each round (0: the request; 1+: re-evaluations)."""

    request_id: str
    subject_id: str
    rounds: dict[int, dict[str, DatasetOutcome]] = field(default_factory=dict)
    completed: dict[int, datetime] = field(default_factory=dict)
    hard_deleted_at: datetime | None = None
    clean_since: datetime | None = None
    backups_expired_at: datetime | None = None
    # Datasets a hold placed after the purge now keeps (dataset -> hold id): erased again once it is gone.
    held: dict[str, str] = field(default_factory=dict)

    @property
    def last_round(self) -> int:
        return max(self.completed, default=-1)

    def outcomes_as_of(self, round_: int) -> dict[str, DatasetOutcome]:
        """The latest outcome of each dataset over the completed rounds up to ``round_``."""
        latest: dict[str, DatasetOutcome] = {}
        for number in sorted(n for n in self.completed if n <= round_):
            latest.update(self.rounds.get(number, {}))
        return latest

    @property
    def outcomes(self) -> dict[str, DatasetOutcome]:
        """The latest outcome of each dataset over the completed rounds."""
        return self.outcomes_as_of(self.last_round)

    @property
    def saved_outcomes(self) -> dict[str, DatasetOutcome]:
        """The latest outcome of each dataset, a round still running included (what the stores went through)."""
        latest: dict[str, DatasetOutcome] = {}
        for number in sorted(self.rounds):
            latest.update(self.rounds[number])
        return latest

    @property
    def retained(self) -> list[str]:
        return sorted(name for name, o in self.outcomes.items() if o.outcome == "retained")

    @property
    def tagged(self) -> list[str]:
        return sorted(name for name, o in self.outcomes.items() if o.outcome == "tagged")


@dataclass(frozen=True)
class Backup:
    """A snapshot of the MongoDB datasets in the backups bucket, as its ledger (``backups``) records it."""

    backup_id: str
    created_at: datetime
    objects: tuple[str, ...]
    documents: int
    expired_at: datetime | None = None

    @property
    def datasets(self) -> frozenset[str]:
        """The datasets it holds (one ``<backup id>/<dataset>.jsonl.gz`` object each)."""
        return frozenset(key.split("/", 1)[-1].removesuffix(".jsonl.gz") for key in self.objects)
