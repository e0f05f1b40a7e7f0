"""Erasing a subject's prefix in a (versioned) bucket: every version and every delete marker, checked afterwards.

A plain DELETE on a versioned bucket only adds a delete marker and keeps every version, so that is never
enough: the purger lists all versions and markers under the prefix, deletes them by version id with
DeleteObjects (at most 1,000 keys a call), retries the keys that failed, and reports ``erased`` only when a fresh
listing under the prefix is empty. Versions under an Object Lock legal hold or retention are ``retained``.
A version S3 refuses to delete (AccessDenied) outside Object Lock, or a bucket that does not exist, is ``failed``:
retrying would not change the answer, and someone has to act on it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import ClientError

from shared.datamap import Dataset
from shared.events import DatasetCounts, DatasetOutcome
from shared.s3 import S3Connection, error_code

log = structlog.get_logger(__name__)
MAX_KEYS_PER_DELETE = 1000
# How S3 refuses to delete a version: under Object Lock, or for want of permission. Neither changes in seconds,
# so such a version is not retried; it is kept (``retained``) if Object Lock explains it, and ``failed`` otherwise.
REFUSALS = frozenset({"AccessDenied", "ObjectLocked", "InvalidRequest"})
# The refusals that mean "never, for this identity" when no lock explains them. ObjectLocked and InvalidRequest
# without a lock found are left to the final listing: an unexplained leftover is retried like an outage.
DENIALS = frozenset({"AccessDenied"})


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
        where = f"s3://{bucket}/{prefix}"
        s3 = await self._s3.client()
        versions = await _versions(s3, bucket, prefix)
        if versions is None:
            return DatasetOutcome(
                dataset=dataset.name, store="s3", outcome="failed", error=f"the bucket '{bucket}' does not exist"
            )
        deleted, refused = await self._delete(s3, bucket, versions)
        locked: list[tuple[Version, str]] = []
        if refused and await _bucket_may_lock(s3, bucket):
            locked = [(v, reason) for v, _ in refused if (reason := await _lock_reason(s3, bucket, v))]
        locked_ids = {(v.key, v.version_id) for v, _ in locked}
        denied = [(v, code) for v, code in refused if code in DENIALS and (v.key, v.version_id) not in locked_ids]
        explained = locked_ids | {(v.key, v.version_id) for v, _ in denied}
        left = await list_versions(s3, bucket, prefix)
        unexplained = [v for v in left if (v.key, v.version_id) not in explained]
        if unexplained:
            raise S3ErasureIncompleteError(
                f"{len(unexplained)} version(s) remain under {where} after {self._attempts} attempt(s)"
            )
        counts = DatasetCounts(
            object_versions_deleted=sum(not v.is_marker for v in deleted),
            delete_markers_deleted=sum(v.is_marker for v in deleted),
        )
        if denied:
            # The count and S3's code only: the keys are the person's file names.
            codes = ", ".join(sorted({code for _, code in denied}))
            also_locked = f"; {len(locked)} more under Object Lock" if locked else ""
            log.error("s3.delete_refused", bucket=bucket, versions=len(denied), codes=codes)
            return DatasetOutcome(
                dataset=dataset.name,
                store="s3",
                outcome="failed",
                counts=counts,
                error=f"{len(denied)} object version(s) under {where} could not be deleted: "
                f"S3 refused with {codes} and no Object Lock keeps them{also_locked}",
            )
        if locked:
            return DatasetOutcome(
                dataset=dataset.name,
                store="s3",
                outcome="retained",
                counts=counts,
                rule_id="s3-object-lock",
                legal_basis="; ".join(sorted({reason for _, reason in locked})),
                legal_ref=f"{len(locked)} object version(s) under Object Lock in {where}",
            )
        return DatasetOutcome(dataset=dataset.name, store="s3", outcome="erased", counts=counts)

    async def _delete(
        self, s3: Any, bucket: str, versions: list[Version]
    ) -> tuple[list[Version], list[tuple[Version, str]]]:
        """(deleted, refused with S3's code): failures other than refusals are retried, with backoff."""
        deleted: list[Version] = []
        refused: list[tuple[Version, str]] = []
        pending = versions
        for attempt in range(self._attempts):
            if not pending:
                break
            failed: list[tuple[Version, str]] = []
            for start in range(0, len(pending), MAX_KEYS_PER_DELETE):
                done, errors = await _delete_batch(s3, bucket, pending[start : start + MAX_KEYS_PER_DELETE])
                deleted += done
                failed += errors
            refused += [(v, code) for v, code in failed if code in REFUSALS]
            pending = [v for v, code in failed if code not in REFUSALS]
            if pending and attempt + 1 < self._attempts:
                log.warning("s3.delete_retry", bucket=bucket, keys=len(pending), attempt=attempt + 1)
                await asyncio.sleep(self._retry_delay_s * 2**attempt)
        return deleted, refused


async def list_versions(s3: Any, bucket: str, prefix: str) -> list[Version]:
    """Every version and delete marker under ``prefix``; none if the bucket does not exist."""
    return await _versions(s3, bucket, prefix) or []


async def _versions(s3: Any, bucket: str, prefix: str) -> list[Version] | None:
    """Every version and delete marker under ``prefix``, or None if the bucket does not exist."""
    found: list[Version] = []
    try:
        async for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            found += [Version(v["Key"], v["VersionId"], False) for v in page.get("Versions", [])]
            found += [Version(m["Key"], m["VersionId"], True) for m in page.get("DeleteMarkers", [])]
    except ClientError as exc:
        if error_code(exc) == "NoSuchBucket":
            return None
        raise
    return found


async def _delete_batch(s3: Any, bucket: str, batch: list[Version]) -> tuple[list[Version], list[tuple[Version, str]]]:
    try:
        response = await s3.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": v.key, "VersionId": v.version_id} for v in batch], "Quiet": False},
        )
    except ClientError as exc:
        # S3 may refuse the whole call rather than each key (an identity without delete permission): the same
        # refusal for every key of the batch. Any other error propagates, to be retried as today.
        if (code := error_code(exc)) in DENIALS:
            return [], [(v, code) for v in batch]
        raise
    by_id = {(v.key, v.version_id): v for v in batch}
    errors = [
        (by_id[(e["Key"], e.get("VersionId", ""))], e.get("Code", "?"))
        for e in response.get("Errors", [])
        if (e["Key"], e.get("VersionId", "")) in by_id
    ]
    failed = {(v.key, v.version_id) for v, _ in errors}
    return [v for key, v in by_id.items() if key not in failed], errors


async def _bucket_may_lock(s3: Any, bucket: str) -> bool:
    """False only if S3 says the bucket has no Object Lock: then no version of it can be locked (one call)."""
    try:
        await s3.get_object_lock_configuration(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) == "ObjectLockConfigurationNotFoundError":
            return False
    return True  # enabled, or S3 would not tell: ask about each version


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
