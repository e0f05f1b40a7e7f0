"""The purger's Eraser port erasing at once, one contract for the in-memory fake (InMemoryStores) and each real
eraser: MongoEraser (mode ``erase``) on the server, PostgresEraser on a table, S3Eraser on a versioned bucket,
MilvusEraser on Milvus Lite.
Only the subject's records go, counted in the unit of the store; a second erasure finds nothing; a location that
does not exist is ``failed``, named. (Tagging is test_purger_ledger.py's contract.)"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from pymilvus import DataType, MilvusClient

from services.purger.adapters.memory import InMemoryStores
from services.purger.adapters.milvus import MilvusEraser
from services.purger.adapters.mongo import MongoEraser, MongoPurgeLedger
from services.purger.adapters.postgres import PostgresEraser
from services.purger.adapters.s3 import S3Eraser, list_versions
from services.purger.ports import Eraser
from shared.datamap import Dataset, MilvusLocation, MongoLocation, PostgresLocation, S3Location
from shared.events import DatasetCounts, DatasetOutcome
from shared.s3 import S3Connection, s3_client
from shared.settings import MilvusSettings, S3Settings
from tests.support import drop_bucket, scratch_database, scratch_schema

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
T0 = datetime(2026, 5, 1, tzinfo=UTC)
DAY = timedelta(days=1)
STORES = ("mongo", "postgres", "s3", "milvus")
# The DatasetCounts field each store's eraser counts an erasure in (S3: versions; these tests make no markers).
UNIT = {
    "mongo": "records_erased",
    "postgres": "records_erased",
    "s3": "object_versions_deleted",
    "milvus": "vectors_deleted",
}
# u10 after u1: an S3 prefix users/u1 without its slash, or a filter by prefix, would take u10's records too.
RECORDS = {"r1": "u1", "r2": "u1", "r3": "u1", "k1": "u10", "k2": "u10"}
KEPT = {"k1": "u10", "k2": "u10"}


def located(store: str, name: str, where: str) -> Dataset:
    """A dataset of ``store`` whose collection or bucket is ``where``."""
    if store == "mongo":
        return Dataset(name=name, store="mongo", mongo=MongoLocation(collection=where, subject_field="user_id"))
    if store == "postgres":
        return Dataset(name=name, store="postgres", postgres=PostgresLocation(table=where, subject_column="user_id"))
    if store == "s3":
        return Dataset(name=name, store="s3", s3=S3Location(bucket=where, prefix="users/{subject_id}/"))
    return Dataset(name=name, store="milvus", milvus=MilvusLocation(collection=where, filter_field="subject_id"))


@dataclass
class Side:
    """One implementation's eraser for one store: the dataset it erases, one whose location (``where``) does not
    exist, and how a test puts records in and sees what is left."""

    store: str
    eraser: Eraser
    dataset: Dataset
    absent: Dataset
    where: str
    add: Callable[[dict[str, str]], Awaitable[None]]  # {record id: subject id}
    left: Callable[[], Awaitable[dict[str, str]]]  # {record id: subject id}


def in_memory(store: str) -> Side:
    stores = InMemoryStores()
    where = "never_made" if store == "postgres" else "never-made"  # a table name has no hyphen
    dataset, absent = located(store, "records", "records"), located(store, "absent", where)
    stores.missing.add(absent.name)  # the fake's way of saying a dataset's collection or bucket does not exist

    async def add(records: dict[str, str]) -> None:
        stores.records.setdefault(dataset.name, {}).update(records)

    async def left() -> dict[str, str]:
        return dict(stores.records.get(dataset.name, {}))

    return Side(store=store, eraser=stores, dataset=dataset, absent=absent, where=where, add=add, left=left)


@contextlib.asynccontextmanager
async def on_mongo(mongo_url: str) -> AsyncIterator[Side]:
    async with scratch_database(mongo_url, "lethe_pe") as (client, name):
        coll = client[name]["records"]

        async def add(records: dict[str, str]) -> None:
            await coll.insert_many([{"_id": i, "user_id": s} for i, s in records.items()])

        async def left() -> dict[str, str]:
            return {doc["_id"]: doc["user_id"] async for doc in coll.find({})}

        yield Side(
            store="mongo",
            eraser=MongoEraser(client, name, ledger=MongoPurgeLedger(client, name, chunk_size=2)),
            dataset=located("mongo", "records", "records"),
            absent=located("mongo", "absent", "never_made"),
            where="never_made",
            add=add,
            left=left,
        )


@contextlib.asynccontextmanager
async def on_postgres(postgres_url: str, mongo_url: str) -> AsyncIterator[Side]:
    async with (
        scratch_schema(postgres_url, "lethe_pe") as (pool, schema),
        scratch_database(mongo_url, "lethe_pe") as (client, name),
    ):
        table = f"{schema}.records"
        await pool.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, user_id text NOT NULL)")
        await pool.execute(f"CREATE INDEX ON {table} (user_id)")

        async def add(records: dict[str, str]) -> None:
            await pool.executemany(f"INSERT INTO {table} VALUES ($1, $2)", list(records.items()))

        async def left() -> dict[str, str]:
            return {r["id"]: r["user_id"] for r in await pool.fetch(f"SELECT id, user_id FROM {table}")}

        dataset = located("postgres", "records", table)
        eraser = PostgresEraser(postgres_url, ledger=MongoPurgeLedger(client, name), datasets=[dataset])
        try:
            yield Side(
                store="postgres",
                eraser=eraser,
                dataset=dataset,
                absent=located("postgres", "absent", f"{schema}.never_made"),
                where=f"{schema}.never_made",
                add=add,
                left=left,
            )
        finally:
            await eraser.close()


@contextlib.asynccontextmanager
async def on_s3(s3_endpoint: str) -> AsyncIterator[Side]:
    settings = S3Settings(endpoint_url=s3_endpoint)
    bucket = f"t-{uuid.uuid4().hex[:10]}"
    never_made = f"{bucket}-absent"  # unique too: no other test's bucket
    async with s3_client(settings) as s3:
        await s3.create_bucket(Bucket=bucket)
        await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

        async def add(records: dict[str, str]) -> None:
            for record, subject in records.items():
                await s3.put_object(Bucket=bucket, Key=f"users/{subject}/{record}", Body=b"x")

        async def left() -> dict[str, str]:
            keys = [v.key.split("/") for v in await list_versions(s3, bucket, "users/")]
            return {record: subject for _, subject, record in keys}

        connection = S3Connection(settings)
        try:
            yield Side(
                store="s3",
                eraser=S3Eraser(connection, attempts=2, retry_delay_s=0.05),
                dataset=located("s3", "records", bucket),
                absent=located("s3", "absent", never_made),
                where=never_made,
                add=add,
                left=left,
            )
        finally:
            await connection.close()
            await drop_bucket(s3, bucket)


@contextlib.asynccontextmanager
async def on_milvus(milvus_uri: str) -> AsyncIterator[Side]:
    client = MilvusClient(uri=milvus_uri)
    # A primary key of the test's choosing (make_vectors in test_purger.py has auto ids): what is left is by record.
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("subject_id", DataType.VARCHAR, max_length=128)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=4)
    index = client.prepare_index_params()
    index.add_index(field_name="embedding", index_type="FLAT", metric_type="L2")
    client.create_collection("records", schema=schema, index_params=index)

    async def add(records: dict[str, str]) -> None:
        rows = [{"id": i, "subject_id": s, "embedding": [0.1] * 4} for i, s in records.items()]
        await asyncio.to_thread(client.insert, "records", rows)

    async def left() -> dict[str, str]:
        rows = await asyncio.to_thread(
            client.query, "records", filter='subject_id != ""', output_fields=["id", "subject_id"]
        )
        return {row["id"]: row["subject_id"] for row in rows}

    eraser = MilvusEraser(MilvusSettings(uri=milvus_uri))
    try:
        yield Side(
            store="milvus",
            eraser=eraser,
            dataset=located("milvus", "records", "records"),
            absent=located("milvus", "absent", "never_made"),
            where="never_made",
            add=add,
            left=left,
        )
    finally:
        await eraser.close()
        client.close()


@pytest_asyncio.fixture(params=[(kind, store) for kind in ("memory", "real") for store in STORES], ids="-".join)
async def side(request):
    kind, store = request.param
    if kind == "memory":
        yield in_memory(store)
        return
    if store == "mongo":
        real = on_mongo(request.getfixturevalue("mongo_url"))
    elif store == "postgres":
        real = on_postgres(request.getfixturevalue("postgres_url"), request.getfixturevalue("mongo_url"))
    elif store == "s3":
        real = on_s3(request.getfixturevalue("s3_endpoint"))
    else:
        real = on_milvus(request.getfixturevalue("milvus_uri"))
    async with real as found:
        yield found


async def erase(side: Side, subject_id: str = "u1", dataset: Dataset | None = None) -> DatasetOutcome:
    return await side.eraser.erase(
        dataset or side.dataset, subject_id, request_id="req_a", now=T0, purge_after=T0 + DAY
    )


async def test_the_subjects_records_are_gone_and_counted_in_the_unit_of_the_store(side):
    await side.add(RECORDS)
    outcome = await erase(side)
    assert (outcome.dataset, outcome.store, outcome.outcome) == ("records", side.store, "erased")
    assert outcome.counts == DatasetCounts(**{UNIT[side.store]: 3})
    assert "u1" not in (await side.left()).values()


async def test_another_subjects_records_are_untouched(side):
    await side.add(RECORDS)
    await erase(side)
    assert await side.left() == KEPT


async def test_erasing_again_finds_nothing_and_reports_zero(side):
    await side.add(RECORDS)
    await erase(side)
    again = await erase(side)
    assert (again.outcome, again.counts) == ("erased", DatasetCounts())
    assert await side.left() == KEPT


async def test_a_location_that_does_not_exist_is_reported_failed_naming_it(side):
    outcome = await erase(side, dataset=side.absent)
    assert (outcome.dataset, outcome.store, outcome.outcome) == ("absent", side.store, "failed")
    assert outcome.error is not None and f"'{side.where}'" in outcome.error and "does not exist" in outcome.error
    assert outcome.counts == DatasetCounts()
