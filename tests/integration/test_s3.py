"""Our S3 adapter against the real S3 server of the stack (SeaweedFS locally): versions, markers, legal holds."""

import uuid

import pytest
import pytest_asyncio
from botocore.exceptions import ClientError

from shared.s3 import s3_client, s3_ping
from shared.settings import S3Settings

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]


@pytest.fixture
def settings(s3_endpoint):
    return S3Settings(endpoint_url=s3_endpoint)


@pytest_asyncio.fixture
async def s3(settings):
    async with s3_client(settings) as client:
        yield client


async def versions_under(s3, bucket: str, prefix: str) -> tuple[list[dict], list[dict]]:
    versions, markers = [], []
    paginator = s3.get_paginator("list_object_versions")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        versions += page.get("Versions", [])
        markers += page.get("DeleteMarkers", [])
    return versions, markers


async def test_the_server_answers_with_our_credentials(settings):
    assert await s3_ping(settings)


async def test_every_version_and_delete_marker_under_a_prefix_is_deleted(s3):
    bucket = f"lethe-test-{uuid.uuid4().hex[:8]}"
    await s3.create_bucket(Bucket=bucket)
    await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for n in range(3):
        await s3.put_object(Bucket=bucket, Key="users/u1/avatar.png", Body=f"v{n}".encode())
    await s3.put_object(Bucket=bucket, Key="users/u1/cv.pdf", Body=b"cv")
    await s3.delete_object(Bucket=bucket, Key="users/u1/cv.pdf")  # only adds a delete marker
    await s3.put_object(Bucket=bucket, Key="users/u2/avatar.png", Body=b"someone else")

    versions, markers = await versions_under(s3, bucket, "users/u1/")
    assert len(versions) == 4
    assert len(markers) == 1

    objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions + markers]
    reply = await s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": False})

    assert reply.get("Errors", []) == []
    assert len(reply["Deleted"]) == 5
    assert await versions_under(s3, bucket, "users/u1/") == ([], [])
    others, _ = await versions_under(s3, bucket, "users/u2/")
    assert len(others) == 1


async def test_a_version_under_legal_hold_cannot_be_deleted_until_the_hold_is_released(s3):
    bucket = f"lethe-lock-{uuid.uuid4().hex[:8]}"
    await s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    put = await s3.put_object(Bucket=bucket, Key="invoices/u1/2026-01.pdf", Body=b"invoice")
    version = put["VersionId"]
    await s3.put_object_legal_hold(
        Bucket=bucket, Key="invoices/u1/2026-01.pdf", VersionId=version, LegalHold={"Status": "ON"}
    )
    hold = await s3.get_object_legal_hold(Bucket=bucket, Key="invoices/u1/2026-01.pdf", VersionId=version)
    assert hold["LegalHold"]["Status"] == "ON"

    reply = await s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "invoices/u1/2026-01.pdf", "VersionId": version}]}
    )
    assert [e["Key"] for e in reply.get("Errors", [])] == ["invoices/u1/2026-01.pdf"]
    versions, _ = await versions_under(s3, bucket, "invoices/u1/")
    assert [v["VersionId"] for v in versions] == [version]

    await s3.put_object_legal_hold(
        Bucket=bucket, Key="invoices/u1/2026-01.pdf", VersionId=version, LegalHold={"Status": "OFF"}
    )
    reply = await s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "invoices/u1/2026-01.pdf", "VersionId": version}]}
    )
    assert reply.get("Errors", []) == []
    assert await versions_under(s3, bucket, "invoices/u1/") == ([], [])


async def test_a_delete_objects_call_takes_a_thousand_keys(s3):
    bucket = f"lethe-many-{uuid.uuid4().hex[:8]}"
    await s3.create_bucket(Bucket=bucket)
    keys = [{"Key": f"users/u1/{n:04d}"} for n in range(1000)]
    reply = await s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    assert reply.get("Errors", []) == []
    with pytest.raises(ClientError):
        await s3.delete_objects(Bucket=bucket, Delete={"Objects": [*keys, {"Key": "users/u1/1000"}]})


async def test_an_identity_without_write_permission_has_each_key_of_a_delete_objects_call_refused(s3, s3_endpoint):
    bucket = f"lethe-ro-{uuid.uuid4().hex[:8]}"
    await s3.create_bucket(Bucket=bucket)
    await s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    put = await s3.put_object(Bucket=bucket, Key="users/u1/a.png", Body=b"a")
    # The local stack's read-only identity (deploy/local/seaweedfs/s3.json).
    reader = S3Settings(
        endpoint_url=s3_endpoint, access_key_id="lethe-reader", secret_access_key="lethe-reader-local-secret"
    )
    async with s3_client(reader) as refused:
        versions, _ = await versions_under(refused, bucket, "users/u1/")
        reply = await refused.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": "users/u1/a.png", "VersionId": put["VersionId"]}]}
        )
    assert [v["VersionId"] for v in versions] == [put["VersionId"]]  # it may list
    assert [(e["Key"], e["VersionId"], e["Code"]) for e in reply["Errors"]] == [
        ("users/u1/a.png", put["VersionId"], "AccessDenied")
    ]
    assert len((await versions_under(s3, bucket, "users/u1/"))[0]) == 1
    await s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "users/u1/a.png", "VersionId": put["VersionId"]}]}
    )
    await s3.delete_bucket(Bucket=bucket)
