"""Demo data for ``lethe seed``: realistic records for N people in every dataset of the data map.

PostgreSQL datasets get their tables (and child tables, schema and indexes) created if missing, with columns of
the demo values' types; a real company's tables are its own, and lethe never creates them.

Fields the data map marks as encrypted are sealed through keyvault under each person's key for the dataset, so a
deletion later shows crypto-shredding at work; accounts carry the keyed hash intake's email channel looks up.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import asyncpg
from botocore.exceptions import ClientError
from pymilvus import DataType, MilvusClient
from pymongo import ReplaceOne
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.intake.settings import IntakeSettings
from services.purger.adapters.postgres import quoted
from services.purger.settings import PurgerSettings
from shared.auth import KEYS_USE, operator_token
from shared.contacts import email_lookup_hash
from shared.datamap import DataMap, Dataset, PostgresChild, load_datamap
from shared.keyvault_client import KeyvaultClient, KeyvaultError
from shared.mongo import create_mongo_client
from shared.s3 import s3_client
from shared.settings import CliSettings

FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim", "Hedy", "Linus")
LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman", "Lee")
CITIES = ("Berlin", "Lyon", "Porto", "Tallinn", "Utrecht", "Krakow", "Ghent", "Turin")
PHRASES = ("Can you export my report?", "The invoice looks wrong", "Thanks, that fixed it", "How do I rotate keys?")
DIM = 8


class SeedError(Exception):
    """A server the seed needs is missing or refused; the message says which and what to do."""


class Seeder:
    def __init__(self, settings: PurgerSettings, datamap: DataMap, keyvault: KeyvaultClient, lookup_key: str) -> None:
        self._settings = settings
        self._datamap = datamap
        self._keyvault = keyvault
        self._lookup_key = lookup_key
        self._mongo = create_mongo_client(settings.mongo)
        self._db = self._mongo[settings.mongo.database]
        self._s3_cm = s3_client(settings.s3)
        self._s3: Any = None
        self._milvus: MilvusClient | None = None
        self._pg: asyncpg.Pool | None = None
        self.counts: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: PurgerSettings) -> Seeder:
        cli = CliSettings()
        token = operator_token(cli, KEYS_USE, ttl=timedelta(hours=1))
        if token is None:
            raise SeedError("set LETHE_ADMIN_TOKEN (scope keys:use) or LETHE_AUTH_JWT_SECRET to reach keyvault")
        keyvault = KeyvaultClient(cli.keyvault_url, token=token)
        lookup_key = IntakeSettings().email_lookup_key.get_secret_value()
        return cls(settings, load_datamap(settings.datamap_path), keyvault, lookup_key)

    async def __aenter__(self) -> Self:
        self._s3 = await self._s3_cm.__aenter__()
        for dataset in self._datamap.datasets:
            if dataset.mongo is not None:
                # The company's applications read by subject, so their collections index the subject field.
                await self._db[dataset.mongo.collection].create_index(dataset.mongo.subject_field)
            if dataset.s3 is not None:
                await self._ensure_bucket(dataset.s3.bucket)
            if dataset.milvus is not None:
                self._ensure_milvus(dataset)
            if dataset.postgres is not None and not dataset.exempt:
                await self._ensure_tables(dataset)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._s3_cm.__aexit__(*exc)
        await self._keyvault.close()
        await self._mongo.close()
        if self._milvus is not None:
            self._milvus.close()
        if self._pg is not None:
            await self._pg.close()

    async def _postgres(self) -> asyncpg.Pool:
        if self._pg is None:
            try:
                self._pg = await asyncpg.create_pool(
                    self._settings.postgres.url.get_secret_value(), min_size=1, max_size=4
                )
            except (OSError, asyncpg.PostgresError) as exc:
                raise SeedError(f"PostgreSQL refused the seed ({exc}): is it running (`make up`)?") from exc
        return self._pg

    async def _ensure_tables(self, dataset: Dataset) -> None:
        """The demo's tables for a PostgreSQL dataset: the parent (subject column indexed, the tag column if the
        mode needs one) and each child (its foreign key referencing the parent, indexed)."""
        loc = dataset.postgres
        assert loc is not None
        pool = await self._postgres()
        for table in loc.tables():
            if "." in table:
                await pool.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted(table.split('.')[0])}")
        sample = _pg_columns(ORDER_COLUMNS.get(dataset.name, {"note": "text"}))
        tag = f", {quoted(loc.tag_column)} timestamptz" if loc.tag_column else ""
        await pool.execute(
            f"CREATE TABLE IF NOT EXISTS {quoted(loc.table)} ({quoted(loc.primary_key)} text PRIMARY KEY, "
            f"{quoted(loc.subject_column)} text NOT NULL{tag}{sample})"
        )
        await pool.execute(_index(loc.table, loc.subject_column))
        await self._ensure_children(loc.table, loc.primary_key, loc.cascade)

    async def _ensure_children(self, parent: str, parent_key: str, children: Sequence[PostgresChild]) -> None:
        pool = await self._postgres()
        for child in children:
            table, fk = quoted(child.table), quoted(child.foreign_key)
            columns = _pg_columns(ORDER_COLUMNS.get(child.table.rsplit(".", 1)[-1], {"note": "text"}))
            await pool.execute(
                f"CREATE TABLE IF NOT EXISTS {table} ({quoted(child.primary_key)} text PRIMARY KEY, "
                f"{fk} text NOT NULL REFERENCES {quoted(parent)} ({quoted(parent_key)}){columns})"
            )
            await pool.execute(_index(child.table, child.foreign_key))
            await self._ensure_children(child.table, child.primary_key, child.cascade)

    async def _ensure_bucket(self, bucket: str) -> None:
        try:
            await self._s3.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        await self._s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def _ensure_milvus(self, dataset: Dataset) -> None:
        assert dataset.milvus is not None
        settings = self._settings.milvus
        self._milvus = self._milvus or MilvusClient(
            uri=settings.uri, token=settings.token.get_secret_value() if settings.token else ""
        )
        if self._milvus.has_collection(dataset.milvus.collection):
            return
        schema = self._milvus.create_schema(auto_id=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field(dataset.milvus.filter_field, DataType.VARCHAR, max_length=200)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
        index = self._milvus.prepare_index_params()
        index.add_index(field_name="embedding", index_type="FLAT", metric_type="L2")
        self._milvus.create_collection(dataset.milvus.collection, schema=schema, index_params=index)

    async def _seal(self, dataset: Dataset, subject: str, record: dict[str, Any]) -> dict[str, Any]:
        for name in dataset.encrypted_fields:
            if name in record:
                plaintext = str(record[name]).encode()
                try:
                    # A busy machine may time a call out: a few tries before calling keyvault unreachable.
                    async for attempt in AsyncRetrying(
                        retry=retry_if_exception_type(TimeoutError),
                        stop=stop_after_attempt(5),
                        wait=wait_exponential(multiplier=0.5, max=8),
                        reraise=True,
                    ):
                        with attempt:
                            record[name] = await self._keyvault.encrypt(subject, dataset.name, plaintext)
                except (KeyvaultError, OSError) as exc:
                    why = str(exc) or type(exc).__name__
                    raise SeedError(f"keyvault refused to encrypt ({why}): is it running (`make services`)?") from exc
        return record

    def _records(self, dataset: Dataset, subject: str, rng: random.Random) -> list[dict[str, Any]]:
        assert dataset.mongo is not None
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first}.{last}.{subject}@example.com".lower()
        now = datetime.now(UTC)

        def when() -> datetime:
            return now - timedelta(days=rng.randint(0, 400), seconds=rng.randint(0, 86400))

        templates: dict[str, list[dict[str, Any]]] = {
            "accounts": [
                {
                    "email": email,
                    "email_hash": email_lookup_hash(email, self._lookup_key),
                    "phone": f"+49 30 {rng.randint(1000000, 9999999)}",
                    "plan": rng.choice(("free", "pro", "team")),
                    "created_at": when(),
                }
            ],
            "profiles": [{"display_name": f"{first} {last}", "bio": f"Lives in {rng.choice(CITIES)}", "theme": "dark"}],
            "usage_logs": [
                {"ip_address": f"203.0.113.{rng.randint(1, 254)}", "endpoint": "/v1/search", "at": when()}
                for _ in range(rng.randint(3, 8))
            ],
            "api_keys": [{"label": "ci", "key_hash": f"{rng.getrandbits(128):032x}", "created_at": when()}],
            "chat_messages": [{"body": rng.choice(PHRASES), "at": when()} for _ in range(rng.randint(2, 6))],
            "invoices": [
                {
                    "billing_address": f"{rng.randint(1, 99)} Main St, {rng.choice(CITIES)}",
                    "total_eur": rng.randint(9, 499),
                }
                for _ in range(rng.randint(1, 3))
            ],
        }
        records = templates.get(dataset.name, [{"note": f"demo record of {dataset.name}"}])
        return [
            {"_id": f"{subject}:{dataset.name}:{i}", dataset.mongo.subject_field: subject, **r}
            for i, r in enumerate(records)
        ]

    async def person(self, subject: str, rng: random.Random) -> None:
        await self.people([subject], rng)

    async def people(self, subjects: Sequence[str], rng: random.Random, *, concurrency: int = 16) -> None:
        """Seed a batch of people: one bulk insert per collection and one Milvus insert per dataset for the whole
        batch; the keyvault calls (one key per person and encrypted dataset) and S3 writes run ``concurrency`` at
        a time. Re-seeding a person replaces their records."""
        gate = asyncio.Semaphore(concurrency)

        async def gated(work: Awaitable[Any]) -> Any:
            async with gate:
                return await work

        for dataset in self._datamap.datasets:
            if dataset.exempt:
                continue
            if dataset.mongo is not None:
                # The records are generated in order (the same values for the same seed), then sealed concurrently.
                plain = [r for subject in subjects for r in self._records(dataset, subject, rng)]
                records = await asyncio.gather(
                    *(gated(self._seal(dataset, r[dataset.mongo.subject_field], r)) for r in plain)
                )
                await self._db[dataset.mongo.collection].bulk_write(
                    [ReplaceOne({"_id": r["_id"]}, r, upsert=True) for r in records], ordered=False
                )
                self._count(dataset.name, len(records))
            elif dataset.postgres is not None:
                await self._pg_people(dataset, subjects, rng, gated)
            elif dataset.s3 is not None:
                await asyncio.gather(*(gated(self._s3_person(dataset, subject)) for subject in subjects))
                self._count(dataset.name, 4 * len(subjects))
            elif dataset.milvus is not None and self._milvus is not None:
                rows = [
                    {dataset.milvus.filter_field: subject, "embedding": [rng.random() for _ in range(DIM)]}
                    for subject in subjects
                    for _ in range(3)
                ]
                self._milvus.insert(dataset.milvus.collection, rows)
                self._count(dataset.name, len(rows))

    async def _pg_people(
        self, dataset: Dataset, subjects: Sequence[str], rng: random.Random, gated: Callable[[Any], Awaitable[Any]]
    ) -> None:
        """A few orders per person, each with its line items (the parent's encrypted columns sealed); a re-seed
        replaces them."""
        loc = dataset.postgres
        assert loc is not None
        parents: list[dict[str, Any]] = []
        children: dict[str, list[dict[str, Any]]] = {}
        for subject in subjects:
            for n in range(rng.randint(1, 3)):
                row_id = f"{subject}:{dataset.name}:{n}"
                parents.append({loc.primary_key: row_id, loc.subject_column: subject, **_order(rng)})
                for child in loc.cascade:
                    children.setdefault(child.table, []).extend(
                        {child.primary_key: f"{row_id}:{m}", child.foreign_key: row_id, **_line_item(rng)}
                        for m in range(rng.randint(1, 4))
                    )
        sealed = await asyncio.gather(*(gated(self._seal(dataset, r[loc.subject_column], r)) for r in parents))
        pool = await self._postgres()
        async with pool.acquire() as conn, conn.transaction():
            for table, rows in [(loc.table, sealed), *children.items()]:
                if rows:
                    await _upsert(conn, table, rows)
        self._count(dataset.name, len(sealed) + sum(len(rows) for rows in children.values()))

    async def _s3_person(self, dataset: Dataset, subject: str) -> None:
        assert dataset.s3 is not None
        prefix = dataset.s3.prefix_for(subject)
        # An avatar replaced once (two versions) and a document deleted (a delete marker over its version).
        for body in (b"avatar v1", b"avatar v2"):
            await self._s3.put_object(Bucket=dataset.s3.bucket, Key=f"{prefix}avatar.png", Body=body)
        await self._s3.put_object(Bucket=dataset.s3.bucket, Key=f"{prefix}cv.pdf", Body=b"%PDF-1.7 demo")
        await self._s3.delete_object(Bucket=dataset.s3.bucket, Key=f"{prefix}cv.pdf")

    async def aggregates(self, rng: random.Random) -> None:
        """Anonymised daily aggregates for the exempt datasets: cohorts, never a person."""
        for dataset in self._datamap.datasets:
            if dataset.exempt and dataset.mongo is not None:
                day = datetime.now(UTC).date()
                docs = [
                    {
                        "_id": f"{day - timedelta(days=d)}:{cohort}",
                        dataset.mongo.subject_field: cohort,
                        "day": str(day - timedelta(days=d)),
                        "requests": rng.randint(1000, 90000),
                    }
                    for d in range(7)
                    for cohort in ("free", "pro", "team")
                ]
                await self._db[dataset.mongo.collection].bulk_write(
                    [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs], ordered=False
                )
                self._count(dataset.name, len(docs))

    def _count(self, dataset: str, n: int) -> None:
        self.counts[dataset] = self.counts.get(dataset, 0) + n


# The demo's columns of the shipped relational dataset (orders and their line items); any other table gets a note.
ORDER_COLUMNS: dict[str, dict[str, str]] = {
    "orders": {"placed_at": "timestamptz", "total_eur": "integer", "shipping_address": "text"},
    "order_items": {"sku": "text", "quantity": "integer", "price_eur": "integer"},
}


def _index(table: str, column: str) -> str:
    name = quoted(f"{table.rsplit('.', 1)[-1]}_{column}_idx")
    return f"CREATE INDEX IF NOT EXISTS {name} ON {quoted(table)} ({quoted(column)})"


def _pg_columns(columns: dict[str, str]) -> str:
    return "".join(f", {quoted(name)} {kind}" for name, kind in columns.items())


def _order(rng: random.Random) -> dict[str, Any]:
    placed = datetime.now(UTC) - timedelta(days=rng.randint(0, 400))
    address = f"{rng.randint(1, 99)} Market St, {rng.choice(CITIES)}"
    return {"placed_at": placed, "total_eur": rng.randint(9, 499), "shipping_address": address}


def _line_item(rng: random.Random) -> dict[str, Any]:
    return {"sku": f"SKU-{rng.randint(1000, 9999)}", "quantity": rng.randint(1, 5), "price_eur": rng.randint(3, 99)}


async def _upsert(conn: asyncpg.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (all with the same columns, the first being the primary key), replacing existing ones."""
    columns = list(rows[0])
    names = ", ".join(quoted(c) for c in columns)
    values = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    updates = ", ".join(f"{quoted(c)} = EXCLUDED.{quoted(c)}" for c in columns[1:])
    await conn.executemany(
        f"INSERT INTO {quoted(table)} ({names}) VALUES ({values}) "
        f"ON CONFLICT ({quoted(columns[0])}) DO UPDATE SET {updates}",
        [tuple(r[c] for c in columns) for r in rows],
    )
