"""The operational endpoints every service serves, with in-process checks, and the body cap on every method."""

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shared.http import add_ops_routes, openapi_document
from shared.metrics import Metrics
from shared.problems import PROBLEM_JSON, body_cap_middleware, problem_middleware

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


CAP = 1024


async def capped_client(seen: list[bytes]) -> TestClient:
    """An app with a 1 KiB cap: its DELETE never reads the body, its POST does."""

    async def delete(_: web.Request) -> web.Response:
        seen.append(b"")
        return web.json_response({}, status=202)

    async def post(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response({}, status=202)

    app = web.Application(client_max_size=CAP, middlewares=[problem_middleware, body_cap_middleware])
    app.router.add_delete("/things", delete)
    app.router.add_post("/things", post)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def chunked(body: bytes):
    async def chunks():
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    return chunks()


@pytest.mark.parametrize("method", ["DELETE", "POST"])
async def test_a_body_over_the_cap_is_refused_with_413_before_the_handler_runs_on_any_method(method):
    seen: list[bytes] = []
    client = await capped_client(seen)
    try:
        response = await client.request(method, "/things", data=b"x" * 10 * 1024 * 1024)
        assert response.status == 413
        assert response.content_type == PROBLEM_JSON
        assert (await response.json())["detail"] == f"the body is larger than {CAP} bytes"
        assert seen == []
    finally:
        await client.close()


@pytest.mark.parametrize("method", ["DELETE", "POST"])
async def test_a_chunked_body_over_the_cap_is_refused_with_413_before_the_handler_runs(method):
    seen: list[bytes] = []
    client = await capped_client(seen)
    try:
        response = await client.request(method, "/things", data=chunked(b"x" * (CAP + 1)))
        assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
        assert response.status == 413
        assert response.content_type == PROBLEM_JSON
        assert (await response.json())["detail"] == f"the body is larger than {CAP} bytes"
        assert seen == []
    finally:
        await client.close()


async def test_bodies_within_the_cap_reach_the_handler_whole_with_or_without_a_length():
    seen: list[bytes] = []
    client = await capped_client(seen)
    try:
        for data in (b"y" * CAP, chunked(b"z" * CAP)):
            assert (await client.post("/things", data=data)).status == 202
        assert (await client.delete("/things", data=b"w" * CAP)).status == 202
        assert seen == [b"y" * CAP, b"z" * CAP, b""]
    finally:
        await client.close()


async def test_a_server_a_request_needs_being_away_is_a_503_to_retry_never_a_500():
    async def needs_intake(_: web.Request) -> web.Response:
        raise ConnectionError("intake at http://intake:8001 does not answer")

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/x", needs_intake)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        response = await client.get("/x")
        assert (response.status, response.headers["Retry-After"]) == (503, "5")
        assert (await response.json())["title"] == "Service Unavailable"
    finally:
        await client.close()
