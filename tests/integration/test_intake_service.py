"""intake on the real stack: the deletion API, its access rules, idempotency, status from Kafka, the email
channel through the SMTP catcher, retention rules, legal holds, rate limits and the deadline watch."""

import asyncio
import email
import os
import re
import sys
import uuid
from asyncio.subprocess import PIPE, STDOUT
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from pymongo import AsyncMongoClient

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from services.keyvault.app import create_app as create_keyvault
from services.keyvault.settings import KeyvaultSettings
from shared import topics
from shared.auth import (
    AUDIT_READ,
    DELETION_ANY,
    DELETION_SELF,
    KEYS_USE,
    RETENTION_ADMIN,
    RETENTION_READ,
    WEBHOOKS_ADMIN,
    issue_token,
)
from shared.contacts import CONTACT_DATASET, email_lookup_hash
from shared.events import (
    DeletionKeysDestroyed,
    DeletionNotified,
    DeletionPurged,
    InvalidEventError,
    KeyRef,
    decode_event,
)
from shared.jurisdictions import add_months
from shared.kafka import KafkaPublisher, ensure_topics
from shared.keyvault_client import KeyvaultClient
from shared.settings import AuthSettings, KafkaSettings, MongoSettings, SmtpSettings
from tests.support import PARTIAL, free_port, kafka_options, ready

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]

AUTH = AuthSettings(jwt_secret="intake-test-secret-of-at-least-32-bytes")
LOOKUP_KEY = "intake-test-lookup-key"


def token(*scopes: str, subject: str = "svc-test", auth: AuthSettings = AUTH, ttl: float = 300) -> str:
    return issue_token(auth, subject=subject, scopes=scopes, ttl=timedelta(seconds=ttl))


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


class Clock:
    """The service's clock, movable by the test (never by sleeping)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest_asyncio.fixture
async def stack(kafka_bootstrap, mongo_url, smtp_catcher, tmp_path):
    # Groups of their own from the end of the log: what other runs left on the topics (a benchmark leaves
    # hundreds of thousands of events) is not this test's to fold before its own.
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, group_prefix=f"t{uuid.uuid4().hex[:6]}", start_from="latest"
    )
    await ensure_topics(kafka, topics.ALL_TOPICS, partitions=topics.PARTITIONS)
    mongo = MongoSettings(url=mongo_url, database=f"lethe_in_{uuid.uuid4().hex[:8]}")
    intake_port = free_port()
    keyvault = KeyvaultSettings(
        http_port=free_port(),
        kafka=kafka,
        mongo=mongo,
        auth=AUTH,
        local_keyring_file=tmp_path / "keyring.json",
        intake_url=f"http://127.0.0.1:{intake_port}",
        intake_token=token(RETENTION_READ, subject="keyvault"),
    )
    host, smtp_port, mail_dir = smtp_catcher
    clock = Clock()
    settings = IntakeSettings(
        http_port=intake_port,
        kafka=kafka,
        mongo=mongo,
        auth=AUTH,
        smtp=SmtpSettings(host=host, port=smtp_port),
        keyvault_url=f"http://127.0.0.1:{keyvault.http_port}",
        keyvault_token=token(KEYS_USE, subject="intake"),
        email_lookup_key=LOOKUP_KEY,
        rate_limit="100000/minute",
        deadline_watch_interval_s=0.2,
    )
    kv = create_keyvault(keyvault)
    await kv.start()
    intake = create_app(settings, clock=clock)
    await intake.start()
    async with asyncio.timeout(60):  # joined its group and took its positions: it sees what is published next
        while not await asyncio.to_thread(ready, settings.http_port):
            await asyncio.sleep(0.2)
    client = AsyncMongoClient(mongo_url, tz_aware=True)
    url = f"http://127.0.0.1:{settings.http_port}"
    async with aiohttp.ClientSession(base_url=url) as http:
        yield {
            "http": http,
            "url": url,
            "kafka": kafka,
            "db": client[mongo.database],
            "mail_dir": mail_dir,
            "clock": clock,
            "keyvault_url": f"http://127.0.0.1:{keyvault.http_port}",
        }
    await intake.stop()
    await kv.stop()
    await client.drop_database(mongo.database)
    await client.close()


def _safe(record):
    try:
        return decode_event(record.topic, record.value)
    except InvalidEventError:
        return None


def _decoded(batch, subject_id):
    found = []
    for records in batch.values():
        for record in records:
            try:
                event = decode_event(record.topic, record.value)
            except InvalidEventError:  # other tests put poison messages on these topics
                continue
            if event.subject_id == subject_id:
                found.append(event)
    return found


async def events_on(kafka: KafkaSettings, topic: str, *, subject_id: str, count: int, within_s: float = 30):
    """The first ``count`` events for ``subject_id`` on ``topic`` from the start, then a short wait for extras."""
    reader = AIOKafkaConsumer(topic, **kafka_options(kafka.bootstrap_servers), auto_offset_reset="earliest")
    await reader.start()
    found = []
    try:
        async with asyncio.timeout(within_s):
            while len(found) < count:
                found += _decoded(await reader.getmany(timeout_ms=500), subject_id)
        found += _decoded(await reader.getmany(timeout_ms=1500), subject_id)  # anything published twice shows here
    finally:
        await reader.stop()
    return found


async def test_a_deletion_is_accepted_stored_and_published_once(stack):
    http, subject = stack["http"], f"user-{uuid.uuid4().hex[:8]}"
    async with http.delete(f"/users/{subject}/data", headers=bearer(token(DELETION_SELF, subject=subject))) as r:
        assert r.status == 202
        body = await r.json()
    assert body["status"] == "received"
    assert body["status_url"].endswith(f"/deletion_requests/{body['request_id']}")
    created = datetime.fromisoformat(body["created_at"])
    assert datetime.fromisoformat(body["deadline_at"]) == add_months(created, 1)  # GDPR, the default
    assert (body["jurisdiction"], body["acknowledge_by"]) == ("gdpr", None)
    assert datetime.fromisoformat(body["backups_purged_by"]) - created == timedelta(days=90)
    published = await events_on(stack["kafka"], topics.DELETION_REQUESTED, subject_id=subject, count=1)
    assert [e.request_id for e in published] == [body["request_id"]]
    async with asyncio.timeout(20):  # intake reads its own event back: the purger has it now
        while (await _status(http, body["request_id"]))["status"] != "purging":
            await asyncio.sleep(0.1)


async def test_a_deletion_under_ccpa_has_its_deadline_and_time_to_acknowledge_and_the_event_says_so(stack):
    http, subject = stack["http"], f"user-{uuid.uuid4().hex[:8]}"
    async with http.delete(
        f"/users/{subject}/data", params={"jurisdiction": "ccpa"}, headers=bearer(token(DELETION_ANY))
    ) as r:
        assert r.status == 202, await r.text()
        body = await r.json()
    created = datetime.fromisoformat(body["created_at"])
    assert body["jurisdiction"] == "ccpa"
    assert datetime.fromisoformat(body["deadline_at"]) - created == timedelta(days=45)
    acknowledge_by = datetime.fromisoformat(body["acknowledge_by"])
    assert timedelta(days=12) <= acknowledge_by - created <= timedelta(days=14)  # 10 business days
    [published] = await events_on(stack["kafka"], topics.DELETION_REQUESTED, subject_id=subject, count=1)
    assert published.jurisdiction == "ccpa"
    assert abs(published.deadline_at - (created + timedelta(days=45))) < timedelta(milliseconds=1)  # stored: ms


async def _status(http, request_id, scopes=(DELETION_ANY,)):
    async with http.get(f"/deletion_requests/{request_id}", headers=bearer(token(*scopes))) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_a_subjects_requests_are_found_by_its_id(stack):
    http, admin = stack["http"], bearer(token(DELETION_ANY))
    subject, other = f"user-{uuid.uuid4().hex[:8]}", f"user-{uuid.uuid4().hex[:8]}"
    started = []
    for who in (subject, other):
        async with http.delete(f"/users/{who}/data", headers=admin) as r:
            started.append((await r.json())["request_id"])
    async with http.get("/deletion_requests", headers=admin, params={"subject_id": subject}) as r:
        assert r.status == 200
        body = await r.json()
    assert [(i["request_id"], i["subject_id"]) for i in body["items"]] == [(started[0], subject)]


async def test_fifty_concurrent_identical_deletes_create_one_request(stack):
    http = stack["http"]
    for key in ("same-key", None):
        subject = f"user-{uuid.uuid4().hex[:8]}"
        headers = bearer(token(DELETION_ANY)) | ({"Idempotency-Key": key} if key else {})

        async def one(headers=headers, subject=subject):
            async with http.delete(f"/users/{subject}/data", headers=headers) as r:
                return r.status, (await r.json())["request_id"]

        answers = await asyncio.gather(*(one() for _ in range(50)))
        assert len({rid for _, rid in answers}) == 1, key
        statuses = sorted(status for status, _ in answers)
        # With a key, every retry replays the first answer; without, the others get the open request.
        assert statuses == ([202] * 50 if key else [200] * 49 + [202]), key
        published = await events_on(stack["kafka"], topics.DELETION_REQUESTED, subject_id=subject, count=1)
        assert len(published) == 1, key
    async with http.delete(
        "/users/someone-else/data", headers=bearer(token(DELETION_ANY)) | {"Idempotency-Key": "same-key"}
    ) as r:
        assert r.status == 422
        assert "header.Idempotency-Key" in (await r.json())["detail"]


async def test_the_status_follows_the_chain_on_kafka(stack):
    http, subject = stack["http"], f"user-{uuid.uuid4().hex[:8]}"
    async with http.delete(f"/users/{subject}/data", headers=bearer(token(DELETION_ANY))) as r:
        rid = (await r.json())["request_id"]
    ids = {"request_id": rid, "subject_id": subject, "producer": "test"}
    publisher = KafkaPublisher(stack["kafka"], client_id="test")
    await publisher.start()
    for event in (
        DeletionPurged(**ids, outcomes=PARTIAL),
        DeletionKeysDestroyed(
            **ids, outcomes=PARTIAL, destroyed=(KeyRef(dataset="profiles", key_id="dek_x"),), result="partial"
        ),
        DeletionNotified(**ids, result="partial", webhook_endpoints=2, email_sent=False),
    ):
        await publisher.publish(event)
    await publisher.stop()
    async with asyncio.timeout(30):
        # Each event is on its own topic, so intake may fold them in any order (and the test's may overtake
        # intake's own deletion.requested, which its outbox relay publishes on a timer): wait for every stage.
        stages = {"received", "purging", "purged", "keys_destroyed", "notified"}
        while not stages <= set((body := await _status(http, rid))["stages"]):
            await asyncio.sleep(0.2)
    assert body["status"] == "partial"
    assert {o["dataset"]: o["outcome"] for o in body["outcomes"]} == {"profiles": "erased", "invoices": "retained"}
    kept = next(o for o in body["outcomes"] if o["dataset"] == "invoices")
    assert (kept["rule_id"], kept["legal_ref"]) == ("tax-10y", "HGB §257")
    assert body["keys"]["destroyed"] == ["profiles"]
    assert body["notified"] == {"webhook_endpoints": 2, "email_sent": False, "mail": None, "smtp_code": None}
    assert list(body["stages"]) == ["received", "purging", "purged", "keys_destroyed", "notified"]
    # Done, so a new DELETE starts a new request.
    async with http.delete(f"/users/{subject}/data", headers=bearer(token(DELETION_ANY))) as r:
        assert r.status == 202
        assert (await r.json())["request_id"] != rid


async def test_no_wrong_token_gets_a_2xx_from_any_endpoint(stack):
    http = stack["http"]
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    async with http.delete(f"/users/{alice}/data", headers=bearer(token(DELETION_SELF, subject=alice))) as r:
        alices_request = (await r.json())["request_id"]
    async with http.post(
        "/legal_holds",
        headers=bearer(token(RETENTION_ADMIN)),
        json={"subject_id": alice, "datasets": ["invoices"], "reason": "r", "legal_basis": "b", "legal_ref": "x"},
    ) as r:
        hold_id = (await r.json())["hold_id"]
    forged = token(
        DELETION_ANY, RETENTION_ADMIN, auth=AuthSettings(jwt_secret="a-different-secret-of-32-bytes-or-more")
    )
    expired = issue_token(AUTH, subject="svc", scopes=[DELETION_ANY, RETENTION_ADMIN], ttl=timedelta(seconds=-120))
    tokens = {
        "none": None,
        "garbage": "Bearer not.a.jwt",
        "wrong scheme": f"Basic {token(DELETION_ANY)}",
        "forged": f"Bearer {forged}",
        "expired": f"Bearer {expired}",
        "no scopes": f"Bearer {token()}",
        "other admin scopes": f"Bearer {token(AUDIT_READ, WEBHOOKS_ADMIN, KEYS_USE)}",
        "bob's own token": f"Bearer {token(DELETION_SELF, subject=bob)}",
    }
    endpoints = [
        ("DELETE", f"/users/{alice}/data", None),
        ("GET", f"/deletion_requests/{alices_request}", None),
        ("GET", "/data_retention/rules", None),
        ("PATCH", "/data_retention/rules", {"rules": [], "remove": ["tax-10y"]}),
        (
            "POST",
            "/legal_holds",
            {"subject_id": bob, "datasets": ["invoices"], "reason": "r", "legal_basis": "b", "legal_ref": "x"},
        ),
        ("GET", "/legal_holds", None),
        ("GET", f"/legal_holds/{hold_id}", None),
        ("DELETE", f"/legal_holds/{hold_id}", None),
    ]
    expected_for = {"none": {401}, "garbage": {401}, "wrong scheme": {401}, "forged": {401}, "expired": {401}}
    for kind, header in tokens.items():
        for method, path, body in endpoints:
            headers = {"Authorization": header} if header else {}
            async with http.request(method, path, headers=headers, json=body) as r:
                allowed = expected_for.get(kind, {403, 404})
                assert r.status in allowed, (kind, method, path, r.status)
                assert r.content_type == "application/problem+json"
    # A subject's own token reads its own request; another subject's gets 404, as if it did not exist.
    async with http.get(
        f"/deletion_requests/{alices_request}", headers=bearer(token(DELETION_SELF, subject=alice))
    ) as r:
        assert r.status == 200
    async with http.get(f"/deletion_requests/{alices_request}", headers=bearer(token(DELETION_SELF, subject=bob))) as r:
        assert r.status == 404
    async with http.get(f"/deletion_requests/req_{'0' * 32}", headers=bearer(token(DELETION_SELF, subject=bob))) as r:
        assert r.status == 404
    # Nothing the refused calls asked for happened.
    async with http.get(f"/legal_holds/{hold_id}", headers=bearer(token(RETENTION_ADMIN))) as r:
        assert (await r.json())["active"] is True
    async with http.get("/data_retention/rules", headers=bearer(token(RETENTION_ADMIN))) as r:
        assert [rule["rule_id"] for rule in (await r.json())["rules"]] == ["tax-10y"]


async def test_bad_input_gets_a_4xx_naming_the_field(stack):
    http, admin = stack["http"], bearer(token(DELETION_ANY, RETENTION_ADMIN))
    cases = [
        ("DELETE", "/users/has%20space/data", {}, None, 422, "path.id"),
        ("GET", "/deletion_requests/not-an-id", {}, None, 422, "path.request_id"),
        ("GET", "/deletion_requests?subject_id=has%20space", {}, None, 422, "query.subject_id"),
        ("DELETE", "/users/u1/data", {"Idempotency-Key": "x" * 300}, None, 422, "header.Idempotency-Key"),
        ("DELETE", "/users/u1/data?jurisdiction=lgpd", {}, None, 422, "query.jurisdiction"),
        ("DELETE", "/users/u1/data?jurisdiction=Not%20One", {}, None, 422, "query.jurisdiction"),
        ("PATCH", "/data_retention/rules", {}, {"rules": [{"rule_id": "r1"}]}, 422, "body.rules.0.datasets"),
        (
            "POST",
            "/legal_holds",
            {},
            {"subject_id": "u1", "datasets": ["nope"], "reason": "r", "legal_basis": "b", "legal_ref": "x"},
            422,
            "body.datasets.0",
        ),
        ("GET", "/legal_holds?limit=1000", {}, None, 422, "query.limit"),
        ("POST", "/deletion_requests", {}, {"email": "not-an-address"}, 422, "body.email"),
        ("POST", "/deletion_requests/verify", {}, {"token": "abc"}, 422, "body.token"),
    ]
    for method, path, headers, body, status, field in cases:
        async with http.request(method, path, headers=admin | headers, json=body) as r:
            assert r.status == status, (path, await r.text())
            assert field in (await r.json())["detail"], (path, await r.text())
    async with http.post(
        "/legal_holds",
        headers=admin,
        data=b"{not json",
    ) as r:
        assert r.status in (400, 415)
    async with http.post("/deletion_requests", data=b"x" * 20_000, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413


async def test_rules_are_versioned_published_and_checked_against_the_data_map(stack):
    http, admin = stack["http"], bearer(token(RETENTION_ADMIN, subject="dpo"))
    async with http.get("/data_retention/rules", headers=admin) as r:
        first = await r.json()
    assert first["version"] == 1 and first["rules"][0]["rule_id"] == "tax-10y"
    rule = {"rule_id": "contract-6y", "datasets": ["usage_logs"], "legal_basis": "contract", "legal_ref": "§ 195 BGB"}
    async with http.patch("/data_retention/rules", headers=admin | {"If-Match": '"1"'}, json={"rules": [rule]}) as r:
        assert r.status == 200
        second = await r.json()
        assert r.headers["ETag"] == '"2"'
    assert second["version"] == 2 and {x["rule_id"] for x in second["rules"]} == {"tax-10y", "contract-6y"}
    async with http.patch(
        "/data_retention/rules", headers=admin | {"If-Match": '"1"'}, json={"remove": ["tax-10y"]}
    ) as r:
        assert r.status == 412
    reader = AIOKafkaConsumer(
        topics.RETENTION_RULES_CHANGED, **kafka_options(stack["kafka"].bootstrap_servers), auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        seen = []
        async with asyncio.timeout(30):
            while not any(e.version == 2 and e.rule_ids == ("contract-6y",) for e in seen):
                batch = await reader.getmany(timeout_ms=500)
                seen += [e for x in batch.values() for r in x if (e := _safe(r)) is not None]
    finally:
        await reader.stop()


async def test_a_hold_is_placed_listed_and_released_with_events(stack):
    http, admin = stack["http"], bearer(token(RETENTION_ADMIN, subject="legal"))
    subject = f"user-{uuid.uuid4().hex[:8]}"
    body = {
        "subject_id": subject,
        "datasets": ["chat_messages"],
        "reason": "litigation",
        "legal_basis": "legal claims (Art. 17(3)(e))",
        "legal_ref": "case 2026-17",
    }
    async with http.post("/legal_holds", headers=admin, json=body) as r:
        assert r.status == 201
        hold = await r.json()
    async with http.get("/legal_holds", headers=admin, params={"subject_id": subject}) as r:
        assert [h["hold_id"] for h in (await r.json())["holds"]] == [hold["hold_id"]]
    async with http.delete(f"/legal_holds/{hold['hold_id']}", headers=admin) as r:
        assert r.status == 200
        released = await r.json()
    assert released["active"] is False and released["released_by"] == "legal"
    async with http.delete(f"/legal_holds/{hold['hold_id']}", headers=admin) as r:  # again: same answer
        assert (await r.json())["released_at"] == released["released_at"]
    placed = await events_on(stack["kafka"], topics.LEGAL_HOLD_PLACED, subject_id=subject, count=1)
    freed = await events_on(stack["kafka"], topics.LEGAL_HOLD_RELEASED, subject_id=subject, count=1)
    assert [e.hold_id for e in placed] == [e.hold_id for e in freed] == [hold["hold_id"]]


def _mails_to(mail_dir, address):
    found = []
    for path in sorted(mail_dir.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes())
        if message["To"] == address:
            found.append(message.get_payload(decode=True).decode())
    return found


async def _seed_account(db, subject, address):
    await db["accounts"].insert_one(
        {"user_id": subject, "email_hash": email_lookup_hash(address, LOOKUP_KEY), "email": "lethe:v1:sealed"}
    )


async def test_the_email_channel_verifies_before_it_deletes_and_never_tells_who_exists(stack):
    http, db, mail_dir = stack["http"], stack["db"], stack["mail_dir"]
    subject = f"user-{uuid.uuid4().hex[:8]}"
    known, unknown = f"{subject}@example.com", f"nobody-{uuid.uuid4().hex[:6]}@example.com"
    await _seed_account(db, subject, known)
    answers = []
    for address in (known, unknown):
        async with http.post("/deletion_requests", json={"email": address.upper()}) as r:
            answers.append((r.status, await r.read()))
    assert answers[0] == answers[1] and answers[0][0] == 202
    async with asyncio.timeout(20):
        while not _mails_to(mail_dir, known):
            await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    assert _mails_to(mail_dir, unknown) == []
    text = _mails_to(mail_dir, known)[0]
    link_token = re.search(r"token=([\w.-]+)", text).group(1)
    async with http.get("/deletion_requests/verify", params={"token": link_token}) as r:
        assert r.status == 200 and "<form" in await r.text()  # following the link alone starts nothing
    async with http.post("/deletion_requests/verify", data={"token": link_token}) as r:
        assert r.status == 202, await r.text()
        started = await r.json()
    assert started["subject_id"] == subject and started["channel"] == "email"
    assert "verification_pending" in started["stages"] and started["status"] == "received"
    async with http.post("/deletion_requests/verify", json={"token": link_token}) as r:
        assert r.status == 409
    published = await events_on(stack["kafka"], topics.DELETION_REQUESTED, subject_id=subject, count=1)
    assert [e.request_id for e in published] == [started["request_id"]]
    # The address is kept only sealed under the subject's contact key, for the final notice.
    contact = await db["contacts"].find_one({"_id": started["request_id"]})
    assert known not in str(contact)
    async with KeyvaultClient(stack["keyvault_url"], token=token(KEYS_USE)) as kv:
        assert (await kv.decrypt(subject, CONTACT_DATASET, contact["email_ciphertext"])).decode() == known


async def test_a_tagged_account_is_not_found_by_the_email_channel(stack):
    http, db, mail_dir = stack["http"], stack["db"], stack["mail_dir"]
    subject = f"user-{uuid.uuid4().hex[:8]}"
    address = f"{subject}@example.com"
    await _seed_account(db, subject, address)
    await db["accounts"].update_one({"user_id": subject}, {"$set": {"deletion.tagged_at": datetime.now(UTC)}})
    async with http.post("/deletion_requests", json={"email": address}) as r:
        assert r.status == 202
    await asyncio.sleep(2)
    assert _mails_to(mail_dir, address) == []


async def test_the_email_channel_is_rate_limited_per_address(stack):
    http = stack["http"]
    address = f"flood-{uuid.uuid4().hex[:6]}@example.com"
    statuses = []
    for _ in range(4):
        async with http.post("/deletion_requests", json={"email": address}) as r:
            statuses.append(r.status)
            retry_after = r.headers.get("Retry-After")
    assert statuses == [202, 202, 202, 429]
    assert retry_after is not None and int(retry_after) > 0


async def test_the_deadline_watch_warns_then_reports_past_the_deadline(stack):
    http, clock, subject = stack["http"], stack["clock"], f"user-{uuid.uuid4().hex[:8]}"
    async with http.delete(f"/users/{subject}/data", headers=bearer(token(DELETION_ANY))) as r:
        rid = (await r.json())["request_id"]
    clock.offset = timedelta(days=25)
    async with asyncio.timeout(20):
        while not (await _status(http, rid))["overdue"]["warned_at"]:
            await asyncio.sleep(0.1)
    clock.offset = timedelta(days=31)
    async with asyncio.timeout(20):
        while not (await _status(http, rid))["overdue"]["past_deadline_at"]:
            await asyncio.sleep(0.1)
    notices = await events_on(stack["kafka"], topics.DELETION_OVERDUE, subject_id=subject, count=2)
    assert [n.past_deadline for n in notices] == [False, True]


async def test_a_deletion_accepted_while_kafka_is_down_is_published_exactly_once_when_it_is_back(
    own_kafka, mongo_url, tmp_path
):
    kafka = KafkaSettings(bootstrap_servers=own_kafka.bootstrap, group_prefix="outage")
    await ensure_topics(kafka, topics.ALL_TOPICS, partitions=1)
    settings = IntakeSettings(
        http_port=free_port(),
        kafka=kafka,
        mongo=MongoSettings(url=mongo_url, database=f"lethe_out_{uuid.uuid4().hex[:8]}"),
        auth=AUTH,
        outbox_interval_s=0.5,
    )
    intake = create_app(settings)
    await intake.start()
    subject = f"user-{uuid.uuid4().hex[:8]}"
    try:
        await asyncio.to_thread(own_kafka.stop)
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{settings.http_port}") as http:
            async with asyncio.timeout(10):  # answered at once: nothing waits for Kafka
                async with http.delete(f"/users/{subject}/data", headers=bearer(token(DELETION_ANY))) as r:
                    assert r.status == 202
                    rid = (await r.json())["request_id"]
            await asyncio.sleep(3)  # the relay tries, and fails, meanwhile
            assert (await _status(http, rid))["status"] == "received"
            await asyncio.to_thread(own_kafka.start)
            published = await events_on(kafka, topics.DELETION_REQUESTED, subject_id=subject, count=1, within_s=120)
            await asyncio.sleep(5)  # give a duplicate every chance to appear, then read the topic again
            again = await events_on(kafka, topics.DELETION_REQUESTED, subject_id=subject, count=1)
            assert [e.request_id for e in published] == [e.request_id for e in again] == [rid]
            async with asyncio.timeout(60):
                while (await _status(http, rid))["status"] != "purging":
                    await asyncio.sleep(0.2)
    finally:
        await intake.stop()


async def lethe(stack, *args: str) -> tuple[int, str]:
    """Run the ``lethe`` command against this test's intake (the service keeps serving meanwhile)."""
    env = os.environ | {
        "LETHE_INTAKE_URL": stack["url"],
        "LETHE_AUTH_JWT_SECRET": AUTH.jwt_secret.get_secret_value(),
        "COLUMNS": "200",
    }
    env.pop("LETHE_ADMIN_TOKEN", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", *args, env=env, stdout=PIPE, stderr=STDOUT
    )
    out, _ = await process.communicate()
    return process.returncode, out.decode()


async def test_the_operator_commands_delete_watch_and_manage_rules_and_holds(stack, tmp_path):
    subject = f"user-{uuid.uuid4().hex[:8]}"
    code, out = await lethe(stack, "delete", subject)
    assert code == 0, out
    rid = re.search(r"lethe status (req_[0-9a-f]{32}) --watch", out).group(1)

    async def finish():  # the rest of the chain, as the other services would report it
        await asyncio.sleep(2)
        ids = {"request_id": rid, "subject_id": subject, "producer": "test"}
        publisher = KafkaPublisher(stack["kafka"], client_id="test")
        await publisher.start()
        await publisher.publish(DeletionPurged(**ids, outcomes=PARTIAL))
        await publisher.publish(DeletionNotified(**ids, result="partial", webhook_endpoints=0, email_sent=False))
        await publisher.stop()

    finishing = asyncio.create_task(finish())
    code, out = await lethe(stack, "status", rid, "--watch", "--interval", "0.2", "--timeout", "60")
    await finishing
    assert code == 0, out
    assert "partial" in out and "tax-10y" in out

    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - {rule_id: aml-5y, datasets: [invoices], legal_basis: legal obligation, legal_ref: GwG §8}\n"
    )
    code, out = await lethe(stack, "rules", "apply", str(rules))
    assert code == 0 and "version 2" in out, out
    code, out = await lethe(stack, "rules")
    assert code == 0 and "aml-5y" in out and "tax-10y" in out, out
    code, out = await lethe(
        stack,
        "holds",
        "place",
        "--subject",
        subject,
        "--dataset",
        "chat_messages",
        "--reason",
        "litigation",
        "--legal-basis",
        "legal claims",
        "--legal-ref",
        "case 7",
    )
    assert code == 0, out
    hold_id = re.search(r"hold_[0-9a-f]{32}", out).group(0)
    code, out = await lethe(stack, "holds", "--subject", subject)
    assert code == 0 and hold_id in out, out
    code, out = await lethe(stack, "holds", "release", hold_id)
    assert code == 0 and "released" in out, out
    code, out = await lethe(stack, "rules", "apply", str(rules), "--remove", "no-such-rule")
    assert code == 1 and "no-such-rule" in out, out
    for command in ("delete", "status", "rules", "holds"):
        code, out = await lethe(stack, command, "--help")
        assert code == 0 and "Usage" in out, (command, out)


async def test_a_delete_with_a_ten_megabyte_body_is_refused_with_413_and_creates_no_request(stack):
    http, subject = stack["http"], f"user-{uuid.uuid4().hex[:8]}"
    headers = bearer(token(DELETION_ANY))
    async with http.delete(f"/users/{subject}/data", headers=headers, data=b"x" * 10 * 1024 * 1024) as r:
        assert r.request_info.headers["Content-Length"] == str(10 * 1024 * 1024)
        assert r.status == 413
        assert r.content_type == "application/problem+json"
    assert await stack["db"]["deletion_requests"].count_documents({"subject_id": subject}) == 0
    async with http.delete(f"/users/{subject}/data", headers=headers) as r:
        assert r.status == 202  # a new request: the refused one left nothing open for this subject
    assert await stack["db"]["deletion_requests"].count_documents({"subject_id": subject}) == 1
