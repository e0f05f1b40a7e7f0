"""The console's pages in process, over the in-memory sessions, services and audit log (no server, no browser):
signing in and out, the cookie, the CSRF check, and pages drawn from what the other services answer."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from services.audit import console
from services.audit.adapters.memory import InMemoryAuditLog, InMemoryConsoleSessions, InMemoryServices
from services.audit.model import Session
from services.audit.ports import LagReport
from services.audit.settings import AuditSettings
from shared.auth import AUDIT_READ, TokenVerifier, issue_token
from shared.events import utcnow
from shared.settings import AuthSettings
from shared.signing import Signer

pytestmark = pytest.mark.asyncio
AUTH = AuthSettings(jwt_secret=SecretStr("unit-test-secret-of-at-least-32-bytes!"))
SIGNER = Signer.from_seed_b64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
LAG: LagReport = (
    [{"group": "lethe-purger", "topic": "deletion.requested", "lag": 3}],
    {"deletion.requested.dlq": 0},
    None,
)


@dataclass
class ConsolePage:
    """The console app under a test client, and the fakes behind it."""

    client: TestClient
    sessions: InMemoryConsoleSessions
    services: InMemoryServices

    async def sign_in(self, *, hours: float = 1) -> str:
        """A session kept as signing in would keep it; its id, also set as the browser's cookie."""
        session = Session(
            "operator-token", "form-csrf", "ops-1", frozenset({AUDIT_READ}), utcnow() + timedelta(hours=hours)
        )
        session_id = await self.sessions.create(session)
        self.client.session.cookie_jar.update_cookies({console.COOKIE: session_id})
        return session_id


@pytest_asyncio.fixture
async def page() -> AsyncIterator[ConsolePage]:
    sessions, services = InMemoryConsoleSessions(), InMemoryServices()

    async def read_lag() -> LagReport:
        return LAG

    app = web.Application()
    console.add_console(
        app,
        settings=AuditSettings(auth=AUTH),
        audit_log=InMemoryAuditLog(),
        signer=SIGNER,
        verifier=TokenVerifier(AUTH),
        sessions=sessions,
        upstream=services,
        read_lag=read_lag,
        datamap=None,
        clock=utcnow,
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield ConsolePage(client, sessions, services)
    finally:
        await client.close()


async def test_a_visitor_without_a_live_session_is_sent_to_sign_in(page):
    response = await page.client.get("/console/requests", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/console/login")
    await page.sign_in(hours=-1)
    response = await page.client.get("/console/requests", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/console/login")
    assert page.sessions.sessions == {}  # the expired session was looked up, and dropped
    assert page.services.calls == []


async def test_signing_in_keeps_the_token_server_side_and_gives_the_browser_a_strict_cookie(page):
    form = await page.client.get("/console/login")
    assert form.status == 200
    login_csrf = form.cookies[console.LOGIN_COOKIE].value
    token = issue_token(AUTH, subject="ops-1", scopes=[AUDIT_READ], ttl=timedelta(hours=1))
    response = await page.client.post(
        "/console/login", data={"csrf": login_csrf, "token": token}, allow_redirects=False
    )
    assert (response.status, response.headers["Location"]) == (303, "/console/requests")
    cookie = response.cookies[console.COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console"
    assert token not in cookie.value
    [kept] = page.sessions.sessions.values()
    assert (kept.token, kept.operator) == (token, "ops-1")


async def test_signing_in_without_the_forms_csrf_token_is_refused(page):
    token = issue_token(AUTH, subject="ops-1", scopes=[AUDIT_READ], ttl=timedelta(hours=1))
    response = await page.client.post("/console/login", data={"csrf": "guessed", "token": token})
    assert response.status == 403
    assert page.sessions.sessions == {}


async def test_the_requests_page_shows_what_intake_answers_to_the_operators_own_token(page):
    await page.sign_in()
    now = utcnow()
    item = {
        "request_id": "req-42",
        "subject_id": "subj-7",
        "status": "purging",
        "channel": "api",
        "created_at": now.isoformat(),
        "deadline_at": (now + timedelta(days=30)).isoformat(),
        "stages": {},
    }
    page.services.answer("intake", "GET", "/deletion_requests", 200, {"items": [item], "next_offset": 25})
    response = await page.client.get("/console/requests?status=purging")
    html = await response.text()
    assert response.status == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    assert 'href="/console/requests/req-42"' in html and "subj-7" in html and "left</span>" in html
    assert 'href="/console/requests?status=purging&amp;offset=25"' in html
    [(service, method, path, token, kwargs)] = page.services.calls
    assert (service, method, path, token) == ("intake", "GET", "/deletion_requests", "operator-token")
    assert kwargs == {"params": {"limit": "25", "offset": "0", "status": "purging"}}


async def test_the_requests_page_shows_why_intake_refused(page):
    await page.sign_in()
    page.services.answer("intake", "GET", "/deletion_requests", 403, {"detail": "the token lacks deletion:any"})
    html = await (await page.client.get("/console/requests")).text()
    assert '<div class="error">the token lacks deletion:any</div>' in html
    assert "No requests match." in html


async def test_the_health_page_asks_every_service_and_shows_kafkas_lag(page):
    await page.sign_in()
    page.services.answer("intake", "GET", "/readyz", 200, {"status": "ready"})
    page.services.answer("purger", "GET", "/readyz", 503, {"status": "not ready"})
    html = await (await page.client.get("/console/health")).text()
    assert sorted(call[0] for call in page.services.calls) == ["intake", "keyvault", "notifier", "purger"]
    assert all(call[3] is None for call in page.services.calls)  # readiness is asked without the operator's token
    assert "not ready (503)" in html and "not ready (404)" in html
    assert "lethe-purger" in html and "deletion.requested.dlq" in html


async def test_signing_out_needs_the_sessions_csrf_token_and_forgets_the_session(page):
    await page.sign_in()
    refused = await page.client.post("/console/logout", data={"csrf": "wrong"}, allow_redirects=False)
    assert refused.status == 403
    assert len(page.sessions.sessions) == 1
    response = await page.client.post("/console/logout", data={"csrf": "form-csrf"}, allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/console/login")
    assert page.sessions.sessions == {}


def awaiting_request() -> dict[str, object]:
    now = utcnow()
    return {
        "request_id": "req-7",
        "subject_id": "subj-7",
        "status": "awaiting_confirmation",
        "result": "pending",
        "channel": "api",
        "created_at": now.isoformat(),
        "deadline_at": (now + timedelta(days=30)).isoformat(),
        "backups_purged_by": (now + timedelta(days=90)).isoformat(),
        "stages": {"received": now.isoformat()},
        "outcomes": [{"dataset": "newsletter", "store": "processor", "outcome": "pending_confirmation", "counts": {}}],
        "keys": {"destroyed": [], "retained": []},
        "hard_deleted": {},
        "awaiting_confirmation": ["newsletter"],
    }


async def test_a_request_awaiting_a_processor_offers_to_answer_for_it_and_needs_the_tick(page):
    await page.sign_in()
    page.services.answer("intake", "GET", "/deletion_requests/req-7", 200, awaiting_request())
    html = await (await page.client.get("/console/requests/req-7")).text()
    assert 'action="/console/requests/req-7/processors/newsletter"' in html and 'name="note" required' in html

    path = "/deletion_requests/req-7/processors/newsletter/confirmation"
    page.services.answer("intake", "POST", path, 202, {"outcome": "erased"})
    form = {"csrf": "form-csrf", "outcome": "erased", "note": "ticket 4711"}
    unticked = await page.client.post("/console/requests/req-7/processors/newsletter", data=form, allow_redirects=False)
    assert "tick" in unticked.headers["Location"]
    assert not [c for c in page.services.calls if c[1] == "POST"]  # nothing sent without the tick

    ticked = await page.client.post(
        "/console/requests/req-7/processors/newsletter", data=form | {"confirm": "yes"}, allow_redirects=False
    )
    assert "recorded" in ticked.headers["Location"]
    [(service, _, sent_path, token, kwargs)] = [c for c in page.services.calls if c[1] == "POST"]
    assert (service, sent_path, token) == ("intake", path, "operator-token")
    assert kwargs["json"] == {"outcome": "erased", "note": "ticket 4711"}


async def test_an_open_request_can_be_extended_with_a_reason_once_the_tick_says_the_person_is_told(page):
    await page.sign_in()
    page.services.answer("intake", "GET", "/deletion_requests/req-7", 200, awaiting_request())
    html = await (await page.client.get("/console/requests/req-7")).text()
    assert 'action="/console/requests/req-7/extend"' in html and 'name="reason" required' in html
    page.services.answer(
        "intake",
        "POST",
        "/deletion_requests/req-7/extend",
        202,
        {"deadline_at": "2026-05-01T00:00:00+00:00", "legal_ref": "Art. 12(3) GDPR"},
    )
    form = {"csrf": "form-csrf", "reason": "the archive is being restored"}
    unticked = await page.client.post("/console/requests/req-7/extend", data=form, allow_redirects=False)
    assert "tick" in unticked.headers["Location"] and not [c for c in page.services.calls if c[1] == "POST"]
    ticked = await page.client.post(
        "/console/requests/req-7/extend", data=form | {"confirm": "yes"}, allow_redirects=False
    )
    assert "2026-05-01" in ticked.headers["Location"]
    [(_, _, path, token, kwargs)] = [c for c in page.services.calls if c[1] == "POST"]
    assert (path, token, kwargs["json"]) == (
        "/deletion_requests/req-7/extend",
        "operator-token",
        {"reason": "the archive is being restored"},
    )


def cooling_off_request() -> dict[str, object]:
    now = utcnow()
    return awaiting_request() | {
        "status": "received",
        "result": None,
        "outcomes": [],
        "awaiting_confirmation": [],
        "erasure_starts_at": (now + timedelta(hours=1)).isoformat(),
    }


async def test_a_request_in_its_cooling_off_period_can_be_denied_or_cancelled_each_confirmed_by_its_tick(page):
    await page.sign_in()
    page.services.answer("intake", "GET", "/deletion_requests/req-7", 200, cooling_off_request())
    html = await (await page.client.get("/console/requests/req-7")).text()
    assert 'action="/console/requests/req-7/deny"' in html and 'name="legal_basis" required' in html
    assert 'action="/console/requests/req-7/cancel"' in html and 'id="erasure-starts"' in html
    page.services.answer(
        "intake",
        "POST",
        "/deletion_requests/req-7/deny",
        202,
        {"legal_ref": "Art. 17(3) and Art. 12(4) GDPR", "reference": "CASE-17"},
    )
    form = {"csrf": "form-csrf", "legal_basis": "Art. 17(3)(e): legal claim", "reference": "CASE-17"}
    unticked = await page.client.post("/console/requests/req-7/deny", data=form, allow_redirects=False)
    assert "tick" in unticked.headers["Location"] and not [c for c in page.services.calls if c[1] == "POST"]
    ticked = await page.client.post(
        "/console/requests/req-7/deny", data=form | {"confirm": "yes"}, allow_redirects=False
    )
    assert "CASE-17" in ticked.headers["Location"] and "Denied" in ticked.headers["Location"]
    [(_, _, path, _, kwargs)] = [c for c in page.services.calls if c[1] == "POST"]
    sent = {"legal_basis": "Art. 17(3)(e): legal claim", "reference": "CASE-17"}
    assert (path, kwargs["json"]) == ("/deletion_requests/req-7/deny", sent)
    page.services.answer("intake", "POST", "/deletion_requests/req-7/cancel", 409, {"detail": "too late to cancel"})
    refused = await page.client.post(
        "/console/requests/req-7/cancel",
        data={"csrf": "form-csrf", "reason": "", "confirm": "yes"},
        allow_redirects=False,
    )
    assert "409" in refused.headers["Location"] and "too+late" in refused.headers["Location"]
    assert [c for c in page.services.calls if c[1] == "POST"][-1][4]["json"] == {}  # an empty reason is left out


async def test_a_denied_request_shows_why_and_offers_no_action(page):
    await page.sign_in()
    closure = {
        "status": "denied",
        "at": utcnow().isoformat(),
        "by": "dpo",
        "via": "operator",
        "legal_basis": "Art. 17(3)(e): legal claim",
        "reference": "CASE-17",
        "legal_ref": "Art. 17(3) and Art. 12(4) GDPR",
        "complaint": "the right to lodge a complaint (Art. 77 GDPR)",
    }
    page.services.answer(
        "intake",
        "GET",
        "/deletion_requests/req-7",
        200,
        cooling_off_request() | {"status": "denied", "closure": closure},
    )
    html = await (await page.client.get("/console/requests/req-7")).text()
    assert 'id="closure"' in html and "CASE-17" in html and "Art. 77 GDPR" in html and "Nothing was erased" in html
    assert "/deny" not in html and "/cancel" not in html and "/extend" not in html
