"""Upstream services ask for deletions on the bus, with the five services as separate processes.

An upstream service (a plain aiokafka producer, as the ``upstream`` Kafka principal) publishes the one command,
``deletion.intents``. intake treats it as an authenticated ``DELETE /users/{id}/data``: the request is found
through intake's API by subject, and ends with an audit trail, a webhook, a mail and a receipt like any other. An
intent intake refuses is answered on ``deletion.rejected`` and dead-lettered on ``deletion.intents.dlq``.
"""

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared import topics
from shared.auth import AUDIT_READ, DELETION_ANY
from shared.events import DeletionRejected, decode_event
from shared.kafka import ensure_topics
from shared.settings import KafkaSettings
from shared.signing import verify_document
from tests.e2e.test_lifecycle import DATAMAP, STORY, one_webhook, seed, the_mail, whole_story
from tests.pipeline import Api, Pipeline, Servers, running
from tests.support import kafka_options

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
# The one upstream service this pipeline's intake takes intents from: a name of its own, so that the intake of another
# pipeline on the same broker refuses these intents instead of starting deletions of its own.
ALLOWED = f"e2e-accounts-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher, tmp_path_factory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("intents")
    (workdir / "no-rules.yaml").write_text("rules: []\n")
    servers = Servers.of(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher)
    asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), topics.ALL_TOPICS, partitions=6))
    env = {
        "INTAKE_DEFAULT_RULES_PATH": str(workdir / "no-rules.yaml"),
        "INTAKE_INTENT_PRODUCERS": json.dumps([ALLOWED]),
    }
    with running(servers, workdir, env) as p:
        yield p


@pytest_asyncio.fixture
async def api(pipeline) -> Any:
    async with Api.with_receiver(pipeline) as both:
        yield both


@pytest_asyncio.fixture
async def upstream(pipeline) -> AsyncIterator[AIOKafkaProducer]:
    """An upstream service's producer: plain aiokafka, as the principal the ACLs let write only the intents."""
    options = KafkaSettings(
        bootstrap_servers=pipeline.servers.kafka,
        sasl_username="upstream",
        sasl_password=os.environ.get("LETHE_KAFKA_PASSWORD_UPSTREAM", ""),
    ).client_options()
    producer = AIOKafkaProducer(**options, acks="all", enable_idempotence=True)
    await producer.start()
    yield producer
    await producer.stop()


def intent(subject: str, *, producer: str = ALLOWED, **fields: Any) -> dict[str, Any]:
    """An intent as an upstream service writes it: JSON, with no code of lethe's."""
    return {
        "event_id": str(uuid.uuid4()),
        "type": "deletion.intents",
        "schema_version": 1,
        "occurred_at": datetime.now(UTC).isoformat(),
        "producer": producer,
        "subject_id": subject,
        "reason": "account closed by its owner",
        **fields,
    }


async def publish(producer: AIOKafkaProducer, *intents: dict[str, Any]) -> list[tuple[bytes, tuple[int, int]]]:
    """Publish each intent keyed by its subject id (so one subject's intents stay in order).

    Returns each one's bytes and where it landed (partition, offset).
    """
    sent = []
    for doc in intents:
        value = json.dumps(doc).encode()
        done = await producer.send_and_wait(topics.DELETION_INTENTS, value, key=str(doc["subject_id"]).encode())
        sent.append((value, (done.partition, done.offset)))
    return sent


async def requests_of(a: Api, subject: str) -> list[dict[str, Any]]:
    status, body = await a.call("GET", "intake", "/deletion_requests", DELETION_ANY, params={"subject_id": subject})
    assert status == 200, body
    return list(body["items"])


async def the_request(a: Api, subject: str) -> dict[str, Any]:
    """The subject's one request, once intake has started it."""
    async with asyncio.timeout(60):
        while not (found := await requests_of(a, subject)):
            await asyncio.sleep(0.3)
    [request] = found
    return request


async def audited(a: Api, subject: str, event_type: str) -> list[dict[str, Any]]:
    params = {"subject_id": subject, "event_type": event_type}
    status, body = await a.call("GET", "audit", "/audit/logs", AUDIT_READ, params=params)
    assert status == 200, body
    return list(body["items"])


def intake_log(p: Pipeline, event: str) -> list[dict[str, Any]]:
    """This pipeline's intake's log entries named ``event`` (JSON lines: LETHE_LOG_FORMAT=json).

    Other pipelines on the same broker consume the same intents: the log tells what this one's intake did.
    """
    lines = [json.loads(line) for line in p.log("intake").read_text().splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("event") == event]


def handled_intents(p: Pipeline, subject: str) -> list[dict[str, Any]]:
    return [e for e in intake_log(p, "intent.handled") if e.get("subject_id") == subject]


async def test_an_intent_is_tracked_to_its_end_with_an_audit_trail_a_webhook_a_mail_and_a_receipt(
    pipeline, api, upstream
):
    a, receiver = api
    [subject] = seed(pipeline, f"intent-{uuid.uuid4().hex[:6]}")

    [(sent, _)] = await publish(upstream, intent(subject))

    request = await the_request(a, subject)
    assert request["channel"] == "bus"
    request_id = request["request_id"]
    body = await a.wait_status(request_id, {"completed"})
    assert set(body["stages"]) >= {"received", "purging", "purged", "keys_destroyed", "notified"}
    [payload] = await one_webhook(receiver, request_id, "data_deletion.completed")
    assert payload["data"]["subject_id"] == subject
    assert "erased" in (await the_mail(pipeline, request_id)).lower()  # intake kept the address, as for the API
    signed = await a.receipt(request_id)
    _, key = await a.call("GET", "audit", "/audit/public_key", None)
    assert verify_document(signed, key["public_key"])
    assert {d["dataset"] for d in signed["document"]["datasets"]} == {d.name for d in DATAMAP.datasets}
    await whole_story(a, request_id, STORY)
    [requested] = await audited(a, subject, topics.DELETION_REQUESTED)
    assert (requested["event"]["requested_by"], requested["event"]["channel"]) == (f"upstream:{ALLOWED}", "bus")
    [asked] = await audited(a, subject, topics.DELETION_INTENTS)
    assert asked["event_id"] == json.loads(sent)["event_id"]


async def test_a_duplicate_intent_for_an_open_request_starts_nothing_new(pipeline, api, upstream):
    a, receiver = api
    [subject] = seed(pipeline, f"twice-{uuid.uuid4().hex[:6]}")
    first = intent(subject)

    # The purger is paused, so the request stays open however fast lethe is (a deletion takes well under a second);
    # it resumes within its consumer session, keeping its partitions and positions.
    pipeline.pause("purger")
    try:
        # The same intent twice (a re-sent message) and another one for the same subject, before the first is done.
        await publish(upstream, first, first, intent(subject, reason="support ticket 4711"))

        request_id = (await the_request(a, subject))["request_id"]
        async with asyncio.timeout(30):
            while len(handled := handled_intents(pipeline, subject)) < 3:
                await asyncio.sleep(0.3)
        assert {e["request_id"] for e in handled} == {request_id}
        assert [(e["started"], e["replayed"]) for e in handled] == [(True, False), (False, True), (False, False)]
        status, answer = await a.call("DELETE", "intake", f"/users/{subject}/data", DELETION_ANY)
        assert (status, answer["request_id"]) == (200, request_id)  # the API gives the same answer
    finally:
        pipeline.resume("purger")

    await a.wait_status(request_id, {"completed"})
    await one_webhook(receiver, request_id, "data_deletion.completed")
    await the_mail(pipeline, request_id)
    assert [r["request_id"] for r in await requests_of(a, subject)] == [request_id]
    assert len(await audited(a, subject, topics.DELETION_REQUESTED)) == 1


class Answers:
    """Reads what lands on deletion.rejected and deletion.intents.dlq from the moment it starts."""

    def __init__(self, kafka: str) -> None:
        self._consumer = AIOKafkaConsumer(**kafka_options(kafka), enable_auto_commit=False)
        self.rejected: list[DeletionRejected] = []
        self.dead: list[tuple[bytes | None, dict[str, str]]] = []

    async def __aenter__(self) -> "Answers":
        await self._consumer.start()
        parts = [
            TopicPartition(t, n)
            for t in (topics.DELETION_REJECTED, topics.dlq(topics.DELETION_INTENTS))
            for n in range(topics.PARTITIONS)
        ]
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:
            await self._consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def until(self, done: Any, timeout_s: float = 60) -> None:
        async with asyncio.timeout(timeout_s):
            while not done():
                for tp, batch in (await self._consumer.getmany(timeout_ms=500)).items():
                    for m in batch:
                        if tp.topic == topics.DELETION_REJECTED:
                            event = decode_event(tp.topic, m.value)
                            assert isinstance(event, DeletionRejected)
                            self.rejected.append(event)
                        else:
                            self.dead.append((m.value, {k: v.decode() for k, v in m.headers}))

    def rejection_of(self, doc: dict[str, Any]) -> list[DeletionRejected]:
        return [r for r in self.rejected if str(r.intent_event_id) == doc["event_id"]]

    def dead_letters_of(self, value: bytes) -> list[dict[str, str]]:
        return [headers for v, headers in self.dead if v == value]


async def test_an_intent_with_a_bad_subject_id_or_from_a_service_that_may_not_ask_is_rejected_and_reported(
    pipeline, api, upstream
):
    a, _ = api
    subject = f"refused-{uuid.uuid4().hex[:6]}"
    bad = intent(f"{subject} with spaces/..")
    intruder = intent(subject, producer="e2e-intruder")

    async with Answers(pipeline.servers.kafka) as answers:
        (bad_value, bad_at), (intruder_value, intruder_at) = await publish(upstream, bad, intruder)
        await answers.until(
            lambda: (
                answers.rejection_of(bad)
                and answers.rejection_of(intruder)
                and answers.dead_letters_of(bad_value)
                and answers.dead_letters_of(intruder_value)
            )
        )

    # Another pipeline's intake on the same broker answers with the same event (its id follows the intent's offset).
    [invalid] = {r.event_id: r for r in answers.rejection_of(bad)}.values()
    assert (invalid.cause, invalid.subject_id, invalid.intent_producer) == ("invalid", None, ALLOWED)
    assert invalid.reason.startswith("not a valid intent: subject_id:")
    [refused] = {r.event_id: r for r in answers.rejection_of(intruder)}.values()
    assert (refused.cause, refused.subject_id, refused.intent_producer) == ("unauthorized", subject, "e2e-intruder")
    assert "'e2e-intruder' may not ask for deletions" in refused.reason
    assert any("subject_id" in h["error"] for h in answers.dead_letters_of(bad_value))
    assert any("may not ask for deletions" in h["error"] for h in answers.dead_letters_of(intruder_value))
    assert all(h["original_topic"] == topics.DELETION_INTENTS for h in answers.dead_letters_of(intruder_value))
    assert await requests_of(a, subject) == []

    def by_this_intake() -> bool:
        told = {t for e in intake_log(pipeline, "event.sender_told") for t in e["told"]}
        dead = {
            (e["partition"], e["offset"])
            for e in intake_log(pipeline, "event.dead_lettered")
            if e["topic"] == topics.DELETION_INTENTS
        }
        answered = {f"deletion.rejected:{invalid.event_id}", f"deletion.rejected:{refused.event_id}"}
        return answered <= told and {bad_at, intruder_at} <= dead

    async with asyncio.timeout(30):
        while not by_this_intake():
            await asyncio.sleep(0.3)
    async with asyncio.timeout(30):  # audit keeps the answer, as it keeps every event
        while not await audited(a, subject, topics.DELETION_REJECTED):
            await asyncio.sleep(0.3)
