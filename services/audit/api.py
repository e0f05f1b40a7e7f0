"""audit's admin API (scope ``audit:read``): the log, its verification, and signed receipts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from services.audit import handlers
from services.audit.adapters.log import MongoAuditLog
from services.audit.chain import Entry, Report, verify_log
from shared.auth import AUDIT_READ, TokenVerifier
from shared.datamap import DataMap
from shared.problems import ProblemError, invalid
from shared.signing import Signer, public_key_b64

Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]


async def verify_chain(audit_log: MongoAuditLog, signer: Signer) -> Report:
    """Recompute the whole chain against its head and signed checkpoints."""
    return await verify_log(
        audit_log.all_entries(),
        head=await audit_log.head(),
        checkpoints=await audit_log.checkpoints(),
        public_keys={signer.key_id: signer.public_key},
    )


async def signed_receipt(
    audit_log: MongoAuditLog, signer: Signer, request_id: str, *, datamap: DataMap | None, now: datetime
) -> dict[str, Any] | None:
    """The request's receipt, anchored to the first checkpoint covering it and signed; None without entries."""
    entries = await audit_log.matching(request_id=request_id)
    if not entries:
        return None
    checkpoint = next((c for c in await audit_log.checkpoints() if c.seq >= entries[-1].seq), None)
    document = handlers.receipt(request_id, entries, datamap=datamap, checkpoint=checkpoint, generated_at=now)
    return signer.sign_document(document)


def log_filters(page_cap: int) -> type[BaseModel]:
    class LogFilters(BaseModel):
        model_config = ConfigDict(extra="forbid")

        type: Annotated[str, StringConstraints(pattern="^(" + "|".join(handlers.FAMILIES) + ")$")] | None = None
        event_type: Id | None = None
        subject_id: Id | None = None
        request_id: Id | None = None
        since: AwareDatetime | None = None
        until: AwareDatetime | None = None
        cursor: int = Field(default=0, ge=0)
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


def add_routes(
    app: web.Application,
    *,
    audit_log: MongoAuditLog,
    signer: Signer,
    verifier: TokenVerifier,
    datamap: DataMap | None,
    clock: Callable[[], datetime],
    page_cap: int,
) -> None:
    filters_model = log_filters(page_cap)

    async def logs(request: web.Request) -> web.Response:
        verifier.require(request, AUDIT_READ)
        try:
            query: Any = filters_model.model_validate(dict(request.query))
        except ValidationError as exc:
            raise invalid(exc, where="query") from exc
        types: set[str] | None = set(handlers.FAMILIES[query.type]) if query.type else None
        if query.event_type:
            types = {query.event_type} & types if types is not None else {query.event_type}
        entries = await audit_log.query(
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
        verifier.require(request, AUDIT_READ)
        return web.json_response((await verify_chain(audit_log, signer)).as_json())

    async def receipt(request: web.Request) -> web.Response:
        verifier.require(request, AUDIT_READ)
        request_id = request.match_info["request_id"]
        if not 1 <= len(request_id) <= 200:
            raise ProblemError(422, "Unprocessable Content", "path.request_id: 1 to 200 characters")
        signed = await signed_receipt(audit_log, signer, request_id, datamap=datamap, now=clock())
        if signed is None:
            raise ProblemError(404, "Not Found", "no audit entries for this request")
        return web.json_response(signed)

    async def public_key(_: web.Request) -> web.Response:
        return web.json_response(
            {"algorithm": "Ed25519", "key_id": signer.key_id, "public_key": public_key_b64(signer.public_key)}
        )

    app.router.add_get("/audit/logs", logs)
    app.router.add_get("/audit/verify", verify)
    app.router.add_get("/audit/receipts/{request_id}", receipt)
    app.router.add_get("/audit/public_key", public_key)


def _op(
    summary: str, responses: dict[str, str], *, params: list[dict[str, Any]] | None = None, public: bool = False
) -> dict[str, Any]:
    errors = {} if public else {"401": "missing or invalid token", "403": "token lacks the scope audit:read"}
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {code: {"description": text} for code, text in {**errors, **responses}.items()},
    }
    if not public:
        op["security"] = [{"bearer": []}]
    return op


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


API_PATHS: dict[str, Any] = {
    "/audit/logs": {
        "get": _op(
            "Log entries, oldest first, with filters and cursor pagination",
            {"200": "a page of entries and next_cursor", "422": "an invalid filter; the body names it"},
            params=[
                _query("type", {"type": "string", "enum": list(handlers.FAMILIES)}),
                _query("event_type", {"type": "string"}),
                _query("subject_id", {"type": "string"}),
                _query("request_id", {"type": "string"}),
                _query("since", {"type": "string", "format": "date-time"}),
                _query("until", {"type": "string", "format": "date-time"}),
                _query("cursor", {"type": "integer", "minimum": 0}),
                _query("limit", {"type": "integer", "minimum": 1}),
            ],
        )
    },
    "/audit/verify": {
        "get": _op(
            "Recompute the chain, check each entry's stored copies against its event, and check every checkpoint",
            {"200": "ok, or the first bad entry: its seq, the reason and, for an edited copy, the field"},
        )
    },
    "/audit/receipts/{request_id}": {
        "get": _op(
            "A request's signed receipt",
            {"200": "the receipt and its Ed25519 signature", "404": "no entries for this request"},
            params=[{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        )
    },
    "/audit/public_key": {
        "get": _op("The public key that checks receipts and checkpoints", {"200": "the key"}, public=True)
    },
}
