"""intake's records: a deletion request as intake tracks it (its status derived from the stages seen), and the
idempotency and outbox records its store keeps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from shared.events import (
    ActingAgent,
    Channel,
    DatasetOutcome,
    DeletionCancelled,
    DeletionDenied,
    RequestStatus,
)

Status = RequestStatus
# While a request is open, a second one for the same subject returns it instead of starting another.
OPEN_STATUSES: frozenset[str] = frozenset({"received", "purging", "keys_destroyed", "awaiting_confirmation"})
# Stages in the order a request normally passes them (each carries the time it was first seen).
STAGES = (
    "verification_pending",
    "received",
    "purging",
    "purged",
    "keys_destroyed",
    "notified",
    "hard_deleted",
    "backups_expired",
)


def stage_rank(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES)


class RecordedOutcome(DatasetOutcome):
    """A dataset's outcome, with when it was decided (a follow-up purge replaces an earlier one)."""

    decided_at: datetime


class HeldDataset(BaseModel):
    """A dataset of a purged request that a hold placed afterwards keeps (until a follow-up purge says otherwise)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hold_id: str
    since: datetime
    records_kept: bool = False  # its tagged records are skipped by the nightly purge


# How a request ended before anything was erased: the event that denied or cancelled it, kept as it was published.
Closing = Annotated[DeletionDenied | DeletionCancelled, Field(discriminator="type")]


class DeletionRequest(BaseModel):
    """One request as intake tracks it; ``version`` guards concurrent writers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    subject_id: str
    channel: Channel = "api"
    requested_by: str | None = None
    agent: ActingAgent | None = None  # an authorised agent asked on the person's behalf (name, proof reference)
    created_at: datetime | None = None
    jurisdiction: str | None = None  # the law it is answered under (deploy/jurisdictions.yaml)
    deadline_at: datetime | None = None
    # With a cooling-off period (INTAKE_COOLING_OFF_S), when the request goes to the purger: until then it may be
    # denied or cancelled, and nothing has been erased.
    erasure_starts_at: datetime | None = None
    closure: Closing | None = None  # denied or cancelled before erasure
    acknowledge_by: datetime | None = None  # where that law sets a time to confirm receipt
    acknowledged_at: datetime | None = None  # when the person was told the request was received
    acknowledgement_late_at: datetime | None = None  # when the deadline watch warned that it was not
    extensions: int = 0  # how often its deadline was extended
    extension_reason: str | None = None  # why, the last time
    backups_purged_by: datetime | None = None
    stages: dict[str, datetime] = {}
    outcomes: dict[str, RecordedOutcome] = {}
    keys_destroyed: tuple[str, ...] = ()
    keys_retained: tuple[str, ...] = ()
    keys_left: dict[str, str] = {}  # dataset -> why keyvault neither destroyed nor kept its key
    keys_restored: tuple[str, ...] = ()  # restored for a hold inside the grace window
    keys_unrestorable: tuple[str, ...] = ()  # a hold came too late: already shredded
    held: dict[str, HeldDataset] = {}
    hard_deleted: dict[str, int] = {}
    webhook_endpoints: int | None = None
    email_sent: bool | None = None
    mail: str | None = None
    smtp_code: int | None = None
    overdue_warned_at: datetime | None = None
    past_deadline_at: datetime | None = None
    superseded_by: str | None = None
    version: int = 0

    @field_serializer("closure")
    def _closure_as_json(self, closure: DeletionDenied | DeletionCancelled | None) -> dict[str, Any] | None:
        # Stored as the event's JSON form (its id a string): MongoDB is not told how to encode a UUID.
        return None if closure is None else closure.model_dump(mode="json")

    @property
    def result(self) -> Literal["completed", "partial", "pending"] | None:
        if not self.outcomes:
            return None
        if any(o.outcome == "pending_confirmation" for o in self.outcomes.values()):
            return "pending"  # a processor has yet to answer
        kept = self.held or any(o.outcome in ("retained", "failed", "refused") for o in self.outcomes.values())
        return "partial" if kept else "completed"

    @property
    def awaiting(self) -> list[str]:
        """The processor datasets whose confirmation the request waits for."""
        return sorted(name for name, o in self.outcomes.items() if o.outcome == "pending_confirmation")

    @property
    def status(self) -> Status:
        return status_of(self)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


def status_of(r: DeletionRequest) -> Status:
    stages = r.stages
    if r.closure is not None:
        return "denied" if isinstance(r.closure, DeletionDenied) else "cancelled"
    if r.result == "pending":
        return "awaiting_confirmation"  # open until every processor answered (the deadline watch covers it)
    if "notified" in stages and r.result is not None:
        tagged = any(o.outcome == "tagged" for o in r.outcomes.values())
        hard = "hard_deleted" in stages or not tagged
        if hard and "backups_expired" in stages:
            return "erased"
        if tagged and hard:
            return "hard_deleted"
        return r.result
    for stage, status in (("keys_destroyed", "keys_destroyed"), ("purged", "purging"), ("purging", "purging")):
        if stage in stages:
            return status  # type: ignore[return-value]  # each literal above is a Status
    return "received" if "received" in stages else "verification_pending"


@dataclass(frozen=True)
class AuthorisedAgent:
    """Someone asking on the person's behalf: their name and address, and the reference of their proof."""

    name: str
    email: str
    proof_ref: str

    @property
    def public(self) -> ActingAgent:
        """What the request and its events record (the address is sealed with the person's instead)."""
        return ActingAgent(name=self.name, proof_ref=self.proof_ref)


@dataclass(frozen=True)
class Terms:
    """The law a request is answered under, and what follows from it at receipt."""

    jurisdiction: str
    deadline_at: datetime
    acknowledge_by: datetime | None


@dataclass(frozen=True)
class StoredReply:
    """The first answer to an idempotent request, replayed to every retry."""

    fingerprint: str
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class PendingEvents:
    """Events a document holds for publication: ``raw`` as stored, so they can be cleared exactly."""

    collection: str
    doc_id: str
    raw: tuple[str, ...]


# reserved: go ahead; busy: a first request with this key is still running; mismatch: the key was used for another.
Reservation = Literal["reserved", "busy", "mismatch"]
