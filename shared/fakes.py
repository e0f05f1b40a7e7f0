"""In-memory fakes of shared ports, for unit tests (fakes, not mocks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from shared.contacts import Contact
from shared.crypto import DecryptionError
from shared.events import Event
from shared.keyvault_client import KeyUnavailableError
from shared.retention import Hold, InForce, Rule, RuleSet, StaleRuleSetError


@dataclass(frozen=True)
class RawMessage:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str:
        return dict(self.headers)[name].decode()


@dataclass
class InMemoryPublisher:
    """Records what would have been published, in order."""

    events: list[Event] = field(default_factory=list)
    raw: list[RawMessage] = field(default_factory=list)

    async def publish(self, event: Event) -> None:
        self.events.append(event)

    async def publish_raw(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        self.raw.append(RawMessage(topic, value, key, tuple(headers)))

    def on(self, topic: str) -> list[RawMessage]:
        return [m for m in self.raw if m.topic == topic]


@dataclass
class InMemoryRetentionStore:
    """The retention port (rules and holds) in memory, with the same optimistic versioning as MongoDB's."""

    current: RuleSet = field(default_factory=lambda: RuleSet(version=0, rules=()))
    history: dict[int, RuleSet] = field(default_factory=dict)
    all_holds: dict[str, Hold] = field(default_factory=dict)
    outbox: list[Event] = field(default_factory=list)

    async def rule_set(self) -> RuleSet:
        return self.current

    async def replace_rules(
        self, rules: tuple[Rule, ...], *, expected_version: int, by: str, at: datetime, outbox: Sequence[Event] = ()
    ) -> RuleSet:
        if expected_version != self.current.version:
            raise StaleRuleSetError
        self.current = RuleSet(version=expected_version + 1, rules=rules, changed_at=at, changed_by=by)
        self.history[self.current.version] = self.current
        self.outbox += outbox
        return self.current

    async def place_hold(self, hold: Hold, *, outbox: Sequence[Event] = ()) -> Hold:
        if hold.hold_id not in self.all_holds:
            self.outbox += outbox
        return self.all_holds.setdefault(hold.hold_id, hold)

    async def release_hold(self, hold_id: str, *, by: str, at: datetime, outbox: Sequence[Event] = ()) -> Hold | None:
        hold = self.all_holds.get(hold_id)
        if hold is not None and hold.released_at is None:
            hold = self.all_holds[hold_id] = hold.model_copy(update={"released_at": at, "released_by": by})
            self.outbox += outbox
        return hold

    async def hold(self, hold_id: str) -> Hold | None:
        return self.all_holds.get(hold_id)

    async def holds(self, *, subject_id: str | None, active_only: bool, limit: int, after: str | None) -> list[Hold]:
        found = [
            h
            for h_id, h in sorted(self.all_holds.items())
            if (subject_id is None or h.subject_id == subject_id)
            and (h.released_at is None or not active_only)
            and (after is None or h_id > after)
        ]
        return found[:limit]

    async def holds_for(self, subject_id: str) -> list[Hold]:
        return [h for h in self.all_holds.values() if h.released_at is None and h.subject_id in (subject_id, None)]

    async def in_force(self, subject_id: str) -> InForce:
        return InForce(self.current, tuple(await self.holds_for(subject_id)))

    async def active_holds(self) -> list[Hold]:
        return [h for h in self.all_holds.values() if h.released_at is None]

    async def holds_ending(self, *, after: datetime | None, until: datetime) -> list[Hold]:
        return [
            h
            for h in self.all_holds.values()
            if h.released_at is None
            and h.ends_at is not None
            and h.ends_at <= until
            and (after is None or h.ends_at > after)
        ]


@dataclass
class InMemoryContactStore:
    """intake's contact store in memory, and what notifier reads of it."""

    contacts: dict[str, Contact] = field(default_factory=dict)

    async def put(self, contact: Contact) -> None:
        self.contacts.setdefault(contact.request_id, contact)

    async def get(self, request_id: str) -> Contact | None:
        return self.contacts.get(request_id)

    async def contact(self, request_id: str) -> Contact | None:
        """As notifier reads it (through intake's API)."""
        return self.contacts.get(request_id)

    async def forget(self, request_id: str) -> None:
        self.contacts.pop(request_id, None)


@dataclass
class InMemoryKeyvault:
    """The part of KeyvaultClient that seals and opens fields, and shreds keys. As keyvault: a shredded key opens
    nothing sealed under it, and the next seal for that subject and dataset starts a new key.

    Not encryption: a "ciphertext" is an index into ``sealed``. Enough to test who may still read what.
    """

    sealed: list[tuple[str, str, int, bytes]] = field(default_factory=list)  # subject, dataset, key generation, text
    generation: dict[tuple[str, str], int] = field(default_factory=dict)
    destroyed: set[tuple[str, str]] = field(default_factory=set)  # whose current key is shredded
    destroy_calls: list[tuple[str, str, str]] = field(default_factory=list)  # (subject, dataset, request_id)

    async def encrypt(self, subject_id: str, dataset: str, plaintext: bytes) -> str:
        if (subject_id, dataset) in self.destroyed:  # a new key
            self.destroyed.discard((subject_id, dataset))
            self.generation[(subject_id, dataset)] = self.generation.get((subject_id, dataset), 0) + 1
        self.sealed.append((subject_id, dataset, self.generation.get((subject_id, dataset), 0), plaintext))
        return f"fake:{len(self.sealed) - 1}"

    async def decrypt(self, subject_id: str, dataset: str, ciphertext: str) -> bytes:
        owner, kind, generation, plaintext = self.sealed[int(ciphertext.removeprefix("fake:"))]
        if (owner, kind) != (subject_id, dataset):
            raise DecryptionError("sealed for another subject or dataset")
        if (subject_id, dataset) in self.destroyed or generation < self.generation.get((subject_id, dataset), 0):
            raise KeyUnavailableError(410, "the key is destroyed")
        return plaintext

    async def destroy_key(self, subject_id: str, dataset: str, *, request_id: str) -> None:
        self.destroy_calls.append((subject_id, dataset, request_id))
        self.destroyed.add((subject_id, dataset))
