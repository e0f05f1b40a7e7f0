"""Denying and cancelling requests through the public API, with the five services as separate processes and a
cooling-off period of a few seconds: a denied request erases nothing and the person is mailed the basis, the
reference and where to complain; the acknowledgement mail's link cancels a request before the purge (nothing erased);
after the purge has the request, cancelling is refused with when erasure started. Integrators get
``data_deletion.denied`` and ``data_deletion.cancelled``; the audit log and the receipt say what happened."""

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from selenium.webdriver.common.by import By

from shared.auth import AUDIT_READ, DELETION_ANY, DELETION_SELF, REQUESTS_ADMIN
from tests.e2e.test_console import no_email_on, text_of
from tests.e2e.test_console import until as on_page
from tests.e2e.test_lifecycle import seed, stored
from tests.pipeline import Api, Pipeline, Servers, WebhookReceiver, running, token, until

pytestmark = pytest.mark.integration
# Long enough for a browser to act on a request in its window, short enough to wait out.
COOLING_OFF_S = 20


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher, tmp_path_factory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("actions")
    (workdir / "no-rules.yaml").write_text("rules: []\n")
    env = {"INTAKE_DEFAULT_RULES_PATH": str(workdir / "no-rules.yaml"), "INTAKE_COOLING_OFF_S": str(COOLING_OFF_S)}
    with running(Servers.of(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher), workdir, env) as p:
        yield p


@pytest_asyncio.fixture
async def api(pipeline) -> Any:
    async with Api.with_receiver(pipeline) as both:
        yield both


async def post(p: Pipeline, path: str, bearer: str | None = None, **kwargs: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with aiohttp.ClientSession() as http, http.post(p.url("intake") + path, headers=headers, **kwargs) as r:
        body = await r.json(content_type=None) if r.content_type.endswith("json") else await r.text()
        return r.status, body


async def start(a: Api, p: Pipeline, prefix: str) -> tuple[str, str]:
    [subject] = seed(p, f"{prefix}-{uuid.uuid4().hex[:6]}")
    status, body = await a.call("DELETE", "intake", f"/users/{subject}/data", DELETION_ANY)
    assert status == 202, body
    assert body["status"] == "received" and body["erasure_starts_at"] is not None
    return subject, str(body["request_id"])


async def mails(p: Pipeline, request_id: str, subject_starts: str) -> list[str]:
    async def found() -> list[str]:
        return [
            str(m.get_body(preferencelist=("plain",)).get_content())
            for m in p.mails_for(request_id)
            if str(m["Subject"]).startswith(subject_starts)
        ]

    return list(await until(found))


async def webhooks(receiver: WebhookReceiver, request_id: str, kind: str) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]]:
        return [payload for _, payload in receiver.for_request(request_id) if payload["type"] == kind]

    return list(await until(found))


async def still_there(p: Pipeline, subject: str) -> bool:
    """The person's account, read directly from MongoDB, untouched (not erased, not tagged)."""
    [account] = await stored(p, "accounts", {"user_id": subject})
    return "deletion" not in account and bool(account.get("email"))  # the purger tags with deletion.tagged_at


@pytest.mark.asyncio
async def test_a_denied_request_erases_nothing_and_the_person_is_told_why_and_where_to_complain(pipeline, api):
    a, integrator = api
    subject, request_id = await start(a, pipeline, "deny")
    path = f"/deletion_requests/{request_id}/deny"
    denial = {"legal_basis": "Art. 17(3)(e) GDPR: needed to defend a pending legal claim", "reference": "CASE-2026-41"}
    assert (await post(pipeline, path, token(DELETION_ANY), json=denial))[0] == 403  # requests:admin only
    status, body = await post(pipeline, path, token(REQUESTS_ADMIN), json={"reference": "x"})
    assert status == 422 and "legal_basis" in str(body)
    status, body = await post(pipeline, path, token(REQUESTS_ADMIN), json=denial)
    assert status == 202, body
    assert (body["status"], body["legal_ref"]) == ("denied", "Art. 17(3) and Art. 12(4) GDPR")
    assert (await post(pipeline, path, token(REQUESTS_ADMIN), json=denial))[0] == 202  # the same denial again
    assert (await post(pipeline, f"/deletion_requests/{request_id}/cancel", token(REQUESTS_ADMIN)))[0] == 409

    done = await a.wait_status(request_id, {"denied"})
    assert done["closure"]["reference"] == "CASE-2026-41" and "purging" not in done["stages"]
    [text] = await mails(pipeline, request_id, "Your request to erase your data was refused")
    assert "Nothing has been erased" in text and "CASE-2026-41" in text and denial["legal_basis"] in text
    assert "Art. 77 GDPR" in text
    [hook] = await webhooks(integrator, request_id, "data_deletion.denied")
    assert (hook["data"]["reference"], hook["data"]["legal_basis"]) == ("CASE-2026-41", denial["legal_basis"])

    await asyncio.sleep(COOLING_OFF_S + 3)  # past the window: the purger was never handed the request
    assert await still_there(pipeline, subject)
    types = [item["type"] for item in await a.audit_story(request_id)]
    assert "deletion.denied" in types and "deletion.requested" not in types and "deletion.purged" not in types
    document = (await a.receipt(request_id))["document"]
    assert (document["result"], document["closure"]["reference"]) == ("denied", "CASE-2026-41")


@pytest.mark.asyncio
async def test_the_acknowledgement_mails_link_cancels_the_request_before_the_purge_and_nothing_is_erased(pipeline, api):
    a, integrator = api
    subject, request_id = await start(a, pipeline, "cancel")
    [ack] = await mails(pipeline, request_id, "We received your request")
    link = re.search(r"(http\S+/cancel\?token=\S+)", ack)
    assert link is not None, ack
    # Opening the link only shows a form (mail scanners open links).
    async with aiohttp.ClientSession() as http:
        async with http.get(link.group(1)) as r:
            page = await r.text()
            assert r.status == 200 and 'name="token"' in page
        async with http.get(link.group(1)[:-2]) as forged:  # a damaged link shows why it does not work
            assert forged.status == 400 and "no longer works" in await forged.text()
    assert (await a.request(request_id))["status"] == "received"
    token_value = re.search(r'name="token" value="([^"]+)"', page)
    assert token_value is not None
    form = {"token": token_value.group(1), "reason": "I changed my mind"}
    status, body = await post(pipeline, f"/deletion_requests/{request_id}/cancel", data=form)
    assert status == 200 and "nothing was erased" in body

    done = await a.wait_status(request_id, {"cancelled"})
    assert (done["closure"]["via"], done["closure"]["reason"]) == ("link", "I changed my mind")
    [text] = await mails(pipeline, request_id, "Your request is cancelled")
    assert "Nothing has been erased" in text
    await webhooks(integrator, request_id, "data_deletion.cancelled")
    await asyncio.sleep(COOLING_OFF_S + 3)
    assert await still_there(pipeline, subject)
    types = [item["type"] for item in await a.audit_story(request_id)]
    assert "deletion.cancelled" in types and "deletion.requested" not in types
    # The person may ask again: a new request starts.
    again, body = await a.call("DELETE", "intake", f"/users/{subject}/data", DELETION_ANY)
    assert again == 202 and body["request_id"] != request_id


@pytest.mark.asyncio
async def test_once_the_purge_has_the_request_cancelling_is_refused_with_when_erasure_started(pipeline, api):
    a, _ = api
    subject, request_id = await start(a, pipeline, "late")
    own = token(DELETION_SELF, subject=subject)
    other = token(DELETION_SELF, subject="someone-else")
    path = f"/deletion_requests/{request_id}/cancel"
    assert (await post(pipeline, path, other, json={}))[0] == 404  # someone else's request: not even its existence
    await a.wait_status(request_id, {"purging", "keys_destroyed", "completed"}, timeout_s=COOLING_OFF_S + 60)
    status, body = await post(pipeline, path, own, json={"reason": "too late?"})
    assert status == 409, body
    assert "too late to cancel: erasure started at" in body["detail"]
    done = await a.wait_status(request_id, {"completed"})
    assert done["closure"] is None


def test_an_operator_extends_denies_and_cancels_requests_in_the_console_each_confirmed(pipeline, browser):
    driver = browser
    console = pipeline.url("audit") + "/console"
    driver.get(console + "/login")
    driver.find_element(By.ID, "token").send_keys(token(AUDIT_READ, DELETION_ANY, REQUESTS_ADMIN, subject="dpo"))
    driver.find_element(By.ID, "sign-in").click()
    on_page(driver, lambda: driver.current_url.endswith("/console/requests"), reload=False)

    async def two_requests() -> list[str]:
        async with aiohttp.ClientSession() as http:
            a = Api(pipeline, http)
            return [(await start(a, pipeline, prefix))[1] for prefix in ("c-deny", "c-cancel")]

    denied, cancelled = asyncio.run(two_requests())
    driver.get(f"{console}/requests/{denied}")
    assert text_of(driver, "status") == "received" and text_of(driver, "erasure-starts")
    extend = driver.find_element(By.ID, "extend")
    extend.find_element(By.NAME, "reason").send_keys("the claim's documents are being gathered")
    extend.find_element(By.NAME, "confirm").click()
    extend.find_element(By.TAG_NAME, "button").click()
    on_page(
        driver,
        lambda: "Extended: due" in text_of(driver, "flash") or "Extended: due" in driver.page_source,
        reload=False,
    )
    deny = driver.find_element(By.ID, "deny")
    deny.find_element(By.NAME, "legal_basis").send_keys("Art. 17(3)(e) GDPR: a pending legal claim")
    deny.find_element(By.NAME, "reference").send_keys("CASE-CONSOLE-9")
    deny.find_element(By.TAG_NAME, "button").click()  # not ticked: the browser does not send it
    assert text_of(driver, "status") == "received" and "Denied" not in driver.page_source
    driver.find_element(By.ID, "deny").find_element(By.NAME, "confirm").click()
    driver.find_element(By.ID, "deny").find_element(By.TAG_NAME, "button").click()
    on_page(driver, lambda: "Denied" in driver.page_source and "CASE-CONSOLE-9" in driver.page_source, reload=False)
    on_page(driver, lambda: text_of(driver, "status") == "denied")
    closure = text_of(driver, "closure")
    assert "CASE-CONSOLE-9" in closure and "Nothing was erased" in closure and "Art. 77 GDPR" in closure
    assert not driver.find_elements(By.ID, "deny") and not driver.find_elements(By.ID, "cancel")
    no_email_on("request", driver)

    driver.get(f"{console}/requests/{cancelled}")
    cancel = driver.find_element(By.ID, "cancel")
    cancel.find_element(By.NAME, "reason").send_keys("asked by phone, ticket 88")
    cancel.find_element(By.NAME, "confirm").click()
    cancel.find_element(By.TAG_NAME, "button").click()
    on_page(driver, lambda: "Cancelled at the person's request" in driver.page_source, reload=False)
    on_page(driver, lambda: text_of(driver, "status") == "cancelled")
    assert "ticket 88" in text_of(driver, "closure")


@pytest.mark.asyncio
async def test_an_authorised_agents_request_records_the_agent_and_every_notice_goes_to_the_agent_too(pipeline, api):
    a, _ = api
    [subject] = seed(pipeline, f"agent-{uuid.uuid4().hex[:6]}")
    agent = {"name": "Privacy Helpers Ltd", "email": "agent@helpers.example", "proof_ref": "POA-2026-0042"}
    status, body = await a.call(
        "DELETE", "intake", f"/users/{subject}/data", DELETION_ANY, json={"agent": agent | {"email": "nope"}}
    )
    assert status == 422 and "body.agent.email" in str(body)
    status, body = await a.call("DELETE", "intake", f"/users/{subject}/data", DELETION_ANY, json={"agent": agent})
    assert status == 202, body
    request_id = body["request_id"]
    assert body["agent"] == {"name": "Privacy Helpers Ltd", "proof_ref": "POA-2026-0042"}  # no address shown

    async def copied(subject_starts: str) -> Any:
        found = [m for m in pipeline.mails_for(request_id) if str(m["Subject"]).startswith(subject_starts)]
        return found[0] if found else None

    ack = await until(lambda: copied("We received your request"))
    assert ack["Cc"] == "agent@helpers.example" and ack["To"] != ack["Cc"]
    await a.wait_status(request_id, {"completed"}, timeout_s=COOLING_OFF_S + 90)
    final = await until(lambda: copied("Your data has been erased"))
    assert (final["To"], final["Cc"]) == (ack["To"], "agent@helpers.example")
    [asked] = [e for e in await a.audit_story(request_id) if e["type"] == "deletion.requested"]
    assert "POA-2026-0042" in json.dumps(asked) and "agent@helpers.example" not in json.dumps(asked)
