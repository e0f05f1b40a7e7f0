"""PostgresEraser on the real server: a subject's rows across a parent and its child tables go in one transaction,
other people's rows stay (a column that holds another person's id included), tagging then the nightly purge by
primary key through the ledger, and what the start-up check reports. (The Eraser contract shared with the other
stores is test_purger_erasers.py, the tagging contract test_purger_ledger.py.)"""

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.purger.adapters.backups import BackupStore
from services.purger.adapters.memory import InMemoryProgress
from services.purger.adapters.mongo import MongoPurgeLedger
from services.purger.adapters.postgres import PostgresEraser
from services.purger.handlers import Purger, on_hold_released, purge
from shared.datamap import DataMap, Dataset, PostgresLocation
from shared.events import DeletionRequested, LegalHoldReleased
from shared.fakes import InMemoryRetentionStore
from shared.liveread import live_sql
from shared.s3 import s3_client
from shared.settings import S3Settings
from tests.support import deletion_requested, drop_bucket, litigation_hold, scratch_database, scratch_schema

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
T0 = datetime(2026, 5, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def orders(schema: str, *, mode: str = "erase", also: str | None = None) -> Dataset:
    """The orders, their items and the items' notes; ``also``: one more child table of the orders, after those."""
    cascade: list[dict[str, Any]] = [
        {
            "table": f"{schema}.order_items",
            "foreign_key": "order_id",
            "primary_key": "item_id",
            "cascade": [{"table": f"{schema}.item_notes", "foreign_key": "item_id", "primary_key": "note_id"}],
        }
    ]
    if also:
        cascade.append({"table": f"{schema}.{also}", "foreign_key": "order_id"})
    location = PostgresLocation.model_validate(
        {
            "table": f"{schema}.orders",
            "subject_column": "customer_id",
            "primary_key": "order_id",
            "tag_column": "deleted_at",
            "cascade": cascade,
        }
    )
    return Dataset(name="orders", store="postgres", mode=mode, postgres=location)


SHOP = """
CREATE TABLE {s}.orders (
    order_id text PRIMARY KEY, customer_id text NOT NULL, gift_recipient_id text, total integer,
    deleted_at timestamptz);
CREATE INDEX ON {s}.orders (customer_id);
CREATE TABLE {s}.order_items (
    item_id text PRIMARY KEY, order_id text NOT NULL REFERENCES {s}.orders (order_id), sku text);
CREATE INDEX ON {s}.order_items (order_id);
CREATE TABLE {s}.item_notes (
    note_id text PRIMARY KEY, item_id text NOT NULL REFERENCES {s}.order_items (item_id), note text);
CREATE INDEX ON {s}.item_notes (item_id);
"""


def requested() -> DeletionRequested:
    return deletion_requested(at=T0)


@dataclass
class Shop:
    pool: Any
    schema: str
    eraser: PostgresEraser
    ledger: MongoPurgeLedger

    async def fill(self) -> None:
        """u1: two orders (2 and 1 items, one item with a note); u2: one order whose gift recipient is u1."""
        s = self.schema
        await self.pool.executemany(
            f"INSERT INTO {s}.orders VALUES ($1, $2, $3, 10, NULL)",
            [("o1", "u1", None), ("o2", "u1", None), ("o3", "u2", "u1")],
        )
        await self.pool.executemany(
            f"INSERT INTO {s}.order_items VALUES ($1, $2, 'sku')",
            [("i1", "o1"), ("i2", "o1"), ("i3", "o2"), ("i4", "o3")],
        )
        await self.pool.executemany(f"INSERT INTO {s}.item_notes VALUES ($1, $2, 'gift')", [("n1", "i1"), ("n4", "i4")])

    async def ids(self, table: str) -> list[str]:
        key = {"orders": "order_id", "order_items": "item_id", "item_notes": "note_id"}[table]
        return [r[0] for r in await self.pool.fetch(f"SELECT {key} FROM {self.schema}.{table} ORDER BY 1")]


@contextlib.asynccontextmanager
async def shop(postgres_url: str, mongo_url: str, dataset_of=orders) -> AsyncIterator[Shop]:
    async with (
        scratch_schema(postgres_url, "lethe_pg") as (pool, schema),
        scratch_database(mongo_url, "lethe_pg") as (client, name),
    ):
        await pool.execute(SHOP.format(s=schema))
        ledger = MongoPurgeLedger(client, name, chunk_size=2)
        await ledger.ensure_indexes()
        eraser = PostgresEraser(postgres_url, ledger=ledger, datasets=[dataset_of(schema)])
        ledger.deleters["postgres"] = eraser
        try:
            yield Shop(pool, schema, eraser, ledger)
        finally:
            await eraser.close()


async def test_a_subjects_rows_across_the_parent_and_its_children_go_in_one_erasure(postgres_url, mongo_url):
    async with shop(postgres_url, mongo_url) as s:
        await s.fill()
        outcome = await s.eraser.erase(orders(s.schema), "u1", request_id="req_a", now=T0, purge_after=T0 + DAY)
        assert (outcome.outcome, outcome.store, outcome.counts.records_erased) == ("erased", "postgres", 6)
        assert await s.ids("orders") == ["o3"]  # u2's order stays, though it names u1 as the gift's recipient
        assert await s.ids("order_items") == ["i4"]
        assert await s.ids("item_notes") == ["n4"]
        again = await s.eraser.erase(orders(s.schema), "u1", request_id="req_a", now=T0, purge_after=T0 + DAY)
        assert (again.outcome, again.counts.records_erased) == ("erased", 0)


async def test_an_erasure_that_fails_part_way_leaves_everything_as_it_was(postgres_url, mongo_url):
    def with_a_missing_child(schema: str) -> Dataset:
        return orders(schema, also="payments")  # the map names a child table the schema does not have

    async with shop(postgres_url, mongo_url, with_a_missing_child) as s:
        await s.fill()
        dataset = with_a_missing_child(s.schema)
        outcome = await s.eraser.erase(dataset, "u1", request_id="req_a", now=T0, purge_after=T0 + DAY)
        assert outcome.outcome == "failed" and "payments" in outcome.error
        # The notes' and items' deletes ran before the payments' failed: rolled back with it.
        assert await s.ids("item_notes") == ["n1", "n4"]
        assert await s.ids("order_items") == ["i1", "i2", "i3", "i4"]
        assert await s.ids("orders") == ["o1", "o2", "o3"]
        assert await s.eraser.check() == [f"dataset orders: the table '{s.schema}.payments' does not exist"]


async def test_tagged_rows_are_hidden_then_the_nightly_purge_deletes_them_and_their_children_by_key(
    postgres_url, mongo_url
):
    async with shop(postgres_url, mongo_url) as s:
        await s.fill()
        dataset = orders(s.schema, mode="tag_then_purge")
        outcome = await s.eraser.erase(dataset, "u1", request_id="req_a", now=T0, purge_after=T0 + DAY)
        assert (outcome.outcome, outcome.counts.records_tagged, outcome.purge_after) == ("tagged", 2, T0 + DAY)
        live = f"SELECT order_id FROM {s.schema}.orders WHERE customer_id = $1 AND {live_sql('deleted_at')}"
        assert await s.pool.fetch(live, "u1") == []  # a reader that filters as shared.liveread says sees nothing
        assert await s.ids("order_items") == ["i1", "i2", "i3", "i4"]  # children wait for their order
        chunks = [c async for c in s.ledger.due(T0 + DAY)]
        assert [(c.store, c.collection, c.ids) for c in chunks] == [("postgres", f"{s.schema}.orders", ("o1", "o2"))]
        for chunk in chunks:
            assert await s.ledger.delete_chunk(chunk) == 2
        assert await s.ids("orders") == ["o3"]
        assert await s.ids("order_items") == ["i4"]
        assert await s.ids("item_notes") == ["n4"]
        assert await s.ledger.request_totals("req_a") == (True, {"orders": 2})


async def test_a_uuid_primary_key_is_listed_as_text_and_deleted_by_key(postgres_url, mongo_url):
    async with (
        scratch_schema(postgres_url, "lethe_pg") as (pool, schema),
        scratch_database(mongo_url, "lethe_pg") as (client, name),
    ):
        await pool.execute(
            f"CREATE TABLE {schema}.events (id uuid PRIMARY KEY, user_id text NOT NULL, tagged_at timestamptz)"
        )
        mine, theirs = [uuid.uuid4() for _ in range(3)], uuid.uuid4()
        await pool.executemany(
            f"INSERT INTO {schema}.events VALUES ($1, $2)", [*((i, "u1") for i in mine), (theirs, "u2")]
        )
        location = PostgresLocation(table=f"{schema}.events", subject_column="user_id", tag_column="tagged_at")
        dataset = Dataset(name="events", store="postgres", mode="tag_then_purge", postgres=location)
        ledger = MongoPurgeLedger(client, name, chunk_size=10)
        eraser = PostgresEraser(postgres_url, ledger=ledger, datasets=[dataset])
        ledger.deleters["postgres"] = eraser
        try:
            assert (
                await eraser.erase(dataset, "u1", request_id="r", now=T0, purge_after=T0)
            ).counts.records_tagged == 3
            again = await eraser.erase(dataset, "u1", request_id="r", now=T0, purge_after=T0)  # a re-run
            assert again.counts.records_tagged == 3
            [chunk] = [c async for c in ledger.due(T0)]
            assert sorted(chunk.ids) == sorted(str(i) for i in mine)
            await ledger.delete_chunk(chunk)
            assert [r["id"] for r in await pool.fetch(f"SELECT id FROM {schema}.events")] == [theirs]
        finally:
            await eraser.close()


async def test_the_start_up_check_reports_a_table_without_an_index_on_the_subject_column_and_a_missing_table(
    postgres_url, mongo_url
):
    async with (
        scratch_schema(postgres_url, "lethe_pg") as (pool, schema),
        scratch_database(mongo_url, "lethe_pg") as (client, name),
    ):
        await pool.execute(f"CREATE TABLE {schema}.indexed (id text PRIMARY KEY, user_id text)")
        await pool.execute(f"CREATE INDEX ON {schema}.indexed (user_id, id)")  # a multi-column index serves
        await pool.execute(f"CREATE TABLE {schema}.scanned (id text PRIMARY KEY, user_id text)")
        await pool.execute(f"CREATE TABLE {schema}.misnamed (id text PRIMARY KEY, owner text)")
        datasets = [
            Dataset(
                name=n, store="postgres", postgres=PostgresLocation(table=f"{schema}.{n}", subject_column="user_id")
            )
            for n in ("indexed", "scanned", "absent", "misnamed")
        ]
        eraser = PostgresEraser(postgres_url, ledger=MongoPurgeLedger(client, name), datasets=datasets)
        try:
            assert await eraser.check() == [
                f"dataset scanned: no index on {schema}.scanned(user_id): each erasure would scan the table",
                f"dataset absent: the table '{schema}.absent' does not exist",
                f"dataset misnamed: the table '{schema}.misnamed' has no column 'user_id'",
            ]
            misnamed = await eraser.erase(datasets[3], "u1", request_id="r", now=T0, purge_after=T0)
            assert misnamed.outcome == "failed" and "user_id" in misnamed.error
            await pool.execute(f"CREATE INDEX ON {schema}.scanned (user_id)")
            await pool.execute(f"CREATE TABLE {schema}.absent (id text PRIMARY KEY, user_id text)")
            await pool.execute(f"CREATE INDEX ON {schema}.absent (user_id)")
            await pool.execute(f"DROP TABLE {schema}.misnamed")
            await pool.execute(f"CREATE TABLE {schema}.misnamed (id text PRIMARY KEY, user_id text)")
            await pool.execute(f"CREATE INDEX ON {schema}.misnamed (user_id)")
            assert await eraser.check() == []
        finally:
            await eraser.close()


async def test_identifiers_are_quoted_so_a_mixed_case_table_is_the_one_erased(postgres_url, mongo_url):
    async with (
        scratch_schema(postgres_url, "lethe_pg") as (pool, schema),
        scratch_database(mongo_url, "lethe_pg") as (client, name),
    ):
        await pool.execute(f'CREATE TABLE {schema}."Profiles" ("Id" text PRIMARY KEY, "UserId" text)')
        await pool.execute(f'CREATE TABLE {schema}.profiles ("Id" text PRIMARY KEY, "UserId" text)')
        await pool.execute(f"INSERT INTO {schema}.\"Profiles\" VALUES ('p1', 'u1')")
        await pool.execute(f"INSERT INTO {schema}.profiles VALUES ('q1', 'u1')")
        location = PostgresLocation(table=f"{schema}.Profiles", subject_column="UserId", primary_key="Id")
        dataset = Dataset(name="profiles", store="postgres", postgres=location)
        eraser = PostgresEraser(postgres_url, ledger=MongoPurgeLedger(client, name), datasets=[dataset])
        try:
            outcome = await eraser.erase(dataset, "u1'; DROP TABLE x; --", request_id="r", now=T0, purge_after=T0)
            assert outcome.counts.records_erased == 0  # the subject id is a bound value, never SQL
            assert (
                await eraser.erase(dataset, "u1", request_id="r", now=T0, purge_after=T0)
            ).counts.records_erased == 1
            assert await pool.fetchval(f'SELECT count(*) FROM {schema}."Profiles"') == 0
            assert await pool.fetchval(f"SELECT count(*) FROM {schema}.profiles") == 1  # the lower-case one stays
        finally:
            await eraser.close()


async def test_a_hold_keeps_the_rows_and_its_release_erases_them(postgres_url, mongo_url):
    async with shop(postgres_url, mongo_url) as s:
        await s.fill()
        retention = InMemoryRetentionStore()
        await retention.place_hold(litigation_hold("hold_1", "u1", "orders"))
        purger = Purger(
            datamap=DataMap(datasets=(orders(s.schema),)),
            erasers={"postgres": s.eraser},
            retention=retention,
            progress=InMemoryProgress(),
            ledger=s.ledger,
            clock=lambda: T0,
            purge_after=DAY,
        )
        [report] = await purge(requested(), purger)
        assert [(o.dataset, o.outcome, o.rule_id) for o in report.outcomes] == [("orders", "retained", "hold_1")]
        assert await s.ids("orders") == ["o1", "o2", "o3"]
        await retention.release_hold("hold_1", by="legal", at=T0)
        [follow_up] = await on_hold_released(
            LegalHoldReleased(producer="t", hold_id="hold_1", datasets=("orders",)), purger
        )
        assert [(o.dataset, o.outcome) for o in follow_up.outcomes] == [("orders", "erased")]
        assert await s.ids("orders") == ["o3"] and await s.ids("order_items") == ["i4"]


async def test_a_backup_holds_every_table_of_the_dataset_as_stored(postgres_url, mongo_url, s3_endpoint):
    async with shop(postgres_url, mongo_url) as s:
        await s.fill()
        async with scratch_database(mongo_url, "lethe_pgb") as (client, name):
            s3 = S3Settings(endpoint_url=s3_endpoint)
            store = BackupStore(
                client, name, s3, bucket=f"t-{name.removeprefix('lethe_pgb_')}-backups", postgres=s.eraser
            )
            try:
                backup = await store.create([orders(s.schema)], now=T0)
                rows = await store.read(backup, "orders")
                assert backup.documents == len(rows) == 3 + 4 + 2
                tables = sorted({r["table"] for r in rows})
                assert tables == sorted(f"{s.schema}.{t}" for t in ("orders", "order_items", "item_notes"))
                assert {"table": f"{s.schema}.orders", "order_id": "o3", "customer_id": "u2"}.items() <= next(
                    r for r in rows if r.get("order_id") == "o3" and r["table"].endswith(".orders")
                ).items()
            finally:
                async with s3_client(s3) as connection:
                    await drop_bucket(connection, store.bucket)
