"""S3 through aioboto3, with path-style addressing so local servers (SeaweedFS) work without DNS tricks."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError

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


def error_code(exc: ClientError) -> str:
    """S3's error code (``NoSuchBucket``, ``AccessDenied``, ...), or "" if the answer carried none."""
    return str(exc.response.get("Error", {}).get("Code", ""))


async def s3_ping(settings: S3Settings) -> bool:
    async with s3_client(settings) as client:
        await client.list_buckets()
    return True


class S3Connection:
    """One S3 client kept for the life of a process, opened on first use.

    Opening a client costs a few hundred milliseconds of CPU (botocore loads and validates the service model), so a
    per-call client dominated the purger's time per deletion. aiobotocore's client is safe to share between tasks.
    """

    def __init__(self, settings: S3Settings) -> None:
        self._settings = settings
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._opening = asyncio.Lock()

    async def client(self) -> Any:
        if self._client is None:
            async with self._opening:
                if self._client is None:
                    stack = AsyncExitStack()
                    self._client = await stack.enter_async_context(s3_client(self._settings))
                    self._stack = stack
        return self._client

    async def ping(self) -> bool:
        await (await self.client()).list_buckets()
        return True

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()
