"""What notifier needs from outside, one Protocol each; adapters/store.py implements the stores on MongoDB and
adapters/memory.py in memory (tests/integration/test_notifier_store.py runs one contract against both)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Protocol

from services.notifier.model import Attempt, AttemptResult, Delivery, DeliveryStatus, Endpoint, Notice, Secret
from shared.contacts import Contact

# One attempt to POST a signed body to an endpoint's URL: (url, body, headers) -> how it went.
SendWebhook = Callable[[str, str, dict[str, str]], Awaitable[AttemptResult]]
# Hand a mail to the SMTP server; raises shared.smtp's MailError family when it is not accepted.
SendMail = Callable[[EmailMessage], Awaitable[None]]


class NoticeStore(Protocol):
    """Where notifier records what became of each person's notice, and counts the day's mails."""

    async def notice(self, request_id: str) -> Notice | None: ...

    async def save_notice(self, notice: Notice) -> None:
        """Record the notice as it now is; this also ends a claim on it."""
        ...

    async def claim_deferred(
        self, now: datetime, *, lease: timedelta, limit: int = ..., mails: bool = ...
    ) -> list[Notice]:
        """Oldest first: the deferred notices due for another try (unless not ``mails``), and the ended ones whose
        follow-up is owed, each leased so that no other instance claims it until the lease runs out."""
        ...

    async def count_mail(self, day: str) -> int:
        """Count one more mail on ``day`` (YYYY-MM-DD); returns the day's total including it."""
        ...

    async def uncount_mail(self, day: str) -> None:
        """Give back the place count_mail reserved, for a mail that did not go out."""
        ...

    async def mail_count(self, day: str) -> int:
        """How many mails ``day`` has counted so far (without counting one)."""
        ...

    async def mark_mailed(self, request_id: str, at: datetime) -> None:
        """The SMTP server accepted the request's mail (recorded before its contact key is shredded)."""
        ...

    async def mailed(self, request_id: str) -> bool:
        """Was the request's mail accepted (a crash may have come before the key was shredded)?"""
        ...


class WebhookStore(NoticeStore, Protocol):
    """notifier's state: webhook endpoints, deliveries with their attempts, and the notices to people."""

    async def add_endpoint(self, endpoint: Endpoint) -> None: ...

    async def endpoint(self, endpoint_id: str) -> Endpoint | None: ...

    async def endpoints(self, *, after: str | None = None, limit: int = 100) -> list[Endpoint]:
        """A page of endpoints in id order, after the id ``after``."""
        ...

    async def delete_endpoint(self, endpoint_id: str) -> bool: ...

    async def set_secrets(self, endpoint_id: str, secrets: tuple[Secret, ...]) -> None: ...

    async def disable_endpoint(self, endpoint_id: str, reason: str) -> None: ...

    async def schedule(self, delivery: Delivery) -> bool:
        """Record a delivery once (its id is stable) as due; returns False if it already existed."""
        ...

    async def claim_due(self, now: datetime, *, lease: timedelta, limit: int = 50) -> list[Delivery]:
        """The pending deliveries due by ``now``, earliest first, each leased so no other instance sends it."""
        ...

    async def record_attempt(
        self, message_id: str, attempt: Attempt, *, status: DeliveryStatus, next_attempt_at: datetime | None
    ) -> None:
        """Add the attempt; a delivery still pending is due again at ``next_attempt_at`` (and its lease ends)."""
        ...

    async def delivery(self, message_id: str) -> Delivery | None: ...

    async def deliveries_of(self, endpoint_id: str, *, after: str | None = None, limit: int = 100) -> list[Delivery]:
        """A page of an endpoint's deliveries in id order, after the id ``after``."""
        ...

    async def deliveries_for_request(self, request_id: str, *, limit: int = 100) -> list[Delivery]: ...

    async def redeliver(self, message_id: str, now: datetime) -> None:
        """Make the delivery pending again and due at ``now``, whatever became of it."""
        ...


class ContactStore(Protocol):
    """The person's sealed address, as intake captured it (intake's API: shared.intake_client)."""

    async def contact(self, request_id: str) -> Contact | None: ...


class ContactKeys(Protocol):
    """The part of keyvault the notice needs: open the sealed address, then shred its key."""

    async def decrypt(self, subject_id: str, dataset: str, ciphertext: str) -> bytes: ...

    async def destroy_key(self, subject_id: str, dataset: str, *, request_id: str) -> None: ...
