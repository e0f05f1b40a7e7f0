"""A deletion's whole life through lethe's public APIs, with the five services as separate processes.

Seeded people are deleted through intake; an integrator's receiver on loopback verifies every webhook with
standardwebhooks; the person's mail is read from the SMTP catcher; `lethe verify-erasure`, `lethe purge --now` and
`lethe backup` run as an operator would run them. The pipeline starts with no retention rules, so what is kept is
kept by the legal hold a test places.
"""

import asyncio
import email
import email.policy
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from shared.auth import DELETION_ANY, KEYS_USE
from shared.datamap import load_datamap
from shared.keyvault_client import KeyUnavailableError, KeyvaultClient
from shared.mongo import create_mongo_client
from shared.settings import MongoSettings
from shared.signing import verify_document
from tests.pipeline import ROOT, Api, Pipeline, Servers, WebhookReceiver, running, token

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
DATAMAP = load_datamap(ROOT / "deploy" / "datamap.yaml")
STORY = ["deletion.requested", "deletion.purged", "deletion.keys_destroyed", "deletion.notified"]


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher, tmp_path_factory) -> Iterator[Pipeline]:
    workdir = tmp_path_factory.mktemp("lifecycle")
    (workdir / "no-rules.yaml").write_text("rules: []\n")
    servers = Servers.of(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher)
    with running(servers, workdir, {"INTAKE_DEFAULT_RULES_PATH": str(workdir / "no-rules.yaml")}) as p:
        yield p


@pytest_asyncio.fixture
async def api(pipeline) -> Any:
    async with Api.with_receiver(pipeline) as both:
        yield both


def seed(p: Pipeline, prefix: str, users: int = 1) -> list[str]:
    done = p.cli("seed", "--users", str(users), "--prefix", prefix)
    assert done.returncode == 0, done.stdout + done.stderr
    return [f"{prefix}-{n:06d}" for n in range(1, users + 1)]


async def stored(p: Pipeline, collection: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    """What a store holds (read directly, as an auditor would, not through lethe)."""
    client = create_mongo_client(MongoSettings(url=p.servers.mongo_url))
    try:
        return await client[p.database][collection].find(query).to_list()
    finally:
        await client.close()


async def one_webhook(receiver: WebhookReceiver, request_id: str, kind: str, count: int = 1) -> list[dict[str, Any]]:
    async with asyncio.timeout(60):
        while len(receiver.for_request(request_id)) < count:
            await asyncio.sleep(0.2)
    await asyncio.sleep(1)  # a duplicate would arrive within the retry schedule's first steps
    got = receiver.for_request(request_id)
    assert len({wid for wid, _ in got}) == count, got
    assert got[-1][1]["type"] == kind
    return [payload for _, payload in got]


async def the_mail(p: Pipeline, request_id: str, count: int = 1) -> str:
    async with asyncio.timeout(60):
        while len(p.mails_for(request_id)) < count:
            await asyncio.sleep(0.2)
    mails = p.mails_for(request_id)
    assert len(mails) == count
    return str(mails[-1].get_body(preferencelist=("plain",)).get_content())


def outcomes(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["dataset"]: o for o in body["outcomes"]}


async def whole_story(api: Api, request_id: str, expected: list[str]) -> None:
    """The audit log tells the request's story, each step once, and the chain holds."""
    types = [item["type"] for item in await api.audit_story(request_id)]
    for kind in expected:
        assert types.count(kind) == 1, (kind, types)
    assert (await api.audit_verify())["status"] == "ok"


def verify_erasure(p: Pipeline, subject: str) -> dict[str, Any]:
    """`lethe verify-erasure`, after the nightly job: tagged records count as remaining until it has run."""
    purged = p.cli("purge", "--now", "--pause", "0")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    done = p.cli("verify-erasure", subject, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


async def test_a_deletion_completes_with_one_webhook_a_mail_a_full_receipt_and_nothing_left(pipeline, api):
    a, receiver = api
    [subject] = seed(pipeline, f"life-{uuid.uuid4().hex[:6]}")
    [profile] = await stored(pipeline, "profiles", {"user_id": subject})
    aggregates = await stored(pipeline, "api_usage_daily", {})
    assert aggregates

    request_id = await a.delete(subject)
    body = await a.wait_status(request_id, {"completed"})

    [payload] = await one_webhook(receiver, request_id, "data_deletion.completed")
    assert payload["data"]["subject_id"] == subject
    text = await the_mail(pipeline, request_id)
    assert "erased" in text.lower()
    assert set(outcomes(body)) == {d.name for d in DATAMAP.datasets}
    signed = await a.receipt(request_id)
    _, key = await a.call("GET", "audit", "/audit/public_key", None)
    assert verify_document(signed, key["public_key"])
    assert {d["dataset"] for d in signed["document"]["datasets"]} == {d.name for d in DATAMAP.datasets}
    findings = verify_erasure(pipeline, subject)
    assert findings["clean"] is True, findings
    async with KeyvaultClient(pipeline.url("keyvault"), token=token(KEYS_USE)) as kv:
        with pytest.raises(KeyUnavailableError):
            await kv.decrypt(subject, "profiles", profile["display_name"])
    assert await stored(pipeline, "api_usage_daily", {}) == aggregates
    await whole_story(a, request_id, [*STORY, "deletion.keys_shredded"])


async def test_a_ccpa_request_has_its_45_days_an_acknowledgement_mail_and_a_receipt_naming_the_law(pipeline, api):
    a, _ = api
    [subject] = seed(pipeline, f"ccpa-{uuid.uuid4().hex[:6]}")
    status, body = await a.call("DELETE", "intake", f"/users/{subject}/data?jurisdiction=ccpa", DELETION_ANY)
    assert status == 202, body
    request_id = body["request_id"]
    created = datetime.fromisoformat(body["created_at"])
    assert body["jurisdiction"] == "ccpa"
    assert datetime.fromisoformat(body["deadline_at"]) - created == timedelta(days=45)
    done = await a.wait_status(request_id, {"completed"})
    assert done["acknowledged_at"] is not None
    assert datetime.fromisoformat(done["acknowledged_at"]) <= datetime.fromisoformat(done["acknowledge_by"])
    await the_mail(pipeline, request_id, count=2)  # the acknowledgement, then the final notice
    [ack] = [m for m in pipeline.mails_for(request_id) if m["Subject"].startswith("We received your request")]
    text = str(ack.get_body(preferencelist=("plain",)).get_content())
    assert "California Consumer Privacy Act" in text and request_id in text
    signed = await a.receipt(request_id)
    assert signed["document"]["jurisdiction"] == "ccpa"


async def test_a_legal_hold_keeps_invoices_until_it_is_released_and_the_receipt_follows(pipeline, api):
    a, receiver = api
    [subject] = seed(pipeline, f"hold-{uuid.uuid4().hex[:6]}")
    hold_id = await a.place_hold(subject, "invoices", legal_ref="case 2026-117")

    request_id = await a.delete(subject)
    body = await a.wait_status(request_id, {"partial"})
    kept = outcomes(body)["invoices"]
    assert kept["outcome"] == "retained" and kept["legal_ref"] == "case 2026-117"
    await one_webhook(receiver, request_id, "data_deletion.partial")
    text = await the_mail(pipeline, request_id)
    assert "invoices" in text and "case 2026-117" in text
    assert await stored(pipeline, "invoices", {"customer_id": subject})
    before = await a.receipt(request_id)
    assert {d["dataset"]: d["outcome"] for d in before["document"]["datasets"]}["invoices"] == "retained"

    await a.release_hold(hold_id)
    async with asyncio.timeout(60):
        while await stored(pipeline, "invoices", {"customer_id": subject}):
            await asyncio.sleep(0.3)
        while outcomes(await a.request(request_id))["invoices"]["outcome"] != "erased":
            await asyncio.sleep(0.3)
        while {d["dataset"]: d["outcome"] for d in (await a.receipt(request_id))["document"]["datasets"]}[
            "invoices"
        ] != "erased":
            await asyncio.sleep(0.3)
    assert verify_erasure(pipeline, subject)["clean"] is True
    # The integrator hears of the follow-up (a second message, its own id); the person was told once, and the
    # address was shredded with that notice.
    await one_webhook(receiver, request_id, "data_deletion.completed", count=2)
    assert len(pipeline.mails_for(request_id)) == 1
    await whole_story(a, request_id, ["deletion.requested"])
    types = [i["type"] for i in await a.audit_story(request_id)]
    for step in ("deletion.purged", "deletion.keys_destroyed", "deletion.notified"):
        assert types.count(step) == 2, types  # the first round, and the follow-up after the release


async def test_the_email_channel_starts_a_deletion_from_the_link_in_the_mail(pipeline, api):
    a, receiver = api
    [subject] = seed(pipeline, f"mail-{uuid.uuid4().hex[:6]}")
    [account] = await stored(pipeline, "accounts", {"user_id": subject})
    async with KeyvaultClient(pipeline.url("keyvault"), token=token(KEYS_USE)) as kv:
        address = (await kv.decrypt(subject, "accounts", account["email"])).decode()

    seen = set(pipeline.servers.mail_dir.glob("*.eml"))
    status, _ = await a.call("POST", "intake", "/deletion_requests", None, json={"email": address})
    assert status == 202
    async with asyncio.timeout(60):
        while not (mail := [m for m in pipeline.servers.mail_dir.glob("*.eml") if m not in seen]):
            await asyncio.sleep(0.2)
    [message] = [email.message_from_bytes(m.read_bytes(), policy=email.policy.default) for m in mail]
    assert message["To"] == address
    text = message.get_body(preferencelist=("plain",)).get_content()
    link = re.search(r"(http://\S+/deletion_requests/verify\?token=\S+)", text).group(1)
    async with a.http.get(link) as page:  # the confirmation form; following the link starts nothing
        form = await page.text()
        assert page.status == 200 and "<form" in form
    link_token = re.search(r'name="token" value="([^"]+)"', form).group(1)
    async with a.http.post(
        f"{pipeline.url('intake')}/deletion_requests/verify", data={"token": link_token}
    ) as confirmed:
        assert confirmed.status in (200, 202), await confirmed.text()
        request_id = re.search(r"req_[0-9a-f]+", await confirmed.text()).group(0)

    await a.wait_status(request_id, {"completed"})
    await one_webhook(receiver, request_id, "data_deletion.completed")
    assert "erased" in (await the_mail(pipeline, request_id)).lower()
    assert verify_erasure(pipeline, subject)["clean"] is True
    await whole_story(a, request_id, STORY)


async def test_the_nightly_purge_and_backup_expiry_bring_a_request_to_erased(pipeline, api):
    a, _ = api
    [subject] = seed(pipeline, f"night-{uuid.uuid4().hex[:6]}")
    made = pipeline.cli("backup")
    assert made.returncode == 0, made.stdout + made.stderr
    request_id = await a.delete(subject)
    body = await a.wait_status(request_id, {"completed"})
    assert {d for d, o in outcomes(body).items() if o["outcome"] == "tagged"} == {
        "accounts",
        "usage_logs",
        "chat_messages",
    }
    assert await stored(pipeline, "chat_messages", {"author_id": subject})  # tagged, hidden, not yet gone

    purged = pipeline.cli("purge", "--now", "--pause", "0")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    await a.wait_status(request_id, {"hard_deleted"})
    assert not await stored(pipeline, "chat_messages", {"author_id": subject})

    later = (datetime.now(UTC) + timedelta(days=91)).strftime("%Y-%m-%dT%H:%M:%S")
    expired = pipeline.cli("backup", "--expire", "--at", later)
    assert expired.returncode == 0, expired.stdout + expired.stderr
    await a.wait_status(request_id, {"erased"})
    await whole_story(a, request_id, [*STORY, "deletion.hard_deleted", "deletion.backups_expired"])


def logs_naming(workdir: Path, needle: str) -> list[str]:
    return [log.name for log in workdir.glob("*.log") if needle in log.read_text(errors="replace")]


async def test_the_pipeline_logs_name_no_personal_address(pipeline) -> None:
    assert await asyncio.to_thread(logs_naming, pipeline.workdir, "@example.com") == []
