"""What intake decides, with no I/O: a request's record and status, folded from the events of its chain.

A request's status is computed from the stages seen so far, not stored as a moving pointer, so events from
different topics may arrive in any order and any number of times and the result is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from pydantic import TypeAdapter, ValidationError

from services.intake.model import DeletionRequest, HeldDataset, RecordedOutcome, Terms
from services.intake.ports import AccountDirectory, DeletionStarter, RequestStore
from shared import topics
from shared.consumer import BatchRoute, DeadLetter, Handler, PermanentError, Route
from shared.datamap import DataMap
from shared.events import (
    ActingAgent,
    Channel,
    DeletionBackupsExpired,
    DeletionCancelled,
    DeletionDenied,
    DeletionExtended,
    DeletionHardDeleted,
    DeletionHeld,
    DeletionKeysDestroyed,
    DeletionKeysHeld,
    DeletionKeysRestored,
    DeletionKeysShredded,
    DeletionNotified,
    DeletionOverdue,
    DeletionPurged,
    DeletionRejected,
    DeletionRequested,
    Event,
    Id,
    InvalidEventError,
    RejectionCause,
    RequestDeletion,
    SubjectId,
)
from shared.jurisdictions import Jurisdictions
from shared.retention import Rule
from shared.scrub import scrub

log = structlog.get_logger(__name__)

PRODUCER = "intake"

_IDS = uuid.UUID("8d6f1f0e-5b55-4c38-9a3c-6a8f3c1f7a10")  # namespace of intake's deterministic event ids


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def new_request(
    *,
    subject_id: str,
    requested_by: str,
    channel: Channel,
    now: datetime,
    terms: Terms,
    backups: timedelta,
    request_id: str | None = None,
    cooling_off: timedelta = timedelta(0),
    agent: ActingAgent | None = None,
) -> tuple[DeletionRequest, DeletionRequested]:
    """A received request and the event that hands it to the purger (its id is fixed, so a re-send is the same);
    with a ``cooling_off`` period the record says when the purger gets it."""
    request_id = request_id or new_request_id()
    event = DeletionRequested(
        event_id=uuid.uuid5(_IDS, f"{request_id}:requested"),
        occurred_at=now,
        request_id=request_id,
        subject_id=subject_id,
        producer=PRODUCER,
        channel=channel,
        requested_by=requested_by,
        deadline_at=terms.deadline_at,
        backups_purged_by=now + backups,
        jurisdiction=terms.jurisdiction,
        acknowledge_by=terms.acknowledge_by,
        agent=agent,
    )
    record = from_requested(event)
    if cooling_off > timedelta(0):
        record = record.model_copy(update={"erasure_starts_at": now + cooling_off})
    return record, event


class UnknownJurisdictionError(ValueError):
    """The caller named a jurisdiction deploy/jurisdictions.yaml does not configure."""


def terms_of(jurisdictions: Jurisdictions, code: str | None, *, now: datetime, override_days: int | None) -> Terms:
    """The request's law (the caller's, or the default) and its deadline and acknowledgement time from ``now``;
    ``override_days`` (INTAKE_DEADLINE_DAYS) replaces the law's response period where set (drills and tests)."""
    try:
        chosen, law = jurisdictions.get(code)
    except KeyError as exc:
        known = ", ".join(sorted(jurisdictions.jurisdictions))
        raise UnknownJurisdictionError(f"unknown jurisdiction {code!r} (configured: {known})") from exc
    deadline = now + timedelta(days=override_days) if override_days else law.deadline(now)
    return Terms(chosen, deadline, law.acknowledgement_due(now))


async def account_jurisdiction(accounts: AccountDirectory, jurisdictions: Jurisdictions, subject_id: str) -> str | None:
    """The jurisdiction the subject's account names, if it names a configured one (else the default applies)."""
    code = await accounts.jurisdiction_of(subject_id)
    if code is not None and code not in jurisdictions.jurisdictions:
        log.warning("request.account_jurisdiction_unknown", subject_id=subject_id, jurisdiction=code[:40])
        return None
    return code


def pending_verification(*, subject_id: str, now: datetime) -> DeletionRequest:
    """A request from the email channel, waiting for the person to follow the link."""
    return DeletionRequest(
        request_id=new_request_id(),
        subject_id=subject_id,
        channel="email",
        requested_by="email",
        created_at=now,
        stages={"verification_pending": now},
    )


def from_requested(event: DeletionRequested) -> DeletionRequest:
    return DeletionRequest(
        request_id=event.request_id,
        subject_id=event.subject_id,
        channel=event.channel,
        requested_by=event.requested_by,
        created_at=event.occurred_at,
        jurisdiction=event.jurisdiction,
        deadline_at=event.deadline_at,
        acknowledge_by=event.acknowledge_by,
        backups_purged_by=event.backups_purged_by,
        agent=event.agent,
        stages={"received": event.occurred_at},
    )


def _first(stages: Mapping[str, datetime], **seen: datetime) -> dict[str, datetime]:
    """Stages keep the time they were first seen: a replayed event changes nothing."""
    merged = dict(stages)
    for name, at in seen.items():
        merged[name] = min(merged.get(name, at), at)
    return merged


def _requested(r: DeletionRequest, event: DeletionRequested, at: datetime, seen_at: datetime) -> dict[str, Any]:
    base = from_requested(event)
    # The request came back from Kafka: the purger has it now.
    return {
        **{
            k: getattr(r, k) or getattr(base, k)
            for k in ("created_at", "deadline_at", "backups_purged_by", "jurisdiction", "acknowledge_by", "agent")
        },
        "requested_by": r.requested_by or base.requested_by,
        "channel": event.channel,
        "stages": _first(r.stages, received=at, purging=max(at, seen_at)),
    }


def _purged(r: DeletionRequest, event: DeletionPurged, at: datetime, _: datetime) -> dict[str, Any]:
    outcomes = dict(r.outcomes)
    for o in event.outcomes:
        known = outcomes.get(o.dataset)
        if known is None or known.decided_at < at:
            outcomes[o.dataset] = RecordedOutcome(**o.model_dump(), decided_at=at)
    # A later purge of a held dataset means its hold is gone (released, ended).
    held = {d: h for d, h in r.held.items() if h.since >= at or d in event.held}
    return {"outcomes": outcomes, "held": held, "stages": _first(r.stages, purged=at)}


def _keys_destroyed(r: DeletionRequest, event: DeletionKeysDestroyed, at: datetime, _: datetime) -> dict[str, Any]:
    destroyed = {k.dataset for k in event.destroyed}
    return {
        "keys_destroyed": tuple(sorted({*r.keys_destroyed, *destroyed})),
        "keys_retained": tuple(sorted({k.dataset for k in event.retained})),
        "keys_left": {k.dataset: k.reason for k in event.left},
        "keys_restored": tuple(d for d in r.keys_restored if d not in destroyed),
        "stages": _first(r.stages, keys_destroyed=at),
    }


def _held(r: DeletionRequest, event: DeletionHeld, at: datetime, _: datetime) -> dict[str, Any]:
    kept = set(event.records_kept)
    held = {
        **r.held,
        **{d: HeldDataset(hold_id=event.hold_id, since=at, records_kept=d in kept) for d in event.datasets},
    }
    return {"held": held, "stages": _first(r.stages, held=at)}


def _keys_held(r: DeletionRequest, event: DeletionKeysHeld, _: datetime, __: datetime) -> dict[str, Any]:
    return {
        "keys_restored": tuple(sorted({*r.keys_restored, *(k.dataset for k in event.restored)})),
        "keys_unrestorable": tuple(sorted({*r.keys_unrestorable, *(k.dataset for k in event.unrestorable)})),
    }


def _notified(r: DeletionRequest, event: DeletionNotified, at: datetime, _: datetime) -> dict[str, Any]:
    return {
        "webhook_endpoints": event.webhook_endpoints,
        # A deferred mail is sent later: the later notice's outcome wins, never an earlier one.
        "email_sent": bool(r.email_sent) or event.email_sent,
        "mail": r.mail if r.mail == "sent" else event.mail,
        "smtp_code": event.smtp_code if event.mail == "failed" else r.smtp_code,
        "stages": _first(r.stages, notified=at),
    }


def _hard_deleted(r: DeletionRequest, event: DeletionHardDeleted, at: datetime, _: datetime) -> dict[str, Any]:
    counts = {**r.hard_deleted, **{d.dataset: d.records_purged for d in event.datasets}}
    return {"hard_deleted": counts, "stages": _first(r.stages, hard_deleted=at)}


def _overdue(r: DeletionRequest, event: DeletionOverdue, at: datetime, _: datetime) -> dict[str, Any]:
    if event.about == "acknowledgement":
        field = "acknowledgement_late_at"
    else:
        field = "past_deadline_at" if event.past_deadline else "overdue_warned_at"
    return {field: min(getattr(r, field) or at, at)}


def _extended(r: DeletionRequest, event: DeletionExtended, at: datetime, _: datetime) -> dict[str, Any]:
    if event.extension <= r.extensions:
        return {}  # seen already (a replay)
    return {
        "deadline_at": event.deadline_at,
        "extensions": event.extension,
        "extension_reason": event.reason,
        "stages": _first(r.stages, extended=at),
    }


def _closed(r: DeletionRequest, event: DeletionDenied | DeletionCancelled, at: datetime, _: datetime) -> dict[str, Any]:
    if r.closure is not None:
        return {}  # seen already (a replay); a request ends once
    return {"closure": event, "stages": _first(r.stages, **{event.type.removeprefix("deletion."): at})}


def _stage(name: str) -> Callable[[DeletionRequest, Event, datetime, datetime], dict[str, Any]]:
    """A stage that records only when it was first seen."""
    return lambda r, _, at, __: {"stages": _first(r.stages, **{name: at})}


def _keys_restored(r: DeletionRequest, _: Event, at: datetime, __: datetime) -> dict[str, Any]:
    return {"stages": {**r.stages, "keys_restored": max(r.stages.get("keys_restored", at), at)}}


# What each event changes in a request: (record, event, when it happened, when intake saw it) -> changed fields.
FOLDS: dict[type[Event], Callable[[DeletionRequest, Any, datetime, datetime], dict[str, Any]]] = {
    DeletionRequested: _requested,
    DeletionPurged: _purged,
    DeletionKeysDestroyed: _keys_destroyed,
    DeletionHeld: _held,
    DeletionKeysHeld: _keys_held,
    DeletionNotified: _notified,
    DeletionHardDeleted: _hard_deleted,
    DeletionBackupsExpired: _stage("backups_expired"),
    DeletionOverdue: _overdue,
    DeletionExtended: _extended,
    DeletionDenied: _closed,
    DeletionCancelled: _closed,
    DeletionKeysShredded: _stage("keys_shredded"),
    DeletionKeysRestored: _keys_restored,
}


def fold(record: DeletionRequest | None, event: Event, *, seen_at: datetime) -> DeletionRequest | None:
    """The request after ``event``; ``None`` if the event says nothing about a request."""
    if event.request_id is None or event.subject_id is None:
        return record
    r = record or DeletionRequest(request_id=event.request_id, subject_id=event.subject_id)
    change = FOLDS.get(type(event))
    return r if change is None else r.model_copy(update=change(r, event, event.occurred_at, seen_at))


def due_overdue(r: DeletionRequest, *, now: datetime, warn_fraction: float) -> DeletionOverdue | None:
    """The overdue notice an open request is due, if any: once past ``warn_fraction`` of its time, once past it."""
    if not r.is_open or r.deadline_at is None or r.created_at is None:
        return None
    if now >= r.deadline_at:
        if r.past_deadline_at is not None:
            return None
        past = True
    elif now >= r.created_at + (r.deadline_at - r.created_at) * warn_fraction:
        if r.overdue_warned_at is not None or r.past_deadline_at is not None:
            return None
        past = False
    else:
        return None
    return _notice(r, now, "past" if past else "warn", r.deadline_at, past=past)


def due_acknowledgement_late(r: DeletionRequest, *, now: datetime) -> DeletionOverdue | None:
    """The warning an open request is due when its receipt was not confirmed in the time its law sets (once)."""
    if not r.is_open or r.acknowledge_by is None or r.acknowledged_at is not None or r.deadline_at is None:
        return None
    if now < r.acknowledge_by or r.acknowledgement_late_at is not None:
        return None
    return _notice(r, now, "acknowledgement", r.acknowledge_by, past=True, about="acknowledgement")


def _notice(
    r: DeletionRequest,
    now: datetime,
    kind: str,
    due: datetime,
    *,
    past: bool,
    about: Literal["deadline", "acknowledgement"] = "deadline",
) -> DeletionOverdue:
    """A deadline watch notice, its id fixed by the request and ``kind`` (so each is published once)."""
    return DeletionOverdue(
        event_id=uuid.uuid5(_IDS, f"{r.request_id}:overdue:{kind}"),
        occurred_at=now,
        request_id=r.request_id,
        subject_id=r.subject_id,
        producer=PRODUCER,
        deadline_at=due,
        status=r.status,
        past_deadline=past,
        about=about,
    )


class RulePatchError(ValueError):
    """A rule change that cannot be applied; ``errors`` name the offending fields."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


def patch_rules(
    current: Sequence[Rule], *, upsert: Sequence[Rule], remove: Sequence[str], datamap: DataMap
) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
    """The rule set after adding or replacing ``upsert`` and dropping ``remove``, and the ids that changed."""
    errors: list[dict[str, str]] = []
    known = set(datamap.names)
    for i, rule in enumerate(upsert):
        errors += [
            {"field": f"body.rules.{i}.datasets.{j}", "message": f"the data map has no dataset {name!r}"}
            for j, name in enumerate(rule.datasets)
            if name not in known
        ]
    ids = [rule.rule_id for rule in upsert]
    errors += [
        {"field": f"body.rules.{i}.rule_id", "message": f"rule {rid!r} appears twice"}
        for i, rid in enumerate(ids)
        if ids.index(rid) != i
    ]
    by_id = {rule.rule_id: rule for rule in current}
    errors += [
        {"field": f"body.remove.{i}", "message": f"there is no rule {rid!r}"}
        for i, rid in enumerate(remove)
        if rid not in by_id and rid not in ids
    ]
    errors += [
        {"field": f"body.remove.{i}", "message": f"rule {rid!r} is both replaced and removed"}
        for i, rid in enumerate(remove)
        if rid in ids
    ]
    if errors:
        raise RulePatchError(errors)
    changed = [rule.rule_id for rule in upsert if by_id.get(rule.rule_id) != rule] + list(remove)
    for rule in upsert:
        by_id[rule.rule_id] = rule
    for rid in remove:
        by_id.pop(rid, None)
    return tuple(sorted(by_id.values(), key=lambda r: r.rule_id)), tuple(sorted(set(changed)))


def routes(
    requests: RequestStore, clock: Callable[[], datetime], *, deletions: DeletionStarter, producers: Collection[str]
) -> Mapping[str, Handler]:
    """The registry of what intake reacts to: the status topics feed a request's status; an intent starts one
    (and an intent that is dead-lettered is answered on deletion.rejected)."""

    async def on_events(events: Sequence[Event]) -> Sequence[Event]:
        if len(events) == 1:
            return await track(events[0], requests, now=clock())
        return await track_many(events, requests, now=clock())

    async def on_intent(event: Event) -> Sequence[Event]:
        assert isinstance(event, RequestDeletion)  # the loop validated the event against its topic
        return await request_from_intent(event, deletions, producers=producers)

    return {
        **dict.fromkeys(topics.STATUS_TOPICS, BatchRoute(on_events)),  # one route: a poll's events in one batch
        topics.DELETION_INTENTS: Route(on_intent, on_reject=rejection),
    }


# --- Decisions that read and write through the ports (the wiring supplies them) ---


class RequestNotReadyError(Exception):
    """A subject's open request is claimed but not stored yet (a writer is mid-way); retry shortly."""


class IdempotencyKeyReusedError(Exception):
    """An idempotency key was already used for a different request."""


class IdempotencyKeyBusyError(Exception):
    """The first request with an idempotency key is still running; retry shortly."""


class IntentRejectedError(PermanentError):
    """An intent intake will not act on: dead-lettered, and its producer told why (``cause``) on deletion.rejected."""

    def __init__(self, cause: RejectionCause, reason: str) -> None:
        super().__init__(reason)
        self.cause: RejectionCause = cause


def requested_by_upstream(producer: str) -> str:
    return f"upstream:{producer}"


async def request_from_intent(
    intent: RequestDeletion, deletions: DeletionStarter, *, producers: Collection[str]
) -> Sequence[Event]:
    """Start the deletion an upstream service asks for, as ``DELETE /users/{id}/data`` with ``deletion:any`` does.

    The same claim, deadline, outbox, contact and status; a subject's open request is returned, not doubled. An
    intent is also started at most once: by its ``idempotency_key`` or, without one, by its event id, so a
    re-consumed or re-sent intent changes nothing even after its request has finished.
    """
    if intent.producer not in producers:
        raise IntentRejectedError(
            "unauthorized",
            f"the service {intent.producer!r} may not ask for deletions (it is not in INTAKE_INTENT_PRODUCERS)",
        )
    requested_by = requested_by_upstream(intent.producer)
    own = f"key:{intent.idempotency_key}" if intent.idempotency_key else f"event:{intent.event_id}"
    # Scoped to the bus and the producer: no HTTP client's Idempotency-Key and no other service's can collide.
    key = hashlib.sha256(f"intent\0{intent.producer}\0{own}".encode()).hexdigest()

    async def start() -> tuple[int, dict[str, Any]]:
        try:
            started, record = await deletions.start(
                intent.subject_id, requested_by=requested_by, channel="bus", jurisdiction=intent.jurisdiction
            )
        except UnknownJurisdictionError as exc:
            raise IntentRejectedError("invalid", str(exc)) from exc
        return (202 if started else 200), {"request_id": record.request_id, "status": record.status}

    try:
        reply, replayed = await deletions.once(key, fingerprint=f"intent for {intent.subject_id}", run=start)
    except IdempotencyKeyReusedError as exc:
        raise IntentRejectedError("invalid", "its idempotency_key was already used for another subject") from exc
    except IdempotencyKeyBusyError as exc:
        raise RequestNotReadyError(intent.subject_id) from exc  # the loop retries it shortly
    log.info(
        "intent.handled",
        subject_id=intent.subject_id,
        request_id=reply.body["request_id"],
        started=reply.status == 202 and not replayed,
        replayed=replayed,
        producer=intent.producer,
    )
    return ()


_UUID: TypeAdapter[uuid.UUID] = TypeAdapter(uuid.UUID)
_ID: TypeAdapter[str] = TypeAdapter(Id)
_SUBJECT_ID: TypeAdapter[str] = TypeAdapter(SubjectId)


def _readable(raw: bytes | None) -> dict[str, Any]:
    """What can be read of an intent that may not validate: its event id, producer and subject id, each if valid."""
    try:
        doc = json.loads(raw or b"")
    except (ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict):
        return {}
    found: dict[str, Any] = {}
    for field, source, kind in (
        ("intent_event_id", "event_id", _UUID),
        ("intent_producer", "producer", _ID),
        ("subject_id", "subject_id", _SUBJECT_ID),
    ):
        with contextlib.suppress(ValidationError):
            found[field] = kind.validate_python(doc.get(source))
    return found


def _why(dead: DeadLetter) -> str:
    """The reason, told field by field for an intent that did not validate (without quoting what it held)."""
    invalid = dead.error.__cause__
    if not (isinstance(dead.error, InvalidEventError) and isinstance(invalid, ValidationError)):
        return dead.reason
    problems = []
    for error in invalid.errors(include_url=False, include_input=False, include_context=False):
        loc = [str(part) for part in error["loc"]]
        if loc[:1] == [dead.message.topic]:
            loc = loc[1:]  # the union's tag, not a field
        problems.append(f"{'.'.join(loc)}: {error['msg']}" if loc else error["msg"])
    return "not a valid intent: " + "; ".join(problems)


def rejection(dead: DeadLetter) -> Sequence[Event]:
    """What intake tells an intent's producer when the intent is dead-lettered (the consumer loop publishes it).

    Its id is derived from the intent's place in the topic, so a re-consumed intent is answered with the same event.
    """
    m = dead.message
    cause: RejectionCause = (
        dead.error.cause
        if isinstance(dead.error, IntentRejectedError)
        else "invalid"
        if isinstance(dead.error, InvalidEventError)
        else "failed"
    )
    return [
        DeletionRejected(
            event_id=uuid.uuid5(_IDS, f"{m.topic}:{m.partition}:{m.offset}:rejected"),
            producer=PRODUCER,
            cause=cause,
            reason=scrub(_why(dead))[:1000],
            **_readable(m.value),
        )
    ]


async def request_deletion(
    requests: RequestStore,
    *,
    subject_id: str,
    requested_by: str,
    channel: Channel,
    now: datetime,
    terms: Terms,
    backups: timedelta,
    request_id: str | None = None,
    cooling_off: timedelta = timedelta(0),
    agent: ActingAgent | None = None,
) -> tuple[bool, DeletionRequest]:
    """Start a deletion, or return the subject's open one: (started, request).

    The claim is written first, with the event in its outbox, so a crash after it loses nothing: the relay stores
    the request if it is missing and then publishes the event. With a ``cooling_off`` period the event is held
    that long first (the request may be denied or cancelled meanwhile).
    """
    for _ in range(3):
        record, event = new_request(
            subject_id=subject_id,
            requested_by=requested_by,
            channel=channel,
            now=now,
            terms=terms,
            backups=backups,
            request_id=request_id,
            cooling_off=cooling_off,
            agent=agent,
        )
        existing = await requests.claim(event, hold_until=record.erasure_starts_at)
        if existing is None:
            return True, await _store_accepted(requests, record, event)
        found = await _stored(requests, existing)
        if found.is_open:
            return False, found
        # Finished, but its claim is not released yet (the status consumer lags): release it and claim again.
        await requests.release(subject_id, existing)
    raise RequestNotReadyError(subject_id)


async def _stored(requests: RequestStore, request_id: str, *, wait_s: float = 5.0) -> DeletionRequest:
    """A claimed request, once its writer has stored it (moments after the claim, unless the writer crashed: then
    the outbox relay stores it from the claim's event)."""
    for _ in range(int(wait_s / 0.05)):
        if (found := await requests.get(request_id)) is not None:
            return found
        await asyncio.sleep(0.05)
    raise RequestNotReadyError(request_id)


async def _store_accepted(requests: RequestStore, record: DeletionRequest, event: DeletionRequested) -> DeletionRequest:
    """Store the accepted request, or move a pending one (email channel) to received."""
    while True:
        stored = await requests.get(record.request_id)
        if stored is None:
            await requests.ensure(record)
            continue
        if "received" in stored.stages:
            return stored
        accepted = stored.model_copy(
            update={
                **{
                    k: getattr(record, k)
                    for k in (
                        "created_at",
                        "deadline_at",
                        "backups_purged_by",
                        "requested_by",
                        "jurisdiction",
                        "acknowledge_by",
                        "erasure_starts_at",
                        "agent",
                    )
                },
                "stages": _first(stored.stages, received=event.occurred_at),
            }
        )
        if (saved := await requests.save(accepted)) is not None:
            return saved


async def supersede(requests: RequestStore, request_id: str, *, by: str) -> None:
    """A pending request that became part of the subject's already open one."""
    while (pending := await requests.get(request_id)) is not None and pending.superseded_by is None:
        if await requests.save(pending.model_copy(update={"superseded_by": by})) is not None:
            return


class StaleBatchError(Exception):
    """Another writer moved a request of the batch: the loop folds the batch again, one event at a time."""


async def track_many(events: Sequence[Event], requests: RequestStore, *, now: datetime) -> Sequence[Event]:
    """Fold one poll's events into their requests with one read and one write for the lot; emits nothing.

    A conflict with another writer raises :class:`StaleBatchError`, and the loop hands each event to
    :func:`track` (folding an event twice changes nothing, so a partly saved batch is safe to fold again)."""
    by_request: dict[str, list[Event]] = {}
    for event in events:
        if event.request_id is not None:
            by_request.setdefault(event.request_id, []).append(event)
    if not by_request:
        return ()
    stored = await requests.get_many(list(by_request))
    changed: list[DeletionRequest] = []
    final: list[DeletionRequest] = []
    for request_id, folded_events in by_request.items():
        record = current = stored.get(request_id)
        for event in folded_events:
            current = fold(current, event, seen_at=now) or current
        if current is not None and current != record:
            changed.append(current)
        if current is not None:
            final.append(current)
    if changed and not await requests.save_many(changed):
        raise StaleBatchError(f"{len(changed)} requests of the batch, one moved meanwhile")
    for record in final:
        if not record.is_open and "received" in record.stages:
            await requests.release(record.subject_id, record.request_id)
    return ()


async def track(event: Event, requests: RequestStore, *, now: datetime) -> Sequence[Event]:
    """Fold one event into its request, retrying when another writer got there first; emits nothing."""
    if event.request_id is None:
        return ()
    while True:
        record = await requests.get(event.request_id)
        updated = fold(record, event, seen_at=now)
        if updated is None or updated == record:
            break
        if await requests.save(updated) is not None:
            record = updated
            break
    if record is not None and not record.is_open and "received" in record.stages:
        await requests.release(record.subject_id, record.request_id)
    return ()


async def open_requests_due(requests: RequestStore, *, now: datetime, warn_fraction: float) -> list[DeletionOverdue]:
    """The overdue notices that open requests are due now."""
    due = []
    for request_id in await requests.open_request_ids():
        record = await requests.get(request_id)
        if record is None:
            continue
        if notice := due_overdue(record, now=now, warn_fraction=warn_fraction):
            due.append(notice)
        if late := due_acknowledgement_late(record, now=now):
            due.append(late)
    return due
