"""audit on the real stack: an append-only chain in MongoDB that finds tampering, an API, signed receipts."""

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
import pytest_asyncio

from services.audit import handlers
from services.audit.adapters.log import MongoAuditLog
from services.audit.app import create_app
from services.audit.chain import chain, verify_log
from services.audit.handlers import verify_chain
from services.audit.settings import AuditSettings
from shared import topics
from shared.auth import AUDIT_READ, KEYS_ADMIN, issue_token
from shared.events import DeletionKeysDestroyed, DeletionPurged, DeletionRequested, utcnow
from shared.kafka import KafkaPublisher, ensure_topics
from shared.mongo import create_mongo_client
from shared.settings import AuthSettings, KafkaSettings, MongoSettings
from shared.signing import Signer, verify_document
from tests.support import PARTIAL, free_port

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
AUTH = AuthSettings(jwt_secret="audit-test-secret-of-at-least-32-bytes")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def requested(request_id: str, subject_id: str = "u1") -> DeletionRequested:
    return DeletionRequested(
        request_id=request_id,
        subject_id=subject_id,
        producer="intake",
        requested_by=subject_id,
        deadline_at=T0 + timedelta(days=30),
        backups_purged_by=T0 + timedelta(days=90),
    )


@pytest_asyncio.fixture
async def mongo(mongo_url):
    client = create_mongo_client(MongoSettings(url=mongo_url))
    database = f"lethe_au_{uuid.uuid4().hex[:8]}"
    yield client, database, mongo_url
    await client.drop_database(database)
    await client.close()


async def test_an_event_is_logged_once_however_often_it_is_replayed(mongo):
    client, database, _ = mongo
    audit_log = MongoAuditLog(client, database)
    events = [requested(f"r{i}") for i in range(5)]
    for _ in range(3):
        for event in events:
            await audit_log.append(event, recorded_at=utcnow())
    assert await audit_log.head() == (5, [e async for e in audit_log.all_entries()][-1].hash)
    assert len([e async for e in audit_log.all_entries()]) == 5


async def test_concurrent_appends_keep_one_unbroken_chain(mongo):
    client, database, _ = mongo
    writers = [MongoAuditLog(client, database) for _ in range(3)]
    events = [requested(f"r{i}") for i in range(30)]
    await asyncio.gather(*(writers[i % 3].append(e, recorded_at=utcnow()) for i, e in enumerate(events)))
    audit_log = writers[0]
    report = await verify_log(audit_log.all_entries(), head=await audit_log.head(), checkpoints=[], public_keys={})
    assert report.ok, report
    assert report.entries_checked == 30


async def test_an_append_that_crashed_before_moving_the_head_is_repaired(mongo):
    client, database, _ = mongo
    audit_log = MongoAuditLog(client, database)
    await audit_log.append(requested("r0"), recorded_at=T0)
    [orphan] = chain([(requested("r1"), T0)], start_seq=2, prev_hash=(await audit_log.head())[1])
    await audit_log.entries_collection.insert_one(
        {
            "_id": 2,
            "event_id": orphan.event_id,
            "type": orphan.type,
            "request_id": orphan.request_id,
            "subject_id": orphan.subject_id,
            "occurred_at": orphan.occurred_at,
            "content": orphan.content,
            "prev_hash": orphan.prev_hash,
            "hash": orphan.hash,
        }
    )  # written, but the process died before the head moved and the event was marked seen
    assert (
        await audit_log.append(
            requested("r1").model_copy(update={"event_id": uuid.UUID(orphan.event_id)}), recorded_at=T0
        )
        is None
    )
    assert await audit_log.append(requested("r2"), recorded_at=T0) == 3
    report = await verify_log(audit_log.all_entries(), head=await audit_log.head(), checkpoints=[], public_keys={})
    assert report.ok and report.entries_checked == 3


async def test_an_event_replayed_after_a_crash_before_it_was_marked_seen_is_not_logged_twice(mongo):
    client, database, _ = mongo
    audit_log = MongoAuditLog(client, database)
    await audit_log.ensure_indexes()
    event = requested("r0")
    await audit_log.append(event, recorded_at=T0)
    await client[database]["audit_seen"].delete_many({})  # the process died after the head moved
    await audit_log.append(requested("r1"), recorded_at=T0)  # the other instance logs on meanwhile

    assert await audit_log.append(event, recorded_at=T0) is None  # the replay after the restart
    assert [e.event_id async for e in audit_log.all_entries()].count(str(event.event_id)) == 1
    assert await audit_log.append(event, recorded_at=T0) is None  # and now it is marked seen
    report = await verify_log(audit_log.all_entries(), head=await audit_log.head(), checkpoints=[], public_keys={})
    assert report.ok and report.entries_checked == 2


async def test_a_batch_is_appended_once_in_order_and_its_replay_or_a_racing_writer_adds_nothing_twice(mongo):
    client, database, _ = mongo
    audit_log, other = MongoAuditLog(client, database), MongoAuditLog(client, database)
    await audit_log.ensure_indexes()
    first = [requested(f"r{i}") for i in range(40)]
    assert await audit_log.append_many(first + first[:5], recorded_at=T0) == list(range(1, 41))
    assert await audit_log.append_many(first, recorded_at=T0) == []  # the batch replayed after a crash
    # A batch that overlaps events logged (but never marked seen) and races another writer for the numbers.
    await client[database]["audit_seen"].delete_many({"_id": str(first[-1].event_id)})
    second = [requested(f"s{i}") for i in range(20)]
    await asyncio.gather(
        audit_log.append_many([first[-1], *second[:10]], recorded_at=T0),
        other.append_many(second[5:], recorded_at=T0),
    )
    ids = [e.event_id async for e in audit_log.all_entries()]
    assert sorted(ids) == sorted({str(e.event_id) for e in first + second})  # each once, nothing lost
    report = await verify_log(audit_log.all_entries(), head=await audit_log.head(), checkpoints=[], public_keys={})
    assert report.ok and report.entries_checked == 60


async def test_tampering_anywhere_in_a_log_of_ten_thousand_entries_is_found(mongo):
    client, database, _ = mongo
    signer = Signer.from_seed_b64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
    keys = {signer.key_id: signer.public_key}
    entries = chain((requested(f"r{i}", f"u{i % 97}"), T0 + timedelta(seconds=i)) for i in range(10_000))

    async def first_bad(audit_log):
        report = await verify_log(
            audit_log.all_entries(),
            head=await audit_log.head(),
            checkpoints=await audit_log.checkpoints(),
            public_keys=keys,
        )
        return report.first_bad_seq

    audit_log = MongoAuditLog(client, database)
    await audit_log.import_entries(entries)
    await handlers.checkpoint_if_due(audit_log, signer, now=T0, every_entries=1, every_s=1)
    coll = audit_log.entries_collection
    assert await first_bad(audit_log) is None
    for position in (1, 5_000, 9_999):
        original = await coll.find_one({"_id": position})
        # Edit a field of the content.
        await coll.update_one({"_id": position}, {"$set": {"content.event.subject_id": "forged"}})
        assert await first_bad(audit_log) == position
        await coll.replace_one({"_id": position}, original)
        # Delete the entry.
        await coll.delete_one({"_id": position})
        assert await first_bad(audit_log) == position
        await coll.insert_one(original)
        # Reorder: swap it with its neighbour.
        neighbour = await coll.find_one({"_id": position + 1})
        await coll.replace_one({"_id": position}, {**neighbour, "_id": position})
        await coll.replace_one({"_id": position + 1}, {**original, "_id": position + 1})
        assert await first_bad(audit_log) == position
        await coll.replace_one({"_id": position}, original)
        await coll.replace_one({"_id": position + 1}, neighbour)
    assert await first_bad(audit_log) is None

    # Insert: a forged entry slipped in, the rest renumbered, written directly to a copy of the log.
    for position in (2, 5_000, 9_999):
        [forged] = chain([(requested("forged"), T0)], start_seq=position, prev_hash=entries[position - 2].hash)
        tampered = [*entries[: position - 1], forged, *(replace(e, seq=e.seq + 1) for e in entries[position - 1 :])]
        copy = MongoAuditLog(client, f"{database}_{position}")
        await copy.import_entries(tampered)
        for checkpoint in await audit_log.checkpoints():
            await copy.add_checkpoint(checkpoint)
        try:
            assert await first_bad(copy) == position + 1
        finally:
            await client.drop_database(f"{database}_{position}")


async def test_an_edited_or_removed_stored_copy_is_found_by_verify_and_named_without_its_value(mongo):
    client, database, _ = mongo
    signer = Signer.from_seed_b64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
    audit_log = MongoAuditLog(client, database)
    await audit_log.ensure_indexes()
    for i in range(1, 21):  # appended as the service does: event times carry microseconds, MongoDB keeps milliseconds
        await audit_log.append(requested(f"r{i}", f"u{i}"), recorded_at=utcnow())
    await handlers.checkpoint_if_due(audit_log, signer, now=utcnow(), every_entries=1, every_s=1)
    coll = audit_log.entries_collection
    original = await coll.find_one({"_id": 12})
    assert (await verify_chain(audit_log, signer)).ok

    # An edited type hides the entry from queries by type: verify must not call that log intact.
    await coll.update_one({"_id": 12}, {"$set": {"type": "deletion.notified"}})
    assert 12 not in [e.seq for e in await audit_log.matching(types=["deletion.requested"])]
    edits = {
        "type": "deletion.notified",
        "request_id": "r-forged",
        "subject_id": "u-forged",
        "occurred_at": T0,
    }
    for field, value in edits.items():
        for change in ({"$set": {field: value}}, {"$unset": {field: ""}}):
            await coll.replace_one({"_id": 12}, original)
            await coll.update_one({"_id": 12}, change)
            report = (await verify_chain(audit_log, signer)).as_json()
            assert report["status"] == "tampered", change
            assert report["first_bad_entry"]["seq"] == 12, change
            assert report["first_bad_entry"]["field"] == field, change
            for personal in ("u12", "r12", "u-forged", "r-forged"):
                assert personal not in str(report), change
    await coll.replace_one({"_id": 12}, original)
    assert (await verify_chain(audit_log, signer)).ok


@pytest_asyncio.fixture
async def service(mongo, kafka_bootstrap, tmp_path):
    _, database, mongo_url = mongo
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    await ensure_topics(kafka, topics.ALL_TOPICS, partitions=topics.PARTITIONS)
    settings = AuditSettings(
        http_port=free_port(),
        kafka=kafka,
        mongo=MongoSettings(url=mongo_url, database=database),
        auth=AUTH,
        signing_key_file=tmp_path / "signing.key",
        checkpoint_every_entries=1,
        checkpoint_every_s=1,
    )
    service = create_app(settings)
    await service.start()
    yield f"http://127.0.0.1:{settings.http_port}", kafka
    await service.stop()


async def test_the_service_logs_a_request_story_and_signs_its_receipt(service):
    url, kafka = service
    request_id, subject = f"req-{uuid.uuid4().hex[:8]}", f"user-{uuid.uuid4().hex[:8]}"
    story = [
        requested(request_id, subject),
        DeletionPurged(
            request_id=request_id,
            subject_id=subject,
            producer="purger",
            outcomes=PARTIAL,
        ),
        DeletionKeysDestroyed(request_id=request_id, subject_id=subject, producer="keyvault", result="partial"),
    ]
    publisher = KafkaPublisher(kafka, client_id="test")
    await publisher.start()
    for event in story:
        await publisher.publish(event)
    await publisher.publish(story[0])  # a duplicate delivery
    await publisher.stop()
    admin = {
        "Authorization": f"Bearer {issue_token(AUTH, subject='dpo', scopes=[AUDIT_READ], ttl=timedelta(minutes=5))}"
    }
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(60):
            while True:
                async with http.get(
                    f"{url}/audit/logs", params={"type": "data_deletion", "request_id": request_id}, headers=admin
                ) as r:
                    items = (await r.json())["items"]
                if len(items) >= 3:
                    break
                await asyncio.sleep(0.2)
        # One entry per event (the duplicate added none); topics interleave, so compare as sets.
        assert sorted(i["type"] for i in items) == sorted(e.type for e in story)
        async with asyncio.timeout(30):
            while True:
                async with http.get(f"{url}/audit/receipts/{request_id}", headers=admin) as r:
                    signed = await r.json()
                if signed["document"]["anchor"]["checkpoint"] is not None:
                    break
                await asyncio.sleep(0.5)
        async with http.get(f"{url}/audit/public_key") as r:
            public_key = (await r.json())["public_key"]
        async with http.get(f"{url}/audit/verify", headers=admin) as r:
            verification = await r.json()
        async with http.get(f"{url}/audit/logs", params={"type": "nonsense"}, headers=admin) as r:
            assert r.status == 422
            assert "query.type" in (await r.json())["detail"]
        wrong = issue_token(AUTH, subject="svc", scopes=[KEYS_ADMIN], ttl=timedelta(minutes=5))
        for path in ("/audit/logs", "/audit/verify", f"/audit/receipts/{request_id}"):
            async with http.get(url + path, headers={"Authorization": f"Bearer {wrong}"}) as r:
                assert r.status == 403
            async with http.get(url + path) as r:
                assert r.status == 401

    assert verify_document(signed, public_key)
    datasets = {d["dataset"]: d for d in signed["document"]["datasets"]}
    assert datasets["invoices"]["outcome"] == "retained"
    assert datasets["invoices"]["legal_ref"] == "HGB §257"
    assert "uploads" in datasets  # every dataset of the data map is accounted for
    assert verification["status"] == "ok"
