"""Retention as state, through lethe's public APIs with the five services as separate processes on the real stack.

Each test is one sequence of events a privacy team meets: a hold released while the tax rule still keeps
invoices, a hold placed after the purge tagged the records, a rule whose end date passes, a destroyed key in
another running process, a narrow token that tries to shred what the law keeps. The pipeline starts with the
shipped tax rule (invoices kept) and a one-day key grace window, so a hold placed after the purge can still
restore the keys it needs.
"""

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from shared import topics
from shared.auth import KEYS_ADMIN, KEYS_DESTROY_CONTACT, KEYS_USE, RETENTION_ADMIN
from shared.events import decode_event
from shared.keyvault_client import KeyCacheInvalidator, KeyUnavailableError, KeyvaultClient
from shared.mongo import create_mongo_client
from shared.settings import KafkaSettings, MongoSettings
from tests.e2e.test_lifecycle import one_webhook, outcomes, seed, stored
from tests.pipeline import ROOT, Api, Pipeline, Servers, running, token, until
from tests.support import kafka_options

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher, tmp_path_factory) -> Iterator[Pipeline]:
    servers = Servers.of(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher)
    env = {
        "INTAKE_DEFAULT_RULES_PATH": str(ROOT / "deploy" / "retention-rules.yaml"),
        "KEYVAULT_GRACE_DAYS": "1",
        "PURGER_RETENTION_CHECK_INTERVAL_S": "1",
    }
    with running(servers, tmp_path_factory.mktemp("retention"), env) as p:
        yield p


@pytest_asyncio.fixture
async def api(pipeline) -> Any:
    async with Api.with_receiver(pipeline) as both:
        yield both


async def key_states(a: Api, subject: str) -> dict[str, str]:
    status, body = await a.call("GET", "keyvault", f"/v1/subjects/{subject}/keys", KEYS_ADMIN)
    assert status == 200, body
    return {k["dataset"]: k["state"] for k in body["keys"]}


def purge_now(p: Pipeline, *extra: str) -> str:
    done = p.cli("purge", "--now", "--pause", "0", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_a_hold_released_while_the_tax_rule_keeps_invoices_leaves_the_invoices_key_active_and_readable(
    pipeline, api
):
    a, receiver = api
    [subject] = seed(pipeline, f"keep-{uuid.uuid4().hex[:6]}")
    [invoice] = (await stored(pipeline, "invoices", {"customer_id": subject}))[:1]
    hold = await a.place_hold(subject, "chat_messages", legal_ref="case 2026-204")
    request_id = await a.delete(subject)
    body = await a.wait_status(request_id, {"partial"})
    assert outcomes(body)["invoices"]["rule_id"] == "tax-10y"
    assert outcomes(body)["chat_messages"]["rule_id"] == hold

    await a.release_hold(hold)

    async def followed_up() -> dict[str, Any] | None:
        now = await a.request(request_id)
        return now if "chat_messages" in now["keys"]["destroyed"] else None

    body = await until(followed_up)
    # The follow-up reports every dataset: invoices are still kept, so the request stays partial.
    assert outcomes(body)["invoices"]["outcome"] == "retained"
    assert outcomes(body)["chat_messages"]["outcome"] == "tagged"
    assert body["result"] == "partial"
    assert "invoices" in body["keys"]["retained"] and "invoices" not in body["keys"]["destroyed"]
    states = await key_states(a, subject)
    assert states["invoices"] == "active" and states["chat_messages"] == "disabled"
    async with KeyvaultClient(pipeline.url("keyvault"), token=token(KEYS_USE)) as kv:
        assert (await kv.decrypt(subject, "invoices", invoice["billing_address"])).decode()
    payloads = await one_webhook(receiver, request_id, "data_deletion.partial", count=2)
    assert [p["type"] for p in payloads] == ["data_deletion.partial", "data_deletion.partial"]


async def test_a_hold_placed_after_tagging_keeps_the_held_records_through_the_nightly_purge_and_they_go_after_release(
    pipeline, api
):
    a, _ = api
    [subject] = seed(pipeline, f"late-{uuid.uuid4().hex[:6]}")
    request_id = await a.delete(subject)
    body = await a.wait_status(request_id, {"partial"})  # invoices are kept under the tax rule
    assert outcomes(body)["chat_messages"]["outcome"] == "tagged"
    assert (await key_states(a, subject))["chat_messages"] == "disabled"

    hold = await a.place_hold(subject, "chat_messages", legal_ref="case 2026-204")

    async def held() -> dict[str, Any] | None:
        now = await a.request(request_id)
        return now if now["held"] and now["keys"]["restored_for_hold"] else None

    body = await until(held)
    assert body["held"]["chat_messages"]["hold_id"] == hold
    assert body["held"]["chat_messages"]["records_kept"] is True
    assert body["keys"]["restored_for_hold"] == ["chat_messages"]
    assert (await key_states(a, subject))["chat_messages"] == "active"
    types = [i["type"] for i in await a.audit_story(request_id)]
    assert "deletion.held" in types

    printed = purge_now(pipeline)
    assert "deferred" in printed
    assert await stored(pipeline, "chat_messages", {"author_id": subject})  # kept through the nightly purge
    assert not await stored(pipeline, "accounts", {"user_id": subject})  # what no hold keeps is gone

    await a.release_hold(hold)

    async def destroyed_again() -> bool:
        return (await key_states(a, subject))["chat_messages"] == "disabled"

    await until(destroyed_again)
    purge_now(pipeline)
    assert not await stored(pipeline, "chat_messages", {"author_id": subject})

    async def no_longer_held() -> bool:
        return (await a.request(request_id))["held"] == {}

    await until(no_longer_held)


async def test_a_rule_whose_end_date_passes_frees_its_data_with_no_other_change(pipeline, api):
    a, _ = api
    [subject] = seed(pipeline, f"ends-{uuid.uuid4().hex[:6]}")
    # The rule ends on its own a few seconds from now; the purger's release job (every second here) is the only
    # thing that acts on it. (tests/unit/test_retention.py runs the same on a simulated clock, days apart.)
    ends = datetime.now(UTC) + timedelta(seconds=20)
    rule = {
        "rule_id": "profiles-briefly",
        "datasets": ["profiles"],
        "legal_basis": "contract (a dispute window)",
        "legal_ref": "terms §9",
        "expires_at": ends.isoformat(),
    }
    status, body = await a.call("PATCH", "intake", "/data_retention/rules", RETENTION_ADMIN, json={"rules": [rule]})
    assert status == 200, body
    try:
        request_id = await a.delete(subject)
        body = await a.wait_status(request_id, {"partial"})
        assert outcomes(body)["profiles"]["outcome"] == "retained"
        assert outcomes(body)["profiles"]["rule_id"] == "profiles-briefly"
        assert datetime.now(UTC) < ends, "the purge took longer than the rule's life: the test proves nothing"
        assert await stored(pipeline, "profiles", {"user_id": subject})

        async def freed() -> dict[str, Any] | None:
            now = await a.request(request_id)
            done = outcomes(now)["profiles"]["outcome"] == "erased" and "profiles" in now["keys"]["destroyed"]
            return now if done else None

        body = await until(freed, timeout_s=90)
        assert datetime.now(UTC) >= ends
        assert not await stored(pipeline, "profiles", {"user_id": subject})
        assert outcomes(body)["invoices"]["outcome"] == "retained"  # the tax rule did not end

        async def receipt_follows() -> bool:
            receipt = await a.receipt(request_id)
            return {d["dataset"]: d["outcome"] for d in receipt["document"]["datasets"]}["profiles"] == "erased"

        await until(receipt_follows)
    finally:
        status, body = await a.call(
            "PATCH", "intake", "/data_retention/rules", RETENTION_ADMIN, json={"remove": ["profiles-briefly"]}
        )
        assert status == 200, body


async def test_a_destroyed_key_fails_to_decrypt_in_another_running_process_within_one_second(pipeline, api):
    a, _ = api
    [subject] = seed(pipeline, f"cache-{uuid.uuid4().hex[:6]}")
    [profile] = await stored(pipeline, "profiles", {"user_id": subject})
    destroyed = AIOKafkaConsumer(
        topics.DELETION_KEYS_DESTROYED, **kafka_options(pipeline.servers.kafka), auto_offset_reset="latest"
    )
    async with KeyvaultClient(pipeline.url("keyvault"), token=token(KEYS_USE)) as kv:
        invalidator = KeyCacheInvalidator(kv, kafka=KafkaSettings(bootstrap_servers=pipeline.servers.kafka))
        await invalidator.start()
        await destroyed.start()
        reading = asyncio.create_task(invalidator.run())
        try:
            await asyncio.sleep(1)  # both readers take their position at the end
            await kv.decrypt(subject, "profiles", profile["display_name"])  # the key is cached now (5 minutes)
            assert kv.cached == 1
            request_id = await a.delete(subject)
            async with asyncio.timeout(120):
                async for message in destroyed:
                    event = decode_event(message.topic, message.value)
                    if event.request_id == request_id:
                        break
            seen = time.monotonic()
            async with asyncio.timeout(1):
                while True:
                    try:
                        await kv.decrypt(subject, "profiles", profile["display_name"])
                    except KeyUnavailableError:
                        break
                    await asyncio.sleep(0.01)
            assert time.monotonic() - seen < 1
            with pytest.raises(KeyUnavailableError):
                await kv.encrypt(subject, "profiles", b"new data under a disabled key")
        finally:
            reading.cancel()
            await invalidator.stop()
            await destroyed.stop()


async def test_the_notifiers_token_cannot_destroy_an_invoices_key_and_no_token_can_while_the_tax_rule_keeps_it(
    pipeline, api
):
    a, _ = api
    [subject] = seed(pipeline, f"scope-{uuid.uuid4().hex[:6]}")
    path = f"{pipeline.url('keyvault')}/v1/keys/{subject}/invoices/destroy"
    notifier = {"Authorization": f"Bearer {token(KEYS_USE, KEYS_DESTROY_CONTACT, subject='notifier')}"}
    async with a.http.post(path, headers=notifier, json={"request_id": "req_x"}) as r:
        assert r.status == 403, await r.text()
    admin = {"Authorization": f"Bearer {token(KEYS_ADMIN)}"}
    async with a.http.post(path, headers=admin, json={"request_id": "req_x"}) as r:
        problem = await r.json(content_type=None)
        assert r.status == 409 and r.content_type == "application/problem+json", problem
        assert "tax-10y" in problem["detail"]
    assert (await key_states(a, subject))["invoices"] == "active"


async def messages_mentioning(kafka: str, needle: bytes, *topic_names: str) -> list[str]:
    """Every message (value or header) on the topics that contains ``needle``, read from the start to the end."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(**kafka_options(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(t, n) for t in topic_names for n in range(topics.PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        found: list[str] = []
        while [p for p in parts if await consumer.position(p) < ends[p]]:
            for tp, batch in (await consumer.getmany(timeout_ms=1000)).items():
                for message in batch:
                    raw = (message.value or b"") + b"".join(v for _, v in message.headers)
                    if needle in raw:
                        found.append(f"{tp.topic}@{message.offset}")
        return found
    finally:
        await consumer.stop()


async def test_an_smtp_refusal_leaves_no_address_in_logs_or_kafka_and_the_request_final_with_the_mail_failed(
    pipeline, api
):
    a, _ = api
    [subject] = seed(pipeline, f"refused-{uuid.uuid4().hex[:6]}")
    address = f"ada.{subject}@refused.test"  # the local SMTP catcher answers 550 for this domain
    async with KeyvaultClient(pipeline.url("keyvault"), token=token(KEYS_USE)) as kv:
        sealed = await kv.encrypt(subject, "accounts", address.encode())
    client = create_mongo_client(MongoSettings(url=pipeline.servers.mongo_url))
    try:
        await client[pipeline.database]["accounts"].update_one({"user_id": subject}, {"$set": {"email": sealed}})
    finally:
        await client.close()

    request_id = await a.delete(subject)
    body = await a.wait_status(request_id, {"completed", "partial"})

    async def notified() -> dict[str, Any] | None:
        now = await a.request(request_id)
        return now if now["notified"] and now["notified"]["mail"] else None

    body = await until(notified)
    assert body["status"] == "partial"  # final: only the tax rule's invoices are kept
    assert body["notified"] == {**body["notified"], "email_sent": False, "mail": "failed", "smtp_code": 550}
    assert (await key_states(a, subject)).get("contact") == "destroyed"
    assert pipeline.mails_for(request_id) == []
    needle = address.encode()
    assert (
        await asyncio.to_thread(
            lambda: [log.name for log in pipeline.workdir.glob("*.log") if needle in log.read_bytes()]
        )
        == []
    )
    on_kafka = await messages_mentioning(
        pipeline.servers.kafka,
        needle,
        topics.DELETION_NOTIFIED,
        topics.DELETION_KEYS_DESTROYED,
        *(topics.dlq(t) for t in topics.EVENT_TOPICS),
    )
    assert on_kafka == []
