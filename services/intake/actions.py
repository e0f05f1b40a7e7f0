"""What an operator may do to a request under its law (scope ``requests:admin``): extend its deadline, with a
reason, only as the law allows (how long, how often, and only while the person can still be told in time).

The action is stored with the request's claim for the relay to publish (``deletion.extended``): intake's own status
fold moves the deadline, notifier tells the person and the integrators, audit logs it. Its event id names the
request and the extension's number, so repeating the call publishes nothing new.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from services.intake.ports import RequestStore
from services.intake.processors import UnknownRequestError
from shared.events import DeletionExtended
from shared.jurisdictions import ExtensionRefusedError, Jurisdictions

log = structlog.get_logger(__name__)
_IDS = uuid.UUID("0e4d3c9a-6a8b-4f5e-8f0b-3b1f3c2d7e11")

__all__ = ["ExtensionRefusedError", "NotOpenError", "RequestActions", "UnknownRequestError"]


class NotOpenError(Exception):
    """The request is finished: there is nothing left to act on."""


@dataclass
class RequestActions:
    requests: RequestStore
    jurisdictions: Jurisdictions
    clock: Callable[[], datetime]
    kick_relay: Callable[[], None]

    async def extend(self, request_id: str, *, reason: str, by: str) -> DeletionExtended:
        """Extend the request's deadline by its law's extension; raises :class:`ExtensionRefusedError` (with the
        law's reason) when it allows none, no more, or no longer."""
        record = await self.requests.get(request_id)
        if record is None or record.created_at is None or record.deadline_at is None:
            raise UnknownRequestError(request_id)
        if not record.is_open:
            raise NotOpenError(f"request {request_id} is {record.status}: there is no deadline left to extend")
        code, law = self.jurisdictions.get(record.jurisdiction)
        now = self.clock()
        deadline = law.extend(record.created_at, record.extensions, now, record.deadline_at)
        number = record.extensions + 1
        event = DeletionExtended(
            event_id=uuid.uuid5(_IDS, f"{request_id}:extended:{number}"),
            occurred_at=now,
            request_id=request_id,
            subject_id=record.subject_id,
            producer="intake",
            extension=number,
            deadline_at=deadline,
            previous_deadline_at=record.deadline_at,
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
