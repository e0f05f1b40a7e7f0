"""Rate limits at intake's HTTP edge (the ``limits`` library, moving windows kept in memory per process).

Per process is enough for what they guard against (one client hammering one instance); with N instances
behind a balancer a client gets at most N times the limit.
"""

from __future__ import annotations

import hashlib
import math
import time

import structlog
from aiohttp import web
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from shared.problems import Handler as HttpHandler
from shared.problems import ProblemError

log = structlog.get_logger(__name__)
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
# The other services' reads (token-guarded, called once per decision): a public per-client limit would stall them.
INTERNAL_PREFIX = "/internal/"


class RateLimits:
    def __init__(self, *, per_client: str, per_address: str, per_email_client: str) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._client: RateLimitItem = parse(per_client)
        self._address: RateLimitItem = parse(per_address)
        self._email_client: RateLimitItem = parse(per_email_client)

    async def _hit(self, item: RateLimitItem, *identity: str, what: str) -> None:
        if await self._limiter.hit(item, *identity):
            return
        stats = await self._limiter.get_window_stats(item, *identity)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        log.info("rate_limited", what=what, limit=str(item))
        raise ProblemError(
            429, "Too Many Requests", f"{what} limit of {item} reached", headers={"Retry-After": str(retry_after)}
        )

    async def client(self, client: str) -> None:
        await self._hit(self._client, "client", client, what="per-client")

    async def email(self, *, address: str, client: str) -> None:
        # The address is hashed so that no address is held in memory longer than the request.
        hashed = hashlib.sha256(address.encode()).hexdigest()
        await self._hit(self._email_client, "email-client", client, what="email requests per client")
        await self._hit(self._address, "email-address", hashed, what="email requests per address")

    def middleware(self) -> web.middleware:  # type: ignore[valid-type]  # aiohttp's decorator type
        @web.middleware
        async def limit(request: web.Request, handler: HttpHandler) -> web.StreamResponse:
            if request.path not in UNLIMITED_PATHS and not request.path.startswith(INTERNAL_PREFIX):
                await self.client(request.remote or "unknown")
            return await handler(request)

        return limit
