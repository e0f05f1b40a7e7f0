"""notifier's admin API (scope ``webhooks:admin``): endpoints, secret rotation, deliveries, redelivery."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, ValidationError

from services.notifier.adapters.ssrf import UnsafeUrlError, check_url
from services.notifier.adapters.store import Delivery, Endpoint, Secret
from services.notifier.handlers import Notifier
from shared.auth import WEBHOOKS_ADMIN, TokenVerifier
from shared.problems import ProblemError, invalid, parse_json

PAGE_CAP = 100
WebhookType = Literal["data_deletion.completed", "data_deletion.partial", "data_deletion.overdue"]
EndpointId = Annotated[str, StringConstraints(pattern=r"^ep_[0-9a-f]{32}$")]
MessageId = Annotated[str, StringConstraints(pattern=r"^msg_[0-9a-f]{32}$")]


def _every_type() -> list[WebhookType]:
    return ["data_deletion.completed", "data_deletion.partial", "data_deletion.overdue"]


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


def _parse(model: type[BaseModel], data: dict[str, str], where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, where=where) from exc


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


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


def add_routes(app: web.Application, *, n: Notifier, verifier: TokenVerifier, allow_loopback: bool) -> None:
    async def endpoint_or_404(request: web.Request) -> Endpoint:
        path = _parse(EndpointPath, dict(request.match_info), "path")
        endpoint = await n.store.endpoint(path.endpoint_id)
        if endpoint is None:
            raise ProblemError(404, "Not Found", "no such webhook endpoint")
        return endpoint

    async def register(request: web.Request) -> web.Response:
        verifier.require(request, WEBHOOKS_ADMIN)
        body = await parse_json(request, NewEndpoint)
        try:
            await check_url(body.url, allow_loopback=allow_loopback)
        except UnsafeUrlError as exc:
            raise ProblemError(
                422, "Unprocessable Content", f"body.url: {exc}", errors=[{"field": "body.url", "message": str(exc)}]
            ) from exc
        secret = new_secret()
        endpoint = Endpoint(
            endpoint_id="ep_" + uuid.uuid4().hex,
            url=body.url,
            event_types=tuple(dict.fromkeys(body.event_types)),
            secrets=(Secret(secret, n.clock()),),
            created_at=n.clock(),
            owner_email=body.owner_email,
            description=body.description,
        )
        await n.store.add_endpoint(endpoint)
        return web.json_response({**_endpoint_json(endpoint), "secret": secret}, status=201)

    async def list_endpoints(request: web.Request) -> web.Response:
        verifier.require(request, WEBHOOKS_ADMIN)
        page = _parse(Page, dict(request.query), "query")
        endpoints = await n.store.endpoints(after=page.after, limit=page.limit)
        cursor = endpoints[-1].endpoint_id if len(endpoints) == page.limit else None
        return web.json_response({"items": [_endpoint_json(e) for e in endpoints], "next_cursor": cursor})

    async def get_endpoint(request: web.Request) -> web.Response:
        verifier.require(request, WEBHOOKS_ADMIN)
        return web.json_response(_endpoint_json(await endpoint_or_404(request)))

    async def delete_endpoint(request: web.Request) -> web.Response:
        verifier.require(request, WEBHOOKS_ADMIN)
        endpoint = await endpoint_or_404(request)
        await n.store.delete_endpoint(endpoint.endpoint_id)
        return web.Response(status=204)

    async def rotate_secret(request: web.Request) -> web.Response:
        verifier.require(request, WEBHOOKS_ADMIN)
        endpoint = await endpoint_or_404(request)
        rotation = await parse_json(request, Rotation)
        now = n.clock()
        ends = now + timedelta(hours=rotation.overlap_hours)
        kept = tuple(
            Secret(s.value, s.created_at, min(s.expires_at or ends, ends))
            for s in endpoint.secrets
            if s.expires_at is None or s.expires_at > now
        )
        secret = new_secret()
        await n.store.set_secrets(endpoint.endpoint_id, (*kept, Secret(secret, now)))
        return web.json_response({"secret": secret, "previous_secrets_valid_until": ends.isoformat()})

    async def deliveries(request: web.Request) -> web.Response:
        verifier.require(request, WEBHOOKS_ADMIN)
        endpoint = await endpoint_or_404(request)
        page = _parse(Page, dict(request.query), "query")
        items = await n.store.deliveries_of(endpoint.endpoint_id, after=page.after, limit=page.limit)
        cursor = items[-1].message_id if len(items) == page.limit else None
        return web.json_response({"items": [_delivery_json(d) for d in items], "next_cursor": cursor})

    async def of_request(request: web.Request) -> web.Response:
        verifier.require(request, WEBHOOKS_ADMIN)
        path = _parse(RequestPath, dict(request.match_info), "path")
        items = await n.store.deliveries_for_request(path.request_id, limit=PAGE_CAP)
        notice = await n.store.notice(path.request_id)
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
        verifier.require(request, WEBHOOKS_ADMIN)
        endpoint = await endpoint_or_404(request)
        path = _parse(EndpointPath, dict(request.match_info), "path")
        delivery = await n.store.delivery(path.message_id)
        if delivery is None or delivery.endpoint_id != endpoint.endpoint_id:
            raise ProblemError(404, "Not Found", "no such delivery for this endpoint")
        await n.store.redeliver(delivery.message_id, n.clock())
        return web.json_response({"id": delivery.message_id, "status": "pending"}, status=202)

    base = "/webhooks/endpoints"
    app.router.add_post(base, register)
    app.router.add_get(base, list_endpoints)
    app.router.add_get(base + "/{endpoint_id}", get_endpoint)
    app.router.add_delete(base + "/{endpoint_id}", delete_endpoint)
    app.router.add_post(base + "/{endpoint_id}/rotate_secret", rotate_secret)
    app.router.add_get(base + "/{endpoint_id}/deliveries", deliveries)
    app.router.add_post(base + "/{endpoint_id}/deliveries/{message_id}/redeliver", redeliver)
    app.router.add_get("/webhooks/requests/{request_id}", of_request)


def _op(
    summary: str,
    responses: dict[str, str],
    params: list[str],
    *,
    query: bool = False,
    body: type[BaseModel] | None = None,
) -> dict[str, Any]:
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    if query:
        parameters += [
            {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_CAP},
            },
        ]
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Needs a bearer token with scope {WEBHOOKS_ADMIN}.",
        "security": [{"bearer": []}],
        "parameters": parameters,
        "responses": {
            code: {"description": text}
            for code, text in {
                "401": "missing or invalid token",
                "403": "token lacks the scope",
                "422": "invalid input; the body names the field",
                **responses,
            }.items()
        },
    }
    if body is not None:
        op["responses"] |= {
            "400": {"description": "the body is not JSON"},
            "413": {"description": "the body is too large"},
            "415": {"description": "the body is not application/json"},
        }
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body.model_json_schema()}}}
    return op


API_PATHS: dict[str, Any] = {
    "/webhooks/endpoints": {
        "post": _op(
            "Register an endpoint; the answer holds its whsec_ secret", {"201": "registered"}, [], body=NewEndpoint
        ),
        "get": _op("List endpoints", {"200": "a page of endpoints"}, [], query=True),
    },
    "/webhooks/endpoints/{endpoint_id}": {
        "get": _op("One endpoint", {"200": "the endpoint", "404": "no such endpoint"}, ["endpoint_id"]),
        "delete": _op("Delete an endpoint", {"204": "deleted", "404": "no such endpoint"}, ["endpoint_id"]),
    },
    "/webhooks/endpoints/{endpoint_id}/rotate_secret": {
        "post": _op(
            "Rotate the secret; old and new both sign during the overlap",
            {"200": "the new secret"},
            ["endpoint_id"],
            body=Rotation,
        ),
    },
    "/webhooks/endpoints/{endpoint_id}/deliveries": {
        "get": _op(
            "Deliveries to an endpoint, with attempts and response codes",
            {"200": "a page"},
            ["endpoint_id"],
            query=True,
        ),
    },
    "/webhooks/requests/{request_id}": {
        "get": _op(
            "What a deletion request's notices did: every webhook delivery (attempts, codes) and the person's mail",
            {"200": "the deliveries and the mail status (null before any notice)"},
            ["request_id"],
        ),
    },
    "/webhooks/endpoints/{endpoint_id}/deliveries/{message_id}/redeliver": {
        "post": _op(
            "Deliver again (same webhook-id)",
            {"202": "scheduled", "404": "no such delivery"},
            ["endpoint_id", "message_id"],
        ),
    },
}
