"""What audit needs from outside, one Protocol each. adapters/log.py, sessions.py, upstream.py and kafka_lag.py
implement them on MongoDB, HTTP and Kafka, adapters/memory.py in memory; one contract runs against both the log's
(tests/integration/test_audit_log.py) and the console sessions' (tests/integration/test_console_sessions.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from services.audit.model import Checkpoint, Entry, Session
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


class ConsoleSessions(Protocol):
    """The console's sign-ins. The browser holds only a random session id; the session, with the operator's token,
    stays here, kept under a digest of that id (a leaked store hands out no live cookie)."""

    async def create(self, session: Session) -> str:
        """Keep the session under a fresh random id; that id, for the cookie."""
        ...

    async def get(self, session_id: str, now: datetime) -> Session | None:
        """The session kept under this id, unless it has expired by ``now`` (then it is deleted)."""
        ...

    async def delete(self, session_id: str) -> None:
        """Forget the session; an unknown id changes nothing."""
        ...


class Services(Protocol):
    """The other services' HTTP APIs, called with the signed-in operator's own token."""

    @property
    def urls(self) -> Mapping[str, str]:
        """Each service the console can call, by name, with its base URL."""
        ...

    async def call(self, service: str, method: str, path: str, token: str | None, **kwargs: Any) -> tuple[int, Any]:
        """(status, decoded JSON body); status 0 with a ``detail`` when the service cannot be reached."""
        ...


# What the health page shows of Kafka: (lag per group and topic, messages waiting per dead-letter topic, the error
# that kept Kafka from answering or None).
LagReport = tuple[list[dict[str, Any]], dict[str, int], str | None]
# Ask Kafka for lethe's consumer lag; never raises (Kafka's trouble comes back as the report's error).
ReadLag = Callable[[], Awaitable[LagReport]]
