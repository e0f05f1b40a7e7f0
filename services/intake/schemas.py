"""intake's HTTP shapes: the models that validate each request (and document it in OpenAPI), and the views
that render its answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from services.intake import model
from services.intake.model import DeletionRequest
from shared.events import DeletionCancelled, DeletionDenied, Id, IdempotencyKey, Jurisdiction, SubjectId
from shared.retention import Hold, Rule

RequestId = Annotated[str, StringConstraints(pattern=r"^req_[0-9a-f]{32}$")]
HoldId = Annotated[str, StringConstraints(pattern=r"^hold_[0-9a-f]{32}$")]
# A link's token is a JWT: three base64url parts.
LinkToken = Annotated[
    str, StringConstraints(min_length=1, max_length=2048, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){2}$")
]
IDEMPOTENCY_KEY: TypeAdapter[str] = TypeAdapter(IdempotencyKey)
Text = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmailRequestBody(_Body):
    email: EmailStr = Field(max_length=254)


class VerifyBody(_Body):
    token: Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class RulesPatch(_Body):
    rules: tuple[Rule, ...] = Field(default=(), max_length=100, description="rules to add or replace, by rule_id")
    remove: tuple[Annotated[str, StringConstraints(max_length=63)], ...] = Field(default=(), max_length=100)


class HoldBody(_Body):
    subject_id: SubjectId | None = Field(description="whose data is held; null holds the datasets for everyone")
    datasets: tuple[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")], ...] = Field(
        min_length=1, max_length=100
    )
    reason: Text
    legal_basis: Text
    legal_ref: Text
    ends_at: AwareDatetime | None = Field(
        default=None, description="when the hold ends by itself (the purger then erases what it kept); never if null"
    )


class DeleteQuery(_Body):
    jurisdiction: Jurisdiction | None = Field(
        default=None, description="the law to answer under (deploy/jurisdictions.yaml); intake's default if unset"
    )


class AgentBody(_Body):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)] = Field(
        description="the authorised agent's name (a person or an organisation)"
    )
    email: EmailStr = Field(max_length=254, description="where the agent gets every notice the person gets")
    proof_ref: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)] = Field(
        description="your reference of the proof of the agent's authority you checked (signed permission, power "
        "of attorney)"
    )


class DeleteBody(_Body):
    """Optional: a request made for someone else."""

    agent: AgentBody | None = Field(default=None, description="who asks on the person's behalf")


class ProcessorCallback(_Body):
    """A processor's signed answer to the erasure request lethe sent it (Standard Webhooks headers, its secret)."""

    request_id: RequestId
    dataset: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    outcome: Literal["erased", "refused"]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = Field(
        default=None, description="why it refused (required with refused)"
    )

    @model_validator(mode="after")
    def _refusal_says_why(self) -> ProcessorCallback:
        if self.outcome == "refused" and self.reason is None:
            raise ValueError("a refusal needs its reason")
        return self


class OperatorAnswer(_Body):
    """An operator's answer for a processor (it confirmed by mail, by phone, in its portal...): with a note."""

    outcome: Literal["erased", "refused"]
    note: Annotated[str, StringConstraints(min_length=1, max_length=1000, strip_whitespace=True)]


class ExtendBody(_Body):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000, strip_whitespace=True)] = Field(
        description="why more time is needed: the person is told"
    )


class DenyBody(_Body):
    legal_basis: Annotated[str, StringConstraints(min_length=1, max_length=1000, strip_whitespace=True)] = Field(
        description="why the request is refused, e.g. 'Art. 17(3)(e) GDPR: the defence of a legal claim': the "
        "person is told"
    )
    reference: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)] = Field(
        description="your case reference, which the person can quote to you or to the supervisory authority"
    )


class CancelBody(_Body):
    token: LinkToken | None = Field(
        default=None, description="the acknowledgement mail's cancel link token (instead of a bearer token)"
    )
    reason: Annotated[str, StringConstraints(max_length=1000, strip_whitespace=True)] | None = Field(
        default=None, description="why, if the person says"
    )


class ProcessorPath(BaseModel):
    request_id: RequestId
    dataset: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class RequestsQuery(_Body):
    status: model.Status | None = None
    subject_id: SubjectId | None = None
    since: AwareDatetime | None = Field(default=None, description="received at or after")
    until: AwareDatetime | None = Field(default=None, description="received before")
    limit: int = Field(default=50, ge=1, description="at most INTAKE_MAX_PAGE_SIZE (100 by default)")
    offset: int = Field(default=0, ge=0, le=1_000_000)


class InForceHoldsQuery(_Body):
    """Which unreleased holds: a subject's (its own and everyone's), those ending in a window, or all of them."""

    subject_id: SubjectId | None = None
    ending_after: AwareDatetime | None = Field(default=None, description="ending after (with ending_until)")
    ending_until: AwareDatetime | None = Field(default=None, description="ending at or before")


class InForceQuery(_Body):
    """Whose retention state: the rule set and this subject's unreleased holds."""

    subject_id: SubjectId


class HoldsQuery(_Body):
    subject_id: SubjectId | None = None
    active: bool = True
    limit: int = Field(default=50, ge=1, description="at most INTAKE_MAX_PAGE_SIZE (100 by default)")
    after: HoldId | None = None


def request_view(r: DeletionRequest, public_url: str) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "request_id": r.request_id,
        "subject_id": r.subject_id,
        "status": r.status,
        "result": r.result,
        "channel": r.channel,
        "status_url": f"{public_url.rstrip('/')}/deletion_requests/{r.request_id}",
        "created_at": iso(r.created_at),
        "jurisdiction": r.jurisdiction,
        "deadline_at": iso(r.deadline_at),
        "acknowledge_by": iso(r.acknowledge_by),
        "acknowledged_at": iso(r.acknowledged_at),
        "extensions": r.extensions,
        "extension_reason": r.extension_reason,
        "backups_purged_by": iso(r.backups_purged_by),
        # In the order a request passes them (events from different topics may be recorded in another order).
        "stages": {name: r.stages[name].isoformat() for name in sorted(r.stages, key=model.stage_rank)},
        "outcomes": [o.model_dump(mode="json") for _, o in sorted(r.outcomes.items())],
        # Processor datasets whose confirmation the request waits for (status awaiting_confirmation).
        "awaiting_confirmation": r.awaiting,
        "keys": {
            "destroyed": list(r.keys_destroyed),
            "retained": list(r.keys_retained),
            "left": r.keys_left,
            "restored_for_hold": list(r.keys_restored),
            "unrestorable": list(r.keys_unrestorable),
        },
        # Datasets a hold placed after the purge keeps now: their tagged records wait out the hold.
        "held": {d: h.model_dump(mode="json") for d, h in sorted(r.held.items())},
        "hard_deleted": r.hard_deleted,
        "notified": None
        if r.webhook_endpoints is None
        else {
            "webhook_endpoints": r.webhook_endpoints,
            "email_sent": r.email_sent,
            "mail": r.mail,
            "smtp_code": r.smtp_code,
        },
        "overdue": {
            "warned_at": iso(r.overdue_warned_at),
            "past_deadline_at": iso(r.past_deadline_at),
            "acknowledgement_late_at": iso(r.acknowledgement_late_at),
        },
        "superseded_by": r.superseded_by,
        # Asked for by an authorised agent: who, and the reference of their proof (their address is sealed).
        "agent": None if r.agent is None else r.agent.model_dump(mode="json"),
        # In a cooling-off period: when the purger gets it (until then it may be denied or cancelled).
        "erasure_starts_at": iso(r.erasure_starts_at),
        # Denied or cancelled before anything was erased: by whom, why, and (a denial) where to complain.
        "closure": None if r.closure is None else closure_view(r.closure),
    }


def closure_view(event: DeletionDenied | DeletionCancelled) -> dict[str, Any]:
    """A denial or cancellation as the status shows it: what, when, by whom, and why."""
    common = {"status": event.type.removeprefix("deletion."), "at": event.occurred_at.isoformat()}
    if isinstance(event, DeletionDenied):
        return common | {
            "by": event.denied_by,
            "via": "operator",
            **event.model_dump(mode="json", include={"legal_basis", "reference", "legal_ref", "complaint"}),
        }
    return common | {"by": event.cancelled_by, "via": event.via, "reason": event.reason}


def rule_set_view(version: int, rules: tuple[Rule, ...], changed_at: datetime | None, by: str | None) -> dict[str, Any]:
    return {
        "version": version,
        "changed_at": changed_at.isoformat() if changed_at else None,
        "changed_by": by,
        "rules": [r.model_dump(mode="json") for r in rules],
    }


def hold_view(h: Hold, now: datetime) -> dict[str, Any]:
    return {**h.model_dump(mode="json"), "active": h.active(now)}


class SubjectPath(BaseModel):
    id: SubjectId


class RequestPath(BaseModel):
    request_id: RequestId


class ContactPath(BaseModel):
    request_id: Id  # any request id an event may carry (intake's own, and those of its intents)


class HoldPath(BaseModel):
    hold_id: HoldId


class VerifyQuery(BaseModel):
    token: LinkToken
