"""Proof of erasure: look for a subject in every dataset of the data map, independently of what was reported.

MongoDB records (through the subject field, tagged or not), PostgreSQL rows (the table's and, through the declared
foreign keys, its child tables'; tagged or not), S3 object versions and delete markers under the
subject's prefix, Milvus vectors, and the subject's data keys in keyvault. Anything found in a dataset that is
neither exempt nor retained under a rule or hold means the erasure is not complete.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import asyncpg
from botocore.exceptions import ClientError

from services.purger.adapters.postgres import child_deletes, quoted
from shared.datamap import DataMap, Dataset
from shared.mongo import create_mongo_client
from shared.s3 import s3_client
from shared.settings import MilvusSettings, MongoSettings, PostgresSettings, S3Settings


@dataclass(frozen=True)
class Finding:
    dataset: str
    store: str
    found: int
    detail: str
    status: str  # clean | remains | retained | exempt | error | skipped


@dataclass(frozen=True)
class ErasureReport:
    subject_id: str
    findings: tuple[Finding, ...]

    @property
    def clean(self) -> bool:
        return all(f.status in ("clean", "retained", "exempt", "skipped") for f in self.findings)

    def as_json(self) -> dict[str, Any]:
        return {"subject_id": self.subject_id, "clean": self.clean, "datasets": [asdict(f) for f in self.findings]}


async def _mongo(dataset: Dataset, subject_id: str, settings: MongoSettings) -> tuple[int, str]:
    assert dataset.mongo is not None
    client = create_mongo_client(settings)
    try:
        coll = client[settings.database][dataset.mongo.collection]
        field = dataset.mongo.subject_field
        total = await coll.count_documents({field: subject_id})
        tagged = await coll.count_documents({field: subject_id, "deletion.tagged_at": {"$exists": True}})
    finally:
        await client.close()
    return total, f"{total} record(s) in {dataset.mongo.collection}" + (f", {tagged} tagged" if tagged else "")


async def _postgres(dataset: Dataset, subject_id: str, settings: PostgresSettings) -> tuple[int, str]:
    loc = dataset.postgres
    assert loc is not None
    conn = await asyncpg.connect(settings.url.get_secret_value())
    try:
        table, subject = quoted(loc.table), quoted(loc.subject_column)
        keys = f"SELECT {quoted(loc.primary_key)} FROM {table} WHERE {subject} = $1"
        total = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {subject} = $1", subject_id)
        tagged = 0
        if loc.tag_column is not None:
            tagged = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE {subject} = $1 AND {quoted(loc.tag_column)} IS NOT NULL",
                subject_id,
            )
        children = 0
        for statement in child_deletes(loc.cascade, keys):  # the same rows the purger deletes, counted instead
            children += await conn.fetchval(statement.replace("DELETE FROM", "SELECT count(*) FROM", 1), subject_id)
    finally:
        await conn.close()
    detail = f"{total} row(s) in {loc.table}" + (f", {tagged} tagged" if tagged else "")
    return total + children, detail + (f", {children} row(s) in child tables" if children else "")


async def _s3(dataset: Dataset, subject_id: str, settings: S3Settings) -> tuple[int, str]:
    assert dataset.s3 is not None
    prefix = dataset.s3.prefix_for(subject_id)
    versions = markers = 0
    async with s3_client(settings) as s3:
        try:
            async for page in s3.get_paginator("list_object_versions").paginate(
                Bucket=dataset.s3.bucket, Prefix=prefix
            ):
                versions += len(page.get("Versions", []))
                markers += len(page.get("DeleteMarkers", []))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
                raise
    return (
        versions + markers,
        f"{versions} version(s), {markers} delete marker(s) under s3://{dataset.s3.bucket}/{prefix}",
    )


def _milvus_sync(dataset: Dataset, subject_id: str, settings: MilvusSettings) -> tuple[int, str]:
    from pymilvus import MilvusClient

    assert dataset.milvus is not None
    token = settings.token.get_secret_value() if settings.token else ""
    client = MilvusClient(uri=settings.uri, token=token)
    try:
        if not client.has_collection(dataset.milvus.collection):
            return 0, f"no collection {dataset.milvus.collection}"
        client.load_collection(dataset.milvus.collection)  # a query needs the collection loaded
        escaped = subject_id.replace("\\", "\\\\").replace('"', '\\"')
        rows = client.query(
            dataset.milvus.collection,
            filter=f'{dataset.milvus.filter_field} == "{escaped}"',
            output_fields=["count(*)"],
        )
        count = int(rows[0]["count(*)"]) if rows else 0
    finally:
        client.close()
    return count, f"{count} vector(s) in {dataset.milvus.collection}"


async def _keys(keyvault_url: str, token: str, subject_id: str) -> dict[str, list[str]]:
    """The subject's keys that still exist (active, or disabled in a grace window), by dataset."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(
            f"{keyvault_url.rstrip('/')}/v1/subjects/{subject_id}/keys", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        response.raise_for_status()
        body = await response.json()
    alive: dict[str, list[str]] = {}
    for key in body["keys"]:
        if key["state"] != "destroyed":
            alive.setdefault(key["dataset"], []).append(f"{key['key_id']} ({key['state']})")
    return alive


async def check_erasure(
    subject_id: str,
    datamap: DataMap,
    *,
    mongo: MongoSettings,
    s3: S3Settings,
    milvus: MilvusSettings,
    retained: dict[str, str],
    postgres: PostgresSettings | None = None,
    keyvault_url: str | None = None,
    keyvault_token: str | None = None,
) -> ErasureReport:
    """Look everywhere; ``retained`` maps a dataset kept under a rule or hold to the reason."""
    keys: dict[str, list[str]] | None = None
    findings = []
    if keyvault_url and keyvault_token:
        try:
            keys = await _keys(keyvault_url, keyvault_token, subject_id)
        except (aiohttp.ClientError, TimeoutError) as exc:
            findings.append(Finding("(keyvault)", "keyvault", 0, f"could not look: {exc!r}", "error"))
    for dataset in datamap.datasets:
        if dataset.processor is not None:  # lethe cannot look into a processor's systems: its answer is the proof
            detail = f"held by {dataset.processor.name}: its signed answer is in the request's receipt"
            findings.append(Finding(dataset.name, "processor", 0, detail, "skipped"))
            continue
        try:
            if dataset.store == "mongo":
                found, detail = await _mongo(dataset, subject_id, mongo)
            elif dataset.store == "postgres":
                found, detail = await _postgres(dataset, subject_id, postgres or PostgresSettings())
            elif dataset.store == "s3":
                found, detail = await _s3(dataset, subject_id, s3)
            else:
                found, detail = await asyncio.to_thread(_milvus_sync, dataset, subject_id, milvus)
        except Exception as exc:
            findings.append(Finding(dataset.name, dataset.store, 0, f"could not look: {exc!r}", "error"))
            continue
        if keys is not None and keys.get(dataset.name):
            found += len(keys[dataset.name])
            detail += f"; data key(s) still in keyvault: {', '.join(keys[dataset.name])}"
        if dataset.exempt:
            status = "exempt"
        elif dataset.name in retained and found:
            status, detail = "retained", f"{detail}; kept: {retained[dataset.name]}"
        else:
            status = "remains" if found else "clean"
        findings.append(Finding(dataset.name, dataset.store, found, detail, status))
    if keys is None and not (keyvault_url and keyvault_token):
        findings.append(Finding("(keyvault)", "keyvault", 0, "not checked: no keyvault URL and token", "clean"))
    return ErasureReport(subject_id, tuple(findings))
