"""A service's lifecycle: it stops, and runs its stop hooks, even when a background job is slow to honour its
cancellation."""

import asyncio
import time

import pytest
from aiohttp import web

from shared.fakes import InMemoryPublisher
from shared.metrics import Metrics
from shared.service import Service
from tests.support import free_port

pytestmark = pytest.mark.asyncio


async def test_a_job_slow_to_honour_its_cancellation_does_not_keep_the_service_from_stopping():
    stopped: list[str] = []

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3)  # a clean-up that takes too long (or a library that swallows the cancel)

    async def closed() -> None:
        stopped.append("closed")

    service = Service(
        name="slow",
        web_app=web.Application(),
        host="127.0.0.1",
        port=free_port(),
        metrics=Metrics(service="slow"),
        publisher=InMemoryPublisher(),
        on_stop=[closed],
        jobs={"slow": slow_to_stop},
    )
    await service.start()
    await asyncio.sleep(0.1)  # the job is running
    started = time.monotonic()
    await service.stop(grace_s=0.5)
    assert time.monotonic() - started < 2
    assert stopped == ["closed"]
