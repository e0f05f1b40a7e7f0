"""What notifier decides: which webhooks to send, when to try again, what the person is told.

Webhooks follow Standard Webhooks. Each (event, endpoint) pair has one stable ``webhook-id`` for every attempt.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Literal

import structlog

from services.notifier.adapters.http import AttemptResult, sign
from services.notifier.adapters.store import Attempt, Delivery, DeliveryStatus, Endpoint, MongoWebhookStore
from shared import topics
from shared.consumer import Handler
from shared.contacts import CONTACT_DATASET, MongoContactStore
from shared.events import DeletionKeysDestroyed, DeletionNotified, DeletionOverdue, Event
from shared.keyvault_client import KeyUnavailableError, KeyvaultClient

log = structlog.get_logger(__name__)

PRODUCER = "notifier"
COMPLETED = "data_deletion.completed"
PARTIAL = "data_deletion.partial"
OVERDUE = "data_deletion.overdue"
WEBHOOK_TYPES = (COMPLETED, PARTIAL, OVERDUE)
_IDS = uuid.UUID("8d1f0c52-52a4-4f3e-9b7e-2a0c6e5d4b3a")


def message_id(source_event_id: uuid.UUID, endpoint_id: str) -> str:
    """The ``webhook-id``: the same for every attempt of one event to one endpoint, whoever sends it."""
    return "msg_" + uuid.uuid5(_IDS, f"{source_event_id}|{endpoint_id}").hex


def webhook_type(event: DeletionKeysDestroyed | DeletionOverdue) -> str:
    if isinstance(event, DeletionOverdue):
        return OVERDUE
    return PARTIAL if event.result == "partial" else COMPLETED


def webhook_payload(event: DeletionKeysDestroyed | DeletionOverdue) -> str:
    """The body integrators receive: ids, outcomes, legal references and timestamps; no personal data."""
    data: dict[str, object] = {"request_id": event.request_id, "subject_id": event.subject_id}
    if isinstance(event, DeletionOverdue):
        data |= {
            "deadline_at": event.deadline_at.isoformat(),
            "status": event.status,
            "past_deadline": event.past_deadline,
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
    """When to try next (None: the schedule is spent). Jitter of ±10%; a Retry-After is honoured if longer."""
    if attempts_made >= len(schedule):
        return None
    delay = schedule[attempts_made]
    delay = delay * rand(0.9, 1.1) if delay > 0 else 0.0
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
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
    if exempt:
        lines += ["Not affected: " + ", ".join(o.dataset for o in exempt) + " (anonymised statistics).", ""]
    lines += ["This is the last message we send to this address; we have now deleted it too."]
    text = "\n".join(lines)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = (
        "Your data has been erased"
        if not kept
        else "Your data has been erased, except what the law requires us to keep"
    )
    # A stable id per request: a mail client can spot a repeat if a crash made us send it twice.
    message["Message-ID"] = make_msgid(idstring=event.request_id.replace("@", "-"), domain="lethe.local")
    message.set_content(text)
    html = "".join(f"<p>{_escape(line)}</p>" if line else "" for line in lines)
    message.add_alternative(f"<html><body>{html}</body></html>", subtype="html")
    return message


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


MailStatus = Literal["sent", "no_contact", "contact_key_gone", "capped", "no_keyvault"]


@dataclass
class Notifier:
    """notifier's dependencies."""

    store: MongoWebhookStore
    contacts: MongoContactStore
    keyvault: KeyvaultClient | None
    send_mail: Callable[[EmailMessage], Awaitable[None]]
    sender: str
    clock: Callable[[], datetime]
    schedule: Sequence[float]
    mail_daily_cap: int
    lease: timedelta = field(default=timedelta(seconds=60))


async def schedule_webhooks(event: DeletionKeysDestroyed | DeletionOverdue, n: Notifier) -> int:
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


async def mail_person(event: DeletionKeysDestroyed, n: Notifier) -> MailStatus:
    """Send the final notice once, then have keyvault destroy the key of the address."""
    notice = await n.store.notice(event.request_id)
    if notice and notice.get("mail_status") == "sent":
        return "sent"
    status = await _try_mail(event, n)
    await n.store.save_notice(event.request_id, {"mail_status": status, "at": n.clock()})
    log.info("mail.person", request_id=event.request_id, status=status)
    return status


async def _try_mail(event: DeletionKeysDestroyed, n: Notifier) -> MailStatus:
    contact = await n.contacts.get(event.request_id)
    if contact is None:
        return "no_contact"
    if n.keyvault is None:
        return "no_keyvault"
    if contact.mailed_at is not None:
        # Mailed before a crash that came before the key was destroyed: finish that, never mail twice.
        await n.keyvault.destroy_key(event.subject_id, CONTACT_DATASET, request_id=event.request_id)
        return "sent"
    try:
        address = (await n.keyvault.decrypt(event.subject_id, CONTACT_DATASET, contact.email_ciphertext)).decode()
    except KeyUnavailableError:
        return "contact_key_gone"
    if await n.store.count_mail(n.clock().strftime("%Y-%m-%d")) > n.mail_daily_cap:
        log.error("mail.daily_cap_reached", cap=n.mail_daily_cap, request_id=event.request_id)
        return "capped"
    await n.send_mail(compose_mail(event, to=address, sender=n.sender))
    await n.contacts.mark_mailed(event.request_id, n.clock())
    await n.keyvault.destroy_key(event.subject_id, CONTACT_DATASET, request_id=event.request_id)
    return "sent"


async def on_keys_destroyed(event: DeletionKeysDestroyed, n: Notifier) -> Sequence[Event]:
    endpoints = await schedule_webhooks(event, n)
    mail = await mail_person(event, n)
    return [
        DeletionNotified(
            event_id=uuid.uuid5(_IDS, str(event.event_id)),
            request_id=event.request_id,
            subject_id=event.subject_id,
            producer=PRODUCER,
            result=event.result,
            webhook_endpoints=endpoints,
            email_sent=mail == "sent",
        )
    ]


async def deliver_due(
    n: Notifier, send: Callable[[str, str, dict[str, str]], Awaitable[AttemptResult]], *, concurrency: int = 16
) -> int:
    """Make one attempt for every delivery that is due, ``concurrency`` at a time; returns how many were made."""
    due = await n.store.claim_due(n.clock(), lease=n.lease)
    endpoints = {e: await n.store.endpoint(e) for e in {d.endpoint_id for d in due}}
    gate = asyncio.Semaphore(concurrency)

    async def attempt(delivery: Delivery) -> bool:
        async with gate:
            return await _attempt(n, send, delivery, endpoints[delivery.endpoint_id])

    return sum(await asyncio.gather(*(attempt(d) for d in due)))


async def _attempt(
    n: Notifier,
    send: Callable[[str, str, dict[str, str]], Awaitable[AttemptResult]],
    delivery: Delivery,
    endpoint: Endpoint | None,
) -> bool:
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
    except Exception:
        log.exception("webhook.owner_alert_failed", endpoint_id=endpoint_id)


def routes(n: Notifier) -> Mapping[str, Handler]:
    """The registry of what notifier reacts to: topic -> handler."""

    async def on_destroyed(event: Event) -> Sequence[Event]:
        assert isinstance(event, DeletionKeysDestroyed)
        return await on_keys_destroyed(event, n)

    async def on_overdue(event: Event) -> Sequence[Event]:
        assert isinstance(event, DeletionOverdue)
        await schedule_webhooks(event, n)
        return ()

    return {topics.DELETION_KEYS_DESTROYED: on_destroyed, topics.DELETION_OVERDUE: on_overdue}
