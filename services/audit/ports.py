"""What audit needs from outside, one Protocol each; adapters/log.py implements the log on MongoDB and
adapters/memory.py in memory (tests/integration/test_audit_log.py runs one contract against both)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from services.audit.model import Checkpoint, Entry
from shared.events import Event


class AuditLog(Protocol):
    """The append-only, hash-chained log: its entries, its head, and the signed checkpoints of the head."""

    async def head(self) -> tuple[int, str]:
        """(sequence number, hash) of the last entry; (0, GENESIS) while the log is empty."""
        ...

    async def append_many(self, events: Sequence[Event], *, recorded_at: datetime) -> list[int]:
        """Append, in order, each event not logged yet (once, however often it comes); their sequence numbers."""
        ...

    def all_entries(self, batch: int = 2000) -> AsyncIterator[Entry]:
        """Every entry in sequence order, streamed."""
        ...

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
        """A page of the entries after sequence number ``after`` that match every filter given, oldest first."""
        ...

    async def matching(self, **filters: Any) -> list[Entry]:
        """Every entry that ``query`` would page through with these filters, oldest first."""
        ...

    async def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, in sequence order."""
        ...

    async def last_checkpoint(self) -> Checkpoint | None: ...

    async def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Keep the checkpoint; one already kept at its sequence number stays as it is."""
        ...
