"""audit's ports in memory, for unit tests: the same contract tests run against these fakes and the real adapters
(tests/integration/test_audit_log.py, test_console_sessions.py)."""

from __future__ import annotations

import copy
import hashlib
import secrets
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from services.audit.chain import GENESIS, chain
from services.audit.model import Checkpoint, Entry, Session
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


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class InMemoryConsoleSessions:
    """The ConsoleSessions port in memory, kept like MongoConsoleSessions: by the SHA-256 of the session id, with
    its expiry at MongoDB's precision (whole milliseconds, UTC when naive)."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}  # hex SHA-256 of the session id -> the session

    async def create(self, session: Session) -> str:
        session_id = secrets.token_urlsafe(32)
        expires = session.expires_at if session.expires_at.tzinfo else session.expires_at.replace(tzinfo=UTC)
        expires = expires.replace(microsecond=expires.microsecond // 1000 * 1000)
        self.sessions[_digest(session_id)] = Session(
            session.token, session.csrf, session.operator, frozenset(session.scopes), expires
        )
        return session_id

    async def get(self, session_id: str, now: datetime) -> Session | None:
        session = self.sessions.get(_digest(session_id))
        if session is None:
            return None
        if session.expires_at <= now:
            await self.delete(session_id)
            return None
        return session

    async def delete(self, session_id: str) -> None:
        self.sessions.pop(_digest(session_id), None)


class InMemoryServices:
    """The Services port in memory: each (service, method, path) answers what a test registered with ``answer``,
    anything else (404, {"detail": ...}); every call is recorded in ``calls``. A service marked ``down`` answers as
    an unreachable one does (status 0). Like Upstream, a service it has no URL for is a KeyError, a bug in the caller
    rather than an answer."""

    def __init__(self, names: Iterable[str] = ("intake", "purger", "keyvault", "notifier")) -> None:
        self.urls = {name: f"http://{name}.invalid" for name in names}
        self.answers: dict[tuple[str, str, str], tuple[int, Any]] = {}
        self.calls: list[tuple[str, str, str, str | None, dict[str, Any]]] = []
        self.down: set[str] = set()

    def answer(self, service: str, method: str, path: str, status: int, body: Any = None) -> None:
        """From now on, ``method path`` on ``service`` answers (status, body)."""
        self.answers[(service, method.upper(), path)] = (status, body)

    async def call(self, service: str, method: str, path: str, token: str | None, **kwargs: Any) -> tuple[int, Any]:
        if service not in self.urls:
            raise KeyError(service)
        self.calls.append((service, method.upper(), path, token, kwargs))
        if service in self.down:
            return 0, {"detail": f"{service} could not be reached: ClientConnectorError"}
        status, body = self.answers.get(
            (service, method.upper(), path), (404, {"detail": f"{service} has no {method.upper()} {path}"})
        )
        return status, copy.deepcopy(body)  # a fresh body each time, as decoding a response gives
