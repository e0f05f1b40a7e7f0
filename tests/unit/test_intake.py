"""intake's decisions with in-memory fakes: status folding, deadlines, rule changes, one open request per subject."""

import copy
import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.intake import handlers
from services.intake.acknowledgements import Acknowledgements
from services.intake.actions import ExtensionRefusedError, NotOpenError, RequestActions
from services.intake.adapters.memory import InMemoryAccountDirectory, InMemoryRequestStore
from services.intake.deletions import Deletions
from services.intake.handlers import RulePatchError, due_overdue, fold, new_request, patch_rules
from services.intake.model import DeletionRequest, Terms
from services.intake.settings import IntakeSettings
from shared import topics, topology
from shared.consumer import DeadLetter, Message, MessageProcessor, PermanentError, Route
from shared.datamap import DataMap, Dataset, MongoLocation
from shared.events import (
    DatasetOutcome,
    DeletionBackupsExpired,
    DeletionHardDeleted,
    DeletionKeysDestroyed,
    DeletionNotified,
    DeletionPurged,
    DeletionRejected,
    HardDeletedDataset,
    InvalidEventError,
    KeyRef,
    RequestDeletion,
    decode_event,
)
from shared.fakes import InMemoryContactStore, InMemoryKeyvault, InMemoryPublisher, InMemoryRetentionStore
from shared.jurisdictions import load_jurisdictions
from shared.metrics import Metrics
from shared.retention import Rule, StaleRuleSetError, retained_datasets
from shared.settings import KafkaSettings
from tests.support import PARTIAL, UNIT_DATAMAP, litigation_hold

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
TAGGED = DatasetOutcome(dataset="accounts", store="mongo", outcome="tagged")
ERASED = DatasetOutcome(dataset="profiles", store="mongo", outcome="erased")


LAWS = load_jurisdictions(Path(__file__).parents[2] / "deploy" / "jurisdictions.yaml")


def terms(at: datetime) -> Terms:
    """The terms of a request received at ``at`` under the default law (GDPR: one month)."""
    return handlers.terms_of(LAWS, None, now=at, override_days=None)


def requested(subject: str = "u1", at: datetime = T0):
    return new_request(subject_id=subject, requested_by="svc", channel="api", now=at, terms=terms(at), backups=90 * DAY)


def chain(record: DeletionRequest, outcomes=(ERASED,)):
    rid, sid = record.request_id, record.subject_id
    ids = {"request_id": rid, "subject_id": sid, "producer": "test"}
    return [
        DeletionPurged(**ids, occurred_at=T0 + DAY, outcomes=outcomes),
        DeletionKeysDestroyed(
            **ids, occurred_at=T0 + 2 * DAY, destroyed=(KeyRef(dataset="profiles", key_id="dek_1"),), result="completed"
        ),
        DeletionNotified(**ids, occurred_at=T0 + 3 * DAY, result="completed", webhook_endpoints=1, email_sent=False),
    ]


def fold_all(record, events):
    for event in events:
        record = fold(record, event, seen_at=T0 + 10 * DAY)
    return record


def test_a_request_walks_its_statuses_as_the_chain_reports():
    record, event = requested()
    assert record.status == "received"
    record = fold(record, event, seen_at=T0)
    assert record.status == "purging"
    purged, keys, notified = chain(record)
    statuses = []
    for e in (purged, keys, notified):
        record = fold(record, e, seen_at=T0)
        statuses.append(record.status)
    assert statuses == ["purging", "keys_destroyed", "completed"]
    assert set(record.stages) == {"received", "purging", "purged", "keys_destroyed", "notified"}
    record = fold(
        record,
        DeletionBackupsExpired(**_ids(record), expired_before=T0 + 90 * DAY, occurred_at=T0 + 91 * DAY),
        seen_at=T0,
    )
    assert record.status == "erased"


def _ids(record):
    return {"request_id": record.request_id, "subject_id": record.subject_id, "producer": "test"}


def test_events_in_any_order_and_replayed_give_the_same_record():
    record, event = requested()
    events = [event, *chain(record, outcomes=(ERASED, TAGGED))]
    events.append(
        DeletionHardDeleted(
            **_ids(record),
            occurred_at=T0 + 4 * DAY,
            datasets=(HardDeletedDataset(dataset="accounts", records_purged=3),),
        )
    )
    expected = fold_all(None, events)
    assert expected.status == "hard_deleted"
    for order in itertools.islice(itertools.permutations(events), 0, None, 7):
        shuffled = list(order) + random.Random(1).sample(events, 3)  # plus some replays
        assert fold_all(None, shuffled) == expected


def test_a_tagged_dataset_holds_the_request_at_its_result_until_the_nightly_job_reports():
    record, _ = requested()
    record = fold_all(record, chain(record, outcomes=(ERASED, TAGGED)))
    assert record.status == "completed"
    record = fold(
        record,
        DeletionHardDeleted(**_ids(record), datasets=(HardDeletedDataset(dataset="accounts", records_purged=2),)),
        seen_at=T0,
    )
    assert record.status == "hard_deleted"
    assert record.hard_deleted == {"accounts": 2}


def test_anything_retained_makes_the_result_partial():
    record, _ = requested()
    record = fold_all(record, chain(record, outcomes=PARTIAL))
    assert record.status == "partial"
    assert record.outcomes["invoices"].rule_id == "tax-10y"


def test_a_follow_up_purge_replaces_the_outcome_it_changes():
    record, _ = requested()
    record = fold_all(record, chain(record, outcomes=PARTIAL))
    erased_invoices = DatasetOutcome(dataset="invoices", store="mongo", outcome="erased")
    later = DeletionPurged(**_ids(record), occurred_at=T0 + 20 * DAY, outcomes=(erased_invoices,))
    record = fold(record, later, seen_at=T0)
    assert record.outcomes["invoices"].outcome == "erased"
    assert record.result == "completed"
    # The older report, seen again, does not undo the newer one.
    assert fold(record, chain(record, outcomes=PARTIAL)[0], seen_at=T0).outcomes["invoices"].outcome == "erased"


def test_overdue_warns_past_eighty_percent_then_once_past_the_deadline():
    record, _ = requested()
    assert due_overdue(record, now=T0 + 23 * DAY, warn_fraction=0.8) is None
    warn = due_overdue(record, now=T0 + 25 * DAY, warn_fraction=0.8)
    assert warn is not None and not warn.past_deadline
    record = fold(record, warn, seen_at=T0)
    assert due_overdue(record, now=T0 + 26 * DAY, warn_fraction=0.8) is None
    past = due_overdue(record, now=T0 + 31 * DAY, warn_fraction=0.8)
    assert past is not None and past.past_deadline and past.status == "received"
    assert past.event_id == due_overdue(record, now=T0 + 32 * DAY, warn_fraction=0.8).event_id
    record = fold(record, past, seen_at=T0)
    assert due_overdue(record, now=T0 + 40 * DAY, warn_fraction=0.8) is None


def test_a_finished_request_is_never_overdue():
    record, _ = requested()
    record = fold_all(record, chain(record))
    assert due_overdue(record, now=T0 + 60 * DAY, warn_fraction=0.8) is None


DATAMAP = DataMap(
    datasets=tuple(
        Dataset(name=n, store="mongo", mongo=MongoLocation(collection=n, subject_field="user_id"))
        for n in ("invoices", "profiles")
    )
)
TAX = Rule(rule_id="tax-10y", datasets=("invoices",), legal_basis="legal obligation", legal_ref="HGB §257")


def test_rule_changes_name_each_unknown_dataset_and_rule():
    bad = Rule(rule_id="r2", datasets=("invoices", "nope"), legal_basis="b", legal_ref="r")
    with pytest.raises(RulePatchError) as caught:
        patch_rules((TAX,), upsert=(bad,), remove=("missing",), datamap=DATAMAP)
    fields = {e["field"] for e in caught.value.errors}
    assert fields == {"body.rules.0.datasets.1", "body.remove.0"}


def test_rule_changes_report_only_what_changed():
    rules, changed = patch_rules((TAX,), upsert=(TAX,), remove=(), datamap=DATAMAP)
    assert (rules, changed) == ((TAX,), ())
    other = Rule(rule_id="contract", datasets=("profiles",), legal_basis="contract", legal_ref="§1")
    rules, changed = patch_rules((TAX,), upsert=(other,), remove=("tax-10y",), datamap=DATAMAP)
    assert rules == (other,) and changed == ("contract", "tax-10y")


def test_holds_win_over_rules_and_expired_rules_keep_nothing():
    expired = Rule(rule_id="old", datasets=("profiles",), legal_basis="b", legal_ref="r", expires_at=T0 - DAY)
    hold = litigation_hold("hold_1", "u1", "invoices", placed_at=T0)
    kept = retained_datasets((TAX, expired), (hold,), T0)
    assert set(kept) == {"invoices"}
    assert kept["invoices"].rule_id == "hold_1"


@pytest.mark.asyncio
async def test_the_in_memory_rule_store_refuses_a_stale_version():
    store = InMemoryRetentionStore()
    await store.replace_rules((TAX,), expected_version=0, by="a", at=T0)
    with pytest.raises(StaleRuleSetError):
        await store.replace_rules((), expected_version=0, by="b", at=T0)


@pytest.mark.asyncio
async def test_a_subject_has_one_open_request_and_may_start_another_once_it_is_done():
    store = InMemoryRequestStore()
    kwargs = {"subject_id": "u1", "requested_by": "svc", "channel": "api", "terms": terms(T0), "backups": 90 * DAY}
    started, first = await handlers.request_deletion(store, now=T0, **kwargs)
    again, same = await handlers.request_deletion(store, now=T0, **kwargs)
    assert started and not again and same.request_id == first.request_id
    assert len(store.outbox) == 1
    for event in chain(first):
        await handlers.track(event, store, now=T0)
    assert (await store.get(first.request_id)).status == "completed"
    assert store.claims == {}
    started, second = await handlers.request_deletion(store, now=T0 + DAY, **kwargs)
    assert started and second.request_id != first.request_id


@pytest.mark.asyncio
async def test_one_poll_of_status_events_folds_into_the_same_requests_as_one_event_at_a_time():
    kwargs = {"requested_by": "svc", "channel": "api", "terms": terms(T0), "backups": 90 * DAY}
    one = InMemoryRequestStore()
    events = []
    for n in range(3):
        _, record = await handlers.request_deletion(one, subject_id=f"u{n}", now=T0, **kwargs)
        events.append(chain(record))
    batched = copy.deepcopy(one)
    interleaved = [e for step in zip(*events, strict=True) for e in step]  # as a poll brings them
    for event in interleaved:
        await handlers.track(event, one, now=T0)
    await handlers.track_many(interleaved, batched, now=T0)
    for request_id, record in one.requests.items():
        assert batched.requests[request_id].model_dump(exclude={"version"}) == record.model_dump(exclude={"version"})
        assert record.status == "completed"
    assert batched.claims == {} == one.claims


@pytest.mark.asyncio
async def test_a_batch_that_meets_another_writer_is_refused_whole_so_the_loop_folds_it_event_by_event():
    store = InMemoryRequestStore()
    kwargs = {"requested_by": "svc", "channel": "api", "terms": terms(T0), "backups": 90 * DAY}
    _, record = await handlers.request_deletion(store, subject_id="u1", now=T0, **kwargs)
    events = chain(record)

    class Racing(InMemoryRequestStore):
        async def save_many(self, records):
            await handlers.track(events[0], store, now=T0)  # another instance folds first
            return await store.save_many(records)

        async def get_many(self, request_ids):
            return await store.get_many(request_ids)

    with pytest.raises(handlers.StaleBatchError):
        await handlers.track_many(events, Racing(), now=T0)
    for event in events:  # what the loop does next
        await handlers.track(event, store, now=T0)
    assert (await store.get(record.request_id)).status == "completed"


@pytest.mark.asyncio
async def test_a_client_over_its_limit_gets_429_with_retry_after_and_others_do_not():
    from services.intake.limits import RateLimits
    from shared.problems import ProblemError

    limits = RateLimits(per_client="3/minute", per_address="1/hour", per_email_client="10/hour")
    for _ in range(3):
        await limits.client("10.0.0.1")
    with pytest.raises(ProblemError) as caught:
        await limits.client("10.0.0.1")
    assert caught.value.status == 429
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 60
    await limits.client("10.0.0.2")
    await limits.email(address="a@example.com", client="10.0.0.3")
    with pytest.raises(ProblemError):
        await limits.email(address="a@example.com", client="10.0.0.4")  # the address's limit, from any client


# --- Intents: upstream services ask for deletions on the bus ---------------------------------------------------


def accounts(**addresses: str) -> InMemoryAccountDirectory:
    """The accounts directory in memory: subject id -> the address the final notice goes to."""
    directory = InMemoryAccountDirectory()
    for subject, address in addresses.items():
        directory.add(subject, email_hash=f"hash-of-{subject}", address=address)
    return directory


class Relay:
    def __init__(self) -> None:
        self.kicks = 0

    def kick(self) -> None:
        self.kicks += 1


def deletions(store: InMemoryRequestStore | None = None, now: datetime = T0, **addresses: str):

    relay = Relay()
    return Deletions(
        settings=IntakeSettings(backups_days=90),
        datamap=UNIT_DATAMAP,
        requests=store or InMemoryRequestStore(),
        accounts=accounts(**addresses),
        contacts=InMemoryContactStore(),
        keyvault=InMemoryKeyvault(),
        clock=lambda: now,
        kick_relay=relay.kick,
        jurisdictions=LAWS,
    ), relay


def intent(subject: str = "u1", producer: str = "billing", **extra):

    return RequestDeletion(subject_id=subject, producer=producer, reason="account closed", occurred_at=T0, **extra)


ALLOWED = ("billing", "accounts")


@pytest.mark.asyncio
async def test_an_intent_starts_a_request_as_the_api_would_with_its_deadline_contact_and_outbox():
    ports, relay = deletions(u1="ada@example.test")

    emitted = await handlers.request_from_intent(intent(), ports, producers=ALLOWED)

    assert emitted == ()  # deletion.requested goes out through the outbox, as for the API
    [record] = ports.requests.requests.values()
    assert record.status == "received"
    assert record.channel == "bus" and record.requested_by == "upstream:billing"
    assert record.deadline_at == T0 + 31 * DAY  # GDPR, the default: 1 January + 1 month
    assert record.backups_purged_by == T0 + 90 * DAY
    assert record.jurisdiction == "gdpr" and record.acknowledge_by is None
    [event] = ports.requests.outbox
    assert (event.request_id, event.subject_id, event.channel) == (record.request_id, "u1", "bus")
    assert ports.requests.claims == {"u1": record.request_id}
    [contact] = ports.contacts.contacts.values()
    assert contact.request_id == record.request_id
    assert await ports.keyvault.decrypt("u1", "contact", contact.email_ciphertext) == b"ada@example.test"
    assert relay.kicks == 1


async def api_delete(ports, subject: str):
    """What DELETE /users/{subject}/data decides, through the same use case."""
    started, record = await ports.start(subject, requested_by="svc", channel="api")
    return (202 if started else 200), {"request_id": record.request_id}


@pytest.mark.asyncio
async def test_a_second_intent_for_a_subject_with_an_open_request_starts_nothing_new():
    ports, relay = deletions(u1="ada@example.test")
    await handlers.request_from_intent(intent(), ports, producers=ALLOWED)
    [first] = ports.requests.requests

    await handlers.request_from_intent(intent(producer="accounts"), ports, producers=ALLOWED)
    status, body = await api_delete(ports, "u1")

    assert list(ports.requests.requests) == [first]
    assert len(ports.requests.outbox) == 1 and relay.kicks == 1
    assert len(ports.contacts.contacts) == 1  # the second contact was dropped: the open request has one
    assert (status, body["request_id"]) == (200, first)  # the API gives the same answer for the same subject


@pytest.mark.asyncio
async def test_a_re_consumed_intent_starts_nothing_even_after_its_request_finished_but_a_new_one_does():
    store = InMemoryRequestStore()
    ports, _ = deletions(store)
    first = intent()
    await handlers.request_from_intent(first, ports, producers=ALLOWED)
    [request_id] = store.requests
    for event in chain(store.requests[request_id]):
        await handlers.track(event, store, now=T0)
    assert store.requests[request_id].status == "completed" and store.claims == {}

    await handlers.request_from_intent(first, ports, producers=ALLOWED)  # the same message, consumed again
    assert list(store.requests) == [request_id]

    await handlers.request_from_intent(intent(), ports, producers=ALLOWED)  # a new ask, as a new API call
    assert len(store.requests) == 2


@pytest.mark.asyncio
async def test_an_idempotency_key_starts_one_request_and_may_not_be_reused_for_another_subject():
    store = InMemoryRequestStore()
    ports, _ = deletions(store)
    await handlers.request_from_intent(intent(idempotency_key="close-42"), ports, producers=ALLOWED)
    [request_id] = store.requests
    for event in chain(store.requests[request_id]):
        await handlers.track(event, store, now=T0)

    await handlers.request_from_intent(intent(idempotency_key="close-42"), ports, producers=ALLOWED)
    assert list(store.requests) == [request_id]
    other = intent(producer="accounts", idempotency_key="close-42")
    await handlers.request_from_intent(other, ports, producers=ALLOWED)
    assert len(store.requests) == 2  # keys are per producer
    with pytest.raises(handlers.IntentRejectedError) as caught:
        await handlers.request_from_intent(intent("u2", idempotency_key="close-42"), ports, producers=ALLOWED)
    assert caught.value.cause == "invalid" and "idempotency_key" in str(caught.value)


@pytest.mark.asyncio
async def test_an_intent_from_a_service_that_may_not_ask_is_rejected_and_starts_nothing():
    ports, relay = deletions(u1="ada@example.test")

    with pytest.raises(handlers.IntentRejectedError) as caught:
        await handlers.request_from_intent(intent(producer="marketing"), ports, producers=ALLOWED)

    assert caught.value.cause == "unauthorized"
    assert "'marketing'" in str(caught.value) and "INTAKE_INTENT_PRODUCERS" in str(caught.value)
    assert ports.requests.requests == {} and ports.requests.outbox == [] and ports.contacts.contacts == {}
    assert relay.kicks == 0
    with pytest.raises(handlers.IntentRejectedError):
        await handlers.request_from_intent(intent(), ports, producers=())  # none allowed: every intent refused


def test_intake_folds_status_from_every_deletion_topic_but_intents_and_rejections_and_handles_intents_apart():

    ports, _ = deletions()
    routes = handlers.routes(ports.requests, lambda: T0, deletions=ports, producers=ALLOWED)

    assert set(routes) == {*topics.DELETION_TOPICS} - {topics.DELETION_REJECTED}
    assert set(routes) == set(topology.consumed_by("intake"))
    assert isinstance(routes[topics.DELETION_INTENTS], Route)
    assert not any(isinstance(routes[t], Route) for t in topics.STATUS_TOPICS)
    record, _ = requested()
    assert fold(record, intent(), seen_at=T0) == record


def dead_intent(value: bytes | None, error: Exception, reason: str = "why", offset: int = 9):

    return DeadLetter(Message("deletion.intents", 2, offset, b"k", value), reason, error)


def decode_error(value: bytes) -> Exception:

    with pytest.raises(InvalidEventError) as caught:
        decode_event("deletion.intents", value)
    return caught.value


def test_an_intent_with_a_bad_subject_id_is_rejected_as_invalid_naming_the_field_but_not_the_id():
    good = intent()
    value = good.to_bytes().replace(b'"u1"', b'"u 1/../x"')

    [rejected] = handlers.rejection(dead_intent(value, decode_error(value)))

    assert rejected.type == "deletion.rejected" and rejected.producer == "intake"
    assert rejected.cause == "invalid"
    assert rejected.subject_id is None  # not a valid subject id: neither told nor used as the key
    assert (rejected.intent_event_id, rejected.intent_producer) == (good.event_id, "billing")
    assert rejected.reason.startswith("not a valid intent: subject_id: String should match pattern")
    assert "u 1/../x" not in rejected.reason


def test_an_intent_of_an_unknown_schema_version_is_rejected_as_invalid():
    value = intent().to_bytes().replace(b'"schema_version":1', b'"schema_version":2')

    [rejected] = handlers.rejection(dead_intent(value, decode_error(value)))

    assert rejected.cause == "invalid" and rejected.subject_id == "u1" and rejected.key() == b"u1"
    assert rejected.reason == "not a valid intent: schema_version: Input should be 1"


def test_a_refused_or_unreadable_intent_is_answered_once_per_message_with_what_could_be_read():

    good = intent(producer="marketing")
    refused = handlers.IntentRejectedError("unauthorized", "the service 'marketing' may not ask")
    [unauthorized] = handlers.rejection(dead_intent(good.to_bytes(), refused, reason=str(refused)))
    [again] = handlers.rejection(dead_intent(good.to_bytes(), refused, reason=str(refused)))
    [garbage] = handlers.rejection(dead_intent(b"\xff{not json", decode_error(b"\xff{not json"), offset=10))
    [failed] = handlers.rejection(dead_intent(good.to_bytes(), KeyError("bug"), reason="failed 8 times", offset=11))
    [permanent] = handlers.rejection(dead_intent(None, PermanentError("no"), reason="no", offset=12))

    assert (unauthorized.cause, unauthorized.subject_id, unauthorized.intent_producer) == (
        "unauthorized",
        "u1",
        "marketing",
    )
    assert unauthorized.reason == "the service 'marketing' may not ask"
    assert again.event_id == unauthorized.event_id  # a re-consumed intent is answered with the same event
    assert garbage.cause == "invalid" and garbage.event_id != unauthorized.event_id
    assert (garbage.subject_id, garbage.intent_event_id, garbage.intent_producer) == (None, None, None)
    assert (failed.cause, failed.reason) == ("failed", "failed 8 times")
    assert permanent.cause == "failed"


@pytest.mark.asyncio
async def test_the_consumer_loop_answers_a_refused_intent_on_deletion_rejected_and_dead_letters_it():

    ports, _ = deletions()
    publisher = InMemoryPublisher()
    processor = MessageProcessor(
        routes=handlers.routes(ports.requests, lambda: T0, deletions=ports, producers=ALLOWED),
        publisher=publisher,
        settings=KafkaSettings(security_protocol="PLAINTEXT"),
        metrics=Metrics(service="test"),
    )
    refused = intent(producer="marketing")
    bad = intent().to_bytes().replace(b'"u1"', b'"bad id"')

    for offset, value in enumerate((refused.to_bytes(), bad, intent("u3").to_bytes())):
        await processor.process(Message("deletion.intents", 0, offset, b"k", value))

    rejected = [e for e in publisher.events if isinstance(e, DeletionRejected)]
    assert [(r.cause, r.subject_id) for r in rejected] == [("unauthorized", "u1"), ("invalid", None)]
    assert rejected[0].intent_event_id == refused.event_id
    dead = publisher.on("deletion.intents.dlq")
    assert [d.value for d in dead] == [refused.to_bytes(), bad]
    assert "may not ask for deletions" in dead[0].header("error")
    assert [r.subject_id for r in ports.requests.requests.values()] == ["u3"]


# --- Jurisdictions: the law a request is answered under sets its deadline ------------------------------------


@pytest.mark.asyncio
async def test_a_request_under_ccpa_gets_45_days_and_a_time_to_acknowledge_and_its_event_says_so():
    ports, _ = deletions()
    started, record = await ports.start("u1", requested_by="svc", channel="api", jurisdiction="ccpa")
    assert started and record.jurisdiction == "ccpa"
    assert record.deadline_at == T0 + 45 * DAY
    assert record.acknowledge_by == datetime(2026, 1, 15, tzinfo=UTC)  # 10 business days from Thursday 1 January
    [event] = ports.requests.outbox
    assert (event.jurisdiction, event.deadline_at, event.acknowledge_by) == (
        "ccpa",
        T0 + 45 * DAY,
        record.acknowledge_by,
    )


@pytest.mark.asyncio
async def test_an_unknown_jurisdiction_is_refused_before_anything_is_stored():
    ports, relay = deletions(u1="ada@example.test")
    with pytest.raises(handlers.UnknownJurisdictionError, match=r"unknown jurisdiction 'lgpd'.*ccpa, gdpr, uk_gdpr"):
        await ports.start("u1", requested_by="svc", channel="api", jurisdiction="lgpd")
    assert ports.requests.claims == {} and ports.requests.outbox == [] and ports.contacts.contacts == {}
    with pytest.raises(handlers.IntentRejectedError, match="unknown jurisdiction") as caught:
        await handlers.request_from_intent(intent(jurisdiction="lgpd"), ports, producers=ALLOWED)
    assert caught.value.cause == "invalid" and relay.kicks == 0


@pytest.mark.asyncio
async def test_an_intent_names_its_jurisdiction_and_the_overdue_warnings_follow_that_laws_deadline():
    ports, _ = deletions()
    await handlers.request_from_intent(intent("u1", jurisdiction="ccpa"), ports, producers=ALLOWED)
    await handlers.request_from_intent(intent("u2"), ports, producers=ALLOWED)
    ccpa, gdpr = sorted(ports.requests.requests.values(), key=lambda r: r.subject_id)
    assert (ccpa.jurisdiction, gdpr.jurisdiction) == ("ccpa", "gdpr")
    day_30 = T0 + 30 * DAY  # past 80% of GDPR's 31 days, not of CCPA's 45
    assert handlers.due_overdue(gdpr, now=day_30, warn_fraction=0.8) is not None
    assert handlers.due_overdue(ccpa, now=day_30, warn_fraction=0.8) is None
    warned = handlers.due_overdue(ccpa, now=T0 + 37 * DAY, warn_fraction=0.8)
    assert warned is not None and warned.deadline_at == T0 + 45 * DAY and not warned.past_deadline


@pytest.mark.asyncio
async def test_without_a_callers_jurisdiction_the_accounts_one_applies_and_an_unknown_one_falls_back_to_the_default():
    ports, _ = deletions()
    ports.accounts.jurisdictions |= {"u1": "ccpa", "u2": "atlantis"}
    _, first = await ports.start("u1", requested_by="svc", channel="api")
    _, second = await ports.start("u2", requested_by="svc", channel="api")
    _, third = await ports.start("u3", requested_by="svc", channel="api", jurisdiction="uk_gdpr")
    assert (first.jurisdiction, second.jurisdiction, third.jurisdiction) == ("ccpa", "gdpr", "uk_gdpr")


# --- Acknowledgement: where the law sets a time to confirm receipt ----------------------------------------------


def acknowledgements(ports, sent: list, *, down: bool = False) -> Acknowledgements:
    async def send(message) -> None:
        if down:
            raise ConnectionRefusedError("the mail server is away")
        sent.append(message)

    return Acknowledgements(
        ports.requests, ports.contacts, ports.keyvault, LAWS, send, "privacy@example.test", lambda: T0 + DAY
    )


@pytest.mark.asyncio
async def test_a_ccpa_request_is_acknowledged_once_by_mail_and_a_gdpr_one_needs_none():
    ports, _ = deletions(u1="ada@example.test", u2="bob@example.test")
    _, ccpa = await ports.start("u1", requested_by="svc", channel="api", jurisdiction="ccpa")
    _, gdpr = await ports.start("u2", requested_by="svc", channel="api")
    sent: list = []
    assert await acknowledgements(ports, sent).run() == 1
    [mail] = sent
    assert mail["To"] == "ada@example.test" and ccpa.request_id in mail["Subject"]
    body = mail.get_content()
    assert "California Consumer Privacy Act" in body and "2026-02-15" in body and "§ 7021(a)" in body
    assert (await ports.requests.get(ccpa.request_id)).acknowledged_at == T0 + DAY
    assert (await ports.requests.get(gdpr.request_id)).acknowledged_at is None
    assert await acknowledgements(ports, sent).run() == 0 and len(sent) == 1  # once


@pytest.mark.asyncio
async def test_an_acknowledgement_the_mail_server_refused_is_tried_again_and_one_never_sent_is_warned_about_once():
    ports, _ = deletions(u1="ada@example.test")
    _, record = await ports.start("u1", requested_by="svc", channel="api", jurisdiction="ccpa")
    sent: list = []
    assert await acknowledgements(ports, sent, down=True).run() == 0
    stored = await ports.requests.get(record.request_id)
    assert stored.acknowledged_at is None
    assert handlers.due_acknowledgement_late(stored, now=record.acknowledge_by - DAY) is None
    late = handlers.due_acknowledgement_late(stored, now=record.acknowledge_by + DAY)
    assert late is not None and (late.about, late.deadline_at) == ("acknowledgement", record.acknowledge_by)
    await handlers.track(late, ports.requests, now=record.acknowledge_by + DAY)
    stored = await ports.requests.get(record.request_id)
    assert stored.acknowledgement_late_at is not None and stored.overdue_warned_at is None
    assert handlers.due_acknowledgement_late(stored, now=record.acknowledge_by + 2 * DAY) is None  # once
    assert await acknowledgements(ports, sent).run() == 1  # the server is back: sent, late as it is


@pytest.mark.asyncio
async def test_the_email_channels_confirmation_mail_counts_as_the_acknowledgement():
    ports, _ = deletions()
    pending = handlers.pending_verification(subject_id="u1", now=T0)
    await ports.requests.save(pending)
    started, record = await handlers.request_deletion(
        ports.requests,
        subject_id="u1",
        requested_by="email",
        channel="email",
        now=T0 + timedelta(minutes=5),
        terms=handlers.terms_of(LAWS, "ccpa", now=T0, override_days=None),
        backups=90 * DAY,
        request_id=pending.request_id,
    )
    assert started and record.jurisdiction == "ccpa"
    sent: list = []
    assert await acknowledgements(ports, sent).run() == 1 and sent == []
    assert (await ports.requests.get(record.request_id)).acknowledged_at == T0


# --- Extension: an operator gives the request more time, as its law allows --------------------------------------


def actions(ports, now: datetime) -> tuple[RequestActions, Relay]:
    relay = Relay()
    return RequestActions(ports.requests, LAWS, lambda: now, relay.kick), relay


@pytest.mark.asyncio
async def test_an_extension_within_the_first_month_moves_the_gdpr_deadline_by_two_months_once():
    ports, _ = deletions()
    _, record = await ports.start("u1", requested_by="svc", channel="api")  # 1 January: due 1 February
    act, relay = actions(ports, T0 + 10 * DAY)
    event = await act.extend(record.request_id, reason="the archive must be restored first", by="dpo")
    assert (event.previous_deadline_at, event.deadline_at) == (T0 + 31 * DAY, datetime(2026, 4, 1, tzinfo=UTC))
    assert (event.extension, event.jurisdiction, event.legal_ref) == (1, "gdpr", "Art. 12(3) GDPR")
    assert event in ports.requests.outbox and relay.kicks == 1
    again = await act.extend(record.request_id, reason="the archive must be restored first", by="dpo")
    assert again.event_id == event.event_id  # not folded yet: the same extension, published once
    await handlers.track(event, ports.requests, now=T0 + 10 * DAY)
    extended = await ports.requests.get(record.request_id)
    assert (extended.deadline_at, extended.extensions) == (event.deadline_at, 1)
    assert extended.extension_reason == "the archive must be restored first" and "extended" in extended.stages
    with pytest.raises(ExtensionRefusedError, match="1 extension"):
        await act.extend(record.request_id, reason="still more", by="dpo")


@pytest.mark.asyncio
async def test_an_extension_told_too_late_is_refused_and_a_finished_request_has_none():
    ports, _ = deletions()
    _, record = await ports.start("u1", requested_by="svc", channel="api", jurisdiction="ccpa")
    late, _ = actions(ports, T0 + 46 * DAY)
    with pytest.raises(ExtensionRefusedError, match="too late"):
        await late.extend(record.request_id, reason="r", by="dpo")
    assert ports.requests.outbox == [ports.requests.outbox[0]]  # only deletion.requested
    for event in chain(record):
        await handlers.track(event, ports.requests, now=T0)
    on_time, _ = actions(ports, T0 + DAY)
    with pytest.raises(NotOpenError, match="completed"):
        await on_time.extend(record.request_id, reason="r", by="dpo")


@pytest.mark.asyncio
async def test_only_a_request_whose_law_wants_an_acknowledgement_wakes_the_job_and_a_woken_round_reads_only_it():
    ports, _ = deletions(u1="ada@example.test", u2="bob@example.test", u3="cy@example.test")
    sent: list = []
    job = acknowledgements(ports, sent)
    ports.on_accepted = job.accepted
    assert await job.run() == 0  # the first round scans (nothing open yet)
    await ports.start("u1", requested_by="svc", channel="api")
    assert not job.wake.is_set()  # GDPR sets no time to acknowledge
    _, ccpa = await ports.start("u2", requested_by="svc", channel="api", jurisdiction="ccpa")
    assert job.wake.is_set()
    read: list[str] = []
    get = ports.requests.get

    async def counting(request_id: str):
        read.append(request_id)
        return await get(request_id)

    ports.requests.get = counting  # type: ignore[method-assign]
    assert await job.run() == 1 and set(read) == {ccpa.request_id}  # not a scan of every open request
    assert [m["To"] for m in sent] == ["bob@example.test"]
