"""The purger's adapters and service on the real stack: S3 versions and Object Lock, tagging and the nightly job in
FerretDB, Milvus vectors, and the service driven through Kafka (holds, exemptions, backups on a simulated clock)."""

import asyncio
import contextlib
import os
import sys
import uuid
from asyncio.subprocess import PIPE, STDOUT
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaConsumer
from botocore.exceptions import ClientError
from pymilvus import DataType, MilvusClient

from services.purger.adapters.backups import BackupStore
from services.purger.adapters.milvus import MilvusEraser
from services.purger.adapters.mongo import MongoEraser, MongoPurgeLedger, MongoPurgeProgress
from services.purger.adapters.s3 import MAX_KEYS_PER_DELETE, S3Eraser, list_versions
from services.purger.app import create_app
from services.purger.handlers import Purger, nightly_purge
from services.purger.settings import PurgerSettings
from shared import topics
from shared.datamap import DataMap, Dataset, MilvusLocation, MongoLocation, S3Location, load_datamap
from shared.events import DatasetOutcome, DeletionRequested, InvalidEventError, LegalHoldReleased, decode_event
from shared.fakes import InMemoryRetentionStore
from shared.kafka import KafkaPublisher, ensure_topics
from shared.liveread import live
from shared.mongo import create_mongo_client
from shared.s3 import S3Connection, s3_client
from shared.settings import AuthSettings, KafkaSettings, MilvusSettings, MongoSettings, S3Settings
from tests.support import drop_bucket, free_port, kafka_options, litigation_hold, running_intake

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
AUTH = AuthSettings(jwt_secret="purger-test-secret-of-at-least-32-bytes")
T0 = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)


def s3_settings(endpoint):
    return S3Settings(endpoint_url=endpoint)


async def make_bucket(s3, name, *, lock=False):
    if lock:
        await s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    else:
        await s3.create_bucket(Bucket=name)
    await s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def uploads(bucket):
    return Dataset(name="uploads", store="s3", s3=S3Location(bucket=bucket, prefix="users/{subject_id}/"))


async def erase_uploads(s3_endpoint: str, bucket: str, **options: Any) -> DatasetOutcome:
    """Subject u1's uploads erased by a purger's S3 eraser, over a connection of its own."""
    connection = S3Connection(s3_settings(s3_endpoint))
    try:
        return await S3Eraser(connection, **options).erase(uploads(bucket), "u1")
    finally:
        await connection.close()


async def test_every_version_and_delete_marker_under_the_prefix_is_erased_in_batches_of_1000(s3_endpoint):
    bucket = f"t-{uuid.uuid4().hex[:10]}"
    async with s3_client(s3_settings(s3_endpoint)) as s3:
        await make_bucket(s3, bucket)
        for i in range(340):  # three versions each: 1,020 versions, more than one DeleteObjects call
            for body in (b"v1", b"v2", b"v3"):
                await s3.put_object(Bucket=bucket, Key=f"users/u1/file-{i}", Body=body)
        await s3.delete_object(Bucket=bucket, Key="users/u1/file-0")  # a delete marker on top
        await s3.put_object(Bucket=bucket, Key="users/u10/kept", Body=b"someone else")
        await s3.put_object(Bucket=bucket, Key="users/u1", Body=b"not under the prefix users/u1/")
        before = await list_versions(s3, bucket, "users/u1/")
        assert len(before) == 1021 > MAX_KEYS_PER_DELETE
        outcome = await erase_uploads(s3_endpoint, bucket, attempts=3)
        assert outcome.outcome == "erased"
        assert (outcome.counts.object_versions_deleted, outcome.counts.delete_markers_deleted) == (1020, 1)
        assert await list_versions(s3, bucket, "users/u1/") == []
        assert [v.key for v in await list_versions(s3, bucket, "users/u10/")] == ["users/u10/kept"]
        assert len(await list_versions(s3, bucket, "users/u1")) == 2  # users/u1 and users/u10/kept
        again = await erase_uploads(s3_endpoint, bucket, attempts=3)
        assert again.outcome == "erased" and again.counts.object_versions_deleted == 0
        await drop_bucket(s3, bucket)


async def test_an_object_under_an_object_lock_legal_hold_survives_and_is_reported_retained(s3_endpoint):
    bucket = f"t-{uuid.uuid4().hex[:10]}"
    async with s3_client(s3_settings(s3_endpoint)) as s3:
        await make_bucket(s3, bucket, lock=True)
        await s3.put_object(Bucket=bucket, Key="users/u1/contract.pdf", Body=b"signed")
        await s3.put_object_legal_hold(Bucket=bucket, Key="users/u1/contract.pdf", LegalHold={"Status": "ON"})
        await s3.put_object(Bucket=bucket, Key="users/u1/avatar.png", Body=b"a")
        await s3.put_object(Bucket=bucket, Key="users/u1/avatar.png", Body=b"b")
        outcome = await erase_uploads(s3_endpoint, bucket, attempts=2, retry_delay_s=0.05)
        left = await list_versions(s3, bucket, "users/u1/")
        await s3.put_object_legal_hold(Bucket=bucket, Key="users/u1/contract.pdf", LegalHold={"Status": "OFF"})
        await drop_bucket(s3, bucket)
    assert outcome.outcome == "retained"
    assert outcome.rule_id == "s3-object-lock" and "legal hold" in outcome.legal_basis
    assert outcome.counts.object_versions_deleted == 2
    assert [v.key for v in left] == ["users/u1/contract.pdf"]


# The local SeaweedFS's identity without write permission (deploy/local/seaweedfs/s3.json): it may list and read but
# every key of its DeleteObjects calls is refused with AccessDenied, as S3 answers an identity denied
# s3:DeleteObjectVersion. Object Lock plays no part: the bucket has none.
READER = {"access_key_id": "lethe-reader", "secret_access_key": "lethe-reader-local-secret"}


async def test_versions_s3_refuses_to_delete_outside_object_lock_end_the_dataset_failed_not_retried_forever(
    s3_endpoint,
):
    bucket = f"t-{uuid.uuid4().hex[:10]}"
    async with s3_client(s3_settings(s3_endpoint)) as s3:
        await make_bucket(s3, bucket)
        await s3.put_object(Bucket=bucket, Key="users/u1/avatar.png", Body=b"a")
        await s3.put_object(Bucket=bucket, Key="users/u1/avatar.png", Body=b"b")
        await s3.put_object(Bucket=bucket, Key="users/u1/passport.jpg", Body=b"p")
        connection = S3Connection(S3Settings(endpoint_url=s3_endpoint, **READER))
        try:
            # Were the refusal taken for an outage, the eraser would retry for 0.5+1+2+4 s, then raise.
            async with asyncio.timeout(5):
                outcome = await S3Eraser(connection, attempts=5).erase(uploads(bucket), "u1")
        finally:
            await connection.close()
        left = await list_versions(s3, bucket, "users/u1/")
        await drop_bucket(s3, bucket)
    assert outcome.outcome == "failed"
    assert outcome.error == (
        f"3 object version(s) under s3://{bucket}/users/u1/ could not be deleted: "
        "S3 refused with AccessDenied and no Object Lock keeps them"
    )
    assert outcome.counts.object_versions_deleted == 0
    assert len(left) == 3


async def test_a_bucket_that_does_not_exist_is_reported_failed_naming_it(s3_endpoint):
    bucket = f"t-{uuid.uuid4().hex[:10]}"
    outcome = await erase_uploads(s3_endpoint, bucket, attempts=2)
    assert (outcome.outcome, outcome.error) == ("failed", f"the bucket '{bucket}' does not exist")


@pytest_asyncio.fixture
async def mongo_db(mongo_url):
    name = f"lethe_pg_{uuid.uuid4().hex[:8]}"
    client = create_mongo_client(MongoSettings(url=mongo_url, database=name))
    yield client, name
    await client.drop_database(name)
    await client.close()


def mongo_dataset(name, mode):
    return Dataset(name=name, store="mongo", mongo=MongoLocation(collection=name, subject_field="user_id"), mode=mode)


async def test_tagged_records_are_invisible_to_live_reads_then_gone_after_the_nightly_job_which_resumes_exactly(
    mongo_db,
):
    client, db = mongo_db
    messages = mongo_dataset("chat_messages", "tag_then_purge")
    coll = client[db]["chat_messages"]
    await coll.insert_many([{"_id": f"m{i}", "user_id": "u1" if i < 7 else "u2", "body": "x"} for i in range(10)])
    eraser = MongoEraser(client, db, ledger=MongoPurgeLedger(client, db, chunk_size=2))
    await eraser.ensure_indexes([messages])
    outcome = await eraser.erase(messages, "u1", request_id="req_a", now=T0, purge_after=T0 + DAY)
    assert (outcome.outcome, outcome.counts.records_tagged) == ("tagged", 7)
    assert await coll.count_documents(live({"user_id": "u1"})) == 0
    assert await coll.count_documents(live({"user_id": "u2"})) == 3
    assert await coll.count_documents({"user_id": "u1"}) == 7  # still stored until the nightly job
    again = await eraser.erase(messages, "u1", request_id="req_a", now=T0, purge_after=T0 + DAY)
    assert again.counts.records_tagged == 7  # the replay reports the same

    clock = [T0]
    purger = Purger(
        datamap=DataMap(datasets=(messages,)),
        erasers={},
        retention=InMemoryRetentionStore(),
        progress=MongoPurgeProgress(client, db),
        ledger=MongoPurgeLedger(client, db),
        clock=lambda: clock[0],
        purge_after=DAY,
    )
    assert (await nightly_purge(purger, pause_s=0)).records == 0  # nothing due yet
    clock[0] = T0 + 2 * DAY

    class Killed(Exception):
        pass

    def kill_after_two(chunk, purged, seen=[]):  # noqa: B006  # counts the chunks across the call
        seen.append(chunk)
        if len(seen) == 2:
            raise Killed

    with pytest.raises(Killed):
        await nightly_purge(purger, pause_s=0, on_chunk=kill_after_two)
    assert await coll.count_documents({"user_id": "u1"}) == 3  # 2 of 4 chunks done
    report = await nightly_purge(purger, pause_s=0)
    assert report.records == 3
    [event] = report.hard_deleted
    assert [(d.dataset, d.records_purged) for d in event.datasets] == [("chat_messages", 7)]
    assert await coll.count_documents({"user_id": "u1"}) == 0
    assert await coll.count_documents({"user_id": "u2"}) == 3


async def test_a_missing_collection_is_reported_failed_in_both_modes_and_the_purger_never_creates_it(mongo_db):
    client, db = mongo_db
    profiles, messages = mongo_dataset("profiles", "erase"), mongo_dataset("chat_messages", "tag_then_purge")
    eraser = MongoEraser(client, db, ledger=MongoPurgeLedger(client, db, chunk_size=2))
    await eraser.ensure_indexes([profiles, messages])
    assert await client[db].list_collection_names() == []  # an index would have created the collection
    for dataset in (profiles, messages):
        outcome = await eraser.erase(dataset, "u1", request_id="req_a", now=T0, purge_after=T0 + DAY)
        assert (outcome.outcome, outcome.error) == (
            "failed",
            f"the collection '{dataset.name}' does not exist in database '{db}'",
        )
    await client[db]["profiles"].insert_one({"_id": "p2", "user_id": "u2"})
    await client[db]["chat_messages"].insert_one({"_id": "m2", "user_id": "u2"})
    for dataset in (profiles, messages):  # there, but nothing of u1's in it: erased
        outcome = await eraser.erase(dataset, "u1", request_id="req_a", now=T0, purge_after=T0 + DAY)
        assert (outcome.outcome, outcome.error) == ("erased", None)


class CrashBeforeTagging(MongoEraser):
    """A purger killed after writing the ledger, before tagging anything."""

    class Killed(Exception):
        pass

    async def _tag(self, *args: Any, **kwargs: Any) -> None:
        raise self.Killed


async def test_records_arriving_between_a_crash_after_chunking_and_the_rerun_are_each_listed_in_one_chunk(mongo_db):
    client, db = mongo_db
    messages = mongo_dataset("chat_messages", "tag_then_purge")
    coll, ledger = client[db]["chat_messages"], client[db]["purge_ledger"]
    await coll.insert_many([{"_id": f"m{i}", "user_id": "u1"} for i in range(5)] + [{"_id": "x", "user_id": "u2"}])
    with pytest.raises(CrashBeforeTagging.Killed):
        await CrashBeforeTagging(client, db, ledger=MongoPurgeLedger(client, db, chunk_size=2)).erase(
            messages, "u1", request_id="req_a", now=T0, purge_after=T0 + DAY
        )
    assert await ledger.count_documents({}) == 3  # m0 m1 | m2 m3 | m4, nothing tagged yet
    # Sorted among the others: re-chunked from scratch, m2..m4 would shift into chunks 1 and 2, which exist, and
    # m1a would be listed in none, tagged yet never hard-deleted.
    await coll.insert_one({"_id": "m1a", "user_id": "u1"})

    outcome = await MongoEraser(client, db, ledger=MongoPurgeLedger(client, db, chunk_size=2)).erase(
        messages, "u1", request_id="req_a", now=T0, purge_after=T0 + DAY
    )

    assert (outcome.outcome, outcome.counts.records_tagged) == ("tagged", 6)
    tagged = sorted([d["_id"] async for d in coll.find({"deletion.request_id": "req_a"})])
    listed = [i async for chunk in ledger.find({"request_id": "req_a"}) for i in chunk["ids"]]
    assert sorted(listed) == tagged == ["m0", "m1", "m1a", "m2", "m3", "m4"]  # each exactly once
    purger = Purger(
        datamap=DataMap(datasets=(messages,)),
        erasers={},
        retention=InMemoryRetentionStore(),
        progress=MongoPurgeProgress(client, db),
        ledger=MongoPurgeLedger(client, db),
        clock=lambda: T0 + 2 * DAY,
        purge_after=DAY,
    )
    report = await nightly_purge(purger, pause_s=0)
    assert report.records == 6
    assert [d["_id"] async for d in coll.find({})] == ["x"]


def make_vectors(client: MilvusClient, name: str) -> None:
    """A collection of 4-dimensional vectors with a subject_id field."""
    schema = client.create_schema(auto_id=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("subject_id", DataType.VARCHAR, max_length=128)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=4)
    index = client.prepare_index_params()
    index.add_index(field_name="embedding", index_type="FLAT", metric_type="L2")
    client.create_collection(name, schema=schema, index_params=index)


async def test_a_subjects_vectors_are_erased_by_filter_even_with_quotes_in_the_id(milvus_uri):
    client = MilvusClient(uri=milvus_uri)
    make_vectors(client, "vec")
    odd = 'u"1\\'
    client.insert("vec", [{"subject_id": s, "embedding": [0.1] * 4} for s in (odd, odd, "u2")])
    client.close()
    dataset = Dataset(
        name="embeddings", store="milvus", milvus=MilvusLocation(collection="vec", filter_field="subject_id")
    )
    eraser = MilvusEraser(MilvusSettings(uri=milvus_uri))

    try:
        outcome, nothing = await eraser.erase(dataset, odd), await eraser.erase(dataset, "nobody")
    finally:
        await eraser.close()
    assert (outcome.outcome, outcome.counts.vectors_deleted) == ("erased", 2)
    assert nothing.counts.vectors_deleted == 0


async def test_concurrent_erasures_join_one_delete_and_each_subject_gets_its_own_count(milvus_uri):
    client = MilvusClient(uri=milvus_uri)
    make_vectors(client, "joined")
    # subject s<i> has i vectors; "keep" is nobody's request and must stay whole.
    rows = [{"subject_id": f"s{i}", "embedding": [0.1] * 4} for i in range(1, 9) for _ in range(i)]
    client.insert("joined", rows + [{"subject_id": "keep", "embedding": [0.2] * 4}] * 3)
    client.release_collection("joined")  # as a server restart leaves it: a delete works, a query needs a load
    dataset = Dataset(
        name="embeddings", store="milvus", milvus=MilvusLocation(collection="joined", filter_field="subject_id")
    )
    eraser = MilvusEraser(MilvusSettings(uri=milvus_uri))
    groups: list[list[str]] = []
    delete = eraser._delete

    def counted(collection: str, field: str, subjects: list[str]) -> dict[str, int] | None:
        groups.append(subjects)
        return delete(collection, field, subjects)

    eraser._delete = counted  # type: ignore[method-assign]
    try:
        outcomes = await asyncio.gather(*(eraser.erase(dataset, f"s{i}") for i in range(1, 9)))
    finally:
        await eraser.close()
    assert [o.counts.vectors_deleted for o in outcomes] == list(range(1, 9))
    assert len(groups) < 8 and sorted(s for g in groups for s in g) == sorted(f"s{i}" for i in range(1, 9))
    left = client.query("joined", filter='subject_id != ""', output_fields=["subject_id"])
    client.close()
    assert [row["subject_id"] for row in left] == ["keep"] * 3


async def test_a_milvus_collection_that_does_not_exist_is_reported_failed_naming_it(milvus_uri):
    dataset = Dataset(
        name="embeddings", store="milvus", milvus=MilvusLocation(collection="never_made", filter_field="subject_id")
    )
    eraser = MilvusEraser(MilvusSettings(uri=milvus_uri))
    try:
        outcome = await eraser.erase(dataset, "u1")
    finally:
        await eraser.close()
    assert (outcome.outcome, outcome.error) == ("failed", "the collection 'never_made' does not exist in Milvus")


# --- the service, through Kafka -----------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = datetime.now(UTC)

    def __call__(self):
        return self.now


@pytest_asyncio.fixture
async def purger_service(kafka_bootstrap, mongo_url, s3_endpoint, tmp_path):
    tag = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, group_prefix=f"t{tag}", start_from="latest")
    await ensure_topics(kafka, topics.ALL_TOPICS, partitions=topics.PARTITIONS)
    bucket = f"t-{tag}"
    datamap = tmp_path / "datamap.yaml"
    datamap.write_text(
        yaml.safe_dump(
            {
                "datasets": [
                    {
                        "name": "accounts",
                        "store": "mongo",
                        "mode": "tag_then_purge",
                        "mongo": {"collection": "accounts", "subject_field": "user_id"},
                    },
                    {
                        "name": "profiles",
                        "store": "mongo",
                        "mongo": {"collection": "profiles", "subject_field": "user_id"},
                    },
                    {"name": "uploads", "store": "s3", "s3": {"bucket": bucket, "prefix": "users/{subject_id}/"}},
                    {
                        "name": "usage_daily",
                        "store": "mongo",
                        "category": "anonymized_analytics",
                        "mongo": {"collection": "usage_daily", "subject_field": "cohort"},
                    },
                ]
            }
        )
    )
    async with running_intake(kafka_bootstrap, mongo_url, AUTH, datamap=datamap) as intake:
        settings = PurgerSettings(
            http_port=free_port(),
            datamap_path=datamap,
            kafka=kafka,
            mongo=MongoSettings(url=mongo_url, database=f"lethe_pu_{tag}"),
            s3=S3Settings(endpoint_url=s3_endpoint),
            milvus=MilvusSettings(uri=str(tmp_path / "milvus.db")),
            backups_bucket=f"t-{tag}-backups",
            backup_expiry_interval_s=0.3,
            **intake.reader(),
        )
        clock = Clock()
        service = create_app(settings, clock=clock)
        await service.start()
        client = create_mongo_client(settings.mongo)
        db = client[settings.mongo.database]
        async with s3_client(settings.s3) as s3:
            await make_bucket(s3, bucket)
            yield {
                "settings": settings,
                "kafka": kafka,
                "db": db,
                "client": client,
                "s3": s3,
                "bucket": bucket,
                "clock": clock,
                "intake": intake,
            }
            await service.stop()
            for name in (bucket, settings.backups_bucket):
                with contextlib.suppress(ClientError):  # the backups bucket exists only if a test made a backup
                    await drop_bucket(s3, name)
        await client.drop_database(settings.mongo.database)
        await client.close()


async def events_for(kafka, topic, request_id, *, count, within_s=60):
    """The first ``count`` events of ``request_id`` on ``topic``, read from the start."""
    reader = AIOKafkaConsumer(topic, **kafka_options(kafka.bootstrap_servers), auto_offset_reset="earliest")
    await reader.start()
    found = []
    try:
        async with asyncio.timeout(within_s):
            async for record in reader:
                try:
                    event = decode_event(record.topic, record.value)
                except InvalidEventError:
                    continue
                if event.request_id == request_id:
                    found.append(event)
                    if len(found) == count:
                        return found
    finally:
        await reader.stop()
    return found


async def next_event(kafka, topic, request_id, *, within_s=60):
    return (await events_for(kafka, topic, request_id, count=1, within_s=within_s))[0]


async def publish(kafka, *events):
    publisher = KafkaPublisher(kafka, client_id="test")
    await publisher.start()
    for event in events:
        await publisher.publish(event)
    await publisher.stop()


def requested(subject, request_id):
    now = datetime.now(UTC)
    return DeletionRequested(
        request_id=request_id,
        subject_id=subject,
        producer="test",
        requested_by="svc",
        deadline_at=now + 30 * DAY,
        backups_purged_by=now + 90 * DAY,
    )


async def test_the_service_erases_keeps_and_skips_per_the_data_map_then_erases_what_a_released_hold_kept(
    purger_service,
):
    env, db = purger_service, purger_service["db"]
    subject, rid = f"u-{uuid.uuid4().hex[:6]}", f"req_{uuid.uuid4().hex}"
    await db["accounts"].insert_many([{"_id": f"{subject}-a{i}", "user_id": subject} for i in range(2)])
    await db["profiles"].insert_one({"_id": f"{subject}-p", "user_id": subject})
    await db["usage_daily"].insert_one({"_id": "2026-11-27:pro", "cohort": "pro", "requests": 5})
    await env["s3"].put_object(Bucket=env["bucket"], Key=f"users/{subject}/a.png", Body=b"1")
    hold = litigation_hold(f"hold_{uuid.uuid4().hex}", subject, "profiles")
    retention = env["intake"].retention  # intake's store: the purger reads it through intake's API
    await retention.place_hold(hold)
    await publish(env["kafka"], requested(subject, rid))
    purged = await next_event(env["kafka"], topics.DELETION_PURGED, rid)
    outcomes = {o.dataset: o for o in purged.outcomes}
    assert {n: o.outcome for n, o in outcomes.items()} == {
        "accounts": "tagged",
        "profiles": "retained",
        "uploads": "erased",
        "usage_daily": "exempt",
    }
    assert outcomes["profiles"].rule_id == hold.hold_id
    assert await db["usage_daily"].count_documents({}) == 1  # anonymised analytics untouched
    assert await db["profiles"].count_documents({"user_id": subject}) == 1

    await retention.release_hold(hold.hold_id, by="legal", at=datetime.now(UTC))
    await publish(
        env["kafka"],
        LegalHoldReleased(producer="test", subject_id=subject, hold_id=hold.hold_id, datasets=("profiles",)),
    )
    first, follow_up = await events_for(env["kafka"], topics.DELETION_PURGED, rid, count=2)
    assert first == purged and follow_up.event_id != purged.event_id
    # The follow-up states every dataset's current outcome, not only what changed.
    assert follow_up.round == 1
    assert [(o.dataset, o.outcome) for o in follow_up.outcomes] == [
        ("accounts", "tagged"),
        ("profiles", "erased"),
        ("uploads", "erased"),
        ("usage_daily", "exempt"),
    ]
    assert await db["profiles"].count_documents({"user_id": subject}) == 0


async def test_backup_expiry_reports_the_request_once_the_last_backup_holding_it_is_gone(purger_service):
    env, db, clock = purger_service, purger_service["db"], purger_service["clock"]
    subject, rid = f"u-{uuid.uuid4().hex[:6]}", f"req_{uuid.uuid4().hex}"
    await db["profiles"].insert_one({"_id": f"{subject}-p", "user_id": subject, "bio": "lethe:v1:ciphertext"})
    settings = env["settings"]
    backups = BackupStore(env["client"], settings.mongo.database, settings.s3, bucket=settings.backups_bucket)
    datamap = load_datamap(settings.datamap_path)
    before = await backups.create([d for d in datamap.datasets if d.mongo], now=clock.now - DAY)
    assert [r["user_id"] for r in await backups.read(before, "profiles")] == [subject]
    await publish(env["kafka"], requested(subject, rid))
    await next_event(env["kafka"], topics.DELETION_PURGED, rid)
    clock.now += 88 * DAY
    await asyncio.sleep(1.5)  # several expiry rounds: the backup is 89 days old, so nothing expires
    assert [b.backup_id for b in await backups.live()] == [before.backup_id]
    clock.now += 2 * DAY
    expired = await next_event(env["kafka"], topics.DELETION_BACKUPS_EXPIRED, rid)
    assert expired.subject_id == subject
    assert await backups.live() == []
    async with s3_client(settings.s3) as s3:
        assert await list_versions(s3, settings.backups_bucket, before.backup_id) == []


async def test_lethe_purge_now_runs_the_nightly_job_with_a_progress_bar(purger_service):
    env, db = purger_service, purger_service["db"]
    subject, rid = f"u-{uuid.uuid4().hex[:6]}", f"req_{uuid.uuid4().hex}"
    await db["accounts"].insert_many([{"_id": f"{subject}-a{i}", "user_id": subject} for i in range(3)])
    settings = env["settings"].model_copy(update={"purge_after_hours": 0.0})
    eraser = MongoEraser(
        env["client"],
        settings.mongo.database,
        ledger=MongoPurgeLedger(env["client"], settings.mongo.database, chunk_size=500),
    )
    await eraser.erase(
        mongo_dataset("accounts", "tag_then_purge"), subject, request_id=rid, now=T0, purge_after=datetime.now(UTC)
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.cli",
        "purge",
        "--now",
        env=os.environ
        | {
            "PURGER_DATAMAP_PATH": str(settings.datamap_path),
            "LETHE_MONGO_URL": settings.mongo.url.get_secret_value(),
            "LETHE_MONGO_DATABASE": settings.mongo.database,
            "LETHE_KAFKA_BOOTSTRAP_SERVERS": env["kafka"].bootstrap_servers,
            "LETHE_MILVUS_URI": settings.milvus.uri + ".cli",
            "PURGER_INTAKE_URL": settings.intake_url,
            "PURGER_INTAKE_TOKEN": settings.intake_token.get_secret_value(),
            "COLUMNS": "120",
        },
        stdout=PIPE,
        stderr=STDOUT,
    )
    out = (await process.communicate())[0].decode()
    assert process.returncode == 0, out
    assert "purged 3 record(s)" in out and "1 request(s) now hard-deleted" in out
    assert await db["accounts"].count_documents({"user_id": subject}) == 0
    event = await next_event(env["kafka"], topics.DELETION_HARD_DELETED, rid)
    assert [(d.dataset, d.records_purged) for d in event.datasets] == [("accounts", 3)]


async def test_lethe_seed_fills_every_dataset_with_encrypted_fields_and_versions(
    kafka_bootstrap, mongo_url, s3_endpoint, tmp_path
):
    from services.keyvault.app import create_app as create_keyvault
    from services.keyvault.settings import KeyvaultSettings
    from shared.settings import AuthSettings

    tag = uuid.uuid4().hex[:8]
    database = f"lethe_seed_{tag}"
    datamap = yaml.safe_load(Path("deploy/datamap.yaml").read_text())  # noqa: ASYNC240  # a small file, once
    for dataset in datamap["datasets"]:
        if "s3" in dataset:
            dataset["s3"]["bucket"] = f"t-{tag}-uploads"
        if "milvus" in dataset:
            dataset["milvus"]["collection"] = f"vec_{tag}"
    (tmp_path / "datamap.yaml").write_text(yaml.safe_dump(datamap))
    secret = "seed-test-secret-of-at-least-32-bytes!!"
    kv_settings = KeyvaultSettings(
        http_port=free_port(),
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, group_prefix=f"t{tag}", start_from="latest"),
        mongo=MongoSettings(url=mongo_url, database=database),
        auth=AuthSettings(jwt_secret=secret),
        local_keyring_file=tmp_path / "keyring.json",
        # This keyvault only seals what is seeded: it never asks intake for the rules and holds in force.
        intake_url="http://127.0.0.1:9",
        intake_token="not-used-here",
    )
    keyvault = create_keyvault(kv_settings)
    await keyvault.start()
    milvus_uri = str(tmp_path / "seed-milvus.db")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ops.cli",
            "seed",
            "--users",
            "3",
            env=os.environ
            | {
                "PURGER_DATAMAP_PATH": str(tmp_path / "datamap.yaml"),
                "LETHE_MONGO_URL": mongo_url,
                "LETHE_MONGO_DATABASE": database,
                "LETHE_S3_ENDPOINT_URL": s3_endpoint,
                "LETHE_MILVUS_URI": milvus_uri,
                "LETHE_KEYVAULT_URL": f"http://127.0.0.1:{kv_settings.http_port}",
                "LETHE_AUTH_JWT_SECRET": secret,
                "COLUMNS": "120",
            },
            stdout=PIPE,
            stderr=STDOUT,
        )
        out = (await process.communicate())[0].decode()
        assert process.returncode == 0, out
    finally:
        await keyvault.stop()
    client = create_mongo_client(MongoSettings(url=mongo_url, database=database))
    try:
        db = client[database]
        account = await db["accounts"].find_one({"user_id": "user-000002"})
        assert account["email"].startswith("lethe:v1:") and account["phone"].startswith("lethe:v1:")
        assert len(account["email_hash"]) == 64
        assert await db["chat_messages"].count_documents({"author_id": "user-000003"}) >= 2
        assert await db["api_usage_daily"].count_documents({}) == 21
        assert "user-" not in str(await db["api_usage_daily"].find_one({}))
    finally:
        await client.drop_database(database)
        await client.close()
    async with s3_client(S3Settings(endpoint_url=s3_endpoint)) as s3:
        versions = await list_versions(s3, f"t-{tag}-uploads", "users/user-000001/")
    assert sum(v.is_marker for v in versions) == 1 and sum(not v.is_marker for v in versions) == 3
    vectors = MilvusClient(uri=milvus_uri)
    try:
        vectors.load_collection(f"vec_{tag}")
        rows = vectors.query(f"vec_{tag}", filter='subject_id == "user-000001"', output_fields=["count(*)"])
    finally:
        vectors.close()
    assert rows[0]["count(*)"] == 3
