"""Processors that erase their own copy and confirm, through every service's handlers on fakes: the purger reports
``pending_confirmation`` and then the answer; notifier asks each processor once and holds the final notice back;
intake checks a signed answer, records it for publication, and keeps the request open in ``awaiting_confirmation``.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from services.intake.adapters.memory import InMemoryRequestStore
from services.intake.handlers import fold
from services.intake.model import DeletionRequest
from services.intake.processors import BadSignatureError, NotAwaitedError, ProcessorAnswers, UnknownProcessorError
from services.notifier import handlers as notifier
from services.notifier.adapters.memory import InMemoryWebhookStore
from services.notifier.model import Endpoint, Secret
from services.purger import handlers
from services.purger.adapters.memory import InMemoryProgress, InMemoryStores
from shared.consumer import PermanentError
from shared.datamap import DataMap, DataMapError, Dataset, MongoLocation, ProcessorLocation, processor_secrets
from shared.events import (
    DatasetOutcome,
    DeletionKeysDestroyed,
    DeletionProcessorConfirmed,
    DeletionPurged,
    DeletionRequested,
    RetentionRulesChanged,
)
from shared.fakes import InMemoryContactStore, InMemoryRetentionStore
from shared.retention import Rule
from tests.support import deletion_requested

pytestmark = pytest.mark.asyncio
T0 = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEWSLETTER = Dataset(
    name="newsletter",
    store="processor",
    processor=ProcessorLocation(name="Mailer Ltd", endpoint="https://mailer.example/erase", secret_env="MAILER_SECRET"),
)
PROFILES = Dataset(name="profiles", store="mongo", mongo=MongoLocation(collection="profiles", subject_field="u"))
DATAMAP = DataMap(datasets=(PROFILES, NEWSLETTER))


def purger_world():
    stores = InMemoryStores(records={"profiles": {"p1": "u1"}})
    retention = InMemoryRetentionStore()
    purger = handlers.Purger(
        datamap=DATAMAP,
        erasers={"mongo": stores},
        retention=retention,
        progress=InMemoryProgress(),
        ledger=stores,
        clock=lambda: T0,
        purge_after=DAY,
    )
    return purger, retention


def requested() -> DeletionRequested:
    return deletion_requested(at=T0)


def answer(outcome="erased", via="processor", reason=None) -> DeletionProcessorConfirmed:
    return DeletionProcessorConfirmed(
        request_id="req_1",
        subject_id="u1",
        producer="intake",
        occurred_at=T0 + DAY,
        dataset="newsletter",
        outcome=outcome,
        via=via,
        confirmed_by="Mailer Ltd",
        reason=reason,
    )


async def test_a_processor_dataset_waits_for_its_confirmation_then_reports_it_in_a_follow_up():
    purger, _ = purger_world()
    [first] = await handlers.purge(requested(), purger)
    outcomes = {o.dataset: o.outcome for o in first.outcomes}
    assert outcomes == {"profiles": "erased", "newsletter": "pending_confirmation"} and first.result == "pending"

    [follow_up] = await handlers.on_processor_confirmed(answer(), purger)
    assert isinstance(follow_up, DeletionPurged) and follow_up.round == 1
    newsletter = {o.dataset: o for o in follow_up.outcomes}["newsletter"]
    assert (newsletter.outcome, newsletter.confirmed_at, newsletter.confirmed_via) == ("erased", T0 + DAY, "processor")
    assert {o.dataset for o in follow_up.outcomes} == {"profiles", "newsletter"}  # every outcome, again
    assert follow_up.result == "completed"
    assert await handlers.on_processor_confirmed(answer(), purger) == [follow_up]  # a replay: the same report
    again = await handlers.on_processor_confirmed(answer("refused", reason="later"), purger)
    assert again == [follow_up]  # a second answer changes nothing


async def test_a_refusal_is_reported_with_its_reason_and_makes_the_request_partial():
    purger, _ = purger_world()
    await handlers.purge(requested(), purger)
    [follow_up] = await handlers.on_processor_confirmed(answer("refused", reason="legal claim pending"), purger)
    newsletter = {o.dataset: o for o in follow_up.outcomes}["newsletter"]
    assert (newsletter.outcome, newsletter.error) == ("refused", "legal claim pending")
    assert follow_up.result == "partial"


async def test_a_processor_dataset_a_rule_keeps_is_retained_and_never_asked():
    purger, retention = purger_world()
    rule = Rule(rule_id="crm-3y", datasets=("newsletter",), legal_basis="contract", legal_ref="§ 1")
    await retention.replace_rules((rule,), expected_version=0, by="dpo", at=T0)
    [first] = await handlers.purge(requested(), purger)
    assert {o.dataset: o.outcome for o in first.outcomes}["newsletter"] == "retained"
    with pytest.raises(PermanentError, match="awaits no confirmation"):
        await handlers.on_processor_confirmed(answer(), purger)


async def test_an_answer_for_a_request_the_purger_never_reported_is_dead_lettered():
    purger, _ = purger_world()
    with pytest.raises(PermanentError, match="has not reported"):
        await handlers.on_processor_confirmed(answer(), purger)


def keys_destroyed(result_outcome: str) -> DeletionKeysDestroyed:
    outcomes = (
        DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),
        DatasetOutcome(dataset="newsletter", store="processor", outcome=result_outcome),
    )
    return DeletionKeysDestroyed(
        request_id="req_1",
        subject_id="u1",
        producer="keyvault",
        outcomes=outcomes,
        result="pending" if result_outcome == "pending_confirmation" else "completed",
    )


def notifier_world() -> notifier.Notifier:
    endpoint = Endpoint(
        endpoint_id="processor-newsletter",
        url="https://mailer.example/erase",
        event_types=(notifier.ERASURE_REQUESTED,),
        secrets=(Secret(SECRET, T0),),
        created_at=T0,
    )

    async def no_mail(_):
        raise AssertionError("no mail while a processor has not answered")

    return notifier.Notifier(
        store=InMemoryWebhookStore(),
        contacts=InMemoryContactStore(),
        keyvault=None,
        send_mail=no_mail,
        sender="lethe@example.test",
        clock=lambda: datetime.now(UTC),  # the receiver checks the signature's timestamp against its own clock
        schedule=(0, 5),
        mail_daily_cap=100,
        processors={"newsletter": endpoint},
        confirm_url="https://lethe.example/processor_confirmations",
    )


async def test_notifier_asks_each_waiting_processor_once_and_holds_the_final_notice_back():
    n = notifier_world()
    assert await notifier.on_keys_destroyed(keys_destroyed("pending_confirmation"), n) == []  # no notice yet
    assert await notifier.on_keys_destroyed(keys_destroyed("pending_confirmation"), n) == []  # a replay
    [delivery] = await n.store.deliveries_for_request("req_1")
    assert (delivery.endpoint_id, delivery.event_type) == ("processor-newsletter", notifier.ERASURE_REQUESTED)
    data = json.loads(delivery.payload)["data"]
    assert data["dataset"] == "newsletter" and data["confirm_url"].endswith("/processor_confirmations")
    sent = []

    async def send(url, body, headers):
        sent.append((url, body, headers))
        return notifier.AttemptResult(200, None, 3)

    assert await notifier.deliver_due(n, send) == 1
    url, body, headers = sent[0]
    assert url == "https://mailer.example/erase"
    Webhook(SECRET).verify(body, headers)  # signed with the processor's own secret


def intake_world(*, subject_outcome: str = "pending_confirmation"):
    store = InMemoryRequestStore()
    relay = []
    answers = ProcessorAnswers(DATAMAP, {"newsletter": SECRET}, store, lambda: T0 + DAY, lambda: relay.append(1))
    return answers, store, relay


async def purged_request(store: InMemoryRequestStore, outcome: str = "pending_confirmation") -> DeletionRequest:
    event = requested()
    await store.claim(event)
    record = fold(None, event, seen_at=T0)
    purged = DeletionPurged(
        request_id="req_1",
        subject_id="u1",
        producer="purger",
        occurred_at=T0,
        outcomes=(
            DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),
            DatasetOutcome(dataset="newsletter", store="processor", outcome=outcome),
        ),
    )
    record = fold(record, purged, seen_at=T0)
    await store.save(record)
    return record


async def test_intake_keeps_a_request_open_until_its_processor_answers():
    _, store, _ = intake_world()
    record = await purged_request(store)
    assert (record.status, record.is_open, record.awaiting) == ("awaiting_confirmation", True, ["newsletter"])
    answered = DeletionPurged(
        request_id="req_1",
        subject_id="u1",
        producer="purger",
        round=1,
        occurred_at=T0 + DAY,
        outcomes=(
            DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),
            DatasetOutcome(dataset="newsletter", store="processor", outcome="erased", confirmed_at=T0 + DAY),
        ),
    )
    after = fold(record, answered, seen_at=T0 + DAY)
    assert after.status != "awaiting_confirmation" and after.awaiting == [] and after.result == "completed"


async def test_intake_records_a_signed_answer_for_the_relay_and_refuses_a_forged_one():
    answers, store, relay = intake_world()
    await purged_request(store)
    body = json.dumps({"request_id": "req_1", "dataset": "newsletter", "outcome": "erased"}).encode()
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(datetime.now(UTC).timestamp()))}
    headers["webhook-signature"] = Webhook(SECRET).sign("msg_1", datetime.now(UTC), body.decode())
    answers.verify("newsletter", body, headers)
    forged = headers | {"webhook-signature": Webhook("whsec_" + "A" * 32).sign("msg_1", datetime.now(UTC), "x")}
    with pytest.raises(BadSignatureError):
        answers.verify("newsletter", body, forged)
    with pytest.raises(UnknownProcessorError):
        answers.verify("profiles", body, headers)  # not a processor: no secret to check against

    event = await answers.answer("req_1", "newsletter", "erased", via="processor", by="Mailer Ltd", reason=None)
    assert event in store.outbox and relay == [1]
    assert (event.dataset, event.outcome, event.via) == ("newsletter", "erased", "processor")


async def test_intake_refuses_an_answer_the_request_does_not_wait_for():
    answers, store, _ = intake_world()
    await purged_request(store, outcome="erased")
    with pytest.raises(NotAwaitedError, match="its outcome is erased"):
        await answers.answer("req_1", "newsletter", "erased", via="operator", by="dpo", reason="by phone")
    with pytest.raises(UnknownProcessorError):
        await answers.answer("req_1", "profiles", "erased", via="operator", by="dpo", reason="x")


async def test_a_processor_without_its_secret_in_the_environment_stops_the_start():
    with pytest.raises(DataMapError, match="set MAILER_SECRET"):
        processor_secrets(DATAMAP, {})
    assert processor_secrets(DATAMAP, {"MAILER_SECRET": SECRET}) == {"newsletter": SECRET}


async def test_a_processor_dataset_a_rule_kept_is_asked_for_once_the_rule_is_gone_and_its_answer_then_counts():
    purger, retention = purger_world()
    rule = Rule(rule_id="crm-3y", datasets=("newsletter",), legal_basis="contract", legal_ref="§ 1")
    await retention.replace_rules((rule,), expected_version=0, by="dpo", at=T0)
    [first] = await handlers.purge(requested(), purger)
    assert {o.dataset: o.outcome for o in first.outcomes}["newsletter"] == "retained"
    await retention.replace_rules((), expected_version=1, by="dpo", at=T0)
    [freed] = await handlers.on_rules_changed(RetentionRulesChanged(producer="intake", rule_ids=(), version=2), purger)
    assert freed.round == 1 and {o.dataset: o.outcome for o in freed.outcomes}["newsletter"] == "pending_confirmation"
    [answered] = await handlers.on_processor_confirmed(answer(), purger)
    assert answered.round == 2 and answered.result == "completed"
