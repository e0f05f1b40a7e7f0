"""S3 through aioboto3, with path-style addressing so local servers (SeaweedFS) work without DNS tricks."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import aioboto3
from botocore.config import Config

from shared.settings import S3Settings


def s3_client(settings: S3Settings) -> AbstractAsyncContextManager[Any]:
    """An async S3 client context manager; entering it does the I/O."""
    session = aioboto3.Session(
        aws_access_key_id=settings.access_key_id.get_secret_value(),
        aws_secret_access_key=settings.secret_access_key.get_secret_value(),
        region_name=settings.region,
    )
    client: AbstractAsyncContextManager[Any] = session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )
    return client


async def s3_ping(settings: S3Settings) -> bool:
    async with s3_client(settings) as client:
        await client.list_buckets()
    return True
