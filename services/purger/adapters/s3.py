"""Erasing a subject's prefix in a (versioned) bucket: every version and every delete marker, checked afterwards.

A plain DELETE on a versioned bucket only adds a delete marker and keeps every version, so that is never
enough: the purger lists all versions and markers under the prefix, deletes them by version id with
DeleteObjects (at most 1,000 keys a call), retries the keys that failed, and reports ``erased`` only when a fresh
listing under the prefix is empty. Versions under an Object Lock legal hold or retention are ``retained``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import ClientError

from shared.datamap import Dataset
from shared.events import DatasetCounts, DatasetOutcome
from shared.s3 import S3Connection

log = structlog.get_logger(__name__)
MAX_KEYS_PER_DELETE = 1000
LOCK_ERRORS = frozenset({"AccessDenied", "ObjectLocked", "InvalidRequest"})


class S3ErasureIncompleteError(ConnectionError):
    """Versions remain under the prefix that are neither deleted nor locked; retried like an outage."""


@dataclass(frozen=True)
class Version:
    key: str
    version_id: str
    is_marker: bool


class S3Eraser:
    def __init__(self, s3: S3Connection, *, attempts: int, retry_delay_s: float = 0.5) -> None:
        self._s3 = s3
        self._attempts = attempts
        self._retry_delay_s = retry_delay_s

    async def erase(self, dataset: Dataset, subject_id: str, **_: Any) -> DatasetOutcome:
        assert dataset.s3 is not None
        bucket, prefix = dataset.s3.bucket, dataset.s3.prefix_for(subject_id)
        s3 = await self._s3.client()
        pending = await list_versions(s3, bucket, prefix)
        deleted: list[Version] = []
        for attempt in range(self._attempts):
            if not pending:
                break
            failed: list[tuple[Version, str]] = []
            for start in range(0, len(pending), MAX_KEYS_PER_DELETE):
                batch = pending[start : start + MAX_KEYS_PER_DELETE]
                done, errors = await _delete_batch(s3, bucket, batch)
                deleted += done
                failed += errors
            pending = [v for v, _ in failed]
            if pending and attempt + 1 < self._attempts:
                log.warning("s3.delete_retry", bucket=bucket, keys=len(pending), attempt=attempt + 1)
                await asyncio.sleep(self._retry_delay_s * 2**attempt)
        locked = [(v, reason) for v in pending if (reason := await _lock_reason(s3, bucket, v))]
        left = await list_versions(s3, bucket, prefix)
        locked_ids = {(v.key, v.version_id) for v, _ in locked}
        unexplained = [v for v in left if (v.key, v.version_id) not in locked_ids]
        if unexplained:
            raise S3ErasureIncompleteError(
                f"{len(unexplained)} version(s) remain under s3://{bucket}/{prefix} after {self._attempts} attempt(s)"
            )
        counts = DatasetCounts(
            object_versions_deleted=sum(not v.is_marker for v in deleted),
            delete_markers_deleted=sum(v.is_marker for v in deleted),
        )
        if locked:
            reasons = sorted({reason for _, reason in locked})
            return DatasetOutcome(
                dataset=dataset.name,
                store="s3",
                outcome="retained",
                counts=counts,
                rule_id="s3-object-lock",
                legal_basis="; ".join(reasons),
                legal_ref=f"{len(locked)} object version(s) under Object Lock in s3://{bucket}/{prefix}",
            )
        return DatasetOutcome(dataset=dataset.name, store="s3", outcome="erased", counts=counts)


async def list_versions(s3: Any, bucket: str, prefix: str) -> list[Version]:
    found: list[Version] = []
    try:
        async for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            found += [Version(v["Key"], v["VersionId"], False) for v in page.get("Versions", [])]
            found += [Version(m["Key"], m["VersionId"], True) for m in page.get("DeleteMarkers", [])]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return []
        raise
    return found


async def _delete_batch(s3: Any, bucket: str, batch: list[Version]) -> tuple[list[Version], list[tuple[Version, str]]]:
    response = await s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": v.key, "VersionId": v.version_id} for v in batch], "Quiet": False},
    )
    by_id = {(v.key, v.version_id): v for v in batch}
    errors = [
        (by_id[(e["Key"], e.get("VersionId", ""))], e.get("Code", "?"))
        for e in response.get("Errors", [])
        if (e["Key"], e.get("VersionId", "")) in by_id
    ]
    failed = {(v.key, v.version_id) for v, _ in errors}
    return [v for key, v in by_id.items() if key not in failed], errors


async def _lock_reason(s3: Any, bucket: str, version: Version) -> str | None:
    """Why S3 keeps this version, if it is under Object Lock; None if it is not locked."""
    if version.is_marker:
        return None
    try:
        hold = await s3.get_object_legal_hold(Bucket=bucket, Key=version.key, VersionId=version.version_id)
        if hold.get("LegalHold", {}).get("Status") == "ON":
            return "S3 Object Lock legal hold"
    except ClientError:
        pass
    try:
        retention = await s3.get_object_retention(Bucket=bucket, Key=version.key, VersionId=version.version_id)
        mode = retention.get("Retention", {}).get("Mode")
        until = retention.get("Retention", {}).get("RetainUntilDate")
        if mode:
            return f"S3 Object Lock retention ({mode} until {until})"
    except ClientError:
        pass
    return None
