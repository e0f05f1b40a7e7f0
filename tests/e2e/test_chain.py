"""keyvault, notifier and audit as separate processes on the real stack, driven through Kafka and their APIs.

A `deletion.purged` (the purger's answer, published here until the purger exists) flows through keyvault
(crypto-shredding), notifier (a signed webhook and the person's mail) and audit (the log and a signed receipt).
"""

import asyncio
import email
import email.policy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from services.intake.adapters.contacts import MongoContactStore
from shared.auth import AUDIT_READ, KEYS_DESTROY_CONTACT, KEYS_USE, WEBHOOKS_ADMIN, issue_token
from shared.contacts import CONTACT_DATASET, Contact
from shared.events import DeletionPurged
from shared.kafka import KafkaPublisher
from shared.keyvault_client import KeyUnavailableError, KeyvaultClient
from shared.mongo import create_mongo_client
from shared.settings import AuthSettings, KafkaSettings, MongoSettings
from shared.signing import verify_document
from tests.support import PARTIAL, free_port, intake_reader_env, ready

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
ROOT = Path(__file__).parents[2]
SECRET = "e2e-chain-secret-of-at-least-32-bytes!!"
AUTH = AuthSettings(jwt_secret=SECRET)


def token(*scopes: str) -> str:
    return issue_token(AUTH, subject="e2e", scopes=scopes, ttl=timedelta(minutes=30))


@pytest_asyncio.fixture
async def chain(kafka_bootstrap, mongo_url, smtp_catcher, tmp_path):
    database = f"lethe_e2e_{uuid.uuid4().hex[:8]}"
    # intake too: it owns the contacts and the rules and holds, which notifier and keyvault read from its API.
    ports = {name: free_port() for name in ("intake", "keyvault", "notifier", "audit")}
    env = os.environ | {
        "LETHE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LETHE_KAFKA_GROUP_PREFIX": f"e2e-{uuid.uuid4().hex[:6]}",
        "LETHE_KAFKA_START_FROM": "latest",  # this run's events only; the topics hold other tests' too
        "LETHE_MONGO_URL": mongo_url,
        "LETHE_MONGO_DATABASE": database,
        "LETHE_AUTH_JWT_SECRET": SECRET,
        "LETHE_SMTP_HOST": smtp_catcher[0],
        "LETHE_SMTP_PORT": str(smtp_catcher[1]),
        "LETHE_LOG_FORMAT": "json",
        "INTAKE_HTTP_PORT": str(ports["intake"]),
        **intake_reader_env(f"http://127.0.0.1:{ports['intake']}", AUTH),
        "KEYVAULT_HTTP_PORT": str(ports["keyvault"]),
        "KEYVAULT_LOCAL_KEYRING_FILE": str(tmp_path / "keyring.json"),
        "NOTIFIER_HTTP_PORT": str(ports["notifier"]),
        "NOTIFIER_ALLOW_LOOPBACK_WEBHOOKS": "true",
        "NOTIFIER_RETRY_SCHEDULE_S": "[0, 0.5, 1]",
        "NOTIFIER_WORKER_INTERVAL_S": "0.1",
        "NOTIFIER_KEYVAULT_URL": f"http://127.0.0.1:{ports['keyvault']}",
        "NOTIFIER_KEYVAULT_TOKEN": token(KEYS_USE, KEYS_DESTROY_CONTACT),
        "AUDIT_HTTP_PORT": str(ports["audit"]),
        "AUDIT_SIGNING_KEY_FILE": str(tmp_path / "audit.key"),
        "AUDIT_CHECKPOINT_EVERY_ENTRIES": "1",
        "AUDIT_CHECKPOINT_EVERY_S": "1",
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env=env,
            stdout=(tmp_path / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for name in ports
    }
    try:
        deadline = time.monotonic() + 90
        while not all(ready(port) for port in ports.values()):
            for name, proc in procs.items():
                assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "services not ready"
            await asyncio.sleep(0.3)
        yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}, mongo_url, database, smtp_catcher[2]
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(timeout=30)
        client = create_mongo_client(MongoSettings(url=mongo_url))
        await client.drop_database(database)
        await client.close()


async def test_a_partial_deletion_is_shredded_relayed_mailed_audited_and_receipted(chain, kafka_bootstrap):
    urls, mongo_url, database, mail_dir = chain
    subject, request_id = f"user-{uuid.uuid4().hex[:8]}", f"req-{uuid.uuid4().hex[:8]}"
    received: list[dict] = []
    secret = {}

    async def hook(request: web.Request) -> web.Response:
        received.append(Webhook(secret["value"]).verify(await request.text(), dict(request.headers)))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    try:
        async with aiohttp.ClientSession() as http, KeyvaultClient(urls["keyvault"], token=token(KEYS_USE)) as kv:
            async with http.post(
                f"{urls['notifier']}/webhooks/endpoints",
                json={"url": f"http://127.0.0.1:{hook_port}/hook"},
                headers={"Authorization": f"Bearer {token(WEBHOOKS_ADMIN)}"},
            ) as r:
                assert r.status == 201
                secret["value"] = (await r.json())["secret"]
            profile = await kv.encrypt(subject, "profiles", b"Ada Lovelace")
            invoice = await kv.encrypt(subject, "invoices", b"12 St James's Square")
            address = await kv.encrypt(subject, CONTACT_DATASET, b"ada@example.test")
            client = create_mongo_client(MongoSettings(url=mongo_url))
            await MongoContactStore(client, database).put(Contact(request_id, subject, address))
            await client.close()

            publisher = KafkaPublisher(KafkaSettings(bootstrap_servers=kafka_bootstrap), client_id="e2e")
            await publisher.start()
            await publisher.publish(
                DeletionPurged(
                    request_id=request_id,
                    subject_id=subject,
                    producer="purger",
                    outcomes=PARTIAL,
                )
            )
            await publisher.stop()

            async with asyncio.timeout(120):
                while not [b for b in received if b["data"]["request_id"] == request_id]:
                    await asyncio.sleep(0.2)
            audit = {"Authorization": f"Bearer {token(AUDIT_READ)}"}
            types: set[str] = set()
            async with asyncio.timeout(120):
                while True:
                    async with http.get(
                        f"{urls['audit']}/audit/logs",
                        headers=audit,
                        params={"type": "data_deletion", "request_id": request_id},
                    ) as r:
                        types = {i["type"] for i in (await r.json())["items"]}
                    if {
                        "deletion.purged",
                        "deletion.keys_destroyed",
                        "deletion.notified",
                        "deletion.keys_shredded",
                    } <= types:
                        break
                    await asyncio.sleep(0.3)
            async with asyncio.timeout(30):
                while True:
                    async with http.get(f"{urls['audit']}/audit/receipts/{request_id}", headers=audit) as r:
                        signed = await r.json()
                    if signed["document"]["anchor"]["checkpoint"]:
                        break
                    await asyncio.sleep(0.5)
            async with http.get(f"{urls['audit']}/audit/public_key") as r:
                public_key = (await r.json())["public_key"]
            async with http.get(f"{urls['audit']}/audit/verify", headers=audit) as r:
                verification = await r.json()

            kv.forget_subject(subject)
            with pytest.raises(KeyUnavailableError):
                await kv.decrypt(subject, "profiles", profile)
            with pytest.raises(KeyUnavailableError):
                await kv.decrypt(subject, CONTACT_DATASET, address)
            assert await kv.decrypt(subject, "invoices", invoice) == b"12 St James's Square"
    finally:
        await runner.cleanup()

    [webhook] = [b for b in received if b["data"]["request_id"] == request_id]
    assert webhook["type"] == "data_deletion.partial"
    assert verify_document(signed, public_key)
    datasets = {d["dataset"]: d for d in signed["document"]["datasets"]}
    assert datasets["invoices"]["keys_retained"] and datasets["profiles"]["keys_destroyed"]
    assert verification["status"] == "ok"
    mails = [p for p in mail_dir.glob("*.eml") if request_id in p.read_text(errors="replace")]
    [mail] = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in mails]
    assert "invoices: legal obligation (HGB §257)" in mail.get_body(preferencelist=("plain",)).get_content()
    assert json.dumps(webhook).count("ada@") == 0
