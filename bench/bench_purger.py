"""Benchmark of the purger's nightly job: the same k tagged records purged from collections (MongoDB) and tables
(PostgreSQL, with a child table of line items) of different sizes.

The job deletes by primary key from its ledger, so its time should follow k, not the collection size: this
prints both times and their ratio, per store. It also times erasing one person from an S3 prefix with versions.
Run with `make bench` (all benchmarks) or `make bench-purger`; sizes and k are arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg

from services.purger.adapters.mongo import MongoEraser, MongoPurgeLedger, MongoPurgeProgress
from services.purger.adapters.postgres import PostgresEraser
from services.purger.adapters.s3 import S3Eraser
from services.purger.handlers import Purger, nightly_purge
from shared.datamap import DataMap, Dataset, MongoLocation, PostgresLocation, S3Location
from shared.events import utcnow
from shared.fakes import InMemoryRetentionStore
from shared.logging import configure_logging
from shared.mongo import create_mongo_client
from shared.s3 import S3Connection, s3_client
from shared.settings import LogSettings, MongoSettings, PostgresSettings, S3Settings

SUBJECT = "bench-subject"


async def fill(coll, size: int, tagged: int) -> None:
    """``size`` documents, ``tagged`` of them the subject's, spread evenly through the collection."""
    every = size // tagged
    batch = []
    for i in range(size):
        owner = SUBJECT if i % every == 0 and i // every < tagged else f"user-{i % 50_000}"
        batch.append({"_id": f"log-{i:08d}", "user_id": owner, "endpoint": "/v1/search", "ip": "203.0.113.7"})
        if len(batch) == 5000:
            await coll.insert_many(batch, ordered=False)
            batch = []
    if batch:
        await coll.insert_many(batch, ordered=False)


async def one_size(size: int, tagged: int, batch_size: int) -> float:
    settings = MongoSettings(database=f"bench_purge_{uuid.uuid4().hex[:8]}")
    client = create_mongo_client(settings)
    db = settings.database
    dataset = Dataset(
        name="usage_logs",
        store="mongo",
        mongo=MongoLocation(collection="usage_logs", subject_field="user_id"),
        mode="tag_then_purge",
    )
    try:
        started = time.perf_counter()
        await fill(client[db]["usage_logs"], size, tagged)
        print(f"  {size:>9,} documents written in {time.perf_counter() - started:.1f} s", flush=True)
        now = utcnow()
        started = time.perf_counter()
        outcome = await MongoEraser(client, db, ledger=MongoPurgeLedger(client, db, chunk_size=batch_size)).erase(
            dataset, SUBJECT, request_id="req_bench", now=now, purge_after=now
        )
        assert outcome.counts.records_tagged == tagged, outcome
        print(f"  {tagged:,} records tagged in {time.perf_counter() - started:.1f} s (a search by subject)", flush=True)
        purger = Purger(
            datamap=DataMap(datasets=(dataset,)),
            erasers={},
            retention=InMemoryRetentionStore(),
            progress=MongoPurgeProgress(client, db),
            ledger=MongoPurgeLedger(client, db),
            clock=lambda: now + timedelta(seconds=1),
            purge_after=timedelta(0),
        )
        started = time.perf_counter()
        report = await nightly_purge(purger, pause_s=0)
        elapsed = time.perf_counter() - started
        assert report.records == tagged and len(report.hard_deleted) == 1, report
        left = await client[db]["usage_logs"].estimated_document_count()
        assert left == size - tagged, left
        return elapsed
    finally:
        await client.drop_database(db)
        await client.close()


async def pg_one_size(size: int, tagged: int, batch_size: int) -> float:
    """The same as :func:`one_size` on PostgreSQL: ``size`` orders (each with one line item, so the purge deletes
    children too), ``tagged`` of them the subject's, tagged by the purger and purged by the nightly job."""
    settings = MongoSettings(database=f"bench_purge_{uuid.uuid4().hex[:8]}")
    client = create_mongo_client(settings)
    db, schema = settings.database, f"bench_{uuid.uuid4().hex[:8]}"
    location = PostgresLocation.model_validate(
        {
            "table": f"{schema}.orders",
            "subject_column": "customer_id",
            "tag_column": "deleted_at",
            "cascade": [{"table": f"{schema}.order_items", "foreign_key": "order_id"}],
        }
    )
    dataset = Dataset(name="orders", store="postgres", postgres=location, mode="tag_then_purge")
    url = PostgresSettings().url.get_secret_value()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    ledger = MongoPurgeLedger(client, db, chunk_size=batch_size)
    eraser = PostgresEraser(url, ledger=ledger, datasets=[dataset])
    ledger.deleters["postgres"] = eraser
    try:
        started = time.perf_counter()
        every = size // tagged
        await pool.execute(
            f"CREATE SCHEMA {schema}; "
            f"CREATE TABLE {schema}.orders (id bigint PRIMARY KEY, customer_id text NOT NULL, total integer, "
            "deleted_at timestamptz); "
            f"CREATE TABLE {schema}.order_items (id bigint PRIMARY KEY, order_id bigint NOT NULL "
            f"REFERENCES {schema}.orders (id), sku text); "
            # generate_series: the rows are written by the server, not sent one by one
            f"INSERT INTO {schema}.orders SELECT i, CASE WHEN i % {every} = 0 AND i / {every} < {tagged} "
            f"THEN '{SUBJECT}' ELSE 'user-' || (i % 50000) END, 10, NULL FROM generate_series(0, {size - 1}) i; "
            f"INSERT INTO {schema}.order_items SELECT i, i, 'sku' FROM generate_series(0, {size - 1}) i; "
            f"CREATE INDEX ON {schema}.orders (customer_id); CREATE INDEX ON {schema}.order_items (order_id); "
            f"ANALYZE {schema}.orders; ANALYZE {schema}.order_items"
        )
        print(
            f"  {size:>9,} orders and {size:,} line items written in {time.perf_counter() - started:.1f} s", flush=True
        )
        assert await eraser.check() == []
        now = utcnow()
        started = time.perf_counter()
        outcome = await eraser.erase(dataset, SUBJECT, request_id="req_bench", now=now, purge_after=now)
        assert outcome.counts.records_tagged == tagged, outcome
        print(f"  {tagged:,} orders tagged in {time.perf_counter() - started:.2f} s (a search by subject)", flush=True)
        purger = Purger(
            datamap=DataMap(datasets=(dataset,)),
            erasers={"postgres": eraser},
            retention=InMemoryRetentionStore(),
            progress=MongoPurgeProgress(client, db),
            ledger=ledger,
            clock=lambda: now + timedelta(seconds=1),
            purge_after=timedelta(0),
        )
        started = time.perf_counter()
        report = await nightly_purge(purger, pause_s=0)
        elapsed = time.perf_counter() - started
        assert report.records == tagged and len(report.hard_deleted) == 1, report
        assert await pool.fetchval(f"SELECT count(*) FROM {schema}.orders") == size - tagged
        assert await pool.fetchval(f"SELECT count(*) FROM {schema}.order_items") == size - tagged
        return elapsed
    finally:
        await eraser.close()
        await pool.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await pool.close()
        await client.drop_database(db)
        await client.close()


async def s3_person(versions: int) -> float:
    settings = S3Settings()
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    async with s3_client(settings) as s3:
        await s3.create_bucket(Bucket=bucket)
        await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        for i in range(versions):
            await s3.put_object(Bucket=bucket, Key=f"users/{SUBJECT}/file-{i % (versions // 3 or 1)}", Body=b"x" * 1024)
        dataset = Dataset(name="uploads", store="s3", s3=S3Location(bucket=bucket, prefix="users/{subject_id}/"))
        connection = S3Connection(settings)
        await connection.ping()  # the purger keeps one client open for its lifetime: time the erasure alone
        started = time.perf_counter()
        outcome = await S3Eraser(connection, attempts=3).erase(dataset, SUBJECT)
        elapsed = time.perf_counter() - started
        await connection.close()
        assert outcome.counts.object_versions_deleted == versions, outcome
        await s3.delete_bucket(Bucket=bucket)
    return elapsed


async def main(args: argparse.Namespace) -> dict[str, object]:
    configure_logging(LogSettings(level="WARNING", format="console"), service="bench")
    print(f"nightly purge of the same {args.tagged:,} tagged records (batches of {args.batch:,}, by primary key):")
    times = {}
    for size in args.sizes:
        times[size] = await one_size(size, args.tagged, args.batch)
        print(
            f"  {size:>9,} documents: purge {times[size]:.2f} s ({times[size] / args.tagged * 1000:.2f} ms per record)",
            flush=True,
        )
    small, large = min(args.sizes), max(args.sizes)
    print(
        f"ratio {large:,} / {small:,} documents: {times[large] / times[small]:.2f} "
        f"(the collection is {large / small:.0f}x larger; 1.0 means the cost follows the tagged records only)"
    )
    print(f"PostgreSQL: the same {args.tagged:,} tagged orders (and their line items), by primary key:")
    pg_times = {}
    for size in args.sizes:
        pg_times[size] = await pg_one_size(size, args.tagged, args.batch)
        print(
            f"  {size:>9,} orders: purge {pg_times[size]:.2f} s "
            f"({pg_times[size] / args.tagged * 1000:.2f} ms per order)"
        )
    print(f"ratio {large:,} / {small:,} orders: {pg_times[large] / pg_times[small]:.2f}")
    seconds = await s3_person(args.s3_versions)
    print(f"erasing one person's {args.s3_versions} object versions from S3: {seconds:.2f} s")
    return {
        "tagged_records": args.tagged,
        "purge_s_by_collection_size": {str(size): t for size, t in times.items()},
        "ratio_largest_to_smallest": times[large] / times[small],
        "postgres_purge_s_by_table_size": {str(size): t for size, t in pg_times.items()},
        "postgres_ratio_largest_to_smallest": pg_times[large] / pg_times[small],
        "s3_versions": args.s3_versions,
        "s3_erase_s": seconds,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="collection sizes")
    parser.add_argument("--tagged", type=int, default=1000, help="tagged records (k), the same at every size")
    parser.add_argument("--batch", type=int, default=500, help="records per batch")
    parser.add_argument("--s3-versions", type=int, default=300, help="object versions of the person in S3")
    figures = asyncio.run(main(parser.parse_args()))
    out = Path("var/bench/purger.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(f"written to {out}")
