"""The other services' HTTP APIs, as the console calls them: with the signed-in operator's own token."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from services.audit.settings import AuditSettings


def service_urls(settings: AuditSettings) -> dict[str, str]:
    return {
        "intake": settings.intake_url,
        "purger": settings.purger_url,
        "keyvault": settings.keyvault_url,
        "notifier": settings.notifier_url,
    }


class Upstream:
    """The other services' APIs, called with the signed-in operator's token."""

    def __init__(self, urls: Mapping[str, str]) -> None:
        self.urls = dict(urls)
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def call(self, service: str, method: str, path: str, token: str | None, **kwargs: Any) -> tuple[int, Any]:
        """(status, body); status 0 when the service cannot be reached."""
        assert self._http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers |= kwargs.pop("headers", {})
        try:
            async with self._http.request(method, self.urls[service] + path, headers=headers, **kwargs) as r:
                body = await r.json(content_type=None) if r.content_length != 0 else None
                return r.status, body
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            return 0, {"detail": f"{service} could not be reached: {exc.__class__.__name__}"}
