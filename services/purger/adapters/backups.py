"""Backups of the MongoDB and PostgreSQL datasets in a bucket, and their ledger (``backups``): written by
``lethe backup``, deleted by the expiry job once older than the retention window.

A backup copies the documents (and rows: each line names its table) as stored, so encrypted fields stay
ciphertext: once a subject's keys are destroyed, their fields in every backup are unreadable too
(crypto-shredding), even before the backup expires.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError
from bson import json_util
from pymongo import AsyncMongoClient

from services.purger.adapters.s3 import list_versions
from services.purger.model import Backup
from shared.datamap import Dataset
from shared.s3 import s3_client
from shared.settings import S3Settings

BACKUPS = "backups"


class TableRows(Protocol):
    async def rows(self, dataset: Dataset) -> list[dict[str, Any]]:
        """Every row of the dataset's tables, each with its ``table`` (PostgresEraser)."""
        ...


class BackupStore:
    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        database: str,
        s3: S3Settings,
        *,
        bucket: str,
        postgres: TableRows | None = None,
    ) -> None:
        self._db = client[database]
        self._postgres = postgres
        self._ledger = self._db[BACKUPS]
        self._s3 = s3
        self.bucket = bucket

    async def create(
        self, datasets: Sequence[Dataset], *, now: datetime, on_dataset: Callable[[str, int], Any] | None = None
    ) -> Backup:
        """Snapshot every MongoDB and PostgreSQL dataset into ``<bucket>/<backup id>/<dataset>.jsonl.gz``, then
        record it."""
        backup_id = f"bk_{now:%Y%m%dT%H%M%SZ}_{uuid.uuid4().hex[:6]}"
        objects, total = [], 0
        async with s3_client(self._s3) as s3:
            try:
                await s3.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            for dataset in datasets:
                if dataset.mongo is not None:
                    lines = [json_util.dumps(doc) async for doc in self._db[dataset.mongo.collection].find({})]
                elif dataset.postgres is not None and self._postgres is not None:
                    lines = [json_util.dumps(row) for row in await self._postgres.rows(dataset)]
                else:
                    continue
                body = gzip.compress(("\n".join(lines) + "\n").encode() if lines else b"")
                key = f"{backup_id}/{dataset.name}.jsonl.gz"
                await s3.put_object(Bucket=self.bucket, Key=key, Body=body)
                objects.append(key)
                total += len(lines)
                if on_dataset is not None:
                    on_dataset(dataset.name, len(lines))
        backup = Backup(backup_id, now, tuple(objects), total)
        # Recorded only once every object is written: a crash before this leaves no backup that expiry would miss.
        await self._ledger.insert_one(
            {"_id": backup_id, "created_at": now, "objects": objects, "documents": total, "expired_at": None}
        )
        return backup

    async def live(self) -> list[Backup]:
        return [_backup(doc) async for doc in self._ledger.find({"expired_at": None}).sort("created_at", 1)]

    async def expire(self, backup: Backup, *, now: datetime) -> None:
        """Delete every object (and every version of it) of the backup, then mark it expired."""
        async with s3_client(self._s3) as s3:
            for key in backup.objects:
                versions = await list_versions(s3, self.bucket, key)
                exact = [v for v in versions if v.key == key]
                if exact:
                    await s3.delete_objects(
                        Bucket=self.bucket,
                        Delete={"Objects": [{"Key": v.key, "VersionId": v.version_id} for v in exact], "Quiet": True},
                    )
        await self._ledger.update_one({"_id": backup.backup_id}, {"$set": {"expired_at": now}})

    async def read(self, backup: Backup, dataset: str) -> list[dict[str, Any]]:
        """The documents of one dataset in a backup (for restores, and for tests)."""
        async with s3_client(self._s3) as s3:
            response = await s3.get_object(Bucket=self.bucket, Key=f"{backup.backup_id}/{dataset}.jsonl.gz")
            body = gzip.decompress(await response["Body"].read()).decode()
        return [json.loads(line, object_hook=json_util.object_hook) for line in body.splitlines() if line]


def _backup(doc: dict[str, Any]) -> Backup:
    return Backup(doc["_id"], doc["created_at"], tuple(doc["objects"]), doc["documents"], doc.get("expired_at"))
