"""notifier's admin API (scope ``webhooks:admin``): endpoints, secret rotation, deliveries, redelivery."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, get_args

from aiohttp import web
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from services.notifier.adapters.ssrf import UnsafeUrlError, check_url
from services.notifier.model import Delivery, Endpoint, Secret
from services.notifier.ports import WebhookStore
from services.notifier.signing import new_secret
from shared.auth import WEBHOOKS_ADMIN, TokenVerifier
from shared.problems import ProblemError, parse_json, parse_params

PAGE_CAP = 100
WebhookType = Literal[
    "data_deletion.completed",
    "data_deletion.partial",
    "data_deletion.overdue",
    "data_deletion.extended",
    "data_deletion.denied",
    "data_deletion.cancelled",
]
EndpointId = Annotated[str, StringConstraints(pattern=r"^ep_[0-9a-f]{32}$")]
MessageId = Annotated[str, StringConstraints(pattern=r"^msg_[0-9a-f]{32}$")]


def _every_type() -> list[WebhookType]:
    return list(get_args(WebhookType))


class NewEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, StringConstraints(min_length=8, max_length=2000)]
    event_types: list[WebhookType] = Field(default_factory=_every_type, min_length=1)
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    owner_email: EmailStr | None = Field(default=None, description="alerted when a delivery fails for good")


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_hours: int = Field(default=24, ge=0, le=168, description="how long the old secret keeps signing too")


class Page(BaseModel):
    after: str | None = None
    limit: int = Field(default=50, ge=1, le=PAGE_CAP)


class RequestPath(BaseModel):
    request_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class EndpointPath(BaseModel):
    endpoint_id: EndpointId
    message_id: MessageId | None = None


def _endpoint_json(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": endpoint.endpoint_id,
        "url": endpoint.url,
        "event_types": list(endpoint.event_types),
        "status": endpoint.status,
        "disabled_reason": endpoint.disabled_reason,
        "description": endpoint.description,
        "created_at": endpoint.created_at.isoformat(),
        "secrets": len(endpoint.secrets),
    }


def _delivery_json(delivery: Delivery) -> dict[str, Any]:
    last = delivery.attempts[-1] if delivery.attempts else None
    return {
        "id": delivery.message_id,
        "event_type": delivery.event_type,
        "request_id": delivery.request_id,
        "status": delivery.status,
        "attempts": len(delivery.attempts),
        "last_response_code": last.status_code if last else None,
        "last_error": last.error if last else None,
        "next_attempt_at": delivery.next_attempt_at.isoformat() if delivery.next_attempt_at else None,
        "history": [
            {"at": a.at.isoformat(), "status_code": a.status_code, "error": a.error, "duration_ms": a.duration_ms}
            for a in delivery.attempts
        ],
    }


@dataclass(frozen=True)
class AdminApi:
    """What the routes need, kept on the aiohttp app under ADMIN_API."""

    store: WebhookStore
    clock: Callable[[], datetime]
    verifier: TokenVerifier
    allow_loopback: bool


ADMIN_API = web.AppKey("notifier_admin_api", AdminApi)


def _admin(request: web.Request) -> AdminApi:
    """The API's dependencies, once the caller has shown a token with scope webhooks:admin."""
    api = request.app[ADMIN_API]
    api.verifier.require(request, WEBHOOKS_ADMIN)
    return api


async def _endpoint_or_404(request: web.Request, store: WebhookStore) -> Endpoint:
    path = parse_params(EndpointPath, request.match_info, where="path")
    endpoint = await store.endpoint(path.endpoint_id)
    if endpoint is None:
        raise ProblemError(404, "Not Found", "no such webhook endpoint")
    return endpoint


async def register(request: web.Request) -> web.Response:
    api = _admin(request)
    body = await parse_json(request, NewEndpoint)
    try:
        await check_url(body.url, allow_loopback=api.allow_loopback)
    except UnsafeUrlError as exc:
        raise ProblemError(
            422, "Unprocessable Content", f"body.url: {exc}", errors=[{"field": "body.url", "message": str(exc)}]
        ) from exc
    secret = new_secret()
    endpoint = Endpoint(
        endpoint_id="ep_" + uuid.uuid4().hex,
        url=body.url,
        event_types=tuple(dict.fromkeys(body.event_types)),
        secrets=(Secret(secret, api.clock()),),
        created_at=api.clock(),
        owner_email=body.owner_email,
        description=body.description,
    )
    await api.store.add_endpoint(endpoint)
    return web.json_response({**_endpoint_json(endpoint), "secret": secret}, status=201)


async def list_endpoints(request: web.Request) -> web.Response:
    api = _admin(request)
    page = parse_params(Page, request.query, where="query")
    endpoints = await api.store.endpoints(after=page.after, limit=page.limit)
    cursor = endpoints[-1].endpoint_id if len(endpoints) == page.limit else None
    return web.json_response({"items": [_endpoint_json(e) for e in endpoints], "next_cursor": cursor})


async def get_endpoint(request: web.Request) -> web.Response:
    api = _admin(request)
    return web.json_response(_endpoint_json(await _endpoint_or_404(request, api.store)))


async def delete_endpoint(request: web.Request) -> web.Response:
    api = _admin(request)
    endpoint = await _endpoint_or_404(request, api.store)
    await api.store.delete_endpoint(endpoint.endpoint_id)
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    api = _admin(request)
    endpoint = await _endpoint_or_404(request, api.store)
    rotation = await parse_json(request, Rotation)
    now = api.clock()
    ends = now + timedelta(hours=rotation.overlap_hours)
    kept = tuple(
        Secret(s.value, s.created_at, min(s.expires_at or ends, ends))
        for s in endpoint.secrets
        if s.expires_at is None or s.expires_at > now
    )
    secret = new_secret()
    await api.store.set_secrets(endpoint.endpoint_id, (*kept, Secret(secret, now)))
    return web.json_response({"secret": secret, "previous_secrets_valid_until": ends.isoformat()})


async def deliveries(request: web.Request) -> web.Response:
    api = _admin(request)
    endpoint = await _endpoint_or_404(request, api.store)
    page = parse_params(Page, request.query, where="query")
    items = await api.store.deliveries_of(endpoint.endpoint_id, after=page.after, limit=page.limit)
    cursor = items[-1].message_id if len(items) == page.limit else None
    return web.json_response({"items": [_delivery_json(d) for d in items], "next_cursor": cursor})


async def of_request(request: web.Request) -> web.Response:
    api = _admin(request)
    path = parse_params(RequestPath, request.match_info, where="path")
    items = await api.store.deliveries_for_request(path.request_id, limit=PAGE_CAP)
    notice = await api.store.notice(path.request_id)
    mail = (
        {"status": notice.mail_status, "at": notice.at.isoformat(), "smtp_code": notice.smtp_code}
        if notice
        else {"status": None, "at": None, "smtp_code": None}
    )
    return web.json_response(
        {
            "request_id": path.request_id,
            "deliveries": [_delivery_json(d) | {"endpoint_id": d.endpoint_id} for d in items],
            "mail": mail,
        }
    )


async def redeliver(request: web.Request) -> web.Response:
    api = _admin(request)
    endpoint = await _endpoint_or_404(request, api.store)
    path = parse_params(EndpointPath, request.match_info, where="path")
    delivery = await api.store.delivery(path.message_id)
    if delivery is None or delivery.endpoint_id != endpoint.endpoint_id:
        raise ProblemError(404, "Not Found", "no such delivery for this endpoint")
    await api.store.redeliver(delivery.message_id, api.clock())
    return web.json_response({"id": delivery.message_id, "status": "pending"}, status=202)


def add_routes(
    app: web.Application,
    *,
    store: WebhookStore,
    clock: Callable[[], datetime],
    verifier: TokenVerifier,
    allow_loopback: bool,
) -> None:
    app[ADMIN_API] = AdminApi(store=store, clock=clock, verifier=verifier, allow_loopback=allow_loopback)
    base = "/webhooks/endpoints"
    app.router.add_post(base, register)
    app.router.add_get(base, list_endpoints)
    app.router.add_get(base + "/{endpoint_id}", get_endpoint)
    app.router.add_delete(base + "/{endpoint_id}", delete_endpoint)
    app.router.add_post(base + "/{endpoint_id}/rotate_secret", rotate_secret)
    app.router.add_get(base + "/{endpoint_id}/deliveries", deliveries)
    app.router.add_post(base + "/{endpoint_id}/deliveries/{message_id}/redeliver", redeliver)
    app.router.add_get("/webhooks/requests/{request_id}", of_request)
