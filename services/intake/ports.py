"""What intake needs from outside, one Protocol each; adapters/store.py implements them on MongoDB and
adapters/memory.py in memory (tests/integration/test_request_store.py runs one contract against both)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.intake.model import AuthorisedAgent, DeletionRequest, PendingEvents, Reservation, StoredReply
from shared.contacts import Contact
from shared.events import Channel, DeletionRequested, Event
from shared.retention import Hold, InForce, Rule, RuleSet


class RequestStore(Protocol):
    async def get(self, request_id: str) -> DeletionRequest | None: ...

    async def save(self, record: DeletionRequest) -> DeletionRequest | None:
        """Write ``record`` if the stored one is still at ``record.version``; the stored copy, or None if it moved."""
        ...

    async def get_many(self, request_ids: Sequence[str]) -> dict[str, DeletionRequest]:
        """The stored requests among ``request_ids`` (one read)."""
        ...

    async def save_many(self, records: Sequence[DeletionRequest]) -> bool:
        """:meth:`save` for each record, in one write; False if any of them had moved (the others are saved)."""
        ...

    async def ensure(self, record: DeletionRequest) -> None:
        """Insert ``record`` unless the request is already stored (repairs a crash between claim and insert)."""
        ...

    async def claim(self, event: DeletionRequested, *, hold_until: datetime | None = None) -> str | None:
        """Make this the subject's open request; None if it now is, else the id of the request that already is.

        ``event`` goes to the outbox, or with ``hold_until`` (a cooling-off period) is held until then."""
        ...

    async def hand_over_due(self, now: datetime) -> int:
        """Move each held ``deletion.requested`` whose time has come to its outbox (the purger gets it then);
        how many moved."""
        ...

    async def withdraw(self, subject_id: str, request_id: str, event: Event) -> Event | None:
        """Take the request's held ``deletion.requested`` out and store ``event`` (its denial or cancellation) for
        publication instead, in one write. Returns the event that withdrew it (this one, or an earlier one), or None
        if nothing was withdrawn: it was handed over (erasure has started) or is not open."""
        ...

    async def release(self, subject_id: str, request_id: str) -> None: ...

    async def announce(self, subject_id: str, request_id: str, event: Event) -> bool:
        """Store ``event`` for publication with the request's claim (the outbox); False if the request holds no
        claim (it is closed)."""
        ...

    async def open_request_ids(self) -> list[str]: ...

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
        """Requests, newest first, optionally of one status, of one subject and received in [since, until)."""
        ...

    async def reserve_key(
        self, key: str, *, fingerprint: str, now: datetime, lease: timedelta
    ) -> Reservation | StoredReply: ...

    async def complete_key(self, key: str, *, reply: StoredReply, now: datetime) -> None: ...

    async def forget_key(self, key: str) -> None: ...


class AccountDirectory(Protocol):
    async def subject_for(self, email_hash: str) -> str | None: ...

    async def stored_address(self, subject_id: str) -> str | None:
        """The account's address field as stored (sealed by keyvault when the data map says so), or None."""
        ...

    async def jurisdiction_of(self, subject_id: str) -> str | None:
        """The account's jurisdiction field (the data map's ``jurisdiction_field``), or None."""
        ...


class Sealer(Protocol):
    """The part of keyvault that reads the account's address and seals it for the final notice."""

    async def encrypt(self, subject_id: str, dataset: str, plaintext: bytes) -> str: ...
    async def decrypt(self, subject_id: str, dataset: str, ciphertext: str) -> bytes: ...


class ContactStore(Protocol):
    async def put(self, contact: Contact) -> None: ...
    async def get(self, request_id: str) -> Contact | None: ...
    async def forget(self, request_id: str) -> None: ...


class DeletionStarter(Protocol):
    """Starting a deletion (deletions.py), as the intent handler needs it."""

    async def start(
        self,
        subject_id: str,
        *,
        requested_by: str,
        channel: Channel,
        jurisdiction: str | None = None,
        agent: AuthorisedAgent | None = None,
    ) -> tuple[bool, DeletionRequest]: ...

    async def once(
        self, key: str, *, fingerprint: str, run: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
    ) -> tuple[StoredReply, bool]: ...


class Outbox(Protocol):
    """The events documents carry for publication (requests, rules, holds), for the relay."""

    async def pending(self, limit: int = 100) -> list[PendingEvents]: ...

    async def clear(self, entry: PendingEvents) -> None: ...


class RetentionStore(Protocol):
    """Writes take the events that announce them (``outbox``): they are stored in the same document, atomically,
    and a relay publishes them, so no change goes unannounced even if Kafka is down or the writer crashes."""

    async def rule_set(self) -> RuleSet: ...

    async def replace_rules(
        self, rules: tuple[Rule, ...], *, expected_version: int, by: str, at: datetime, outbox: Sequence[Event] = ()
    ) -> RuleSet: ...

    async def place_hold(self, hold: Hold, *, outbox: Sequence[Event] = ()) -> Hold: ...

    async def release_hold(
        self, hold_id: str, *, by: str, at: datetime, outbox: Sequence[Event] = ()
    ) -> Hold | None: ...

    async def hold(self, hold_id: str) -> Hold | None: ...

    async def holds(
        self, *, subject_id: str | None, active_only: bool, limit: int, after: str | None
    ) -> list[Hold]: ...

    async def holds_for(self, subject_id: str) -> list[Hold]: ...

    async def in_force(self, subject_id: str) -> InForce: ...

    async def active_holds(self) -> list[Hold]: ...

    async def holds_ending(self, *, after: datetime | None, until: datetime) -> list[Hold]: ...
