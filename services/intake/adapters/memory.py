"""intake's ports in memory, for unit tests: the request store, the outbox and the accounts directory. One contract
runs against each and its MongoDB adapter (tests/integration/test_request_store.py, test_intake_ports.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.intake.model import DeletionRequest, PendingEvents, Reservation, StoredReply
from shared.events import DeletionRequested, Event
from shared.fakes import InMemoryRetentionStore


class InMemoryRequestStore:
    def __init__(self) -> None:
        self.requests: dict[str, DeletionRequest] = {}
        self.claims: dict[str, str] = {}
        self.outbox: list[Event] = []
        self.held: dict[str, tuple[datetime, DeletionRequested]] = {}  # subject -> (publish at, event)
        self.withdrawn: dict[str, Event] = {}  # request -> the event that withdrew it
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

    async def claim(self, event: DeletionRequested, *, hold_until: datetime | None = None) -> str | None:
        holder = self.claims.setdefault(event.subject_id, event.request_id)
        if holder != event.request_id:
            return holder
        if hold_until is not None:
            self.held.setdefault(event.subject_id, (hold_until, event))
        elif event not in self.outbox:
            self.outbox.append(event)
        return None

    async def hand_over_due(self, now: datetime) -> int:
        due = [subject for subject, (at, _) in self.held.items() if at <= now]
        for subject in due:
            self.outbox.append(self.held.pop(subject)[1])
        return len(due)

    async def withdraw(self, subject_id: str, request_id: str, event: Event) -> Event | None:
        if self.claims.get(subject_id) != request_id:
            return None
        if subject_id not in self.held:
            return self.withdrawn.get(request_id)
        del self.held[subject_id]
        self.withdrawn[request_id] = event
        self.outbox.append(event)
        return event

    async def announce(self, subject_id: str, request_id: str, event: Event) -> bool:
        if self.claims.get(subject_id) != request_id:
            return False
        self.outbox.append(event)
        return True

    async def release(self, subject_id: str, request_id: str) -> None:
        if self.claims.get(subject_id) == request_id:
            del self.claims[subject_id]
            self.held.pop(subject_id, None)

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


class InMemoryOutbox:
    """The events the in-memory request and retention stores hold for publication, one entry per event."""

    def __init__(self, requests: InMemoryRequestStore, retention: InMemoryRetentionStore) -> None:
        self._held: dict[str, list[Any]] = {
            "claims": requests.outbox,
            "retention": retention.outbox,
        }

    async def pending(self, limit: int = 100) -> list[PendingEvents]:
        return [
            PendingEvents(name, str(event.event_id), (event.model_dump_json(),))
            for name, events in self._held.items()
            for event in events[:limit]
        ]

    async def clear(self, entry: PendingEvents) -> None:
        events = self._held[entry.collection]
        events[:] = [e for e in events if e.model_dump_json() not in entry.raw]


@dataclass
class InMemoryAccountDirectory:
    """The accounts: subject id -> (the keyed hash of its address, the address field as stored). A tagged account
    (awaiting its hard delete) is found by neither lookup, as ``shared.liveread`` has every reader do."""

    accounts: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    tagged: set[str] = field(default_factory=set)
    jurisdictions: dict[str, str] = field(default_factory=dict)

    def add(
        self,
        subject_id: str,
        *,
        email_hash: str,
        address: str | None = None,
        tagged: bool = False,
        jurisdiction: str | None = None,
    ) -> None:
        self.accounts[subject_id] = (email_hash, address)
        if tagged:
            self.tagged.add(subject_id)
        if jurisdiction:
            self.jurisdictions[subject_id] = jurisdiction

    async def subject_for(self, email_hash: str) -> str | None:
        found = [s for s, (h, _) in self.accounts.items() if h == email_hash and s not in self.tagged]
        return found[0] if found else None

    async def stored_address(self, subject_id: str) -> str | None:
        if subject_id in self.tagged or subject_id not in self.accounts:
            return None
        return self.accounts[subject_id][1] or None

    async def jurisdiction_of(self, subject_id: str) -> str | None:
        return None if subject_id in self.tagged else self.jurisdictions.get(subject_id)
