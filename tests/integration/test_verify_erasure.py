"""`lethe verify-erasure` against the real stores: it finds what remains, and passes once everything is gone."""

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from pymilvus import DataType, MilvusClient

from services.keyvault.app import create_app as create_keyvault
from services.keyvault.settings import KeyvaultSettings
from shared.auth import KEYS_ADMIN, KEYS_DESTROY_CONTACT, KEYS_USE, issue_token
from shared.datamap import load_datamap
from shared.keyvault_client import KeyvaultClient
from shared.mongo import create_mongo_client
from shared.s3 import s3_client
from shared.settings import AuthSettings, KafkaSettings, MongoSettings, S3Settings
from tests.support import free_port, running_intake

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
ROOT = Path(__file__).parents[2]
DATAMAP = load_datamap(ROOT / "deploy" / "datamap.yaml")
AUTH = AuthSettings(jwt_secret="verify-erasure-secret-at-least-32-bytes")


# Milvus Lite locks its file for the life of the process that opened it, so this test touches it only from
# short-lived processes of its own, as the purger and `lethe verify-erasure` would.
def seed_vectors(uri: str, subject: str) -> None:
    milvus = MilvusClient(uri=uri)
    schema = milvus.create_schema(auto_id=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("subject_id", DataType.VARCHAR, max_length=128)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=4)
    index = milvus.prepare_index_params()
    index.add_index(field_name="embedding", index_type="FLAT", metric_type="L2")
    milvus.create_collection("content_embeddings", schema=schema, index_params=index)
    milvus.insert(
        "content_embeddings",
        [{"subject_id": subject, "embedding": [random.random() for _ in range(4)]} for _ in range(3)],
    )
    milvus.close()


def delete_vectors(uri: str, subject: str) -> None:
    milvus = MilvusClient(uri=uri)
    milvus.load_collection("content_embeddings")
    milvus.delete("content_embeddings", filter=f'subject_id == "{subject}"')
    milvus.close()


async def in_own_process(function, uri: str, subject: str) -> None:
    code = f"from tests.integration.test_verify_erasure import {function.__name__} as f; f({uri!r}, {subject!r})"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]


ORDERS = DATAMAP.get("orders").postgres
SHOP_TABLES = f"""
CREATE SCHEMA IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS {ORDERS.table} (
    {ORDERS.primary_key} text PRIMARY KEY, {ORDERS.subject_column} text NOT NULL);
CREATE TABLE IF NOT EXISTS {ORDERS.cascade[0].table} (
    {ORDERS.cascade[0].primary_key} text PRIMARY KEY,
    {ORDERS.cascade[0].foreign_key} text NOT NULL REFERENCES {ORDERS.table} ({ORDERS.primary_key}));
"""


async def shop(postgres_url: str, subject: str, *, erase: bool = False) -> None:
    """An order of ``subject`` with two line items in the shipped data map's tables (or, ``erase``, none)."""
    conn = await asyncpg.connect(postgres_url)
    items, orders = ORDERS.cascade[0], ORDERS
    try:
        async with conn.transaction():
            await conn.execute(SHOP_TABLES)
            if erase:
                keys = f"SELECT {orders.primary_key} FROM {orders.table} WHERE {orders.subject_column} = $1"
                await conn.execute(f"DELETE FROM {items.table} WHERE {items.foreign_key} IN ({keys})", subject)
                await conn.execute(f"DELETE FROM {orders.table} WHERE {orders.subject_column} = $1", subject)
                return
            await conn.execute(
                f"INSERT INTO {orders.table} ({orders.primary_key}, {orders.subject_column}) VALUES ($1, $2)",
                f"{subject}:o",
                subject,
            )
            for n in range(2):
                await conn.execute(
                    f"INSERT INTO {items.table} ({items.primary_key}, {items.foreign_key}) VALUES ($1, $2)",
                    f"{subject}:o:{n}",
                    f"{subject}:o",
                )
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def world(mongo_url, s3_endpoint, kafka_bootstrap, postgres_url, tmp_path):
    """A subject with data in every dataset of the shipped data map, and a keyvault holding their keys."""
    subject = f"user-{uuid.uuid4().hex[:8]}"
    mongo = MongoSettings(url=mongo_url, database=f"lethe_ve_{uuid.uuid4().hex[:8]}")
    s3 = S3Settings(endpoint_url=s3_endpoint)
    milvus_uri = str(tmp_path / "milvus.db")
    client = create_mongo_client(mongo)
    for dataset in DATAMAP.datasets:
        if dataset.store == "mongo":
            doc = {dataset.mongo.subject_field: subject, "note": dataset.name}
            if dataset.mode == "tag_then_purge":
                doc["deletion"] = {"tagged_at": "2026-01-01"}
            await client[mongo.database][dataset.mongo.collection].insert_one(doc)
    bucket = DATAMAP.get("uploads").s3.bucket
    async with s3_client(s3) as s3c:
        # The bucket may exist from an earlier run; subjects are unique, so it holds nothing of this one.
        with contextlib.suppress(s3c.exceptions.ClientError):
            await s3c.create_bucket(Bucket=bucket)
        await s3c.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        for n in range(2):
            await s3c.put_object(Bucket=bucket, Key=f"users/{subject}/avatar.png", Body=f"v{n}".encode())
        await s3c.delete_object(Bucket=bucket, Key=f"users/{subject}/avatar.png")
    await in_own_process(seed_vectors, milvus_uri, subject)
    await shop(postgres_url, subject)
    # keyvault asks intake for the rules and holds in force before it shreds a key: a real one answers.
    stack = contextlib.AsyncExitStack()
    intake = await stack.enter_async_context(running_intake(kafka_bootstrap, mongo_url, AUTH))
    kv_settings = KeyvaultSettings(
        http_port=free_port(),
        # A group of its own from the end of the log: what other runs left is not this test's.
        kafka=KafkaSettings(
            bootstrap_servers=kafka_bootstrap, group_prefix=f"t{uuid.uuid4().hex[:6]}", start_from="latest"
        ),
        mongo=mongo,
        auth=AUTH,
        local_keyring_file=tmp_path / "keyring.json",
        **intake.reader(),
    )
    keyvault = create_keyvault(kv_settings)
    await keyvault.start()
    kv_url = f"http://127.0.0.1:{kv_settings.http_port}"
    token = issue_token(
        AUTH, subject="ops", scopes=[KEYS_USE, KEYS_DESTROY_CONTACT, KEYS_ADMIN], ttl=timedelta(minutes=10)
    )
    async with KeyvaultClient(kv_url, token=token) as kv:
        await kv.encrypt(subject, "profiles", b"Ada")
    env = os.environ | {
        "LETHE_MONGO_URL": mongo_url,
        "LETHE_MONGO_DATABASE": mongo.database,
        "LETHE_S3_ENDPOINT_URL": s3_endpoint,
        "LETHE_MILVUS_URI": milvus_uri,
        "LETHE_KEYVAULT_URL": kv_url,
        "LETHE_ADMIN_TOKEN": token,
        "LETHE_DATAMAP_PATH": str(ROOT / "deploy" / "datamap.yaml"),
        "LETHE_POSTGRES_URL": postgres_url,
    }
    yield subject, env, client, mongo, s3, milvus_uri, kv_url, token
    await shop(postgres_url, subject, erase=True)
    await keyvault.stop()
    await stack.aclose()
    await client.drop_database(mongo.database)
    await client.close()


async def verify(subject: str, env: dict, *extra: str) -> tuple[int, dict]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.cli",
        "verify-erasure",
        subject,
        "--json",
        "--no-audit",
        *extra,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert out, err.decode()
    return proc.returncode, {d["dataset"]: d for d in json.loads(out)["datasets"]}


async def test_verify_erasure_finds_what_remains_then_passes_once_it_is_gone(world):
    subject, env, client, mongo, s3, milvus_uri, kv_url, token = world

    code, before = await verify(subject, env)
    assert code == 1, [d for d in before.values() if d["status"] == "error"]
    assert {name for name, d in before.items() if d["status"] == "remains"} == {
        d.name for d in DATAMAP.datasets if not d.exempt
    }
    assert "tagged" in before["accounts"]["detail"]
    assert before["uploads"]["found"] == 3  # two versions and a delete marker
    assert before["embeddings"]["found"] == 3
    assert before["orders"]["found"] == 3 and "2 row(s) in child tables" in before["orders"]["detail"]
    assert "data key" in before["profiles"]["detail"]
    assert before["api_usage_daily"]["status"] == "exempt"

    for dataset in DATAMAP.datasets:
        if dataset.store == "mongo" and dataset.name != "invoices":
            await client[mongo.database][dataset.mongo.collection].delete_many({dataset.mongo.subject_field: subject})
    bucket = DATAMAP.get("uploads").s3.bucket
    async with s3_client(s3) as s3c:
        listing = await s3c.list_object_versions(Bucket=bucket, Prefix=f"users/{subject}/")
        objects = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])
        ]
        await s3c.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    await in_own_process(delete_vectors, milvus_uri, subject)
    await shop(env["LETHE_POSTGRES_URL"], subject, erase=True)
    async with KeyvaultClient(kv_url, token=token) as kv:
        await kv.destroy_key(subject, "profiles", request_id="req-test")

    code, still = await verify(subject, env)
    assert code == 1
    assert [name for name, d in still.items() if d["status"] == "remains"] == ["invoices"]

    code, after = await verify(subject, env, "--retained", "invoices=tax-10y: legal obligation (HGB §257)")
    assert code == 0
    assert after["invoices"]["status"] == "retained"
    assert all(d["status"] in ("clean", "exempt", "retained") for d in after.values())
