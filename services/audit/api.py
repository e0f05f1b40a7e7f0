"""audit's admin API (scope ``audit:read``): the log, its verification, and signed receipts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from services.audit import handlers
from services.audit.model import Entry
from services.audit.ports import AuditLog
from shared.auth import AUDIT_READ, TokenVerifier
from shared.datamap import DataMap
from shared.problems import ProblemError, parse_params
from shared.signing import Signer, public_key_b64

Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]


def log_filters(page_cap: int) -> type[BaseModel]:
    class LogFilters(BaseModel):
        model_config = ConfigDict(extra="forbid")

        type: Annotated[str, StringConstraints(pattern="^(" + "|".join(handlers.FAMILIES) + ")$")] | None = None
        event_type: Id | None = None
        subject_id: Id | None = None
        request_id: Id | None = None
        since: AwareDatetime | None = None
        until: AwareDatetime | None = None
        cursor: int = Field(default=0, ge=0, le=2**63 - 1)  # a BSON int64: MongoDB refuses a bigger one
        limit: int = Field(default=100, ge=1, le=page_cap)

    return LogFilters


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "event_id": entry.event_id,
        "type": entry.type,
        "request_id": entry.request_id,
        "subject_id": entry.subject_id,
        "occurred_at": entry.occurred_at.isoformat(),
        "recorded_at": entry.content["recorded_at"],
        "event": entry.content["event"],
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


@dataclass(frozen=True)
class AuditApi:
    """What the routes need, kept on the aiohttp app under AUDIT_API."""

    audit_log: AuditLog
    signer: Signer
    verifier: TokenVerifier
    datamap: DataMap | None
    clock: Callable[[], datetime]
    filters: type[BaseModel]  # log_filters(the settings' page cap)


AUDIT_API = web.AppKey("audit_api", AuditApi)


def _reader(request: web.Request) -> AuditApi:
    """The API's dependencies, once the caller has shown a token with scope audit:read."""
    api = request.app[AUDIT_API]
    api.verifier.require(request, AUDIT_READ)
    return api


async def logs(request: web.Request) -> web.Response:
    api = _reader(request)
    query: Any = parse_params(api.filters, request.query, where="query")
    types: set[str] | None = set(handlers.FAMILIES[query.type]) if query.type else None
    if query.event_type:
        types = {query.event_type} & types if types is not None else {query.event_type}
    entries = await api.audit_log.query(
        types=types,
        subject_id=query.subject_id,
        request_id=query.request_id,
        since=query.since,
        until=query.until,
        after=query.cursor,
        limit=query.limit,
    )
    cursor = entries[-1].seq if len(entries) == query.limit else None
    return web.json_response({"items": [_entry_json(e) for e in entries], "next_cursor": cursor})


async def verify(request: web.Request) -> web.Response:
    api = _reader(request)
    return web.json_response((await handlers.verify_chain(api.audit_log, api.signer)).as_json())


async def receipt(request: web.Request) -> web.Response:
    api = _reader(request)
    request_id = request.match_info["request_id"]
    if not 1 <= len(request_id) <= 200:
        raise ProblemError(422, "Unprocessable Content", "path.request_id: 1 to 200 characters")
    signed = await handlers.signed_receipt(api.audit_log, api.signer, request_id, datamap=api.datamap, now=api.clock())
    if signed is None:
        raise ProblemError(404, "Not Found", "no audit entries for this request")
    return web.json_response(signed)


async def public_key(request: web.Request) -> web.Response:
    signer = request.app[AUDIT_API].signer
    return web.json_response(
        {"algorithm": "Ed25519", "key_id": signer.key_id, "public_key": public_key_b64(signer.public_key)}
    )


def add_routes(
    app: web.Application,
    *,
    audit_log: AuditLog,
    signer: Signer,
    verifier: TokenVerifier,
    datamap: DataMap | None,
    clock: Callable[[], datetime],
    page_cap: int,
) -> None:
    app[AUDIT_API] = AuditApi(audit_log, signer, verifier, datamap, clock, log_filters(page_cap))
    app.router.add_get("/audit/logs", logs)
    app.router.add_get("/audit/verify", verify)
    app.router.add_get("/audit/receipts/{request_id}", receipt)
    app.router.add_get("/audit/public_key", public_key)
