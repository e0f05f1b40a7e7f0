"""Confirming receipt: where a request's law sets a time to acknowledge it (CCPA: 10 business days), or where it
waits out a cooling-off period, the person is mailed that lethe received it, under which law, and by when it will
be answered (and, in a cooling-off period, a signed link to cancel it before erasure starts); the time is
recorded on the request. Otherwise a request from the email channel was acknowledged by its confirmation mail.
The deadline watch warns (``deletion.overdue`` about ``acknowledgement``) about one still unacknowledged when its
time has passed.

Runs as a job over the open requests, so a mail server that is away delays the acknowledgement, never loses it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid

import structlog

from services.intake.model import DeletionRequest
from services.intake.ports import ContactStore, RequestStore, Sealer
from services.intake.verification import CancelLinks, LinkClaims
from shared.contacts import copy_to, open_addresses
from shared.jurisdictions import Jurisdictions

log = structlog.get_logger(__name__)
SendMail = Callable[[EmailMessage], Awaitable[None]]


@dataclass
class Acknowledgements:
    requests: RequestStore
    contacts: ContactStore
    keyvault: Sealer | None
    jurisdictions: Jurisdictions
    send: SendMail
    sender: str
    clock: Callable[[], datetime]
    interval_s: float = 60.0
    links: CancelLinks | None = None  # without a link secret, the mail says how to cancel by API only
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _accepted: set[str] = field(default_factory=set)
    _last_scan: float = float("-inf")

    def accepted(self, record: DeletionRequest) -> None:
        """A request was accepted: if it is to be acknowledged, look at it now rather than at the next round."""
        if wants_acknowledgement(record):
            self._accepted.add(record.request_id)
            self.wake.set()

    async def run(self) -> int:
        """One round: the requests just accepted, and every ``interval_s`` all the open ones (what a failed mail left);
        returns how many were acknowledged."""
        ids, self._accepted = set(self._accepted), set()
        if time.monotonic() - self._last_scan >= self.interval_s:
            self._last_scan = time.monotonic()
            ids |= set(await self.requests.open_request_ids())
        done = 0
        for request_id in sorted(ids):
            record = await self.requests.get(request_id)
            if record is None or not wants_acknowledgement(record) or record.acknowledged_at is not None:
                continue
            try:
                at = await self._acknowledge(record)
            except Exception as exc:  # the mail server or keyvault is away: the next round tries again
                log.warning("acknowledgement.failed", request_id=request_id, error=type(exc).__name__)
                continue
            if at is not None:
                await self._record(request_id, at)
                done += 1
        return done

    async def _acknowledge(self, record: DeletionRequest) -> datetime | None:
        """Mail the person (or count the email channel's confirmation mail); when it was done, or None if it cannot
        be (no address to write to: the deadline watch will say it is late)."""
        if "verification_pending" in record.stages and record.erasure_starts_at is None:
            return record.stages["verification_pending"]  # the confirmation link's mail told them
        contact = await self.contacts.get(record.request_id)
        if contact is None or self.keyvault is None:
            log.warning("acknowledgement.no_contact", request_id=record.request_id)
            return None
        address, copies = await open_addresses(self.keyvault, contact)
        await self.send(copy_to(self.mail(record, address), copies))
        log.info("acknowledgement.sent", request_id=record.request_id, jurisdiction=record.jurisdiction)
        return self.clock()

    def mail(self, record: DeletionRequest, to: str) -> EmailMessage:
        code, law = self.jurisdictions.get(record.jurisdiction)
        received = record.created_at or self.clock()
        lines = [
            "Hello,",
            "",
            f"We received your request to erase your personal data on {received:%Y-%m-%d at %H:%M UTC}.",
            f"Its reference is {record.request_id}.",
            f"We answer it under the {law.name} ({law.references.response}), by {record.deadline_at:%Y-%m-%d}."
            if record.deadline_at
            else f"We answer it under the {law.name}.",
            "",
            *self._cancel_lines(record),
            "You will hear from us again when it is done.",
        ]
        if law.references.acknowledgement:
            lines += ["", f"This confirmation is sent under {law.references.acknowledgement}."]
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = f"We received your request to erase your data ({record.request_id})"
        message["Message-ID"] = make_msgid(idstring=f"{record.request_id}-ack", domain="lethe.local")
        message.set_content("\n".join(lines))
        log.debug("acknowledgement.composed", request_id=record.request_id, jurisdiction=code)
        return message

    def _cancel_lines(self, record: DeletionRequest) -> list[str]:
        """In a cooling-off period: when erasure starts, and how to cancel before then."""
        now, starts = self.clock(), record.erasure_starts_at
        if starts is None or starts <= now:
            return []
        first = f"Erasure starts on {starts:%Y-%m-%d at %H:%M UTC}. Changed your mind? Until then you can cancel it"
        if self.links is None:
            return [first, f"with POST /deletion_requests/{record.request_id}/cancel.", ""]
        url = self.links.url(LinkClaims(record.request_id, record.subject_id), now=now, until=starts)
        return [first, "here:", "", f"  {url}", ""]

    async def _record(self, request_id: str, at: datetime) -> None:
        """Set ``acknowledged_at`` (once), whoever else writes the request meanwhile."""
        for _ in range(5):
            record = await self.requests.get(request_id)
            if record is None or record.acknowledged_at is not None:
                return
            if await self.requests.save(record.model_copy(update={"acknowledged_at": at})) is not None:
                return
        log.warning("acknowledgement.not_recorded", request_id=request_id)


def wants_acknowledgement(record: DeletionRequest) -> bool:
    """Its law sets a time to confirm receipt, or it waits out a cooling-off period (the mail has the cancel link)."""
    return record.closure is None and (record.acknowledge_by is not None or record.erasure_starts_at is not None)
