"""intake's HTTP API: deletion requests (API and email), their status, retention rules and legal holds.

Each route checks the token, parses the request with the models of schemas.py, calls one use case (deletions.py,
email_channel.py, admin.py, or the request store for reads) and renders its answer; openapi.py documents them.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aiohttp import web

from services.intake.actions import ExtensionRefusedError, NotOpenError, RequestActions, TooLateError
from services.intake.admin import (
    HoldNotFoundError,
    HoldRefusedError,
    NewHold,
    RetentionAdmin,
    RulesKeptChangingError,
    StaleVersionError,
)
from services.intake.deletions import Deletions
from services.intake.email_channel import ChannelNotConfiguredError, EmailChannel, LinkGoneError, LinkUsedError
from services.intake.handlers import (
    IdempotencyKeyBusyError,
    IdempotencyKeyReusedError,
    RequestNotReadyError,
    RulePatchError,
    UnknownJurisdictionError,
)
from services.intake.limits import RateLimits
from services.intake.model import AuthorisedAgent
from services.intake.ports import ContactStore, RequestStore, RetentionStore
from services.intake.processors import (
    BadSignatureError,
    NotAwaitedError,
    ProcessorAnswers,
    UnknownProcessorError,
    UnknownRequestError,
    dataset_of,
)
from services.intake.schemas import (
    IDEMPOTENCY_KEY,
    CancelBody,
    ContactPath,
    DeleteBody,
    DeleteQuery,
    DenyBody,
    EmailRequestBody,
    ExtendBody,
    HoldBody,
    HoldPath,
    HoldsQuery,
    InForceHoldsQuery,
    InForceQuery,
    OperatorAnswer,
    ProcessorCallback,
    ProcessorPath,
    RequestPath,
    RequestsQuery,
    RulesPatch,
    SubjectPath,
    VerifyBody,
    VerifyQuery,
    hold_view,
    request_view,
    rule_set_view,
)
from services.intake.settings import IntakeSettings
from services.intake.verification import InvalidLinkError
from shared.auth import (
    CONTACTS_READ,
    DELETION_ANY,
    DELETION_SELF,
    REQUESTS_ADMIN,
    RETENTION_ADMIN,
    RETENTION_READ,
    Forbidden,
    Principal,
    TokenVerifier,
)
from shared.events import ConfirmedVia
from shared.problems import ProblemError, field_problem, fields_problem, parse_json, parse_params
from shared.service import BackgroundTasks

ADMINS = (DELETION_ANY, RETENTION_ADMIN)
NO_STORE = {"Cache-Control": "no-store"}


@dataclass
class IntakeApi:
    """What the routes need; built by app.py."""

    settings: IntakeSettings
    requests: RequestStore
    retention: RetentionStore
    contacts: ContactStore
    deletions: Deletions
    email: EmailChannel
    admin: RetentionAdmin
    processors: ProcessorAnswers
    actions: RequestActions
    verifier: TokenVerifier
    limits: RateLimits
    clock: Callable[[], datetime]
    background: BackgroundTasks

    def view(self, record: Any) -> dict[str, Any]:
        return request_view(record, self.settings.public_url)

    def page_limit(self, limit: int) -> None:
        if limit > self.settings.max_page_size:
            raise field_problem("query.limit", f"at most {self.settings.max_page_size}")


INTAKE = web.AppKey("intake", IntakeApi)


def retry_soon(detail: str) -> ProblemError:
    return ProblemError(503, "Service Unavailable", detail, headers={"Retry-After": "1"})


# --- deletion requests ----------------------------------------------------------------------------------------


def _may_delete(principal: Principal, subject_id: str) -> None:
    if DELETION_ANY in principal.scopes:
        return
    if DELETION_SELF not in principal.scopes:
        raise Forbidden(f"this needs the scope {DELETION_ANY}, or {DELETION_SELF} for your own id")
    if principal.subject != subject_id:
        raise Forbidden("a subject's token may delete only that subject's own data")


def _idempotency_key(request: web.Request) -> str | None:
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    try:
        return IDEMPOTENCY_KEY.validate_python(raw)
    except ValueError as exc:
        raise field_problem("header.Idempotency-Key", "1 to 255 visible ASCII characters") from exc


async def delete_user_data(request: web.Request) -> web.Response:
    api = request.app[INTAKE]
    principal = api.verifier.principal(request)
    subject_id = parse_params(SubjectPath, request.match_info, where="path").id
    jurisdiction = parse_params(DeleteQuery, request.query, where="query").jurisdiction
    _may_delete(principal, subject_id)
    asked: DeleteBody = await parse_json(request, DeleteBody) if request.can_read_body else DeleteBody()
    agent = None if asked.agent is None else AuthorisedAgent(**asked.agent.model_dump())

    async def start() -> tuple[int, dict[str, Any]]:
        try:
            started, record = await api.deletions.start(
                subject_id, requested_by=principal.subject, channel="api", jurisdiction=jurisdiction, agent=agent
            )
        except RequestNotReadyError as exc:
            raise retry_soon("another request for this subject is being stored") from exc
        except UnknownJurisdictionError as exc:
            raise field_problem("query.jurisdiction", str(exc)) from exc
        return (202 if started else 200), api.view(record)

    key = _idempotency_key(request)
    if key is None:
        status, body = await start()
        return web.json_response(body, status=status, headers=NO_STORE)
    scoped = hashlib.sha256(f"{principal.subject}\0{key}".encode()).hexdigest()
    try:
        reply, replayed = await api.deletions.once_waiting(
            scoped,
            fingerprint=f"DELETE /users/{subject_id}/data"
            + (f"?{jurisdiction}" if jurisdiction else "")
            + (f" agent={hashlib.sha256(asked.model_dump_json().encode()).hexdigest()}" if agent else ""),
            run=start,
        )
    except IdempotencyKeyReusedError as exc:
        raise field_problem("header.Idempotency-Key", "already used for a different request") from exc
    except IdempotencyKeyBusyError as exc:
        raise ProblemError(
            409, "Conflict", "a request with this Idempotency-Key is still in progress", headers={"Retry-After": "1"}
        ) from exc
    headers = {**NO_STORE, "Idempotent-Replayed": "true"} if replayed else NO_STORE
    return web.json_response(reply.body, status=reply.status, headers=headers)


async def list_requests(request: web.Request) -> web.Response:
    api = request.app[INTAKE]
    api.verifier.require(request, DELETION_ANY)
    query: RequestsQuery = parse_params(RequestsQuery, request.query, where="query")
    api.page_limit(query.limit)
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
        {"items": [api.view(r) for r in records], "next_offset": query.offset + len(records) if more else None},
        headers=NO_STORE,
    )


async def get_request(request: web.Request) -> web.Response:
    api = request.app[INTAKE]
    principal = api.verifier.principal(request)
    if not principal.scopes & {DELETION_SELF, *ADMINS}:
        raise Forbidden(f"this needs one of the scopes: {', '.join(sorted({DELETION_SELF, *ADMINS}))}")
    request_id = parse_params(RequestPath, request.match_info, where="path").request_id
    record = await api.requests.get(request_id)
    visible = record is not None and (principal.scopes & set(ADMINS) or principal.subject == record.subject_id)
    if record is None or not visible:
        # The same answer whether it does not exist or is someone else's: existence must not leak.
        raise ProblemError(404, "Not Found", "no such deletion request")
    return web.json_response(api.view(record), headers=NO_STORE)


# --- the email channel ----------------------------------------------------------------------------------------


async def email_request(request: web.Request) -> web.Response:
    api = request.app[INTAKE]
    body: EmailRequestBody = await parse_json(request, EmailRequestBody)
    address = body.email.strip().lower()
    await api.limits.email(address=address, client=request.remote or "unknown")
    api.background.start(api.email.send_link(address))
    # The same answer whether or not the address is known, and before anything is looked up.
    detail = "If this address belongs to an account, a confirmation link was sent to it."
    return web.json_response({"status": "accepted", "detail": detail}, status=202)


async def verify_page(request: web.Request) -> web.Response:
    try:
        token = VerifyQuery.model_validate({"token": request.query.get("token", "")}).token
    except ValueError as exc:
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
    api = request.app[INTAKE]
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        body: VerifyBody = parse_params(VerifyBody, {"token": form.get("token")}, where="body")
    else:
        body = await parse_json(request, VerifyBody)
    try:
        started, record = await api.email.confirm(body.token)
    except ChannelNotConfiguredError as exc:
        raise ProblemError(503, "Service Unavailable", str(exc)) from exc
    except InvalidLinkError as exc:
        raise field_problem("body.token", str(exc)) from exc
    except LinkGoneError as exc:
        raise ProblemError(404, "Not Found", "the request of this link no longer exists") from exc
    except LinkUsedError as exc:
        raise ProblemError(409, "Conflict", "this link was already used") from exc
    except RequestNotReadyError as exc:
        raise retry_soon("try again") from exc
    return web.json_response(api.view(record), status=202 if started else 200, headers=NO_STORE)


# --- retention rules and legal holds --------------------------------------------------------------------------


async def get_rules(request: web.Request) -> web.Response:
    api = request.app[INTAKE]
    api.verifier.require(request, RETENTION_ADMIN, RETENTION_READ)  # also at /internal/rules, for the services
    current = await api.retention.rule_set()
    return web.json_response(rule_set_view(current.version, current.rules, current.changed_at, current.changed_by))


def _if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    try:
        return int(raw.strip('"'))
    except ValueError:
        return -1  # names no version there ever was: answered 412 with the current one


async def patch_rules(request: web.Request) -> web.Response:
    api = request.app[INTAKE]
    principal = api.verifier.require(request, RETENTION_ADMIN)
    patch: RulesPatch = await parse_json(request, RulesPatch)
    try:
        saved, changed = await api.admin.change_rules(
            upsert=patch.rules, remove=patch.remove, expected=_if_match(request), by=principal.subject
        )
    except StaleVersionError as exc:
        raise ProblemError(412, "Precondition Failed", str(exc)) from exc
    except RulePatchError as exc:
        raise fields_problem(exc.errors) from exc
    except RulesKeptChangingError as exc:
        raise ProblemError(409, "Conflict", "the rules kept changing under this update; retry") from exc
    headers = {"ETag": f'"{saved.version}"'} if changed else None
    return web.json_response(
        rule_set_view(saved.version, saved.rules, saved.changed_at, saved.changed_by), headers=headers
    )


async def place_hold(request: web.Request) -> web.Response:
    api = request.app[INTAKE]
    principal = api.verifier.require(request, RETENTION_ADMIN)
    body: HoldBody = await parse_json(request, HoldBody)
    new = NewHold(body.subject_id, body.datasets, body.reason, body.legal_basis, body.legal_ref, body.ends_at)
    try:
        placed = await api.admin.place_hold(new, by=principal.subject)
    except HoldRefusedError as exc:
        raise fields_problem(exc.errors) from exc
    return web.json_response(hold_view(placed, api.clock()), status=201)


async def list_holds(request: web.Request) -> web.Response:
    api = request.app[INTAKE]
    api.verifier.require(request, RETENTION_ADMIN)
    query: HoldsQuery = parse_params(HoldsQuery, request.query, where="query")
    api.page_limit(query.limit)
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
    api = request.app[INTAKE]
    api.verifier.require(request, RETENTION_ADMIN)
    hold = await api.retention.hold(parse_params(HoldPath, request.match_info, where="path").hold_id)
    if hold is None:
        raise ProblemError(404, "Not Found", "no such legal hold")
    return web.json_response(hold_view(hold, api.clock()))


async def release_hold(request: web.Request) -> web.Response:
    api = request.app[INTAKE]
    principal = api.verifier.require(request, RETENTION_ADMIN)
    hold_id = parse_params(HoldPath, request.match_info, where="path").hold_id
    try:
        released = await api.admin.release_hold(hold_id, by=principal.subject)
    except HoldNotFoundError as exc:
        raise ProblemError(404, "Not Found", "no such legal hold") from exc
    return web.json_response(hold_view(released, api.clock()))


# --- operator actions ---------------------------------------------------------------------------------------------


async def extend_request(request: web.Request) -> web.Response:
    """Extend a request's deadline as its law allows; the person is told why (deletion.extended)."""
    api = request.app[INTAKE]
    principal = api.verifier.require(request, REQUESTS_ADMIN)
    request_id = parse_params(RequestPath, request.match_info, where="path").request_id
    body: ExtendBody = await parse_json(request, ExtendBody)
    try:
        event = await api.actions.extend(request_id, reason=body.reason, by=principal.subject)
    except UnknownRequestError as exc:
        raise ProblemError(404, "Not Found", "no such deletion request") from exc
    except (NotOpenError, ExtensionRefusedError) as exc:
        raise ProblemError(409, "Conflict", str(exc)) from exc
    answer = {
        "request_id": request_id,
        "jurisdiction": event.jurisdiction,
        "extension": event.extension,
        "deadline_at": event.deadline_at.isoformat(),
        "previous_deadline_at": event.previous_deadline_at.isoformat(),
        "legal_ref": event.legal_ref,
    }
    return web.json_response(answer, status=202)


async def deny_request(request: web.Request) -> web.Response:
    """Refuse a request before anything was erased; the person is told why and where to complain."""
    api = request.app[INTAKE]
    principal = api.verifier.require(request, REQUESTS_ADMIN)
    request_id = parse_params(RequestPath, request.match_info, where="path").request_id
    body: DenyBody = await parse_json(request, DenyBody)
    try:
        event = await api.actions.deny(
            request_id, legal_basis=body.legal_basis, reference=body.reference, by=principal.subject
        )
    except UnknownRequestError as exc:
        raise ProblemError(404, "Not Found", "no such deletion request") from exc
    except TooLateError as exc:
        raise ProblemError(409, "Conflict", f"too late to deny: {exc}") from exc
    answer = {
        "request_id": request_id,
        "status": "denied",
        "jurisdiction": event.jurisdiction,
        "legal_basis": event.legal_basis,
        "reference": event.reference,
        "legal_ref": event.legal_ref,
        "complaint": event.complaint,
    }
    return web.json_response(answer, status=202)


async def cancel_page(request: web.Request) -> web.Response:
    """The acknowledgement mail's link shows a form: a mail scanner that opens links must not cancel anything."""
    api = request.app[INTAKE]
    request_id = parse_params(RequestPath, request.match_info, where="path").request_id
    token = parse_params(VerifyQuery, {"token": request.query.get("token", "")}, where="query").token
    try:
        api.actions.link_claims(request_id, token)
    except InvalidLinkError as exc:
        return _person_page("This link no longer works", f"{exc}. Erasure may have started; ask us if unsure.", 400)
    page = (
        "<!doctype html><meta charset=utf-8><title>Cancel your request</title>"
        "<h1>Cancel your request to erase your data?</h1>"
        "<p>Nothing has been erased yet. If you cancel, we keep your data as it is.</p>"
        f'<form method="post" action="/deletion_requests/{request_id}/cancel">'
        f'<input type="hidden" name="token" value="{html.escape(token, quote=True)}">'
        '<p><label>Why (optional) <input type="text" name="reason" maxlength="1000"></label></p>'
        '<button type="submit">Yes, cancel my request</button></form>'
    )
    return web.Response(text=page, content_type="text/html", headers=NO_STORE)


async def cancel_request(request: web.Request) -> web.Response:
    """Cancel a request at the person's wish while nothing has been erased: with the acknowledgement mail's link
    token, the person's own token (deletion:self), or an operator's (requests:admin, deletion:any)."""
    api = request.app[INTAKE]
    request_id = parse_params(RequestPath, request.match_info, where="path").request_id
    form = request.content_type == "application/x-www-form-urlencoded"
    if form:
        posted = await request.post()
        fields = {k: str(v) for k, v in posted.items() if k in ("token", "reason") and str(v).strip()}
        body: CancelBody = parse_params(CancelBody, fields, where="body")
    else:
        body = await parse_json(request, CancelBody) if request.can_read_body else CancelBody()
    try:
        if body.token is not None:
            event = await api.actions.cancel_by_link(request_id, body.token, reason=body.reason)
        else:
            by, via = await _canceller(api, request, request_id)
            event = await api.actions.cancel(request_id, by=by, via=via, reason=body.reason)
    except InvalidLinkError as exc:
        if form:
            return _person_page("This link no longer works", f"{exc}. Erasure may have started.", 400)
        raise field_problem("body.token", str(exc)) from exc
    except UnknownRequestError as exc:
        raise ProblemError(404, "Not Found", "no such deletion request") from exc
    except TooLateError as exc:
        if form:
            return _person_page("Too late to cancel", f"Your request can no longer be cancelled: {exc}.", 409)
        raise ProblemError(409, "Conflict", f"too late to cancel: {exc}") from exc
    if form:
        return _person_page("Cancelled", "Your request is cancelled: nothing was erased. We will confirm it by mail.")
    answer = {"request_id": request_id, "status": "cancelled", "via": event.via, "cancelled_by": event.cancelled_by}
    return web.json_response(answer, status=202)


async def _canceller(api: IntakeApi, request: web.Request, request_id: str) -> tuple[str, Literal["token", "operator"]]:
    """Who cancels with a bearer token: an operator for the person, or the person (their own request only)."""
    principal = api.verifier.principal(request)
    if principal.scopes & {REQUESTS_ADMIN, DELETION_ANY}:
        return principal.subject, "operator"
    if DELETION_SELF not in principal.scopes:
        raise Forbidden(f"this needs the scope {DELETION_SELF} (your own request), {REQUESTS_ADMIN} or {DELETION_ANY}")
    record = await api.requests.get(request_id)
    if record is None or record.subject_id != principal.subject:
        raise ProblemError(404, "Not Found", "no such deletion request")  # someone else's: existence must not leak
    return principal.subject, "token"


def _person_page(title: str, text: str, status: int = 200) -> web.Response:
    page = f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1><p>{html.escape(text)}</p>"
    return web.Response(text=page, content_type="text/html", status=status, headers=NO_STORE)


# --- processors' answers ----------------------------------------------------------------------------------------


async def processor_callback(request: web.Request) -> web.Response:
    """A processor's signed answer: verified with its own secret before anything is read from it."""
    api = request.app[INTAKE]
    body = await request.read()
    dataset = dataset_of(body)
    try:
        api.processors.verify(dataset, body, request.headers)
    except (UnknownProcessorError, BadSignatureError) as exc:
        # One answer for both: a caller learns nothing about which processors exist.
        raise ProblemError(401, "Unauthorized", "the signature does not verify with the processor's secret") from exc
    answer: ProcessorCallback = await parse_json(request, ProcessorCallback)
    processor = api.processors.datamap.get(answer.dataset).processor
    assert processor is not None  # verify() found its secret
    return await _answer(
        api, answer.request_id, answer.dataset, answer.outcome, "processor", processor.name, answer.reason
    )


async def operator_answer(request: web.Request) -> web.Response:
    """An operator answers for a processor (with a note): the same event as the processor's own answer."""
    api = request.app[INTAKE]
    principal = api.verifier.require(request, REQUESTS_ADMIN)
    path = parse_params(ProcessorPath, request.match_info, where="path")
    answer: OperatorAnswer = await parse_json(request, OperatorAnswer)
    return await _answer(api, path.request_id, path.dataset, answer.outcome, "operator", principal.subject, answer.note)


async def _answer(
    api: IntakeApi,
    request_id: str,
    dataset: str,
    outcome: Literal["erased", "refused"],
    via: ConfirmedVia,
    by: str,
    reason: str | None,
) -> web.Response:
    try:
        event = await api.processors.answer(request_id, dataset, outcome, via=via, by=by, reason=reason)
    except UnknownProcessorError as exc:
        raise ProblemError(404, "Not Found", f"{dataset} is not a processor dataset of the data map") from exc
    except UnknownRequestError as exc:
        raise ProblemError(404, "Not Found", "no such deletion request") from exc
    except NotAwaitedError as exc:
        raise ProblemError(409, "Conflict", str(exc)) from exc
    body = {"request_id": request_id, "dataset": dataset, "outcome": outcome, "via": via}
    return web.json_response(body | {"event_id": str(event.event_id)}, status=202)


# --- reads for the other services (their state lives here) -----------------------------------------------------


async def holds_in_force(request: web.Request) -> web.Response:
    """The unreleased holds the purger and keyvault ask for each time they are about to destroy something."""
    api = request.app[INTAKE]
    api.verifier.require(request, RETENTION_READ, RETENTION_ADMIN)
    query: InForceHoldsQuery = parse_params(InForceHoldsQuery, request.query, where="query")
    if query.subject_id is not None:
        holds = await api.retention.holds_for(query.subject_id)
    elif query.ending_until is not None:
        holds = await api.retention.holds_ending(after=query.ending_after, until=query.ending_until)
    else:
        holds = await api.retention.active_holds()
    now = api.clock()
    return web.json_response({"holds": [hold_view(h, now) for h in holds]}, headers=NO_STORE)


async def retention_in_force(request: web.Request) -> web.Response:
    """The rule set and a subject's unreleased holds in one answer: what the purger and keyvault read before each
    destructive step of one deletion (they decide at their own moment what is still kept)."""
    api = request.app[INTAKE]
    api.verifier.require(request, RETENTION_READ, RETENTION_ADMIN)
    query: InForceQuery = parse_params(InForceQuery, request.query, where="query")
    state = await api.retention.in_force(query.subject_id)
    rules, now = state.rules, api.clock()
    body = rule_set_view(rules.version, rules.rules, rules.changed_at, rules.changed_by)
    return web.json_response(body | {"holds": [hold_view(h, now) for h in state.holds]}, headers=NO_STORE)


async def request_contact(request: web.Request) -> web.Response:
    """A request's sealed address, for notifier's final notice (ciphertext: only keyvault opens it)."""
    api = request.app[INTAKE]
    api.verifier.require(request, CONTACTS_READ)
    request_id = parse_params(ContactPath, request.match_info, where="path").request_id
    contact = await api.contacts.get(request_id)
    if contact is None:
        raise ProblemError(404, "Not Found", "this request has no contact address")
    body = {
        "request_id": contact.request_id,
        "subject_id": contact.subject_id,
        "email_ciphertext": contact.email_ciphertext,
        "copies": list(contact.copies),
    }
    return web.json_response(body, headers=NO_STORE)


def add_routes(app: web.Application, api: IntakeApi) -> None:
    app[INTAKE] = api
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
    app.router.add_post("/deletion_requests/{request_id}/extend", extend_request)
    app.router.add_post("/deletion_requests/{request_id}/deny", deny_request)
    app.router.add_get("/deletion_requests/{request_id}/cancel", cancel_page)
    app.router.add_post("/deletion_requests/{request_id}/cancel", cancel_request)
    app.router.add_post("/processor_confirmations", processor_callback)
    app.router.add_post("/deletion_requests/{request_id}/processors/{dataset}/confirmation", operator_answer)
    app.router.add_get("/internal/rules", get_rules)
    app.router.add_get("/internal/holds", holds_in_force)
    app.router.add_get("/internal/retention", retention_in_force)
    app.router.add_get("/internal/contacts/{request_id}", request_contact)
