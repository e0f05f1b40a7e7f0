"""The console's Services port (the other services' HTTP APIs, called with the operator's token), one contract for
the in-memory fake (the console page tests use it) and Upstream over real HTTP against a small aiohttp server that
answers as a lethe service does (problem+json for what it does not know)."""

from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from services.audit.adapters.memory import InMemoryServices
from services.audit.adapters.upstream import Upstream
from services.audit.ports import Services
from tests.support import free_port

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
NAMES = ("intake", "purger", "keyvault", "notifier")


@dataclass
class Side:
    port: Services
    answer: Any  # (service, method, path, status, body) -> None
    take_down: Any  # (service) -> None
    seen: Any  # () -> [(service, method, path, token, JSON body sent)] the services received


@pytest_asyncio.fixture(params=["fake", "http"])
async def side(request):
    if request.param == "fake":
        fake = InMemoryServices(NAMES)
        received = lambda: [(s, m, p, t, kw.get("json")) for s, m, p, t, kw in fake.calls]  # noqa: E731
        yield Side(fake, fake.answer, fake.down.add, received)
        return
    answers: dict[tuple[str, str, str], tuple[int, Any]] = {}
    seen: list[tuple[str, str, str, str | None, Any]] = []

    async def serve(request: web.Request) -> web.Response:
        service, path = request.match_info["service"], "/" + request.match_info["tail"]
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or None
        sent = await request.json() if request.can_read_body else None
        seen.append((service, request.method, path, token, sent))
        status, body = answers.get((service, request.method, path), (404, {"detail": f"no {request.method} {path}"}))
        if body is None:
            return web.Response(status=status)
        content_type = "application/problem+json" if status >= 400 else "application/json"
        return web.json_response(body, status=status, content_type=content_type)

    app = web.Application()
    app.router.add_route("*", "/{service}/{tail:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    unreachable = f"http://127.0.0.1:{free_port()}"
    upstream = Upstream({name: f"http://127.0.0.1:{port}/{name}" for name in NAMES})
    await upstream.start()

    def answer(service: str, method: str, path: str, status: int, body: Any = None) -> None:
        answers[(service, method.upper(), path)] = (status, body)

    def take_down(service: str) -> None:
        upstream.urls[service] = unreachable

    yield Side(upstream, answer, take_down, lambda: seen)
    await upstream.stop()
    await runner.cleanup()


async def test_an_answer_comes_back_decoded_and_the_operators_token_and_body_reach_the_service(side):
    side.answer("intake", "POST", "/legal_holds", 201, {"hold_id": "hold_a", "active": True})
    status, body = await side.port.call("intake", "post", "/legal_holds", "operator-token", json={"reason": "claim"})
    assert (status, body) == (201, {"hold_id": "hold_a", "active": True})
    side.answer("purger", "GET", "/purges/r1", 200, {"rounds": []})
    assert await side.port.call("purger", "GET", "/purges/r1", None) == (200, {"rounds": []})
    assert side.seen() == [
        ("intake", "POST", "/legal_holds", "operator-token", {"reason": "claim"}),
        ("purger", "GET", "/purges/r1", None, None),  # no token: no Authorization header at all
    ]


async def test_what_the_service_does_not_know_is_its_404_with_a_detail(side):
    status, body = await side.port.call("keyvault", "GET", "/v1/nothing", "t")
    assert status == 404 and "detail" in body


async def test_an_answer_without_a_body_is_none(side):
    side.answer("notifier", "DELETE", "/webhooks/wh_1", 204)
    assert await side.port.call("notifier", "DELETE", "/webhooks/wh_1", "t") == (204, None)


async def test_a_service_that_cannot_be_reached_is_status_0_with_a_detail_naming_it(side):
    side.take_down("purger")
    status, body = await side.port.call("purger", "GET", "/purges/r1", "t")
    assert status == 0 and body["detail"].startswith("purger could not be reached")
    side.answer("intake", "GET", "/healthz", 200, {"status": "ok"})
    assert await side.port.call("intake", "GET", "/healthz", None) == (200, {"status": "ok"})  # the others answer


async def test_a_service_it_has_no_url_for_is_a_bug_in_the_caller(side):
    with pytest.raises(KeyError):
        await side.port.call("billing", "GET", "/", "t")
