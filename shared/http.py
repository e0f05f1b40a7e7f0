"""The operational HTTP endpoints every service serves: /healthz, /readyz, /metrics and /openapi.json."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.metrics import Metrics

ReadinessCheck = Callable[[], Awaitable[bool]]

_OPS_PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "summary": "Liveness: the process is up",
            "operationId": "healthz",
            "responses": {"200": {"description": "alive", "content": {"application/json": {}}}},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: every dependency answers and the consumer has joined its group",
            "operationId": "readyz",
            "responses": {
                "200": {"description": "ready", "content": {"application/json": {}}},
                "503": {
                    "description": "not ready; the body names the failing checks",
                    "content": {"application/json": {}},
                },
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}},
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
        }
    },
}


def openapi_document(
    *,
    title: str,
    description: str,
    version: str = "0.1.0",
    paths: Mapping[str, Any] | None = None,
    schemas: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An OpenAPI 3.1 document with the operational endpoints plus the service's own ``paths`` and ``schemas``."""
    components: dict[str, Any] = {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    }
    if schemas:
        components["schemas"] = dict(schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": {**_OPS_PATHS, **(paths or {})},
        "components": components,
    }


def add_ops_routes(
    app: web.Application,
    *,
    service: str,
    metrics: Metrics,
    checks: Mapping[str, ReadinessCheck],
    openapi: Mapping[str, Any],
    check_timeout_s: float = 2.0,
) -> None:
    """Mount the operational endpoints on ``app``."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": service})

    async def readyz(_: web.Request) -> web.Response:
        results = await asyncio.gather(*(_run_check(check, check_timeout_s) for check in checks.values()))
        detail = dict(zip(checks, results, strict=True))
        ready = all(detail.values())
        return web.json_response(
            {"status": "ready" if ready else "not_ready", "service": service, "checks": detail},
            status=200 if ready else 503,
        )

    async def metrics_view(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def openapi_view(_: web.Request) -> web.Response:
        return web.json_response(openapi)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/openapi.json", openapi_view)


async def _run_check(check: ReadinessCheck, timeout_s: float) -> bool:
    try:
        return await asyncio.wait_for(check(), timeout_s)
    except Exception:
        # A check that raises or hangs means "not ready"; /readyz must answer, not fail.
        return False
