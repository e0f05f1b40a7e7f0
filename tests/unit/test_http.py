"""The operational endpoints every service serves, with in-process checks."""

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shared.http import add_ops_routes, openapi_document
from shared.metrics import Metrics

pytestmark = pytest.mark.asyncio


async def client_with(checks) -> TestClient:
    app = web.Application()
    metrics = Metrics(service="test")
    metrics.consumed.labels("deletion.requested", "ok").inc()
    add_ops_routes(
        app,
        service="test",
        metrics=metrics,
        checks=checks,
        openapi=openapi_document(title="t", description="d"),
        check_timeout_s=0.2,
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def ok() -> bool:
    return True


async def broken() -> bool:
    raise ConnectionError("mongo is down")


async def hanging() -> bool:
    import asyncio

    await asyncio.Event().wait()
    return True


async def test_ready_when_every_check_passes():
    client = await client_with({"kafka": ok, "mongo": ok})
    try:
        response = await client.get("/readyz")
        assert response.status == 200
        assert (await response.json())["checks"] == {"kafka": True, "mongo": True}
    finally:
        await client.close()


async def test_not_ready_names_the_failing_and_the_hanging_checks():
    client = await client_with({"kafka": ok, "mongo": broken, "s3": hanging})
    try:
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["checks"] == {"kafka": True, "mongo": False, "s3": False}
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()


async def test_metrics_and_openapi_are_served():
    client = await client_with({})
    try:
        metrics = await (await client.get("/metrics")).text()
        assert 'lethe_events_consumed_total{outcome="ok",topic="deletion.requested"} 1.0' in metrics
        spec = await (await client.get("/openapi.json")).json()
        assert spec["openapi"] == "3.1.0"
        assert "/readyz" in spec["paths"]
    finally:
        await client.close()
