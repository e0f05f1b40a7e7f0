"""intake's HTTP API: deletion requests (API and email), their status, retention rules and legal holds."""

from __future__ import annotations

import asyncio
import hashlib
import html
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, get_args

import structlog
from aiohttp import web
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from services.intake import handlers
from services.intake.adapters.store import AccountDirectory, RequestStore
from services.intake.deletions import Deletions
from services.intake.handlers import (
    DeletionRequest,
    IdempotencyKeyBusyError,
    IdempotencyKeyReusedError,
    RequestNotReadyError,
    RulePatchError,
)
from services.intake.limits import RateLimits
from services.intake.settings import IntakeSettings
from services.intake.verification import (
    InvalidLinkError,
    LinkClaims,
    issue_link_token,
    read_link_token,
    verification_mail,
)
from shared.auth import DELETION_ANY, DELETION_SELF, RETENTION_ADMIN, Forbidden, Principal, TokenVerifier
from shared.contacts import CONTACT_DATASET, Contact, MongoContactStore, email_lookup_hash
from shared.datamap import DataMap
from shared.events import (
    IdempotencyKey,
    LegalHoldPlaced,
    LegalHoldReleased,
    RetentionRulesChanged,
    SubjectId,
)
from shared.keyvault_client import KeyvaultClient
from shared.problems import ProblemError, field_problem, fields_problem, invalid, parse_json
from shared.retention import Hold, RetentionStore, Rule, StaleRuleSetError
from shared.smtp import send_mail

log = structlog.get_logger(__name__)

RequestId = Annotated[str, StringConstraints(pattern=r"^req_[0-9a-f]{32}$")]
HoldId = Annotated[str, StringConstraints(pattern=r"^hold_[0-9a-f]{32}$")]
SUBJECT_ID: TypeAdapter[str] = TypeAdapter(SubjectId)
REQUEST_ID: TypeAdapter[str] = TypeAdapter(RequestId)
HOLD_ID: TypeAdapter[str] = TypeAdapter(HoldId)
# A link's token is a JWT: three base64url parts.
LINK_TOKEN: TypeAdapter[str] = TypeAdapter(
    Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){2}$")]
)
IDEMPOTENCY_KEY: TypeAdapter[str] = TypeAdapter(IdempotencyKey)
Text = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]
ADMINS = (DELETION_ANY, RETENTION_ADMIN)
NO_STORE = {"Cache-Control": "no-store"}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmailRequestBody(_Body):
    email: EmailStr = Field(max_length=254)


class VerifyBody(_Body):
    token: Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class RulesPatch(_Body):
    rules: tuple[Rule, ...] = Field(default=(), max_length=100, description="rules to add or replace, by rule_id")
    remove: tuple[Annotated[str, StringConstraints(max_length=63)], ...] = Field(default=(), max_length=100)


class HoldBody(_Body):
    subject_id: SubjectId | None = Field(description="whose data is held; null holds the datasets for everyone")
    datasets: tuple[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")], ...] = Field(
        min_length=1, max_length=100
    )
    reason: Text
    legal_basis: Text
    legal_ref: Text
    ends_at: AwareDatetime | None = Field(
        default=None, description="when the hold ends by itself (the purger then erases what it kept); never if null"
    )


class RequestsQuery(_Body):
    status: handlers.Status | None = None
    subject_id: SubjectId | None = None
    since: AwareDatetime | None = Field(default=None, description="received at or after")
    until: AwareDatetime | None = Field(default=None, description="received before")
    limit: int = Field(default=50, ge=1)
    offset: int = Field(default=0, ge=0, le=1_000_000)


class HoldsQuery(_Body):
    subject_id: SubjectId | None = None
    active: bool = True
    limit: int = Field(default=50, ge=1)
    after: HoldId | None = None


@dataclass
class IntakeApi:
    """What the HTTP handlers need; built by app.py."""

    settings: IntakeSettings
    requests: RequestStore
    retention: RetentionStore
    accounts: AccountDirectory
    contacts: MongoContactStore
    deletions: Deletions
    keyvault: KeyvaultClient | None
    datamap: DataMap
    verifier: TokenVerifier
    limits: RateLimits
    clock: Callable[[], datetime]
    kick_relay: Callable[[], None]
    background: set[asyncio.Task[None]]

    @property
    def link_secret(self) -> str:
        secret = self.settings.verification_secret or self.settings.auth.jwt_secret
        if secret is None:
            raise ProblemError(503, "Service Unavailable", "the email channel is not configured (no link secret)")
        return secret.get_secret_value()


def _validated(model: type[BaseModel], data: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, where=where) from exc


def _path(request: web.Request, name: str, kind: TypeAdapter[str]) -> str:
    try:
        return kind.validate_python(request.match_info[name])
    except ValidationError as exc:
        errors = [{"field": f"path.{name}", "message": e["msg"]} for e in exc.errors()]
        raise fields_problem(errors) from exc


def request_view(r: DeletionRequest, public_url: str) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "request_id": r.request_id,
        "subject_id": r.subject_id,
        "status": r.status,
        "result": r.result,
        "channel": r.channel,
        "status_url": f"{public_url.rstrip('/')}/deletion_requests/{r.request_id}",
        "created_at": iso(r.created_at),
        "deadline_at": iso(r.deadline_at),
        "backups_purged_by": iso(r.backups_purged_by),
        # In the order a request passes them (events from different topics may be recorded in another order).
        "stages": {name: r.stages[name].isoformat() for name in sorted(r.stages, key=handlers.stage_rank)},
        "outcomes": [o.model_dump(mode="json") for _, o in sorted(r.outcomes.items())],
        "keys": {
            "destroyed": list(r.keys_destroyed),
            "retained": list(r.keys_retained),
            "left": r.keys_left,
            "restored_for_hold": list(r.keys_restored),
            "unrestorable": list(r.keys_unrestorable),
        },
        # Datasets a hold placed after the purge keeps now: their tagged records wait out the hold.
        "held": {d: h.model_dump(mode="json") for d, h in sorted(r.held.items())},
        "hard_deleted": r.hard_deleted,
        "notified": None
        if r.webhook_endpoints is None
        else {
            "webhook_endpoints": r.webhook_endpoints,
            "email_sent": r.email_sent,
            "mail": r.mail,
            "smtp_code": r.smtp_code,
        },
        "overdue": {"warned_at": iso(r.overdue_warned_at), "past_deadline_at": iso(r.past_deadline_at)},
        "superseded_by": r.superseded_by,
    }


def rule_set_view(version: int, rules: tuple[Rule, ...], changed_at: datetime | None, by: str | None) -> dict[str, Any]:
    return {
        "version": version,
        "changed_at": changed_at.isoformat() if changed_at else None,
        "changed_by": by,
        "rules": [r.model_dump(mode="json") for r in rules],
    }


def hold_view(h: Hold, now: datetime) -> dict[str, Any]:
    return {**h.model_dump(mode="json"), "active": h.active(now)}


def _idempotency_key(request: web.Request) -> str | None:
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    try:
        return IDEMPOTENCY_KEY.validate_python(raw)
    except ValidationError as exc:
        raise field_problem("header.Idempotency-Key", "1 to 255 visible ASCII characters") from exc


def add_routes(app: web.Application, api: IntakeApi) -> None:  # one closure per endpoint
    settings = api.settings
    deadline, backups = timedelta(days=settings.deadline_days), timedelta(days=settings.backups_days)

    def view(r: DeletionRequest) -> dict[str, Any]:
        return request_view(r, settings.public_url)

    async def start(principal: Principal, subject_id: str) -> tuple[int, dict[str, Any]]:
        try:
            started, record = await api.deletions.start(subject_id, requested_by=principal.subject, channel="api")
        except RequestNotReadyError as exc:
            raise ProblemError(
                503,
                "Service Unavailable",
                "another request for this subject is being stored",
                headers={"Retry-After": "1"},
            ) from exc
        return (202 if started else 200), view(record)

    async def delete_user_data(request: web.Request) -> web.Response:
        principal = api.verifier.principal(request)
        subject_id = _path(request, "id", SUBJECT_ID)
        if DELETION_ANY not in principal.scopes:
            if DELETION_SELF not in principal.scopes:
                raise Forbidden(f"this needs the scope {DELETION_ANY}, or {DELETION_SELF} for your own id")
            if principal.subject != subject_id:
                raise Forbidden("a subject's token may delete only that subject's own data")
        key = _idempotency_key(request)
        if key is None:
            status, body = await start(principal, subject_id)
            return web.json_response(body, status=status, headers=NO_STORE)
        scoped = hashlib.sha256(f"{principal.subject}\0{key}".encode()).hexdigest()
        fingerprint = f"DELETE /users/{subject_id}/data"
        for _ in range(50):  # a concurrent first request with the same key is waited for, up to ~5 s
            try:
                reply, replayed = await api.deletions.once(
                    scoped, fingerprint=fingerprint, run=lambda: start(principal, subject_id)
                )
            except IdempotencyKeyReusedError as exc:
                raise field_problem("header.Idempotency-Key", "already used for a different request") from exc
            except IdempotencyKeyBusyError:
                await asyncio.sleep(0.1)
                continue
            headers = {**NO_STORE, "Idempotent-Replayed": "true"} if replayed else NO_STORE
            return web.json_response(reply.body, status=reply.status, headers=headers)
        raise ProblemError(
            409, "Conflict", "a request with this Idempotency-Key is still in progress", headers={"Retry-After": "1"}
        )

    async def list_requests(request: web.Request) -> web.Response:
        api.verifier.require(request, DELETION_ANY)
        query: RequestsQuery = _validated(RequestsQuery, dict(request.query), "query")
        if query.limit > settings.max_page_size:
            raise field_problem("query.limit", f"at most {settings.max_page_size}")
        records = await api.requests.page(
            status=query.status,
            since=query.since,
            until=query.until,
            subject_id=query.subject_id,
            limit=query.limit,
            offset=query.offset,
        )
        more = len(records) == query.limit
        return web.json_response(
            {"items": [view(r) for r in records], "next_offset": query.offset + len(records) if more else None},
            headers=NO_STORE,
        )

    async def get_request(request: web.Request) -> web.Response:
        principal = api.verifier.principal(request)
        if not principal.scopes & {DELETION_SELF, *ADMINS}:
            raise Forbidden(f"this needs one of the scopes: {', '.join(sorted({DELETION_SELF, *ADMINS}))}")
        request_id = _path(request, "request_id", REQUEST_ID)
        record = await api.requests.get(request_id)
        visible = record is not None and (principal.scopes & set(ADMINS) or principal.subject == record.subject_id)
        if record is None or not visible:
            # The same answer whether it does not exist or is someone else's: existence must not leak.
            raise ProblemError(404, "Not Found", "no such deletion request")
        return web.json_response(view(record), headers=NO_STORE)

    async def email_request(request: web.Request) -> web.Response:
        body: EmailRequestBody = await parse_json(request, EmailRequestBody)
        address = body.email.strip().lower()
        await api.limits.email(address=address, client=request.remote or "unknown")
        task = asyncio.create_task(send_verification(address))
        api.background.add(task)
        task.add_done_callback(api.background.discard)
        # The same answer whether or not the address is known, and before anything is looked up.
        return web.json_response(
            {
                "status": "accepted",
                "detail": "If this address belongs to an account, a confirmation link was sent to it.",
            },
            status=202,
        )

    async def send_verification(address: str) -> None:
        try:
            subject_id = await api.accounts.subject_for(
                email_lookup_hash(address, settings.email_lookup_key.get_secret_value())
            )
            if subject_id is None:
                log.info("email_request.unknown_address")
                return
            if api.keyvault is None:
                log.error("email_request.no_keyvault", hint="set INTAKE_KEYVAULT_TOKEN to seal contact addresses")
                return
            now = api.clock()
            record = handlers.pending_verification(subject_id=subject_id, now=now)
            sealed = await api.keyvault.encrypt(subject_id, CONTACT_DATASET, address.encode())
            await api.contacts.put(Contact(record.request_id, subject_id, sealed))
            await api.requests.save(record)
            ttl = timedelta(seconds=settings.verification_ttl_s)
            token = issue_link_token(
                api.link_secret,
                issuer=settings.auth.issuer,
                claims=LinkClaims(record.request_id, subject_id),
                now=now,
                ttl=ttl,
            )
            link = f"{settings.public_url.rstrip('/')}/deletion_requests/verify?token={token}"
            mail = verification_mail(
                sender=settings.smtp.sender, to=address, link=link, token=token, expires_at=now + ttl
            )
            await send_mail(settings.smtp, mail)
            log.info("email_request.verification_sent", request_id=record.request_id, subject_id=subject_id)
        except Exception:
            # The person gets no mail and may ask again; nothing was started.
            log.exception("email_request.failed")

    async def verify_page(request: web.Request) -> web.Response:
        try:
            token = LINK_TOKEN.validate_python(request.query.get("token", ""))
        except ValidationError as exc:
            raise field_problem("query.token", "missing or malformed") from exc
        # Following the link only shows a form: mail scanners that open links must not start a deletion.
        page = (
            "<!doctype html><meta charset=utf-8><title>Confirm deletion</title>"
            "<h1>Delete all your data?</h1><p>This cannot be undone once it has run.</p>"
            '<form method="post" action="/deletion_requests/verify">'
            f'<input type="hidden" name="token" value="{html.escape(token, quote=True)}">'
            '<button type="submit">Yes, delete my data</button></form>'
        )
        return web.Response(text=page, content_type="text/html", headers=NO_STORE)

    async def verify(request: web.Request) -> web.Response:
        if request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            body = _validated(VerifyBody, {"token": form.get("token")}, "body")
        else:
            body = await parse_json(request, VerifyBody)
        try:
            claims = read_link_token(api.link_secret, body.token, issuer=settings.auth.issuer)
        except InvalidLinkError as exc:
            raise field_problem("body.token", str(exc)) from exc
        pending = await api.requests.get(claims.request_id)
        if pending is None or pending.subject_id != claims.subject_id:
            raise ProblemError(404, "Not Found", "the request of this link no longer exists")
        if pending.superseded_by or "received" in pending.stages:
            raise ProblemError(409, "Conflict", "this link was already used")
        try:
            started, record = await handlers.request_deletion(
                api.requests,
                subject_id=claims.subject_id,
                requested_by="email",
                channel="email",
                now=api.clock(),
                deadline=deadline,
                backups=backups,
                request_id=claims.request_id,
            )
        except RequestNotReadyError as exc:
            raise ProblemError(503, "Service Unavailable", "try again", headers={"Retry-After": "1"}) from exc
        if record.request_id != pending.request_id:
            # The subject already has an open request: this one is folded into it.
            await handlers.supersede(api.requests, pending.request_id, by=record.request_id)
        if started:
            api.kick_relay()
        return web.json_response(view(record), status=202 if started else 200, headers=NO_STORE)

    async def get_rules(request: web.Request) -> web.Response:
        api.verifier.require(request, RETENTION_ADMIN)
        current = await api.retention.rule_set()
        return web.json_response(rule_set_view(current.version, current.rules, current.changed_at, current.changed_by))

    async def patch_rules(request: web.Request) -> web.Response:
        principal = api.verifier.require(request, RETENTION_ADMIN)
        patch: RulesPatch = await parse_json(request, RulesPatch)
        expected = request.headers.get("If-Match")
        for _ in range(5):
            current = await api.retention.rule_set()
            if expected is not None and expected.strip('"') != str(current.version):
                raise ProblemError(412, "Precondition Failed", f"the rules are at version {current.version}")
            try:
                rules, changed = handlers.patch_rules(
                    current.rules, upsert=patch.rules, remove=patch.remove, datamap=api.datamap
                )
            except RulePatchError as exc:
                raise fields_problem(exc.errors) from exc
            if not changed:
                return web.json_response(
                    rule_set_view(current.version, current.rules, current.changed_at, current.changed_by)
                )
            now = api.clock()
            event = RetentionRulesChanged(
                occurred_at=now, producer=handlers.PRODUCER, rule_ids=changed, version=current.version + 1
            )
            try:
                saved = await api.retention.replace_rules(
                    rules, expected_version=current.version, by=principal.subject, at=now, outbox=[event]
                )
            except StaleRuleSetError:
                continue
            api.kick_relay()
            log.info("rules.changed", version=saved.version, rule_ids=list(changed), by=principal.subject)
            return web.json_response(
                rule_set_view(saved.version, saved.rules, saved.changed_at, saved.changed_by),
                headers={"ETag": f'"{saved.version}"'},
            )
        raise ProblemError(409, "Conflict", "the rules kept changing under this update; retry")

    async def place_hold(request: web.Request) -> web.Response:
        principal = api.verifier.require(request, RETENTION_ADMIN)
        body: HoldBody = await parse_json(request, HoldBody)
        unknown = [(i, d) for i, d in enumerate(body.datasets) if d not in api.datamap.names]
        if unknown:
            errors = [
                {"field": f"body.datasets.{i}", "message": f"the data map has no dataset {d!r}"} for i, d in unknown
            ]
            raise fields_problem(errors)
        now = api.clock()
        if body.ends_at is not None and body.ends_at <= now:
            raise field_problem("body.ends_at", "must be in the future")
        hold = Hold(
            hold_id=f"hold_{uuid.uuid4().hex}",
            subject_id=body.subject_id,
            datasets=body.datasets,
            reason=body.reason,
            legal_basis=body.legal_basis,
            legal_ref=body.legal_ref,
            placed_by=principal.subject,
            placed_at=now,
            ends_at=body.ends_at,
        )
        event = LegalHoldPlaced(
            occurred_at=now,
            producer=handlers.PRODUCER,
            subject_id=hold.subject_id,
            hold_id=hold.hold_id,
            datasets=hold.datasets,
            legal_basis=hold.legal_basis,
            legal_ref=hold.legal_ref,
            ends_at=hold.ends_at,
        )
        placed = await api.retention.place_hold(hold, outbox=[event])
        api.kick_relay()
        log.info("hold.placed", hold_id=placed.hold_id, subject_id=placed.subject_id, by=principal.subject)
        return web.json_response(hold_view(placed, now), status=201)

    async def list_holds(request: web.Request) -> web.Response:
        api.verifier.require(request, RETENTION_ADMIN)
        query: HoldsQuery = _validated(HoldsQuery, dict(request.query), "query")
        if query.limit > settings.max_page_size:
            raise field_problem("query.limit", f"at most {settings.max_page_size}")
        holds = await api.retention.holds(
            subject_id=query.subject_id, active_only=query.active, limit=query.limit, after=query.after
        )
        more = len(holds) == query.limit
        return web.json_response(
            {
                "holds": [hold_view(h, api.clock()) for h in holds],
                "next_after": holds[-1].hold_id if more and holds else None,
            }
        )

    async def get_hold(request: web.Request) -> web.Response:
        api.verifier.require(request, RETENTION_ADMIN)
        hold = await api.retention.hold(_path(request, "hold_id", HOLD_ID))
        if hold is None:
            raise ProblemError(404, "Not Found", "no such legal hold")
        return web.json_response(hold_view(hold, api.clock()))

    async def release_hold(request: web.Request) -> web.Response:
        principal = api.verifier.require(request, RETENTION_ADMIN)
        hold_id = _path(request, "hold_id", HOLD_ID)
        existing = await api.retention.hold(hold_id)
        if existing is None:
            raise ProblemError(404, "Not Found", "no such legal hold")
        now = api.clock()
        event = LegalHoldReleased(
            occurred_at=now,
            producer=handlers.PRODUCER,
            subject_id=existing.subject_id,
            hold_id=hold_id,
            datasets=existing.datasets,
        )
        released = await api.retention.release_hold(hold_id, by=principal.subject, at=now, outbox=[event])
        assert released is not None
        if existing.released_at is None:
            api.kick_relay()
            log.info("hold.released", hold_id=hold_id, by=principal.subject)
        return web.json_response(hold_view(released, now))

    app.router.add_delete("/users/{id}/data", delete_user_data)
    app.router.add_post("/deletion_requests", email_request)
    app.router.add_get("/deletion_requests/verify", verify_page)
    app.router.add_post("/deletion_requests/verify", verify)
    app.router.add_get("/deletion_requests", list_requests)
    app.router.add_get("/deletion_requests/{request_id}", get_request)
    app.router.add_get("/data_retention/rules", get_rules)
    app.router.add_patch("/data_retention/rules", patch_rules)
    app.router.add_post("/legal_holds", place_hold)
    app.router.add_get("/legal_holds", list_holds)
    app.router.add_get("/legal_holds/{hold_id}", get_hold)
    app.router.add_delete("/legal_holds/{hold_id}", release_hold)


# --- OpenAPI -------------------------------------------------------------------------------------------------

REF = "#/components/schemas/{model}"
SCHEMAS: dict[str, Any] = {}


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema, its nested models moved to ``components.schemas``."""
    schema = model.model_json_schema(ref_template=REF)
    SCHEMAS.update(schema.pop("$defs", {}))
    return schema


def _param(name: str, where: str, schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


def _op(
    summary: str,
    responses: dict[str, str],
    *,
    auth: str | None,
    params: list[dict[str, Any]] = (),  # type: ignore[assignment]  # an immutable default
    body: type[BaseModel] | None = None,
    form: bool = False,
) -> dict[str, Any]:
    codes = {"429": "too many requests; Retry-After says when to try again", **responses}
    if params:
        codes["422"] = "a parameter is malformed; the body names it"
        codes["400"] = "a malformed request, e.g. a request line over 8 KiB"
    op: dict[str, Any] = {"summary": summary, "parameters": list(params)}
    if auth is not None:
        op |= {"description": f"Needs a bearer token with {auth}.", "security": [{"bearer": []}]}
        codes |= {"401": "missing or invalid token", "403": "the token lacks the right"}
    if body is not None:
        codes |= {
            "400": "the body is not JSON",
            "413": "the body is too large",
            "415": "the body is not of a supported type",
            "422": "the body is invalid; the answer names the field",
        }
        content = {"application/json": {"schema": _schema(body)}}
        if form:
            content["application/x-www-form-urlencoded"] = {"schema": _schema(body)}
        op["requestBody"] = {"required": True, "content": content}
    op["responses"] = {code: {"description": text} for code, text in sorted(codes.items())}
    return op


SUBJECT_SCHEMA = SUBJECT_ID.json_schema()
API_PATHS: dict[str, Any] = {
    "/users/{id}/data": {
        "delete": _op(
            "Erase a subject's data: starts a deletion request, or returns the subject's open one",
            {
                "200": "the subject's open request (no new one was started)",
                "202": "accepted: request_id, status, status_url, deadline_at, backups_purged_by",
                "409": "a request with the same Idempotency-Key is still in progress",
                "503": "another request for this subject is being stored; retry",
            },
            auth=f"{DELETION_ANY}, or {DELETION_SELF} for the token's own subject",
            params=[
                _param("id", "path", SUBJECT_SCHEMA),
                _param("Idempotency-Key", "header", IDEMPOTENCY_KEY.json_schema(), required=False),
            ],
        )
    },
    "/deletion_requests/{request_id}": {
        "get": _op(
            "A request's status, each stage's time, the per-dataset outcomes and the deadline",
            {"200": "the request", "404": "no such request (or not yours)"},
            auth=f"{DELETION_SELF} (own requests), {DELETION_ANY} or {RETENTION_ADMIN}",
            params=[_param("request_id", "path", REQUEST_ID.json_schema())],
        )
    },
    "/deletion_requests": {
        "get": _op(
            "Deletion requests, newest first, by status, subject and the time they were received (for operators)",
            {"200": "a page of requests; next_offset is null on the last page"},
            auth=DELETION_ANY,
            params=[
                _param("status", "query", {"type": "string", "enum": list(get_args(handlers.Status))}, required=False),
                _param("subject_id", "query", SUBJECT_SCHEMA, required=False),
                _param("since", "query", {"type": "string", "format": "date-time"}, required=False),
                _param("until", "query", {"type": "string", "format": "date-time"}, required=False),
                _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100}, required=False),
                _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 1_000_000}, required=False),
            ],
        ),
        "post": _op(
            "Email channel: mail a confirmation link if the address belongs to an account (same answer either way)",
            {"202": "accepted"},
            auth=None,
            body=EmailRequestBody,
        ),
    },
    "/deletion_requests/verify": {
        "get": _op(
            "The page a confirmation link opens: a form that confirms the deletion",
            {"200": "an HTML form"},
            auth=None,
            params=[_param("token", "query", LINK_TOKEN.json_schema())],
        ),
        "post": _op(
            "Confirm an email-channel request with the link's token: starts the deletion",
            {
                "200": "the subject already had an open request; this is it",
                "202": "the deletion started",
                "404": "the link's request no longer exists",
                "409": "the link was already used",
                "503": "retry",
            },
            auth=None,
            body=VerifyBody,
            form=True,
        ),
    },
    "/data_retention/rules": {
        "get": _op("The current retention rules and their version", {"200": "the rule set"}, auth=RETENTION_ADMIN),
        "patch": _op(
            "Add, replace or remove rules (a new version; published as retention.rules_changed)",
            {
                "200": "the new rule set (ETag: its version)",
                "409": "the rules kept changing; retry",
                "412": "If-Match names an older version",
            },
            auth=RETENTION_ADMIN,
            params=[_param("If-Match", "header", {"type": "string"}, required=False)],
            body=RulesPatch,
        ),
    },
    "/legal_holds": {
        "post": _op(
            "Place a legal hold (published as legal_hold.placed)",
            {"201": "the hold"},
            auth=RETENTION_ADMIN,
            body=HoldBody,
        ),
        "get": _op(
            "List legal holds, a page at a time",
            {"200": "holds and next_after"},
            auth=RETENTION_ADMIN,
            params=[
                _param("subject_id", "query", SUBJECT_SCHEMA, required=False),
                _param("active", "query", {"type": "boolean"}, required=False),
                _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100}, required=False),
                _param("after", "query", HOLD_ID.json_schema(), required=False),
            ],
        ),
    },
    "/legal_holds/{hold_id}": {
        "get": _op(
            "One legal hold",
            {"200": "the hold", "404": "no such hold"},
            auth=RETENTION_ADMIN,
            params=[_param("hold_id", "path", HOLD_ID.json_schema())],
        ),
        "delete": _op(
            "Release a hold (published as legal_hold.released; the purger then erases what it kept)",
            {"200": "the released hold", "404": "no such hold"},
            auth=RETENTION_ADMIN,
            params=[_param("hold_id", "path", HOLD_ID.json_schema())],
        ),
    },
}
