"""What may be done to a request under its law: an operator (scope ``requests:admin``) may extend its deadline, with a
reason, only as the law allows (how long, how often, and only while the person can still be told in time), or deny
it on a legal basis; the person (or an operator for them) may cancel it. Denying and cancelling are possible only
while nothing has been erased: in the request's cooling-off period (``INTAKE_COOLING_OFF_S``), whose held
``deletion.requested`` they take back in the same write that stores their own event, so the purger never gets it.

Each action is stored with the request's claim for the relay to publish (``deletion.extended``, ``deletion.denied``,
``deletion.cancelled``): intake's own status fold records it, notifier tells the person and the integrators, audit
logs it. Event ids name the request and the action, so repeating a call publishes nothing new.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import structlog

from services.intake.model import DeletionRequest
from services.intake.ports import RequestStore
from services.intake.processors import UnknownRequestError
from services.intake.verification import CancelLinks, InvalidLinkError, LinkClaims
from shared.events import CancelledVia, DeletionCancelled, DeletionDenied, DeletionExtended
from shared.jurisdictions import ExtensionRefusedError, Jurisdictions

log = structlog.get_logger(__name__)
Closing = TypeVar("Closing", DeletionDenied, DeletionCancelled)
_IDS = uuid.UUID("0e4d3c9a-6a8b-4f5e-8f0b-3b1f3c2d7e11")

__all__ = [
    "ExtensionRefusedError",
    "InvalidLinkError",
    "NotOpenError",
    "RequestActions",
    "TooLateError",
    "UnknownRequestError",
]


class NotOpenError(Exception):
    """The request is finished: there is nothing left to act on."""


class TooLateError(Exception):
    """Erasure has started (or the request ended): it can no longer be denied or cancelled; the message says why."""


@dataclass
class RequestActions:
    requests: RequestStore
    jurisdictions: Jurisdictions
    clock: Callable[[], datetime]
    kick_relay: Callable[[], None]
    links: CancelLinks | None = None  # the acknowledgement mail's cancel links

    async def _stored(self, request_id: str) -> tuple[DeletionRequest, datetime, datetime]:
        """The accepted request, with its receipt time and deadline."""
        record = await self.requests.get(request_id)
        if record is None or record.created_at is None or record.deadline_at is None:
            raise UnknownRequestError(request_id)
        return record, record.created_at, record.deadline_at

    async def extend(self, request_id: str, *, reason: str, by: str) -> DeletionExtended:
        """Extend the request's deadline by its law's extension; raises :class:`ExtensionRefusedError` (with the
        law's reason) when it allows none, no more, or no longer."""
        record, received, due = await self._stored(request_id)
        if not record.is_open:
            raise NotOpenError(f"request {request_id} is {record.status}: there is no deadline left to extend")
        code, law = self.jurisdictions.get(record.jurisdiction)
        now = self.clock()
        deadline = law.extend(received, record.extensions, now, due)
        number = record.extensions + 1
        event = DeletionExtended(
            event_id=uuid.uuid5(_IDS, f"{request_id}:extended:{number}"),
            occurred_at=now,
            request_id=request_id,
            subject_id=record.subject_id,
            producer="intake",
            extension=number,
            deadline_at=deadline,
            previous_deadline_at=due,
            jurisdiction=code,
            legal_ref=law.references.extension or law.references.response,
            reason=reason,
            extended_by=by,
        )
        if not await self.requests.announce(record.subject_id, request_id, event):
            raise NotOpenError(f"request {request_id} closed meanwhile")
        self.kick_relay()
        log.info("request.extended", request_id=request_id, extension=number, deadline_at=deadline.isoformat())
        return event

    async def deny(self, request_id: str, *, legal_basis: str, reference: str, by: str) -> DeletionDenied:
        """Refuse the request on ``legal_basis`` (the person is told it, ``reference`` and where to complain); raises
        :class:`TooLateError` once erasure has started. Denying a denied request returns its denial again."""
        record, _, _ = await self._stored(request_id)
        code, law = self.jurisdictions.get(record.jurisdiction)
        event = DeletionDenied(
            **self._about(record, "denied"),
            jurisdiction=code,
            legal_basis=legal_basis,
            reference=reference,
            legal_ref=law.references.denial or law.references.response,
            complaint=law.references.complaint,
            denied_by=by,
        )
        return await self._close(record, event)

    async def cancel(self, request_id: str, *, by: str, via: CancelledVia, reason: str | None) -> DeletionCancelled:
        """Withdraw the request at the person's wish; raises :class:`TooLateError` once erasure has started.
        Cancelling a cancelled request returns its cancellation again."""
        record, _, _ = await self._stored(request_id)
        event = DeletionCancelled(
            **self._about(record, "cancelled"),
            via=via,
            cancelled_by=by,
            reason=reason,
        )
        return await self._close(record, event)

    def _about(self, record: DeletionRequest, action: str) -> dict[str, Any]:
        """The fields of an event about ``record``; its id names the request and the action (one of each)."""
        return {
            "event_id": uuid.uuid5(_IDS, f"{record.request_id}:{action}"),
            "occurred_at": self.clock(),
            "request_id": record.request_id,
            "subject_id": record.subject_id,
            "producer": "intake",
        }

    def link_claims(self, request_id: str, token: str) -> LinkClaims:
        """Who the acknowledgement mail's cancel link speaks for; raises :class:`InvalidLinkError` for a token that
        is forged, expired (erasure has started) or names another request."""
        if self.links is None:
            raise InvalidLinkError("cancel links are not configured here (no link secret)")
        claims = self.links.read(token)
        if claims.request_id != request_id:
            raise InvalidLinkError("this link is for another request")
        return claims

    async def cancel_by_link(self, request_id: str, token: str, *, reason: str | None) -> DeletionCancelled:
        """:meth:`cancel` through the acknowledgement mail's link (see :meth:`link_claims`)."""
        claims = self.link_claims(request_id, token)
        return await self.cancel(request_id, by=claims.subject_id, via="link", reason=reason)

    async def _close(self, record: DeletionRequest, event: Closing) -> Closing:
        """Take the held deletion.requested back and store ``event`` in its place, or say why it is too late. A
        repeated call (the same action again) answers as the first did."""
        if record.closure is not None:
            if not isinstance(record.closure, type(event)):
                raise TooLateError(too_late(record))
            return record.closure  # the first call's answer, as the request recorded it
        closed_by = await self.requests.withdraw(record.subject_id, record.request_id, event)
        if closed_by is None:
            raise TooLateError(too_late(await self.requests.get(record.request_id) or record))
        if not isinstance(closed_by, type(event)):
            raise TooLateError(f"the request was already {closed_by.type.removeprefix('deletion.')}")
        if closed_by is not event:
            return closed_by  # a repeated call before the first was folded: the first call's answer
        self.kick_relay()
        log.info(
            f"request.{event.type.removeprefix('deletion.')}",
            request_id=record.request_id,
            via=getattr(event, "via", "operator"),
        )
        return event


def too_late(record: DeletionRequest) -> str:
    """Why a request can no longer be denied or cancelled, in words for the person or the operator."""
    if record.closure is not None:
        return f"the request was already {record.status} at {record.closure.occurred_at:%Y-%m-%d %H:%M} UTC"
    if not record.is_open:
        return f"the request is {record.status}: it has ended"
    started = record.erasure_starts_at or record.created_at
    return (
        f"erasure started at {started:%Y-%m-%d %H:%M} UTC (the request went to the purger then) and cannot be stopped"
        if started is not None
        else "erasure has started and cannot be undone"
    )
