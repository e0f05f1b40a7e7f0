"""An in-memory RequestStore, for unit tests; the same contract test runs against it and MongoRequestStore."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from services.intake.model import DeletionRequest, Reservation, StoredReply
from shared.events import DeletionRequested


class InMemoryRequestStore:
    def __init__(self) -> None:
        self.requests: dict[str, DeletionRequest] = {}
        self.claims: dict[str, str] = {}
        self.outbox: list[DeletionRequested] = []
        self.keys: dict[str, tuple[str, str, datetime, StoredReply | None]] = {}

    async def get(self, request_id: str) -> DeletionRequest | None:
        return self.requests.get(request_id)

    async def save(self, record: DeletionRequest) -> DeletionRequest | None:
        current = self.requests.get(record.request_id)
        if (current.version if current else 0) != record.version:
            return None
        stored = self.requests[record.request_id] = record.model_copy(update={"version": record.version + 1})
        return stored

    async def get_many(self, request_ids: Sequence[str]) -> dict[str, DeletionRequest]:
        return {i: self.requests[i] for i in request_ids if i in self.requests}

    async def save_many(self, records: Sequence[DeletionRequest]) -> bool:
        return all([await self.save(record) is not None for record in records])

    async def ensure(self, record: DeletionRequest) -> None:
        self.requests.setdefault(record.request_id, record.model_copy(update={"version": 1}))

    async def claim(self, event: DeletionRequested) -> str | None:
        holder = self.claims.setdefault(event.subject_id, event.request_id)
        if holder != event.request_id:
            return holder
        if event not in self.outbox:
            self.outbox.append(event)
        return None

    async def release(self, subject_id: str, request_id: str) -> None:
        if self.claims.get(subject_id) == request_id:
            del self.claims[subject_id]

    async def open_request_ids(self) -> list[str]:
        return list(self.claims.values())

    async def page(
        self,
        *,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        subject_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[DeletionRequest]:
        chosen = [
            r
            for r in self.requests.values()
            if (status is None or r.status == status)
            and (subject_id is None or r.subject_id == subject_id)
            and (since is None or (r.created_at is not None and r.created_at >= since))
            and (until is None or (r.created_at is not None and r.created_at < until))
        ]
        chosen.sort(key=lambda r: r.request_id)
        chosen.sort(key=lambda r: r.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return chosen[offset : offset + limit]

    async def reserve_key(
        self, key: str, *, fingerprint: str, now: datetime, lease: timedelta
    ) -> Reservation | StoredReply:
        if key not in self.keys:
            self.keys[key] = (fingerprint, "pending", now + lease, None)
            return "reserved"
        stored_fingerprint, state, lease_until, reply = self.keys[key]
        if stored_fingerprint != fingerprint:
            return "mismatch"
        if reply is not None:
            return reply
        if lease_until < now:
            self.keys[key] = (fingerprint, state, now + lease, None)
            return "reserved"
        return "busy"

    async def complete_key(self, key: str, *, reply: StoredReply, now: datetime) -> None:
        fingerprint, _, lease_until, _ = self.keys[key]
        self.keys[key] = (fingerprint, "done", lease_until, reply)

    async def forget_key(self, key: str) -> None:
        if key in self.keys and self.keys[key][3] is None:
            del self.keys[key]
