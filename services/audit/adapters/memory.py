"""The audit log in memory, for unit tests: the same contract test (tests/integration/test_audit_log.py) runs
against it and MongoAuditLog."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

from services.audit.chain import GENESIS, chain
from services.audit.model import Checkpoint, Entry
from shared.events import Event


class InMemoryAuditLog:
    """The AuditLog port in memory."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.seen: dict[str, int] = {}  # event_id -> its sequence number
        self.signed: dict[int, Checkpoint] = {}

    async def head(self) -> tuple[int, str]:
        return (self.entries[-1].seq, self.entries[-1].hash) if self.entries else (0, GENESIS)

    async def append_many(self, events: Sequence[Event], *, recorded_at: datetime) -> list[int]:
        fresh: dict[str, Event] = {}
        for event in events:
            if str(event.event_id) not in self.seen:
                fresh.setdefault(str(event.event_id), event)
        seq, digest = await self.head()
        added = chain([(e, recorded_at) for e in fresh.values()], start_seq=seq + 1, prev_hash=digest)
        self.entries += added
        self.seen |= {e.event_id: e.seq for e in added}
        return [e.seq for e in added]

    async def all_entries(self, batch: int = 2000) -> AsyncIterator[Entry]:
        for entry in list(self.entries):
            yield entry

    async def query(
        self,
        *,
        types: Iterable[str] | None = None,
        subject_id: str | None = None,
        request_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[Entry]:
        wanted = set(types) if types is not None else None
        found = [
            e
            for e in self.entries
            if e.seq > after
            and (wanted is None or e.type in wanted)
            and (subject_id is None or e.subject_id == subject_id)
            and (request_id is None or e.request_id == request_id)
            and (since is None or e.occurred_at >= since)
            and (until is None or e.occurred_at < until)
        ]
        return found[:limit]

    async def matching(self, **filters: Any) -> list[Entry]:
        return await self.query(**filters, limit=len(self.entries))

    async def checkpoints(self) -> list[Checkpoint]:
        return [self.signed[seq] for seq in sorted(self.signed)]

    async def last_checkpoint(self) -> Checkpoint | None:
        return self.signed[max(self.signed)] if self.signed else None

    async def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.signed.setdefault(checkpoint.seq, checkpoint)
