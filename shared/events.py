"""Every event of lethe as a frozen pydantic model: one envelope, one model per topic.

Events carry no personal data beyond the pseudonymous subject id. The Kafka key is the subject id, so one
person's events stay in order on one partition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, Self, get_args
from uuid import UUID, uuid4

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)

from shared import topics

Store = Literal["mongo", "postgres", "s3", "milvus", "processor"]
# erased: gone now · tagged: hidden now, hard-deleted by the nightly job · retained: kept by a rule or hold ·
# exempt: anonymised, not personal · failed: could not be erased (the store said why, in ``error``) ·
# pending_confirmation: a processor was asked to erase and has not answered · refused: the processor refused
# (its reason in ``error``).
Outcome = Literal["erased", "tagged", "retained", "exempt", "failed", "pending_confirmation", "refused"]
# Who confirmed a processor's outcome: the processor itself (a signed callback), or an operator (with a note).
ConfirmedVia = Literal["processor", "operator"]
# What became of the person's final notice.
MailOutcome = Literal["sent", "failed", "deferred", "no_contact", "contact_key_gone", "no_keyvault"]
# pending: a processor has yet to confirm; partial: something was kept, could not be erased or was refused.
RequestResult = Literal["completed", "partial", "pending"]
# How a request reached intake: its HTTP API, the email channel, or an upstream service's intent on the bus.
Channel = Literal["api", "email", "bus"]
Id = Annotated[str, Field(min_length=1, max_length=200)]
Jurisdiction = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
# A subject id as it enters lethe (the HTTP path and the bus's intents alike): no spaces, slashes or controls.
SubjectId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$")]
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
# Why intake refused an intent: it did not validate, its producer may not ask, or it failed every attempt.
RejectionCause = Literal["invalid", "unauthorized", "failed"]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


# The statuses of a deletion request, in the order it passes them (intake derives them; the console shows them).
RequestStatus = Literal[
    "verification_pending",
    "received",
    "purging",
    "keys_destroyed",
    "awaiting_confirmation",
    "completed",
    "partial",
    "hard_deleted",
    "erased",
    "denied",
    "cancelled",
]
REQUEST_STATUSES: tuple[str, ...] = get_args(RequestStatus)


class Contract(BaseModel):
    """Base of every message part: immutable, and unknown fields are an error rather than silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(Contract):
    """The envelope every event shares."""

    event_id: UUID = Field(default_factory=uuid4)
    type: str
    schema_version: int = 1
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    request_id: Id | None = None
    subject_id: Id | None = None
    producer: Id

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @property
    def topic(self) -> str:
        """Each event type is published on the topic of the same name."""
        return self.type

    def key(self) -> bytes:
        """Partition key: the subject id, so one person's events stay in order."""
        return (self.subject_id or self.request_id or str(self.event_id)).encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class DeletionEvent(Event):
    """An event about one deletion request: both ids are required."""

    request_id: Id
    subject_id: Id


class ActingAgent(Contract):
    """Who asked on the person's behalf (an authorised agent), and the reference of the proof of their authority
    (a signed permission, a power of attorney) the controller checked. Their address is not here: it is sealed with
    the person's, and gets every notice the person gets."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    proof_ref: Annotated[str, Field(min_length=1, max_length=200)]


class DeletionRequested(DeletionEvent):
    type: Literal["deletion.requested"] = topics.DELETION_REQUESTED
    channel: Channel = "api"
    requested_by: Id
    deadline_at: AwareDatetime
    backups_purged_by: AwareDatetime
    # The law the request is answered under (deploy/jurisdictions.yaml), which set its deadline; and by when its
    # receipt must be acknowledged, where that law says so.
    jurisdiction: Jurisdiction | None = None
    acknowledge_by: AwareDatetime | None = None
    agent: ActingAgent | None = None  # asked for by an authorised agent


class DatasetCounts(Contract):
    """What was done to one dataset, counted in the units of its store."""

    records_erased: int = Field(default=0, ge=0)
    records_tagged: int = Field(default=0, ge=0)
    object_versions_deleted: int = Field(default=0, ge=0)
    delete_markers_deleted: int = Field(default=0, ge=0)
    vectors_deleted: int = Field(default=0, ge=0)


class DatasetOutcome(Contract):
    dataset: Id
    store: Store
    outcome: Outcome
    counts: DatasetCounts = DatasetCounts()
    purge_after: AwareDatetime | None = None
    rule_id: Id | None = None
    legal_basis: str | None = None
    legal_ref: str | None = None
    error: Annotated[str, Field(max_length=1000)] | None = None
    # A processor dataset's answer: when, through whom (the processor or an operator), and the operator's note.
    confirmed_at: AwareDatetime | None = None
    confirmed_via: ConfirmedVia | None = None
    note: Annotated[str, Field(max_length=1000)] | None = None

    @model_validator(mode="after")
    def _says_why(self) -> Self:
        if self.outcome == "retained" and not (self.rule_id and self.legal_basis and self.legal_ref):
            raise ValueError("a retained dataset needs rule_id, legal_basis and legal_ref")
        if self.outcome == "failed" and not self.error:
            raise ValueError("a failed dataset needs the error")
        return self


def result_of(outcomes: tuple[DatasetOutcome, ...]) -> RequestResult:
    """``pending`` while a processor has not answered; then ``partial`` if anything was retained, could not be
    erased or was refused, ``completed`` otherwise."""
    if any(o.outcome == "pending_confirmation" for o in outcomes):
        return "pending"
    return "partial" if any(o.outcome in ("retained", "failed", "refused") for o in outcomes) else "completed"


class DeletionPurged(DeletionEvent):
    """The current outcome of *every* dataset of the request (the first round and every follow-up alike)."""

    type: Literal["deletion.purged"] = topics.DELETION_PURGED
    outcomes: tuple[DatasetOutcome, ...]
    # 0: the request itself; 1+: a follow-up after a hold was released, a rule changed or ended.
    round: int = Field(default=0, ge=0)
    # Datasets that a hold placed after the purge keeps now (reported by deletion.held; erased again after it).
    held: tuple[Id, ...] = ()

    @property
    def result(self) -> RequestResult:
        return result_of(self.outcomes)


class KeyRef(Contract):
    dataset: Id
    key_id: Id


class RetainedKey(KeyRef):
    rule_id: Id
    legal_basis: str
    legal_ref: str


class LeftKey(KeyRef):
    """A key keyvault neither destroyed nor kept under a rule: why (not in the data map, exempt, erasure failed)."""

    reason: Annotated[str, Field(min_length=1, max_length=300)]


class DeletionKeysDestroyed(DeletionEvent):
    type: Literal["deletion.keys_destroyed"] = topics.DELETION_KEYS_DESTROYED
    # The purge's per-dataset outcomes, carried along so that notifier can tell the whole story.
    outcomes: tuple[DatasetOutcome, ...] = ()
    destroyed: tuple[KeyRef, ...] = ()
    retained: tuple[RetainedKey, ...] = ()
    left: tuple[LeftKey, ...] = ()
    grace_until: AwareDatetime | None = None
    result: RequestResult


class DeletionKeysShredded(DeletionEvent):
    """A grace window ended: keys that were disabled are now physically deleted, beyond any restore."""

    type: Literal["deletion.keys_shredded"] = topics.DELETION_KEYS_SHREDDED
    shredded: tuple[KeyRef, ...] = Field(min_length=1)


class DeletionKeysRestored(DeletionEvent):
    """An admin restored a disabled key inside its grace window."""

    type: Literal["deletion.keys_restored"] = topics.DELETION_KEYS_RESTORED
    restored: KeyRef
    restored_by: Id


class DeletionNotified(DeletionEvent):
    type: Literal["deletion.notified"] = topics.DELETION_NOTIFIED
    result: RequestResult
    webhook_endpoints: int = Field(ge=0)
    email_sent: bool
    mail: MailOutcome | None = None
    smtp_code: int | None = None  # the server's reply code when the mail failed


class DeletionHeld(DeletionEvent):
    """A hold placed after the request was purged now keeps some of its datasets (the purger reports it)."""

    type: Literal["deletion.held"] = topics.DELETION_HELD
    hold_id: Id
    datasets: tuple[Id, ...] = Field(min_length=1)  # the hold's datasets that the data map knows
    records_kept: tuple[Id, ...] = ()  # of those, the ones whose tagged records the nightly purge now skips
    legal_basis: str
    legal_ref: str


class DeletionKeysHeld(DeletionEvent):
    """keyvault's answer to a hold on a purged request: the disabled keys it restored and those already gone."""

    type: Literal["deletion.keys_held"] = topics.DELETION_KEYS_HELD
    hold_id: Id
    restored: tuple[KeyRef, ...] = ()
    unrestorable: tuple[KeyRef, ...] = ()  # already shredded: data under them stays unreadable


class HardDeletedDataset(Contract):
    dataset: Id
    records_purged: int = Field(ge=0)


class DeletionHardDeleted(DeletionEvent):
    type: Literal["deletion.hard_deleted"] = topics.DELETION_HARD_DELETED
    datasets: tuple[HardDeletedDataset, ...]


class DeletionBackupsExpired(DeletionEvent):
    type: Literal["deletion.backups_expired"] = topics.DELETION_BACKUPS_EXPIRED
    expired_before: AwareDatetime


class DeletionOverdue(DeletionEvent):
    type: Literal["deletion.overdue"] = topics.DELETION_OVERDUE
    deadline_at: AwareDatetime
    status: str
    past_deadline: bool
    # deadline: the answer is near or past its deadline; acknowledgement: receipt was not confirmed in the time the
    # request's law sets (``deadline_at`` is then that time).
    about: Literal["deadline", "acknowledgement"] = "deadline"


class DeletionProcessorConfirmed(DeletionEvent):
    """A processor's answer to the erasure lethe asked of it (a signed callback to intake), or an operator's on its
    behalf. The purger records it as the dataset's outcome and reports every outcome again."""

    type: Literal["deletion.processor_confirmed"] = topics.DELETION_PROCESSOR_CONFIRMED
    dataset: Id
    outcome: Literal["erased", "refused"]
    via: ConfirmedVia
    confirmed_by: Id  # the processor's name, or the operator's subject
    reason: Annotated[str, Field(max_length=1000)] | None = None  # why it refused, or the operator's note


class DeletionExtended(DeletionEvent):
    """An operator extended the request's deadline as its law allows; notifier tells the person why, and the
    integrators (``data_deletion.extended``)."""

    type: Literal["deletion.extended"] = topics.DELETION_EXTENDED
    extension: int = Field(ge=1)  # the how-manieth extension of this request
    deadline_at: AwareDatetime  # the new deadline
    previous_deadline_at: AwareDatetime
    jurisdiction: Jurisdiction
    legal_ref: str  # the law's reference for extensions
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    extended_by: Id


class DeletionDenied(DeletionEvent):
    """An operator refused the request before anything was erased, on a legal basis its law allows; notifier tells
    the person why and where to complain, and the integrators (``data_deletion.denied``)."""

    type: Literal["deletion.denied"] = topics.DELETION_DENIED
    jurisdiction: Jurisdiction
    legal_basis: Annotated[str, Field(min_length=1, max_length=1000)]  # e.g. Art. 17(3)(e): legal claims
    reference: Annotated[str, Field(min_length=1, max_length=200)]  # the controller's case reference
    legal_ref: str  # the law's provision on refusing
    complaint: str | None = None  # where the person may complain
    denied_by: Id


# Who cancelled: the person with their own token, the person through the acknowledgement mail's signed link, or an
# operator at the person's request.
CancelledVia = Literal["token", "link", "operator"]


class DeletionCancelled(DeletionEvent):
    """The person withdrew the request before anything was erased; notifier confirms it to them and tells the
    integrators (``data_deletion.cancelled``)."""

    type: Literal["deletion.cancelled"] = topics.DELETION_CANCELLED
    via: CancelledVia
    cancelled_by: Id
    reason: Annotated[str, Field(max_length=1000)] | None = None


class RetentionRulesChanged(Event):
    type: Literal["retention.rules_changed"] = topics.RETENTION_RULES_CHANGED
    rule_ids: tuple[Id, ...]
    version: int = Field(ge=1)


class LegalHoldPlaced(Event):
    """A hold on datasets, for one subject (``subject_id`` set) or for everyone in them, until released or
    ``ends_at`` (never, if unset)."""

    type: Literal["legal_hold.placed"] = topics.LEGAL_HOLD_PLACED
    hold_id: Id
    datasets: tuple[Id, ...] = Field(min_length=1)
    legal_basis: str
    legal_ref: str
    ends_at: AwareDatetime | None = None


class LegalHoldReleased(Event):
    type: Literal["legal_hold.released"] = topics.LEGAL_HOLD_RELEASED
    hold_id: Id
    datasets: tuple[Id, ...] = Field(min_length=1)


class RequestDeletion(Event):
    """The one command on the bus: an upstream service asks lethe to erase a subject's data.

    Every other message on the bus is an event (what happened); this one asks. The product's own backends publish it
    on ``deletion.intents``, keyed by the subject id, with their service name as the envelope's ``producer``.
    intake alone acts on it, exactly as on ``DELETE /users/{id}/data`` with ``deletion:any``: one request per
    subject while one is open (a second intent starts nothing), then the same deadline, outbox, status and audit.
    An intent intake will not act on goes to ``deletion.intents.dlq`` and is answered on ``deletion.rejected``.
    """

    type: Literal["deletion.intents"] = topics.DELETION_INTENTS
    schema_version: Literal[1] = 1
    request_id: None = None  # intake names the request it starts
    subject_id: SubjectId
    # Why the service asks (e.g. "account closed", "support ticket 4711"); audit keeps it, so no personal data.
    reason: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    # The same key from the same producer never starts a second request (a re-sent intent, a retried publish).
    idempotency_key: IdempotencyKey | None = None
    # The law to answer under (deploy/jurisdictions.yaml); intake's default when unset. An unknown one is rejected.
    jurisdiction: Jurisdiction | None = None


class DeletionRejected(Event):
    """intake refused an intent (it is on ``deletion.intents.dlq`` with the same reason), for its producer to read.

    The intent's event id, producer and subject id are given as far as they could be read from it: an intent that is
    not even JSON has none of them. Keyed by the subject id when it was valid.
    """

    type: Literal["deletion.rejected"] = topics.DELETION_REJECTED
    subject_id: SubjectId | None = None
    intent_event_id: UUID | None = None
    intent_producer: Id | None = None
    cause: RejectionCause
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


AnyEvent = Annotated[
    DeletionRequested
    | DeletionPurged
    | DeletionKeysDestroyed
    | DeletionKeysShredded
    | DeletionKeysRestored
    | DeletionNotified
    | DeletionHeld
    | DeletionKeysHeld
    | DeletionHardDeleted
    | DeletionBackupsExpired
    | DeletionOverdue
    | DeletionProcessorConfirmed
    | DeletionExtended
    | DeletionDenied
    | DeletionCancelled
    | RetentionRulesChanged
    | LegalHoldPlaced
    | LegalHoldReleased
    | RequestDeletion
    | DeletionRejected,
    Field(discriminator="type"),
]
_ANY_EVENT: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

EVENT_TYPES: dict[str, type[Event]] = {
    model.model_fields["type"].default: model
    for model in (
        DeletionRequested,
        DeletionPurged,
        DeletionKeysDestroyed,
        DeletionKeysShredded,
        DeletionKeysRestored,
        DeletionNotified,
        DeletionHeld,
        DeletionKeysHeld,
        DeletionHardDeleted,
        DeletionBackupsExpired,
        DeletionOverdue,
        DeletionProcessorConfirmed,
        DeletionExtended,
        DeletionDenied,
        DeletionCancelled,
        RetentionRulesChanged,
        LegalHoldPlaced,
        LegalHoldReleased,
        RequestDeletion,
        DeletionRejected,
    )
}


class InvalidEventError(ValueError):
    """A message that is not a valid lethe event for its topic; it can never succeed, so it is dead-lettered."""


def decode_any(raw: str | bytes) -> Event:
    """Decode and validate an event of any type (e.g. one read back from an outbox)."""
    try:
        event: Event = _ANY_EVENT.validate_json(raw)
    except ValueError as exc:
        raise InvalidEventError(f"not a valid event: {exc}") from exc
    return event


def decode_event(topic: str, raw: bytes | None) -> Event:
    """Decode and validate one Kafka message value; the event's type must match the topic it came from."""
    if raw is None:
        raise InvalidEventError("empty message value")
    event = decode_any(raw)
    if event.type != topic:
        raise InvalidEventError(f"event type {event.type!r} does not belong on topic {topic!r}")
    return event
