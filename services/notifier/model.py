"""notifier's records: webhook endpoints and their secrets, deliveries with their attempts, the outcome of one
attempt, and what became of each person's notice."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from shared.events import MailOutcome

EndpointStatus = Literal["active", "disabled"]
DeliveryStatus = Literal["pending", "delivered", "dead"]
FollowUp = Literal["pending", "published"]


@dataclass(frozen=True)
class Secret:
    value: str
    created_at: datetime
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    event_types: tuple[str, ...]
    secrets: tuple[Secret, ...]
    created_at: datetime
    status: EndpointStatus = "active"
    disabled_reason: str | None = None
    owner_email: str | None = None
    description: str | None = None

    def live_secrets(self, now: datetime) -> list[str]:
        """The secrets to sign with: every one not past the end of its rotation overlap."""
        return [s.value for s in self.secrets if s.expires_at is None or s.expires_at > now]


@dataclass(frozen=True)
class Attempt:
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True)
class Delivery:
    message_id: str
    endpoint_id: str
    event_type: str
    payload: str
    request_id: str | None
    created_at: datetime
    status: DeliveryStatus = "pending"
    attempts: tuple[Attempt, ...] = field(default_factory=tuple)
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class AttemptResult:
    """How one delivery attempt went, as the receiver answered it (or why it never did)."""

    status_code: int | None
    error: str | None
    duration_ms: int
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Notice:
    """What became of one request's final notice to the person. Never the address, nor a reply quoting it."""

    request_id: str
    mail_status: MailOutcome
    at: datetime
    smtp_code: int | None = None
    error: str | None = None  # the server's reply, scrubbed of addresses
    webhook_endpoints: int = 0  # repeated in the follow-up DeletionNotified of a deferred mail
    # Set when the mail is first deferred (the daily cap, or a 4xx reply), and kept once it is sent or fails: the
    # first DeletionNotified said "deferred", and a replay of the request's event must say the same.
    deferred_at: datetime | None = None
    deferred_code: int | None = None  # the 4xx reply that deferred it; None: the daily cap
    deferred_event: str | None = None  # the DeletionKeysDestroyed (JSON), to compose the mail when it is sent
    tries: int = 0
    next_try_at: datetime | None = None
    # A deferred mail that ended (sent, failed) owes a second DeletionNotified: pending until it is published.
    follow_up: FollowUp | None = None
