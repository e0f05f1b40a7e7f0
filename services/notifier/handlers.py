"""What notifier decides: which webhooks to send, when to try again, what the person is told.

Webhooks follow Standard Webhooks. Each (event, endpoint) pair has one stable ``webhook-id`` for every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Literal

import structlog

from services.notifier.model import Attempt, AttemptResult, Delivery, DeliveryStatus, Endpoint, Notice
from services.notifier.ports import ContactKeys, ContactStore, NoticeStore, SendMail, SendWebhook, WebhookStore
from services.notifier.signing import sign
from shared import topics
from shared.consumer import Handler
from shared.contacts import CONTACT_DATASET, copy_to, open_addresses
from shared.events import (
    DeletionCancelled,
    DeletionDenied,
    DeletionExtended,
    DeletionKeysDestroyed,
    DeletionNotified,
    DeletionOverdue,
    Event,
    MailOutcome,
)
from shared.keyvault_client import KeyUnavailableError
from shared.scrub import scrub
from shared.smtp import MailDeferredError, MailError, MailRefusedError

log = structlog.get_logger(__name__)

PRODUCER = "notifier"
COMPLETED = "data_deletion.completed"
PARTIAL = "data_deletion.partial"
OVERDUE = "data_deletion.overdue"
EXTENDED = "data_deletion.extended"
DENIED = "data_deletion.denied"
CANCELLED = "data_deletion.cancelled"
WEBHOOK_TYPES = (COMPLETED, PARTIAL, OVERDUE, EXTENDED, DENIED, CANCELLED)
# What a processor receives (not an integrators' subscription): erase this subject's data, then answer.
ERASURE_REQUESTED = "data_deletion.erasure_requested"
_IDS = uuid.UUID("8d1f0c52-52a4-4f3e-9b7e-2a0c6e5d4b3a")


def message_id(source_event_id: uuid.UUID, endpoint_id: str) -> str:
    """The ``webhook-id``: the same for every attempt of one event to one endpoint, whoever sends it."""
    return "msg_" + uuid.uuid5(_IDS, f"{source_event_id}|{endpoint_id}").hex


Announced = DeletionKeysDestroyed | DeletionOverdue | DeletionExtended | DeletionDenied | DeletionCancelled
# A request that ended before anything was erased.
Closed = DeletionDenied | DeletionCancelled


def webhook_type(event: Announced) -> str:
    if isinstance(event, DeletionOverdue):
        return OVERDUE
    if isinstance(event, DeletionExtended):
        return EXTENDED
    if isinstance(event, DeletionDenied):
        return DENIED
    if isinstance(event, DeletionCancelled):
        return CANCELLED
    return PARTIAL if event.result == "partial" else COMPLETED


def webhook_payload(event: Announced) -> str:
    """The body integrators receive: ids, outcomes, legal references and timestamps; no personal data."""
    data: dict[str, object] = {"request_id": event.request_id, "subject_id": event.subject_id}
    if isinstance(event, DeletionExtended):
        data |= {
            "deadline_at": event.deadline_at.isoformat(),
            "previous_deadline_at": event.previous_deadline_at.isoformat(),
            "jurisdiction": event.jurisdiction,
            "legal_ref": event.legal_ref,
            "reason": event.reason,
            "extension": event.extension,
        }
    elif isinstance(event, DeletionDenied):
        data |= {
            "jurisdiction": event.jurisdiction,
            "legal_basis": event.legal_basis,
            "reference": event.reference,
            "legal_ref": event.legal_ref,
            "denied_at": event.occurred_at.isoformat(),
        }
    elif isinstance(event, DeletionCancelled):
        data |= {"via": event.via, "cancelled_at": event.occurred_at.isoformat()}
    elif isinstance(event, DeletionOverdue):
        data |= {
            "deadline_at": event.deadline_at.isoformat(),
            "status": event.status,
            "past_deadline": event.past_deadline,
            "about": event.about,
        }
    else:
        data |= {
            "result": event.result,
            "datasets": [o.model_dump(mode="json", exclude_none=True) for o in event.outcomes],
            "keys_destroyed": len(event.destroyed),
            "keys_retained": [k.model_dump(mode="json") for k in event.retained],
            "keys_grace_until": event.grace_until.isoformat() if event.grace_until else None,
            "completed_at": event.occurred_at.isoformat(),
        }
    body = {"type": webhook_type(event), "timestamp": event.occurred_at.isoformat(), "data": data}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def next_attempt_at(
    *,
    attempts_made: int,
    schedule: Sequence[float],
    now: datetime,
    retry_after_s: float | None = None,
    rand: Callable[[float, float], float] = random.uniform,
) -> datetime | None:
    """When to try next (None: the schedule is spent). Jitter of ±10%; a Retry-After is honoured if longer.

    A Retry-After is honoured up to the schedule's longest step (10 h by default), not beyond: a receiver may slow
    its deliveries down, but not park one for years (``1e12``) or push the date past the calendar, and the
    schedule's length still bounds the whole delivery. Non-finite or negative values are ignored.
    """
    if attempts_made >= len(schedule):
        return None
    delay = schedule[attempts_made]
    delay = delay * rand(0.9, 1.1) if delay > 0 else 0.0
    if retry_after_s is not None and math.isfinite(retry_after_s) and retry_after_s > 0:
        delay = max(delay, min(retry_after_s, max(schedule)))
    return now + timedelta(seconds=delay)


@dataclass(frozen=True)
class AttemptDecision:
    status: DeliveryStatus
    next_attempt_at: datetime | None
    disable_endpoint: bool = False


def decide_after_attempt(
    result: AttemptResult, *, attempts_made: int, schedule: Sequence[float], now: datetime
) -> AttemptDecision:
    """Only 2xx is success; 410 disables the endpoint; anything else is retried until the schedule is spent."""
    if result.ok:
        return AttemptDecision("delivered", None)
    if result.status_code == 410:
        return AttemptDecision("dead", None, disable_endpoint=True)
    at = next_attempt_at(attempts_made=attempts_made, schedule=schedule, now=now, retry_after_s=result.retry_after_s)
    return AttemptDecision("pending", at) if at else AttemptDecision("dead", None)


def compose_mail(event: DeletionKeysDestroyed, *, to: str, sender: str) -> EmailMessage:
    """What the person is told: what was erased, what was kept and why, and when."""
    erased = [o for o in event.outcomes if o.outcome in ("erased", "tagged")]
    kept = [o for o in event.outcomes if o.outcome == "retained"]
    exempt = [o for o in event.outcomes if o.outcome == "exempt"]
    refused = [o for o in event.outcomes if o.outcome == "refused"]
    lines = [
        "Hello,",
        "",
        f"We have processed your request to erase your personal data (reference {event.request_id}).",
        f"It was completed on {event.occurred_at:%Y-%m-%d at %H:%M UTC}.",
        "",
    ]
    if erased:
        lines += (
            ["Erased:"]
            + [
                f"  - {o.dataset}"
                + (f" (removed from our systems by {o.purge_after:%Y-%m-%d})" if o.purge_after else "")
                for o in erased
            ]
            + [""]
        )
    if event.destroyed:
        lines += [
            f"The encryption keys of {len(event.destroyed)} dataset(s) were destroyed, so any copy of that "
            "data, including in backups, can no longer be read.",
            "",
        ]
    if kept:
        lines += (
            ["Kept, because the law requires us to:"]
            + [f"  - {o.dataset}: {o.legal_basis} ({o.legal_ref})" for o in kept]
            + ["We will erase it as soon as that obligation ends.", ""]
        )
    if refused:
        lines += (
            ["Not erased by the company we passed your data to, which refused:"]
            + [f"  - {o.dataset}: {o.error or 'no reason given'}" for o in refused]
            + ["You may contact it, or your data protection authority, about this.", ""]
        )
    if exempt:
        lines += ["Not affected: " + ", ".join(o.dataset for o in exempt) + " (anonymised statistics).", ""]
    lines += ["This is the last message we send to this address; we have now deleted it too."]
    text = "\n".join(lines)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = (
        "Your data has been erased"
        if not kept and not refused
        else "Your data has been erased, except what the law requires us to keep"
        if not refused
        else "Your data has been erased, except where noted"
    )
    # A stable id per request: a mail client can spot a repeat if a crash made us send it twice.
    message["Message-ID"] = make_msgid(idstring=event.request_id.replace("@", "-"), domain="lethe.local")
    message.set_content(text)
    html = "".join(f"<p>{_escape(line)}</p>" if line else "" for line in lines)
    message.add_alternative(f"<html><body>{html}</body></html>", subtype="html")
    return message


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# A 4xx refusal (greylisting, a full mailbox) is tried again after 5 min, then at doubling intervals up to an hour,
# until MAIL_GIVE_UP_AFTER has passed since the first refusal (RFC 5321 §4.5.4.1 suggests 4-5 days).
FIRST_MAIL_RETRY = timedelta(minutes=5)
LONGEST_MAIL_RETRY = timedelta(hours=1)
MAIL_GIVE_UP_AFTER = timedelta(days=4)


@dataclass
class Mail:
    """What the person's final notice needs."""

    notices: NoticeStore
    contacts: ContactStore
    keyvault: ContactKeys | None
    send: SendMail
    sender: str
    clock: Callable[[], datetime]
    daily_cap: int
    give_up_after: timedelta = MAIL_GIVE_UP_AFTER
    lease: timedelta = field(default=timedelta(minutes=5))


@dataclass(frozen=True)
class MailResult:
    outcome: MailOutcome
    smtp_code: int | None = None  # the server's reply code, when it refused (for good, or for now)
    error: str | None = None  # the server's reply, scrubbed of addresses


@dataclass
class Notifier:
    """notifier's dependencies."""

    store: WebhookStore
    contacts: ContactStore
    keyvault: ContactKeys | None
    send_mail: SendMail
    sender: str
    clock: Callable[[], datetime]
    schedule: Sequence[float]
    mail_daily_cap: int
    lease: timedelta = field(default=timedelta(seconds=60))
    mail_give_up_after: timedelta = MAIL_GIVE_UP_AFTER
    # The data map's processors, by dataset: each an endpoint of its own (its URL and secret from the data map).
    processors: Mapping[str, Endpoint] = field(default_factory=dict)
    confirm_url: str = ""  # where processors send their signed answers (intake's /processor_confirmations)

    @property
    def mail(self) -> Mail:
        return Mail(
            notices=self.store,
            contacts=self.contacts,
            keyvault=self.keyvault,
            send=self.send_mail,
            sender=self.sender,
            clock=self.clock,
            daily_cap=self.mail_daily_cap,
            give_up_after=self.mail_give_up_after,
        )


async def schedule_webhooks(event: Announced, n: Notifier) -> int:
    """Record one delivery per subscribed endpoint (idempotent); the delivery worker sends them."""
    kind = webhook_type(event)
    payload = webhook_payload(event)
    now = n.clock()
    endpoints, after = [], None
    while page := await n.store.endpoints(after=after, limit=100):
        endpoints += [e for e in page if e.status == "active" and kind in e.event_types]
        after = page[-1].endpoint_id
    for endpoint in endpoints:
        await n.store.schedule(
            Delivery(
                message_id(event.event_id, endpoint.endpoint_id),
                endpoint.endpoint_id,
                kind,
                payload,
                event.request_id,
                created_at=now,
                next_attempt_at=now,
            )
        )
    return len(endpoints)


async def mail_person(event: DeletionKeysDestroyed, m: Mail, *, webhook_endpoints: int = 0) -> MailResult:
    """Send the final notice once, then have keyvault shred the address's key.

    Every way it can end is recorded: ``sent``; ``failed`` (refused for good: the key is shredded all the same,
    the person cannot be told, and the request must still end); ``deferred`` (the daily cap, or a 4xx reply: the
    address stays sealed and the deferred-mail job sends it later); or why there was nothing to send. A server that
    cannot be reached raises MailServerUnavailableError, a ConnectionError: the consumer waits it out, as it does
    for MongoDB, and nothing is recorded. A refused session (AUTH, HELO) raises MailSetupError: retried a few times,
    then dead-lettered for an operator to replay once the setup is fixed. Neither names the address.
    """
    notice = await m.notices.notice(event.request_id)
    if notice is not None and (replayed := await _replay(event, m, notice)) is not None:
        return replayed
    result = await _try_mail(event, m)
    now = m.clock()
    saved = Notice(
        event.request_id,
        result.outcome,
        now,
        smtp_code=result.smtp_code,
        error=result.error,
        webhook_endpoints=webhook_endpoints,
    )
    if result.outcome == "deferred":
        saved = replace(
            saved,
            deferred_at=now,
            deferred_code=result.smtp_code,
            deferred_event=event.model_dump_json(),
            tries=1 if result.smtp_code else 0,
            next_try_at=now + FIRST_MAIL_RETRY if result.smtp_code else now,
        )
    await m.notices.save_notice(saved)
    if result.outcome == "failed":
        await _shred_contact(event, m)
    _log_mail(event.request_id, result)
    return result


async def _replay(event: DeletionKeysDestroyed, m: Mail, notice: Notice) -> MailResult | None:
    """What an event consumed again reports: the first outcome, so its DeletionNotified is the same again."""
    if notice.deferred_at is not None:
        return MailResult("deferred", notice.deferred_code)  # the deferred-mail job owns it since
    if notice.mail_status == "sent":
        return MailResult("sent")
    if notice.mail_status == "failed":
        await _shred_contact(event, m)  # a crash may have come between recording the failure and the shredding
        return MailResult("failed", notice.smtp_code, notice.error)
    return None  # nothing was sent (no contact, no keyvault): look again


async def _try_mail(event: DeletionKeysDestroyed, m: Mail) -> MailResult:
    contact = await m.contacts.contact(event.request_id)
    if contact is None:
        return MailResult("no_contact")
    if m.keyvault is None:
        return MailResult("no_keyvault")
    if await m.notices.mailed(event.request_id):
        # Mailed before a crash that came before the key was destroyed: finish that, never mail twice.
        await m.keyvault.destroy_key(event.subject_id, CONTACT_DATASET, request_id=event.request_id)
        return MailResult("sent")
    try:
        address, copies = await open_addresses(m.keyvault, contact)
    except KeyUnavailableError:
        return MailResult("contact_key_gone")
    # count_mail reserves this mail's place and returns the day's total including it: with ``>``, exactly
    # daily_cap pass. A mail that does not go out gives its place back, or a server down for an hour (each retry
    # reserving a place) would use up the day without a mail sent.
    day = m.clock().strftime("%Y-%m-%d")
    if await m.notices.count_mail(day) > m.daily_cap:
        await m.notices.uncount_mail(day)
        log.warning("mail.daily_cap_reached", cap=m.daily_cap, request_id=event.request_id)
        return MailResult("deferred")
    accepted = False
    try:
        await m.send(copy_to(compose_mail(event, to=address, sender=m.sender), copies))
        accepted = True
    except MailRefusedError as exc:
        return MailResult("failed", exc.code, scrub(str(exc)))
    except MailDeferredError as exc:
        return MailResult("deferred", exc.code, scrub(str(exc)))
    finally:
        if not accepted:
            await m.notices.uncount_mail(day)
    await m.notices.mark_mailed(event.request_id, m.clock())
    await m.keyvault.destroy_key(event.subject_id, CONTACT_DATASET, request_id=event.request_id)
    return MailResult("sent")


async def _shred_contact(event: DeletionKeysDestroyed | Closed, m: Mail) -> None:
    """The address is no longer needed once the notice has ended, however it ended."""
    if m.keyvault is None:
        return
    with contextlib.suppress(KeyUnavailableError):  # no such key: nothing left to shred
        await m.keyvault.destroy_key(event.subject_id, CONTACT_DATASET, request_id=event.request_id)


def _log_mail(request_id: str, result: MailResult) -> None:
    level = log.warning if result.outcome in ("failed", "deferred") else log.info
    level("mail.person", request_id=request_id, status=result.outcome, smtp_code=result.smtp_code, error=result.error)


def notified(
    source: DeletionKeysDestroyed, *, webhook_endpoints: int, mail: MailResult, follow_up: bool = False
) -> DeletionNotified:
    """The request's DeletionNotified; a deferred mail's ending gets a second one (``follow_up``), with its own id."""
    key = f"{source.event_id}|mail" if follow_up else str(source.event_id)
    return DeletionNotified(
        event_id=uuid.uuid5(_IDS, key),
        request_id=source.request_id,
        subject_id=source.subject_id,
        producer=PRODUCER,
        result=source.result,
        webhook_endpoints=webhook_endpoints,
        email_sent=mail.outcome == "sent",
        mail=mail.outcome,
        smtp_code=mail.smtp_code,
    )


async def ask_processors(event: DeletionKeysDestroyed, n: Notifier) -> int:
    """Send each processor whose dataset awaits its confirmation a signed erasure request (once per request: the
    delivery's id is the request's and the processor's, so a follow-up round does not ask again)."""
    asked = 0
    now = n.clock()
    for outcome in event.outcomes:
        endpoint = n.processors.get(outcome.dataset)
        if outcome.outcome != "pending_confirmation" or endpoint is None:
            continue
        body = {
            "type": ERASURE_REQUESTED,
            "timestamp": event.occurred_at.isoformat(),
            "data": {
                "request_id": event.request_id,
                "subject_id": event.subject_id,
                "dataset": outcome.dataset,
                "confirm_url": n.confirm_url,
                "answer": {"request_id": event.request_id, "dataset": outcome.dataset, "outcome": "erased|refused"},
            },
        }
        delivery = Delivery(
            message_id(uuid.uuid5(_IDS, f"{event.request_id}|erasure"), endpoint.endpoint_id),
            endpoint.endpoint_id,
            ERASURE_REQUESTED,
            json.dumps(body, sort_keys=True, separators=(",", ":")),
            event.request_id,
            created_at=now,
            next_attempt_at=now,
        )
        if await n.store.schedule(delivery):
            log.info("processor.asked", request_id=event.request_id, dataset=outcome.dataset)
        asked += 1
    return asked


async def on_keys_destroyed(event: DeletionKeysDestroyed, n: Notifier) -> Sequence[Event]:
    await ask_processors(event, n)
    if event.result == "pending":
        return []  # the integrators and the person hear of it once every processor answered
    endpoints = await schedule_webhooks(event, n)
    mail = await mail_person(event, n.mail, webhook_endpoints=endpoints)
    return [notified(event, webhook_endpoints=endpoints, mail=mail)]


async def on_extended(event: DeletionExtended, n: Notifier) -> Sequence[Event]:
    """Tell the integrators (``data_deletion.extended``) and the person, once, why the request takes longer."""
    await schedule_webhooks(event, n)
    await mail_once(event, n.mail, f"extension-{event.extension}", extension_mail)
    return ()


async def on_closed(event: Closed, n: Notifier) -> Sequence[Event]:
    """A request denied or cancelled before anything was erased: tell the integrators and the person (why, and for
    a denial where to complain), once; then the address is no longer needed, and its key is shredded."""
    await schedule_webhooks(event, n)
    compose = denial_mail if isinstance(event, DeletionDenied) else cancellation_mail
    await mail_once(event, n.mail, event.type.removeprefix("deletion."), compose)
    await _shred_contact(event, n.mail)
    return ()


async def mail_once(
    event: DeletionExtended | Closed,
    m: Mail,
    what: str,
    compose: Callable[..., EmailMessage],
) -> bool:
    """Mail the person about ``event`` once (``what`` names the notice among the request's); False if there is no
    address to write to (or it is already shredded)."""
    mark = f"{event.request_id}#{what}"
    if await m.notices.mailed(mark):
        return True
    contact = await m.contacts.contact(event.request_id)
    if contact is None or m.keyvault is None:
        log.warning("mail.no_contact", request_id=event.request_id, notice=what)
        return False
    try:
        address, copies = await open_addresses(m.keyvault, contact)
    except KeyUnavailableError:
        log.warning("mail.contact_key_gone", request_id=event.request_id, notice=what)
        return False
    await m.send(copy_to(compose(event, to=address, sender=m.sender), copies))
    await m.notices.mark_mailed(mark, m.clock())
    log.info("mail.sent", request_id=event.request_id, notice=what)
    return True


def denial_mail(event: DeletionDenied, *, to: str, sender: str) -> EmailMessage:
    """What the person is told: we will not erase, why, the reference, and where they may complain (Art. 12(4))."""
    lines = [
        "Hello,",
        "",
        f"We have decided not to act on your request to erase your personal data (reference {event.request_id}).",
        "Nothing has been erased.",
        "",
        f"Why: {event.legal_basis}",
        f"Our reference for this decision: {event.reference}",
        f"The law that allows it: {event.legal_ref}.",
        "",
    ]
    if event.complaint:
        lines += [f"If you disagree, you have {event.complaint}, and may seek a judicial remedy.", ""]
    return _person_mail(
        to, sender, f"Your request to erase your data was refused ({event.request_id})", lines, event, "denied"
    )


def cancellation_mail(event: DeletionCancelled, *, to: str, sender: str) -> EmailMessage:
    """What the person is told: the request is cancelled, nothing was erased, and they may ask again."""
    lines = [
        "Hello,",
        "",
        f"Your request to erase your personal data (reference {event.request_id}) is cancelled, as asked on "
        f"{event.occurred_at:%Y-%m-%d at %H:%M UTC}.",
        "Nothing has been erased. You can ask again at any time.",
    ]
    return _person_mail(to, sender, f"Your request is cancelled ({event.request_id})", lines, event, "cancelled")


def _person_mail(to: str, sender: str, subject: str, lines: list[str], event: Event, tag: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    rid = (event.request_id or "").replace("@", "-")
    message["Message-ID"] = make_msgid(idstring=f"{rid}-{tag}", domain="lethe.local")
    message.set_content("\n".join(lines))
    return message


def extension_mail(event: DeletionExtended, *, to: str, sender: str) -> EmailMessage:
    """What the person is told: we need more time, until when, why, and under which provision."""
    lines = [
        "Hello,",
        "",
        f"We need more time to complete your request to erase your personal data (reference {event.request_id}).",
        f"We will answer it by {event.deadline_at:%Y-%m-%d} instead of {event.previous_deadline_at:%Y-%m-%d}.",
        "",
        f"Why: {event.reason}",
        "",
        f"The law allows this extension ({event.legal_ref}).",
    ]
    subject = f"We need more time for your request ({event.request_id})"
    return _person_mail(to, sender, subject, lines, event, f"ext{event.extension}")


async def send_deferred(m: Mail, publish: Callable[[Event], Awaitable[None]], *, limit: int = 20) -> int:
    """The deferred-mail job's round: oldest first, send what the day's count allows, shred the contact key after
    each, and publish the request's second DeletionNotified. Returns how many deferred notices ended."""
    capped = await m.notices.mail_count(m.clock().strftime("%Y-%m-%d")) >= m.daily_cap
    # At the cap, only the follow-ups still owed are worth claiming: the mails would only be put back.
    claimed = await m.notices.claim_deferred(m.clock(), lease=m.lease, limit=limit, mails=not capped)
    ended = 0
    for index, notice in enumerate(claimed):
        step = await _retry_deferred(notice, m, publish)
        if step == "stop":
            for untried in claimed[index + 1 :]:
                await m.notices.save_notice(untried)  # ends the claim, unchanged: the next round looks again
            break
        ended += step == "ended"
    return ended


async def _retry_deferred(
    notice: Notice, m: Mail, publish: Callable[[Event], Awaitable[None]]
) -> Literal["ended", "waiting", "stop"]:
    """One deferred notice: try it again, or publish the follow-up it owes. ``stop``: try no more this round."""
    assert notice.deferred_event is not None and notice.deferred_at is not None  # only deferred notices get here
    event = DeletionKeysDestroyed.model_validate_json(notice.deferred_event)
    if notice.mail_status == "deferred":
        try:
            result = await _try_mail(event, m)
        except MailError as exc:
            # The server is down or refuses our session: the mail waits, unchanged, for a later round.
            await m.notices.save_notice(notice)
            log.warning("mail.deferred_not_sent", request_id=notice.request_id, error=scrub(str(exc)))
            return "stop"
        now = m.clock()
        if result.outcome == "deferred" and result.smtp_code is None:
            await m.notices.save_notice(notice)  # the day's cap again (another instance sent meanwhile)
            return "stop"
        if result.outcome == "deferred":
            if now - notice.deferred_at < m.give_up_after:
                tries = notice.tries + 1
                delay = min(FIRST_MAIL_RETRY * 2 ** min(tries - 1, 8), LONGEST_MAIL_RETRY)
                again = replace(notice, at=now, tries=tries, smtp_code=result.smtp_code, error=result.error)
                await m.notices.save_notice(replace(again, next_try_at=now + delay))
                _log_mail(notice.request_id, result)
                return "waiting"
            result = replace(result, outcome="failed")  # refused for now, for days: it will not pass
        notice = replace(
            notice,
            mail_status=result.outcome,
            at=now,
            smtp_code=result.smtp_code,
            error=result.error,
            next_try_at=None,
            follow_up="pending",
        )
        await m.notices.save_notice(notice)
        _log_mail(notice.request_id, result)
    if notice.mail_status == "failed":
        await _shred_contact(event, m)
    mail = MailResult(notice.mail_status, notice.smtp_code, notice.error)
    await publish(notified(event, webhook_endpoints=notice.webhook_endpoints, mail=mail, follow_up=True))
    await m.notices.save_notice(replace(notice, follow_up="published"))
    return "ended"


async def deliver_due(n: Notifier, send: SendWebhook, *, concurrency: int = 16) -> int:
    """Make one attempt for every delivery that is due, ``concurrency`` at a time; returns how many were made."""
    due = await n.store.claim_due(n.clock(), lease=n.lease)
    processors = {e.endpoint_id: e for e in n.processors.values()}
    endpoints = {e: processors.get(e) or await n.store.endpoint(e) for e in {d.endpoint_id for d in due}}
    gate = asyncio.Semaphore(concurrency)

    async def attempt(delivery: Delivery) -> bool:
        async with gate:
            return await _attempt(n, send, delivery, endpoints[delivery.endpoint_id])

    return sum(await asyncio.gather(*(attempt(d) for d in due)))


async def _attempt(n: Notifier, send: SendWebhook, delivery: Delivery, endpoint: Endpoint | None) -> bool:
    now = n.clock()
    if endpoint is None or endpoint.status != "active":
        reason = "the endpoint was deleted" if endpoint is None else f"the endpoint is {endpoint.status}"
        await n.store.record_attempt(
            delivery.message_id, Attempt(now, None, reason, 0), status="dead", next_attempt_at=None
        )
        return False
    headers = sign(
        message_id=delivery.message_id, timestamp=now, body=delivery.payload, secrets=endpoint.live_secrets(now)
    )
    result = await send(endpoint.url, delivery.payload, headers)
    attempts_made = len(delivery.attempts) + 1
    decision = decide_after_attempt(result, attempts_made=attempts_made, schedule=n.schedule, now=n.clock())
    await n.store.record_attempt(
        delivery.message_id,
        Attempt(now, result.status_code, result.error, result.duration_ms),
        status=decision.status,
        next_attempt_at=decision.next_attempt_at,
    )
    bound = log.bind(message_id=delivery.message_id, endpoint_id=endpoint.endpoint_id, attempt=attempts_made)
    if decision.disable_endpoint:
        await n.store.disable_endpoint(endpoint.endpoint_id, "answered 410 Gone")
        bound.warning("webhook.endpoint_disabled")
    elif decision.status == "dead":
        bound.error("webhook.dead_lettered", last_error=result.error)
        await _alert_owner(n, endpoint.owner_email, endpoint.endpoint_id, delivery, result)
    else:
        bound.info(
            "webhook.attempted",
            status=decision.status,
            code=result.status_code,
            next_attempt_at=decision.next_attempt_at,
        )
    return True


async def _alert_owner(
    n: Notifier, owner: str | None, endpoint_id: str, delivery: Delivery, result: AttemptResult
) -> None:
    if not owner:
        return
    message = EmailMessage()
    message["From"] = n.sender
    message["To"] = owner
    message["Subject"] = f"lethe: webhook delivery {delivery.message_id} to {endpoint_id} failed for good"
    message.set_content(
        f"Every attempt to deliver {delivery.event_type} ({delivery.message_id}) to your endpoint {endpoint_id} "
        f"failed; the last one with: {result.error}.\nIt is kept in the dead-letter list, and can be redelivered "
        f"with POST /webhooks/endpoints/{endpoint_id}/deliveries/{delivery.message_id}/redeliver."
    )
    try:
        await n.send_mail(message)
    except Exception as exc:
        # Not log.exception: the rendered error could quote the owner's address.
        log.error("webhook.owner_alert_failed", endpoint_id=endpoint_id, error=scrub(repr(exc)))


def routes(n: Notifier) -> Mapping[str, Handler]:
    """The registry of what notifier reacts to: topic -> handler."""

    async def on_destroyed(event: Event) -> Sequence[Event]:
        assert isinstance(event, DeletionKeysDestroyed)
        return await on_keys_destroyed(event, n)

    async def on_overdue(event: Event) -> Sequence[Event]:
        assert isinstance(event, DeletionOverdue)
        await schedule_webhooks(event, n)
        return ()

    async def extended(event: Event) -> Sequence[Event]:
        assert isinstance(event, DeletionExtended)
        return await on_extended(event, n)

    async def closed(event: Event) -> Sequence[Event]:
        assert isinstance(event, DeletionDenied | DeletionCancelled)
        return await on_closed(event, n)

    return {
        topics.DELETION_KEYS_DESTROYED: on_destroyed,
        topics.DELETION_OVERDUE: on_overdue,
        topics.DELETION_EXTENDED: extended,
        topics.DELETION_DENIED: closed,
        topics.DELETION_CANCELLED: closed,
    }
