"""Sending one webhook attempt over HTTP (already signed): no redirects, SSRF-safe connections."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from services.notifier.adapters.ssrf import SafeResolver, forbidden_reason, literal_ip
from services.notifier.model import AttemptResult


def retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` asks for (delay-seconds or an HTTP date); None when absent or unusable.

    Only finite, non-negative values pass: ``inf``, ``nan`` and negative delays are ignored, as is a date that
    does not parse. A date in the past means now (0). How long is too long is the schedule's decision, not ours.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (ValueError, TypeError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # "-0000": UTC by RFC 5322
        return max(0.0, (when - now).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class WebhookSender:
    """Sends webhook attempts through one SSRF-safe aiohttp session; ``send`` is notifier's SendWebhook port."""

    def __init__(self, *, timeout_s: float, allow_loopback: bool) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._allow_loopback = allow_loopback
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=SafeResolver(allow_loopback=self._allow_loopback), limit=100)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        assert self._session is not None, "start() first"
        started = time.monotonic()
        # aiohttp does not resolve a literal IP, so SafeResolver never sees it: check it here.
        ip = literal_ip(urlsplit(url).hostname or "")
        reason = forbidden_reason(ip, allow_loopback=self._allow_loopback) if ip is not None else None
        if reason:
            return AttemptResult(None, f"refused: the URL points to {reason}", 0)
        try:
            async with self._session.post(
                url,
                data=body.encode(),
                headers={**headers, "content-type": "application/json", "user-agent": "lethe-webhooks/1"},
                allow_redirects=False,
            ) as response:
                await response.read()
                return AttemptResult(
                    status_code=response.status,
                    error=None if 200 <= response.status < 300 else f"HTTP {response.status}",
                    duration_ms=int((time.monotonic() - started) * 1000),
                    retry_after_s=retry_after(response.headers.get("Retry-After"), now=datetime.now(UTC)),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return AttemptResult(None, f"{type(exc).__name__}: {exc}"[:500], int((time.monotonic() - started) * 1000))
