"""The purger's Ledger port and the Eraser that fills it, one contract for the in-memory fake (InMemoryStores),
MongoEraser with MongoPurgeLedger on the real server, and PostgresEraser (rows of a PostgreSQL table, listed in the
same MongoDB ledger, deleted through it by primary key): tagging lists records in chunks, the nightly job deletes
them."""

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services.purger.adapters.memory import InMemoryStores
from services.purger.adapters.mongo import MongoEraser, MongoPurgeLedger
from services.purger.adapters.postgres import PostgresEraser
from services.purger.model import LedgerChunk
from services.purger.ports import Eraser, Ledger
from shared.datamap import Dataset, MongoLocation, PostgresLocation
from tests.support import scratch_database, scratch_schema

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
T0 = datetime(2026, 5, 1, tzinfo=UTC)  # whole seconds: MongoDB keeps milliseconds
DAY = timedelta(days=1)
MESSAGES = Dataset(
    name="chat_messages",
    store="mongo",
    mode="tag_then_purge",
    mongo=MongoLocation(collection="chat_messages", subject_field="user_id"),
)
PROFILES = Dataset(name="profiles", store="mongo", mongo=MongoLocation(collection="profiles", subject_field="user_id"))


def in_postgres(schema: str) -> tuple[Dataset, Dataset]:
    """MESSAGES and PROFILES as tables of ``schema``."""
    messages = PostgresLocation(table=f"{schema}.chat_messages", subject_column="user_id", tag_column="tagged_at")
    profiles = PostgresLocation(table=f"{schema}.profiles", subject_column="user_id")
    return (
        Dataset(name="chat_messages", store="postgres", mode="tag_then_purge", postgres=messages),
        Dataset(name="profiles", store="postgres", postgres=profiles),
    )


@dataclass
class Stores:
    """One implementation's eraser and ledger, and how a test puts records in and sees what is left."""

    eraser: Eraser
    ledger: Ledger
    add: Callable[[str, dict[str, str]], Awaitable[None]]  # dataset, {record id: subject id}
    left: Callable[[str], Awaitable[dict[str, str]]]  # dataset -> {record id: subject id}
    messages: Dataset = MESSAGES
    profiles: Dataset = PROFILES

    def chunk(self, number: int, *ids: str, request_id: str = "req_a", subject_id: str = "u1") -> LedgerChunk:
        """The ledger chunk ``number`` of ``request_id`` in chat_messages, as this side lists it."""
        where = self.messages.postgres.table if self.messages.postgres else "chat_messages"
        return LedgerChunk(
            f"{request_id}:chat_messages:{number}",
            request_id,
            subject_id,
            "chat_messages",
            where,
            ids,
            T0 + DAY,
            store=self.messages.store,
        )


def in_memory() -> Stores:
    stores = InMemoryStores(chunk_size=2)

    async def add(dataset: str, records: dict[str, str]) -> None:
        stores.records.setdefault(dataset, {}).update(records)

    async def left(dataset: str) -> dict[str, str]:
        return dict(stores.records.get(dataset, {}))

    return Stores(stores, stores, add, left)


@pytest_asyncio.fixture(params=["memory", "mongo", "postgres"])
async def stores(request):
    if request.param == "memory":
        yield in_memory()
        return
    if request.param == "postgres":
        async with on_postgres(request.getfixturevalue("postgres_url"), request.getfixturevalue("mongo_url")) as found:
            yield found
        return
    async with scratch_database(request.getfixturevalue("mongo_url"), "lethe_pl") as (client, name):
        db = client[name]
        ledger = MongoPurgeLedger(client, name, chunk_size=2)
        await ledger.ensure_indexes()

        async def add(dataset: str, records: dict[str, str]) -> None:
            await db[dataset].insert_many([{"_id": i, "user_id": s} for i, s in records.items()])

        async def left(dataset: str) -> dict[str, str]:
            return {doc["_id"]: doc["user_id"] async for doc in db[dataset].find({})}

        yield Stores(MongoEraser(client, name, ledger=ledger), ledger, add, left)


@contextlib.asynccontextmanager
async def on_postgres(postgres_url: str, mongo_url: str) -> AsyncIterator[Stores]:
    async with (
        scratch_schema(postgres_url, "lethe_pl") as (pool, schema),
        scratch_database(mongo_url, "lethe_pl") as (client, name),
    ):
        messages, profiles = in_postgres(schema)
        await pool.execute(
            f"CREATE TABLE {schema}.chat_messages (id text PRIMARY KEY, user_id text NOT NULL, tagged_at timestamptz)"
        )
        await pool.execute(f"CREATE TABLE {schema}.profiles (id text PRIMARY KEY, user_id text NOT NULL)")
        ledger = MongoPurgeLedger(client, name, chunk_size=2)
        await ledger.ensure_indexes()
        eraser = PostgresEraser(postgres_url, ledger=ledger, datasets=[messages, profiles])
        ledger.deleters["postgres"] = eraser

        async def add(dataset: str, records: dict[str, str]) -> None:
            await pool.executemany(
                f"INSERT INTO {schema}.{dataset} (id, user_id) VALUES ($1, $2)", list(records.items())
            )

        async def left(dataset: str) -> dict[str, str]:
            return {r["id"]: r["user_id"] for r in await pool.fetch(f"SELECT id, user_id FROM {schema}.{dataset}")}

        try:
            yield Stores(eraser, ledger, add, left, messages, profiles)
        finally:
            await eraser.close()


async def tag(stores: Stores, subject_id: str = "u1", request_id: str = "req_a"):
    return await stores.eraser.erase(stores.messages, subject_id, request_id=request_id, now=T0, purge_after=T0 + DAY)


async def test_tagging_lists_the_subjects_records_in_chunks_due_once_the_grace_window_ends(stores):
    await stores.add("chat_messages", {f"m{i}": "u1" for i in range(5)} | {"x": "u2"})
    outcome = await tag(stores)
    assert (outcome.outcome, outcome.counts.records_tagged, outcome.purge_after) == ("tagged", 5, T0 + DAY)
    assert await stores.ledger.count_due(T0) == (0, 0)
    assert [c async for c in stores.ledger.due(T0)] == []
    assert await stores.ledger.count_due(T0 + DAY) == (3, 5)
    assert [c async for c in stores.ledger.due(T0 + DAY)] == [
        stores.chunk(0, "m0", "m1"),
        stores.chunk(1, "m2", "m3"),
        stores.chunk(2, "m4"),
    ]
    assert len(await stores.left("chat_messages")) == 6  # tagged, not deleted: that is the nightly job's


async def test_a_rerun_reports_the_same_and_lists_only_records_no_chunk_lists_yet(stores):
    await stores.add("chat_messages", {f"m{i}": "u1" for i in range(3)})
    await tag(stores)
    again = await tag(stores)
    assert (again.outcome, again.counts.records_tagged) == ("tagged", 3)
    assert await stores.ledger.count_due(T0 + DAY) == (2, 3)
    await stores.add("chat_messages", {"m1a": "u1"})  # arrived between the runs
    later = await tag(stores)
    assert later.counts.records_tagged == 4
    assert [c async for c in stores.ledger.due(T0 + DAY)] == [
        stores.chunk(0, "m0", "m1"),
        stores.chunk(1, "m2"),
        stores.chunk(2, "m1a"),
    ]


async def test_records_another_request_tagged_are_left_to_it(stores):
    await stores.add("chat_messages", {"m0": "u1", "m1": "u1"})
    await tag(stores, request_id="req_a")
    outcome = await tag(stores, request_id="req_b")
    assert (outcome.outcome, outcome.counts.records_tagged) == ("erased", 0)
    assert [c.request_id async for c in stores.ledger.due(T0 + DAY)] == ["req_a"]


async def test_deleting_chunks_removes_their_records_and_a_requests_totals_count_the_chunks_done(stores):
    await stores.add("chat_messages", {f"m{i}": "u1" for i in range(5)} | {"x": "u2"})
    await tag(stores)
    first, *rest = [c async for c in stores.ledger.due(T0 + DAY)]
    assert await stores.ledger.delete_chunk(first) == 2
    assert sorted(await stores.left("chat_messages")) == ["m2", "m3", "m4", "x"]
    assert await stores.ledger.request_totals("req_a") == (False, {"chat_messages": 2})
    assert await stores.ledger.count_due(T0 + DAY) == (2, 3)
    assert await stores.ledger.delete_chunk(first) == 2  # an interrupted run's chunk, deleted again
    assert await stores.ledger.request_totals("req_a") == (False, {"chat_messages": 2})
    for c in rest:
        await stores.ledger.delete_chunk(c)
    assert await stores.ledger.request_totals("req_a") == (True, {"chat_messages": 5})
    assert [c async for c in stores.ledger.due(T0 + 9 * DAY)] == []
    assert await stores.left("chat_messages") == {"x": "u2"}


async def test_a_request_with_no_chunks_is_done_with_nothing_purged(stores):
    assert await stores.ledger.request_totals("req_none") == (True, {})


async def test_erasing_deletes_the_subjects_records_at_once_and_lists_nothing(stores):
    await stores.add("profiles", {"p1": "u1", "p2": "u1", "p3": "u2"})
    outcome = await stores.eraser.erase(stores.profiles, "u1", request_id="req_a", now=T0, purge_after=T0 + DAY)
    assert (outcome.outcome, outcome.counts.records_erased) == ("erased", 2)
    assert await stores.left("profiles") == {"p3": "u2"}
    assert await stores.ledger.count_due(T0 + 9 * DAY) == (0, 0)
    again = await stores.eraser.erase(stores.profiles, "u1", request_id="req_a", now=T0, purge_after=T0 + DAY)
    assert (again.outcome, again.counts.records_erased) == ("erased", 0)
