"""The operator console at /console: server-rendered pages over the services' own APIs.

An operator signs in by pasting an admin token. It is kept server-side (``console_sessions``, keyed by the
hash of a random session id); the browser holds only the id, in an HttpOnly, SameSite=Strict cookie (Secure
when served over TLS). Every form carries the session's CSRF token. Each page calls intake, notifier and the
other services with the operator's own token, so the console can do nothing the token could not; the audit
log, receipts and the chain check are read in-process. No page shows a personal email address: requests are
named by their pseudonymous subject ids, and notifier's endpoint owners are not shown.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import structlog
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.audit import handlers
from services.audit.model import Entry, Session
from services.audit.ports import AuditLog, ConsoleSessions, ReadLag, Services
from services.audit.settings import AuditSettings
from shared.auth import AUDIT_READ, TokenVerifier
from shared.datamap import DataMap
from shared.events import REQUEST_STATUSES
from shared.signing import Signer

log = structlog.get_logger(__name__)

COOKIE = "lethe_console"
LOGIN_COOKIE = "lethe_console_login"
PAGE = 25
FINAL = frozenset({"completed", "partial", "hard_deleted", "erased", "denied", "cancelled"})
STATUSES = REQUEST_STATUSES
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def deadline_state(item: Mapping[str, Any], now: datetime) -> tuple[str, str]:
    """(colour, text) of a request's deadline: green, amber past 80% of its time, red past it; done when final."""
    if not item.get("deadline_at") or not item.get("created_at"):
        return "none", "-"
    created = datetime.fromisoformat(item["created_at"])
    deadline = datetime.fromisoformat(item["deadline_at"])
    if item["status"] in FINAL:
        done = datetime.fromisoformat(max(item["stages"].values())) if item.get("stages") else now
        return ("done", "done in time") if done <= deadline else ("late", "done after the deadline")
    if now >= deadline:
        return "red", f"{_span(now - deadline)} overdue"
    fraction = (now - created) / (deadline - created)
    return ("amber" if fraction >= 0.8 else "green"), f"{_span(deadline - now)} left"


def _span(delta: timedelta) -> str:
    days, seconds = delta.days, delta.seconds
    if days:
        return f"{days}d {seconds // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 60}m"


def _entry_view(entry: Entry) -> dict[str, Any]:
    event = entry.content["event"]
    detail = {k: v for k, v in event.items() if k not in ("event_id", "type", "schema_version", "producer")}
    return {
        "seq": entry.seq,
        "type": entry.type,
        "occurred_at": entry.occurred_at.isoformat(timespec="seconds"),
        "request_id": entry.request_id,
        "producer": event.get("producer"),
        "detail": json.dumps(detail, sort_keys=True, default=str)[:600],
    }


@dataclass(frozen=True)
class Console:
    """What the console's pages need, kept on the aiohttp app under CONSOLE."""

    settings: AuditSettings
    audit_log: AuditLog
    signer: Signer
    verifier: TokenVerifier
    sessions: ConsoleSessions
    upstream: Services
    read_lag: ReadLag
    datamap: DataMap | None
    clock: Callable[[], datetime]

    def render(self, name: str, status: int = 200, session: Session | None = None, **context: Any) -> web.Response:
        page = TEMPLATES.get_template(name).render(session=session, now=self.clock(), **context)
        return web.Response(text=page, status=status, content_type="text/html", headers=SECURITY_HEADERS)


CONSOLE = web.AppKey("audit_console", Console)
Page = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"


def signed_in(page: Page, *, form: bool = False) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The page, for a signed-in operator only (and, for a ``form``, with the session's CSRF token posted)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE]
        session_id = request.cookies.get(COOKIE)
        session = await console.sessions.get(session_id, console.clock()) if session_id else None
        if session is None:
            return redirect("/console/login")
        if form:
            posted = await request.post()
            if not hmac.compare_digest(str(posted.get("csrf", "")), session.csrf):
                return console.render("error.html", 403, session, message="The form's CSRF token is missing or wrong.")
        return await page(request, session)

    return wrapped


async def index(_: web.Request) -> web.Response:
    return redirect("/console/requests")


async def login_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = request.app[CONSOLE].render("login.html", status, error=error, login_csrf=token)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", secure=secure(request), path="/console")
    return response


async def login(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    posted = await request.post()
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(str(posted.get("csrf", "")), expected):
        return await login_page(request, "The sign-in form expired; please paste the token again.", 403)
    token = str(posted.get("token", "")).strip()
    try:
        principal = console.verifier.verify(token)
    except Exception as exc:
        return await login_page(request, f"That token was refused: {exc}", 401)
    if AUDIT_READ not in principal.scopes:
        return await login_page(request, f"That token lacks the scope {AUDIT_READ}.", 403)
    now = console.clock()
    expires = now + timedelta(hours=console.settings.console_session_hours)
    if principal.expires_at is not None:
        expires = min(expires, principal.expires_at)
    session = Session(token, secrets.token_urlsafe(24), principal.subject, frozenset(principal.scopes), expires)
    session_id = await console.sessions.create(session)
    response = redirect("/console/requests")
    response.set_cookie(
        COOKIE,
        session_id,
        httponly=True,
        samesite="Strict",
        secure=secure(request),
        path="/console",
        max_age=max(1, int((expires - now).total_seconds())),
    )
    response.del_cookie(LOGIN_COOKIE, path="/console")
    log.info("console.signed_in", operator=principal.subject)
    return response


async def logout(request: web.Request, _: Session) -> web.Response:
    await request.app[CONSOLE].sessions.delete(request.cookies.get(COOKIE, ""))
    response = redirect("/console/login")
    response.del_cookie(COOKIE, path="/console")
    return response


def _requests_query(q: Mapping[str, str], offset: int) -> dict[str, str]:
    """intake's query for the requests page's filters (blank ones left out); "until" includes its day."""
    params: dict[str, str] = {"limit": str(PAGE), "offset": str(offset)}
    if q.get("status") in STATUSES:
        params["status"] = q["status"]
    for name, shift in (("since", timedelta(0)), ("until", timedelta(days=1))):
        value = q.get(name, "")
        try:
            params[name] = (datetime.fromisoformat(value).replace(tzinfo=UTC) + shift).isoformat() if value else ""
        except ValueError:
            params[name] = ""
    return {k: v for k, v in params.items() if v}


async def requests_page(request: web.Request, session: Session) -> web.Response:
    console = request.app[CONSOLE]
    q = request.query
    offset = int(q["offset"]) if q.get("offset", "").isdigit() else 0
    code, body = await console.upstream.call(
        "intake", "GET", "/deletion_requests", session.token, params=_requests_query(q, offset)
    )
    items = body.get("items", []) if code == 200 else []
    now = console.clock()
    rows = [item | {"deadline": deadline_state(item, now)} for item in items]
    keep = {k: q.get(k, "") for k in ("status", "since", "until") if q.get(k)}
    return console.render(
        "requests.html",
        session=session,
        rows=rows,
        error=None if code == 200 else body.get("detail", f"intake answered {code}"),
        statuses=STATUSES,
        chosen=keep,
        prev=urlencode(keep | {"offset": max(0, offset - PAGE)}) if offset else None,
        next=urlencode(keep | {"offset": body["next_offset"]}) if code == 200 and body.get("next_offset") else None,
    )


async def request_page(request: web.Request, session: Session) -> web.Response:
    console = request.app[CONSOLE]
    request_id = request.match_info["request_id"]
    if not 1 <= len(request_id) <= 200:
        return console.render("error.html", 404, session, message="No such request.")
    path = quote(request_id, safe="")
    (code, item), (n_code, notices), entries = await asyncio.gather(
        console.upstream.call("intake", "GET", f"/deletion_requests/{path}", session.token),
        console.upstream.call("notifier", "GET", f"/webhooks/requests/{path}", session.token),
        console.audit_log.matching(request_id=request_id),
    )
    if code != 200:
        return console.render(
            "error.html",
            404 if code == 404 else 502,
            session,
            message=(item or {}).get("detail", f"intake answered {code}"),
        )
    stages = sorted(item["stages"].items(), key=lambda kv: kv[1])
    return console.render(
        "request.html",
        session=session,
        item=item,
        stages=stages,
        deadline=deadline_state(item, console.clock()),
        deliveries=notices.get("deliveries", []) if n_code == 200 else [],
        mail=notices.get("mail", {}) if n_code == 200 else {},
        notifier_error=None if n_code == 200 else notices.get("detail", f"notifier answered {n_code}"),
        entries=[_entry_view(e) for e in entries],
        flash=request.query.get("flash"),
    )


async def redeliver(request: web.Request, session: Session) -> web.Response:
    request_id = request.match_info["request_id"]
    posted = await request.post()
    endpoint_id, message_id = str(posted.get("endpoint_id", "")), str(posted.get("message_id", ""))
    code, body = await request.app[CONSOLE].upstream.call(
        "notifier",
        "POST",
        f"/webhooks/endpoints/{quote(endpoint_id, safe='')}/deliveries/{quote(message_id, safe='')}/redeliver",
        session.token,
    )
    flash = "Redelivery scheduled." if code == 202 else f"Redelivery refused ({code}): {body.get('detail', '')}"
    return redirect(f"/console/requests/{quote(request_id, safe='')}?{urlencode({'flash': flash})}")


async def answer_processor(request: web.Request, session: Session) -> web.Response:
    """An operator's answer for a processor, with a note; intake records it as the processor's own would be."""
    request_id, dataset = request.match_info["request_id"], request.match_info["dataset"]
    posted = await request.post()
    back = f"/console/requests/{quote(request_id, safe='')}"
    if posted.get("confirm") != "yes":
        return redirect(f"{back}?{urlencode({'flash': 'Not recorded: tick that you have its answer.'})}")
    body = {"outcome": str(posted.get("outcome", "")), "note": str(posted.get("note", ""))}
    path = f"/deletion_requests/{quote(request_id, safe='')}/processors/{quote(dataset, safe='')}/confirmation"
    code, answer = await request.app[CONSOLE].upstream.call("intake", "POST", path, session.token, json=body)
    done = f"Answer for {dataset} recorded: {body['outcome']}."
    flash = done if code == 202 else f"Refused ({code}): {(answer or {}).get('detail', '')}"
    return redirect(f"{back}?{urlencode({'flash': flash})}")


@dataclass(frozen=True)
class RequestAction:
    """An operator's action on a request, through intake (which checks the law and the request's state)."""

    fields: tuple[str, ...]  # the form fields passed on (empty ones left out)
    unticked: str  # the flash when the confirmation box was not ticked
    done: Callable[[dict[str, Any]], str]  # the flash from intake's answer


REQUEST_ACTIONS: dict[str, RequestAction] = {
    "extend": RequestAction(
        ("reason",),
        "Not extended: tick that the person is to be told.",
        lambda a: f"Extended: due {a['deadline_at'][:10]} ({a['legal_ref']}); the person is told.",
    ),
    "deny": RequestAction(
        ("legal_basis", "reference"),
        "Not denied: tick that the person is to be told why.",
        lambda a: (
            f"Denied ({a['legal_ref']}, reference {a['reference']}): nothing is erased; the person is told why "
            "and where to complain."
        ),
    ),
    "cancel": RequestAction(
        ("reason",),
        "Not cancelled: tick that the person asked for it.",
        lambda _: "Cancelled at the person's request: nothing is erased; they are told.",
    ),
}


async def act_on_request(request: web.Request, session: Session) -> web.Response:
    """Extend, deny or cancel a request (confirmed by a ticked box); the flash says what intake answered."""
    request_id, name = request.match_info["request_id"], request.match_info["action"]
    action = REQUEST_ACTIONS[name]
    posted = await request.post()
    back = f"/console/requests/{quote(request_id, safe='')}"
    if posted.get("confirm") != "yes":
        return redirect(f"{back}?{urlencode({'flash': action.unticked})}")
    path = f"/deletion_requests/{quote(request_id, safe='')}/{name}"
    body = {f: str(posted[f]).strip() for f in action.fields if str(posted.get(f, "")).strip()}
    code, answer = await request.app[CONSOLE].upstream.call("intake", "POST", path, session.token, json=body)
    flash = action.done(answer) if code == 202 else f"Refused ({code}): {(answer or {}).get('detail', '')}"
    return redirect(f"{back}?{urlencode({'flash': flash})}")


async def receipt(request: web.Request, _: Session) -> web.Response:
    console = request.app[CONSOLE]
    request_id = request.match_info["request_id"]
    signed = (
        await handlers.signed_receipt(
            console.audit_log, console.signer, request_id, datamap=console.datamap, now=console.clock()
        )
        if 1 <= len(request_id) <= 200
        else None
    )
    if signed is None:
        return web.Response(status=404, text="no audit entries for this request", headers=SECURITY_HEADERS)
    safe_name = "".join(c for c in request_id if c.isalnum() or c in "-_")
    return web.Response(
        text=json.dumps(signed, indent=2),
        content_type="application/json",
        headers=SECURITY_HEADERS | {"Content-Disposition": f'attachment; filename="receipt-{safe_name}.json"'},
    )


async def retention_page(request: web.Request, session: Session) -> web.Response:
    console = request.app[CONSOLE]
    (r_code, rules), (h_code, holds), trail = await asyncio.gather(
        console.upstream.call("intake", "GET", "/data_retention/rules", session.token),
        console.upstream.call(
            "intake", "GET", "/legal_holds", session.token, params={"active": "false", "limit": "100"}
        ),
        console.audit_log.matching(types=handlers.FAMILIES["retention"] + handlers.FAMILIES["legal_hold"]),
    )
    errors = [b.get("detail", f"intake answered {c}") for c, b in ((r_code, rules), (h_code, holds)) if c != 200]
    return console.render(
        "retention.html",
        session=session,
        rules=rules if r_code == 200 else None,
        holds=holds.get("holds", []) if h_code == 200 else [],
        trail=[_entry_view(e) for e in reversed(trail[-100:])],
        datasets=console.datamap.names if console.datamap else [],
        errors=errors,
        flash=request.query.get("flash"),
    )


def back_to_retention(code: int, body: Any, done: str) -> web.Response:
    flash = done if 200 <= code < 300 else f"Refused ({code}): {(body or {}).get('detail', '')}"
    return redirect(f"/console/retention?{urlencode({'flash': flash})}")


async def place_hold(request: web.Request, session: Session) -> web.Response:
    posted = await request.post()
    body = {
        "subject_id": str(posted.get("subject_id", "")).strip() or None,
        "datasets": [str(d) for d in posted.getall("datasets", [])],  # the form's checkboxes
        "reason": str(posted.get("reason", "")),
        "legal_basis": str(posted.get("legal_basis", "")),
        "legal_ref": str(posted.get("legal_ref", "")),
    }
    code, answer = await request.app[CONSOLE].upstream.call("intake", "POST", "/legal_holds", session.token, json=body)
    return back_to_retention(code, answer, f"Hold {(answer or {}).get('hold_id', '')} placed.")


async def release_hold(request: web.Request, session: Session) -> web.Response:
    hold_id = request.match_info["hold_id"]
    code, answer = await request.app[CONSOLE].upstream.call(
        "intake", "DELETE", f"/legal_holds/{quote(hold_id, safe='')}", session.token
    )
    return back_to_retention(code, answer, f"Hold {hold_id} released.")


async def change_rules(request: web.Request, session: Session) -> web.Response:
    posted = await request.post()
    version = str(posted.get("version", ""))
    patch: dict[str, Any]
    if posted.get("remove"):
        patch = {"remove": [str(posted["remove"])]}
    else:
        rule: dict[str, Any] = {
            "rule_id": str(posted.get("rule_id", "")).strip(),
            "datasets": [str(d) for d in posted.getall("datasets", [])],
            "legal_basis": str(posted.get("legal_basis", "")),
            "legal_ref": str(posted.get("legal_ref", "")),
            "description": str(posted.get("description", "")),
        }
        if expires := str(posted.get("expires_at", "")):
            rule["expires_at"] = f"{expires}T00:00:00+00:00"
        patch = {"rules": [rule]}
    code, answer = await request.app[CONSOLE].upstream.call(
        "intake", "PATCH", "/data_retention/rules", session.token, json=patch, headers={"If-Match": f'"{version}"'}
    )
    return back_to_retention(code, answer, f"Rules saved as version {(answer or {}).get('version', '?')}.")


async def health_page(request: web.Request, session: Session) -> web.Response:
    console = request.app[CONSOLE]

    async def readiness(name: str) -> dict[str, Any]:
        code, body = await console.upstream.call(name, "GET", "/readyz", None)
        return {"service": name, "ready": code == 200, "code": code, "checks": body}

    ready = list(await asyncio.gather(*(readiness(name) for name in console.upstream.urls)))
    ready.append({"service": "audit", "ready": True, "code": 200, "checks": {"status": "serving this page"}})
    (lag, dead, kafka_error), report = await asyncio.gather(
        console.read_lag(),
        handlers.verify_chain(console.audit_log, console.signer),
    )
    return console.render(
        "health.html",
        session=session,
        ready=ready,
        lag=lag,
        dead=dead,
        kafka_error=kafka_error,
        verification=report.as_json(),
    )


def add_console(
    app: web.Application,
    *,
    settings: AuditSettings,
    audit_log: AuditLog,
    signer: Signer,
    verifier: TokenVerifier,
    sessions: ConsoleSessions,
    upstream: Services,
    read_lag: ReadLag,
    datamap: DataMap | None,
    clock: Callable[[], datetime],
) -> None:
    app[CONSOLE] = Console(settings, audit_log, signer, verifier, sessions, upstream, read_lag, datamap, clock)
    app.router.add_get("/console", index)
    app.router.add_get("/console/login", login_page)
    app.router.add_post("/console/login", login)
    app.router.add_post("/console/logout", signed_in(logout, form=True))
    app.router.add_get("/console/requests", signed_in(requests_page))
    app.router.add_get("/console/requests/{request_id}", signed_in(request_page))
    app.router.add_get("/console/requests/{request_id}/receipt", signed_in(receipt))
    app.router.add_post("/console/requests/{request_id}/redeliver", signed_in(redeliver, form=True))
    app.router.add_post("/console/requests/{request_id}/processors/{dataset}", signed_in(answer_processor, form=True))
    app.router.add_post(
        "/console/requests/{request_id}/{action:extend|deny|cancel}", signed_in(act_on_request, form=True)
    )
    app.router.add_get("/console/retention", signed_in(retention_page))
    app.router.add_post("/console/retention/holds", signed_in(place_hold, form=True))
    app.router.add_post("/console/retention/holds/{hold_id}/release", signed_in(release_hold, form=True))
    app.router.add_post("/console/retention/rules", signed_in(change_rules, form=True))
    app.router.add_get("/console/health", signed_in(health_page))
