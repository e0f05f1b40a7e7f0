"""A processor that lethe cannot reach itself, through the five services as separate processes: it receives a
signed erasure request, the request waits in ``awaiting_confirmation`` (and the deadline watch warns about it),
and the processor's signed answer completes it; a forged answer is refused and changes nothing; an operator may
answer for it with a note. The receipt lists the processor and when it answered."""

import asyncio
import base64
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from standardwebhooks.webhooks import Webhook

from shared.auth import AUDIT_READ, DELETION_ANY, REQUESTS_ADMIN
from tests.pipeline import ROOT, Api, Pipeline, Servers, WebhookReceiver, running, token, until

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
SECRET_ENV = "LETHE_TEST_PROCESSOR_SECRET"


async def answer(asked: dict[str, Any], outcome: str, *, secret: str = SECRET, **extra: Any) -> int:
    """The processor's answer, signed as its integration would sign it, POSTed to the confirm URL lethe named in its
    erasure request; the status intake answered."""
    data = asked["data"]
    body = json.dumps({"request_id": data["request_id"], "dataset": data["dataset"], "outcome": outcome, **extra})
    message_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
    }
    async with aiohttp.ClientSession() as http, http.post(data["confirm_url"], data=body, headers=headers) as r:
        return r.status


# The processor's endpoint: it verifies lethe's signed erasure requests with its secret, as an integrator does.
RECEIVER = WebhookReceiver()
RECEIVER.secret = SECRET


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher, tmp_path_factory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("processors")
    shipped = yaml.safe_load((ROOT / "deploy" / "datamap.yaml").read_text())
    newsletter = {
        "name": "newsletter",
        "description": "The mailing list, kept by a mailing processor",
        "store": "processor",
        "processor": {"name": "Mailer Ltd", "endpoint": RECEIVER.url, "secret_env": SECRET_ENV},
    }
    (workdir / "datamap.yaml").write_text(yaml.safe_dump({"datasets": [*shipped["datasets"], newsletter]}))
    (workdir / "no-rules.yaml").write_text("rules: []\n")
    env = {
        f"{name}_DATAMAP_PATH": str(workdir / "datamap.yaml") for name in ("INTAKE", "PURGER", "KEYVAULT", "NOTIFIER")
    }
    env |= {
        "AUDIT_DATAMAP_PATH": str(workdir / "datamap.yaml"),
        "LETHE_DATAMAP_PATH": str(workdir / "datamap.yaml"),
        SECRET_ENV: SECRET,
        "INTAKE_DEFAULT_RULES_PATH": str(workdir / "no-rules.yaml"),
        # A one-day deadline whose warning is due after about nine seconds, checked every second.
        "INTAKE_DEADLINE_DAYS": "1",
        "INTAKE_DEADLINE_WARN_FRACTION": "0.0001",
        "INTAKE_DEADLINE_WATCH_INTERVAL_S": "1",
    }
    servers = Servers.of(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher)
    with running(servers, workdir, env) as p:
        yield p


@pytest_asyncio.fixture
async def api(pipeline) -> Any:
    async with RECEIVER, Api.with_receiver(pipeline) as both:
        yield both


async def delete(api: Api, p: Pipeline, prefix: str) -> str:
    done = p.cli("seed", "--users", "1", "--prefix", prefix)
    assert done.returncode == 0, done.stdout + done.stderr
    status, body = await api.call("DELETE", "intake", f"/users/{prefix}-000001/data", DELETION_ANY)
    assert status == 202, body
    return str(body["request_id"])


async def request(api: Api, request_id: str) -> dict[str, Any]:
    status, body = await api.call("GET", "intake", f"/deletion_requests/{request_id}", DELETION_ANY)
    assert status == 200, body
    return dict(body)


async def test_the_request_waits_for_the_processor_whose_signed_answer_completes_it(api, pipeline):
    api, integrator = api
    request_id = await delete(api, pipeline, f"proc-{uuid.uuid4().hex[:6]}")

    async def asked() -> Any:
        return next((payload for _, payload in RECEIVER.for_request(request_id)), None)

    erasure = await until(asked)
    assert erasure["type"] == "data_deletion.erasure_requested" and erasure["data"]["dataset"] == "newsletter"
    waiting = await until(lambda: _with_status(api, request_id, "awaiting_confirmation"))
    assert waiting["awaiting_confirmation"] == ["newsletter"] and waiting["result"] == "pending"

    # The deadline watch warns about a request still waiting (integrators get data_deletion.overdue).
    async def warned() -> Any:
        return [p for _, p in integrator.for_request(request_id) if p["type"] == "data_deletion.overdue"]

    await until(warned, timeout_s=90)
    assert not [p for _, p in integrator.for_request(request_id) if p["type"] == "data_deletion.completed"]

    # A forged answer (another secret) is refused and changes nothing.
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    assert await answer(erasure, "erased", secret=other) == 401
    await asyncio.sleep(2)
    assert (await request(api, request_id))["status"] == "awaiting_confirmation"

    assert await answer(erasure, "erased") == 202
    done = await until(lambda: _with_status(api, request_id, "completed"))
    assert await answer(erasure, "refused", reason="changed our mind") == 409  # it waits for nothing now
    newsletter = next(o for o in done["outcomes"] if o["dataset"] == "newsletter")
    assert (newsletter["outcome"], newsletter["confirmed_via"]) == ("erased", "processor")
    completed = [p for _, p in integrator.for_request(request_id) if p["type"] == "data_deletion.completed"]
    assert len(completed) == 1

    status, receipt = await api.call("GET", "audit", f"/audit/receipts/{request_id}", AUDIT_READ)
    assert status == 200, receipt
    document = receipt.get("document", receipt)
    [processor] = document["processors"]
    assert (processor["dataset"], processor["outcome"], processor["confirmed_via"]) == (
        "newsletter",
        "erased",
        "processor",
    )
    assert processor["confirmed_at"]


async def test_an_operator_answers_for_a_processor_with_a_note(api, pipeline):
    api, _ = api
    request_id = await delete(api, pipeline, f"proc-{uuid.uuid4().hex[:6]}")
    await until(lambda: _with_status(api, request_id, "awaiting_confirmation"))
    path = f"/deletion_requests/{request_id}/processors/newsletter/confirmation"
    answer = {"outcome": "refused", "note": "Mailer Ltd keeps the list under a court order (ticket 4711)"}
    async with aiohttp.ClientSession() as http:
        without = {"Authorization": f"Bearer {token(DELETION_ANY)}"}
        async with http.post(pipeline.url("intake") + path, json=answer, headers=without) as r:
            assert r.status == 403  # requests:admin only
        with_scope = {"Authorization": f"Bearer {token(REQUESTS_ADMIN)}"}
        async with http.post(pipeline.url("intake") + path, json={"outcome": "erased"}, headers=with_scope) as r:
            assert r.status == 422 and "note" in (await r.text())
        async with http.post(pipeline.url("intake") + path, json=answer, headers=with_scope) as r:
            assert r.status == 202, await r.text()
    done = await until(lambda: _with_status(api, request_id, "partial"))
    newsletter = next(o for o in done["outcomes"] if o["dataset"] == "newsletter")
    assert (newsletter["outcome"], newsletter["confirmed_via"], newsletter["note"]) == (
        "refused",
        "operator",
        answer["note"],
    )


async def _with_status(api: Api, request_id: str, status: str) -> dict[str, Any] | None:
    body = await request(api, request_id)
    return body if body["status"] == status else None


async def test_an_operator_extends_a_waiting_request_and_the_person_and_integrators_are_told(api, pipeline):
    api, integrator = api
    request_id = await delete(api, pipeline, f"ext-{uuid.uuid4().hex[:6]}")
    waiting = await until(lambda: _with_status(api, request_id, "awaiting_confirmation"))
    before = datetime.fromisoformat(waiting["deadline_at"])
    path = f"/deletion_requests/{request_id}/extend"
    reason = "Mailer Ltd restores its archive before erasing"
    async with aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {token(REQUESTS_ADMIN)}"}
        async with http.post(pipeline.url("intake") + path, json={"reason": reason}, headers=admin) as r:
            assert r.status == 202, await r.text()
            extended = await r.json()
        assert (extended["jurisdiction"], extended["legal_ref"]) == ("gdpr", "Art. 12(3) GDPR")
        assert datetime.fromisoformat(extended["deadline_at"]) > before
        async with http.post(pipeline.url("intake") + path, json={"reason": "again"}, headers=admin) as r:
            assert r.status in (202, 409)  # the same extension (not folded yet), or refused: GDPR allows one

    async def moved() -> Any:
        body = await request(api, request_id)
        return body if body["extensions"] == 1 else None

    now = await moved() or await until(moved)
    assert now["deadline_at"] == extended["deadline_at"] and now["extension_reason"] == reason
    async with aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {token(REQUESTS_ADMIN)}"}
        async with http.post(pipeline.url("intake") + path, json={"reason": "again"}, headers=admin) as r:
            assert r.status == 409 and "1 extension" in (await r.json())["detail"]

    async def announced() -> Any:
        return [p for _, p in integrator.for_request(request_id) if p["type"] == "data_deletion.extended"]

    [webhook] = await until(announced)
    assert webhook["data"]["reason"] == reason

    async def mailed() -> Any:
        return [m for m in pipeline.mails_for(request_id) if "more time" in str(m["Subject"])]

    [mail] = await until(mailed)
    text = str(mail.get_body(preferencelist=("plain",)).get_content())
    assert reason in text and "Art. 12(3) GDPR" in text and extended["deadline_at"][:10] in text
