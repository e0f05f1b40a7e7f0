"""The whole of lethe as separate processes on real servers, for the end-to-end tests, `make chaos` and `make bench`.

``Pipeline`` starts the five services (any number of instances of each) with a database, consumer groups and
ports of their own, and can kill, restart and measure them. ``WebhookReceiver`` is an integrator on loopback that
verifies every delivery's signature with ``standardwebhooks``. ``Api`` calls the services' public APIs.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from shared.auth import (
    AUDIT_READ,
    DELETION_ANY,
    KEYS_ADMIN,
    KEYS_DESTROY_CONTACT,
    KEYS_USE,
    RETENTION_ADMIN,
    WEBHOOKS_ADMIN,
    issue_token,
)
from shared.mongo import create_mongo_client
from shared.settings import AuthSettings, MongoSettings
from tests.support import free_port, intake_reader_env, ready

ROOT = Path(__file__).parents[1]
SERVICES = ("intake", "purger", "keyvault", "notifier", "audit")
SECRET = "e2e-pipeline-secret-of-at-least-32-bytes"
FINAL = {"completed", "partial", "hard_deleted", "erased"}


def token(*scopes: str, subject: str = "e2e") -> str:
    return issue_token(AuthSettings(jwt_secret=SECRET), subject=subject, scopes=scopes, ttl=timedelta(hours=6))


@dataclass
class Servers:
    """Where the real servers are (the local stack's, or a test's own broker)."""

    kafka: str
    mongo_url: str
    s3: str
    smtp: tuple[str, int]
    mail_dir: Path
    milvus_uri: str

    @classmethod
    def of(cls, kafka: str, mongo_url: str, s3: str, smtp_catcher: tuple[str, int, Path]) -> Servers:
        """From the test fixtures' servers; Milvus Lite's server from LETHE_MILVUS_URI."""
        milvus = os.environ.get("LETHE_MILVUS_URI", "http://127.0.0.1:19530")
        return cls(kafka, mongo_url, s3, (smtp_catcher[0], smtp_catcher[1]), smtp_catcher[2], milvus)


@dataclass
class Pipeline:
    servers: Servers
    workdir: Path
    instances: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 1))
    start_from: str = "latest"
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        run = uuid.uuid4().hex[:8]
        self.database = f"lethe_e2e_{run}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = {(name, i): free_port() for name in SERVICES for i in range(self.instances.get(name, 1))}
        self.procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self.peak_rss_kib: Counter[str] = Counter()
        self.env = os.environ | {
            "LETHE_KAFKA_BOOTSTRAP_SERVERS": self.servers.kafka,
            "LETHE_KAFKA_GROUP_PREFIX": f"e2e-{run}",
            "LETHE_KAFKA_START_FROM": self.start_from,
            "LETHE_MONGO_URL": self.servers.mongo_url,
            "LETHE_MONGO_DATABASE": self.database,
            "LETHE_S3_ENDPOINT_URL": self.servers.s3,
            "LETHE_SMTP_HOST": self.servers.smtp[0],
            "LETHE_SMTP_PORT": str(self.servers.smtp[1]),
            "LETHE_MILVUS_URI": self.servers.milvus_uri,
            "LETHE_AUTH_JWT_SECRET": SECRET,
            "LETHE_LOG_FORMAT": "json",
            "LETHE_INTAKE_URL": self.url("intake"),
            "LETHE_AUDIT_URL": self.url("audit"),
            "LETHE_KEYVAULT_URL": self.url("keyvault"),
            "INTAKE_PUBLIC_URL": self.url("intake"),
            "INTAKE_KEYVAULT_URL": self.url("keyvault"),
            "INTAKE_KEYVAULT_TOKEN": token(KEYS_USE, subject="intake"),
            "INTAKE_OUTBOX_INTERVAL_S": "0.2",
            "INTAKE_ACKNOWLEDGEMENT_INTERVAL_S": "1",
            "INTAKE_RATE_LIMIT": "100000/minute",
            "KEYVAULT_LOCAL_KEYRING_FILE": str(self.workdir / "keyring.json"),
            "NOTIFIER_ALLOW_LOOPBACK_WEBHOOKS": "true",
            "NOTIFIER_RETRY_SCHEDULE_S": "[0, 0.5, 1, 2, 4]",
            "NOTIFIER_WORKER_INTERVAL_S": "0.1",
            "NOTIFIER_KEYVAULT_URL": self.url("keyvault"),
            "NOTIFIER_KEYVAULT_TOKEN": token(KEYS_USE, KEYS_DESTROY_CONTACT, subject="notifier"),
            "AUDIT_SIGNING_KEY_FILE": str(self.workdir / "audit.key"),
            "AUDIT_INTAKE_URL": self.url("intake"),
            "AUDIT_PURGER_URL": self.url("purger"),
            "AUDIT_KEYVAULT_URL": self.url("keyvault"),
            "AUDIT_NOTIFIER_URL": self.url("notifier"),
            "AUDIT_CHECKPOINT_EVERY_ENTRIES": "1",
            "AUDIT_CHECKPOINT_EVERY_S": "1",
            "PURGER_PURGE_AFTER_HOURS": "0",
            # intake owns the rules, holds and contacts: the others read them from its API.
            **intake_reader_env(self.url("intake"), AuthSettings(jwt_secret=SECRET)),
        }
        self.env.update(self.extra_env)

    def url(self, name: str, instance: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[(name, instance)]}"

    def log(self, name: str, instance: int = 0) -> Path:
        return self.workdir / f"{name}-{instance}.log"

    def start_instance(self, name: str, instance: int = 0) -> None:
        env = self.env | {
            f"{name.upper()}_HTTP_PORT": str(self.ports[(name, instance)]),
            # Each service is its own Kafka principal, as in production: the ACLs hold in every e2e test.
            "LETHE_KAFKA_SASL_USERNAME": name,
            "LETHE_KAFKA_SASL_PASSWORD": os.environ.get(f"LETHE_KAFKA_PASSWORD_{name.upper()}", ""),
        }
        self.procs[(name, instance)] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env=env,
            stdout=self.log(name, instance).open("ab"),
            stderr=subprocess.STDOUT,
        )

    async def start(self, timeout_s: float = 120) -> None:
        # keyvault first: intake and notifier reach it, and the others start faster once it answers.
        for key in sorted(self.ports, key=lambda k: k[0] != "keyvault"):
            self.start_instance(*key)
        await self.wait_ready(timeout_s)

    async def wait_ready(self, timeout_s: float = 120, keys: Iterable[tuple[str, int]] | None = None) -> None:
        waiting = set(keys or self.ports)
        deadline = time.monotonic() + timeout_s
        while waiting:
            for key in list(waiting):
                proc = self.procs[key]
                if proc.poll() is not None:
                    raise AssertionError(f"{key} exited with {proc.returncode}:\n{self.tail(*key)}")
                if await asyncio.to_thread(ready, self.ports[key]):
                    waiting.discard(key)
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready after {timeout_s} s: {sorted(waiting)}")
            await asyncio.sleep(0.2)

    def tail(self, name: str, instance: int = 0, chars: int = 3000) -> str:
        return self.log(name, instance).read_text(errors="replace")[-chars:]

    def _record_rss(self, key: tuple[str, int]) -> None:
        proc = self.procs.get(key)
        if proc is None or proc.poll() is not None:
            return
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kib[key[0]] = max(self.peak_rss_kib[key[0]], int(line.split()[1]))
        except OSError:
            pass

    def kill(self, name: str, instance: int = 0) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash or an OOM kill."""
        self._record_rss((name, instance))
        proc = self.procs[(name, instance)]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def pause(self, name: str, instance: int = 0) -> None:
        """SIGSTOP: the process holds its partitions and positions but does nothing (resume within its session)."""
        self.procs[(name, instance)].send_signal(signal.SIGSTOP)

    def resume(self, name: str, instance: int = 0) -> None:
        self.procs[(name, instance)].send_signal(signal.SIGCONT)

    async def restart(self, name: str, instance: int = 0, timeout_s: float = 120) -> None:
        self.start_instance(name, instance)
        await self.wait_ready(timeout_s, keys=[(name, instance)])

    def stop(self) -> None:
        for key, proc in self.procs.items():
            self._record_rss(key)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    async def drop(self) -> None:
        """Drop the pipeline's database."""
        client = create_mongo_client(MongoSettings(url=self.servers.mongo_url))
        await client.drop_database(self.database)
        await client.close()

    def cli(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a `lethe` command against this pipeline (as an operator would, in its own process)."""
        return subprocess.run(
            [sys.executable, "-m", "ops.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def mails_for(self, request_id: str) -> list[email.message.EmailMessage]:
        found = []
        for path in self.servers.mail_dir.glob("*.eml"):
            raw = path.read_bytes()
            if request_id.encode() in raw:
                found.append(email.message_from_bytes(raw, policy=email.policy.default))
        return found  # type: ignore[return-value]


async def until(check: Any, timeout_s: float = 60) -> Any:
    """Poll ``check`` (an async callable) until it returns something truthy, and return that."""
    async with asyncio.timeout(timeout_s):
        while not (found := await check()):
            await asyncio.sleep(0.2)
    return found


@contextmanager
def running(servers: Servers, workdir: Path, extra_env: dict[str, str]) -> Iterator[Pipeline]:
    """A started pipeline with a database and a backups bucket of its own; stopped and dropped afterwards."""
    p = Pipeline(
        servers, workdir, extra_env={"PURGER_BACKUPS_BUCKET": f"lethe-backups-{uuid.uuid4().hex[:8]}", **extra_env}
    )
    try:
        asyncio.run(p.start())
        yield p
    finally:
        p.stop()
        asyncio.run(p.drop())


class WebhookReceiver:
    """An integrator's endpoint: verifies each delivery with standardwebhooks and keeps what arrived."""

    def __init__(self) -> None:
        self.secret = ""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[tuple[str, dict[str, Any]]] = []  # (webhook-id, verified payload)
        self.first_arrival: dict[str, float] = {}  # request id -> time.monotonic() of its first webhook
        self.rejected = 0
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except Exception:
            self.rejected += 1
            return web.Response(status=400)
        self.received.append((request.headers["webhook-id"], payload))
        self.first_arrival.setdefault(payload["data"]["request_id"], time.monotonic())
        return web.Response(status=204)

    async def __aenter__(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def for_request(self, request_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(wid, p) for wid, p in self.received if p["data"]["request_id"] == request_id]


class Api:
    """The public HTTP APIs of a pipeline, with a token of the scopes each call needs."""

    def __init__(self, pipeline: Pipeline, session: aiohttp.ClientSession) -> None:
        self.p, self.http = pipeline, session
        self.headers = {
            scope: {"Authorization": f"Bearer {token(scope)}"}
            for scope in (DELETION_ANY, AUDIT_READ, WEBHOOKS_ADMIN, RETENTION_ADMIN, KEYS_ADMIN)
        }

    async def call(self, method: str, service: str, path: str, scope: str | None, **kwargs: Any) -> tuple[int, Any]:
        headers = self.headers[scope] if scope else {}
        async with self.http.request(method, self.p.url(service) + path, headers=headers, **kwargs) as r:
            body = await r.json() if r.content_type.endswith("json") else await r.text()
            return r.status, body

    @classmethod
    @asynccontextmanager
    async def with_receiver(cls, pipeline: Pipeline) -> AsyncIterator[tuple[Api, WebhookReceiver]]:
        """The APIs, and an integrator's receiver registered for webhooks until the block ends."""
        async with aiohttp.ClientSession() as http, WebhookReceiver() as receiver:
            api = cls(pipeline, http)
            endpoint = await api.register(receiver)
            yield api, receiver
            await api.call("DELETE", "notifier", f"/webhooks/endpoints/{endpoint}", WEBHOOKS_ADMIN)

    async def register(self, receiver: WebhookReceiver) -> str:
        """Register the receiver as a webhook endpoint; returns the endpoint's id."""
        status, body = await self.call(
            "POST", "notifier", "/webhooks/endpoints", WEBHOOKS_ADMIN, json={"url": receiver.url}
        )
        assert status == 201, body
        receiver.secret = body["secret"]
        return str(body["id"])

    async def place_hold(self, subject: str | None, *datasets: str, legal_ref: str) -> str:
        """A litigation hold through intake's API; returns its id."""
        status, hold = await self.call(
            "POST",
            "intake",
            "/legal_holds",
            RETENTION_ADMIN,
            json={
                "subject_id": subject,
                "datasets": list(datasets),
                "reason": "litigation",
                "legal_basis": "legal claims (GDPR Art. 17(3)(e))",
                "legal_ref": legal_ref,
            },
        )
        assert status == 201, hold
        return str(hold["hold_id"])

    async def release_hold(self, hold_id: str) -> None:
        status, body = await self.call("DELETE", "intake", f"/legal_holds/{hold_id}", RETENTION_ADMIN)
        assert status == 200, body

    async def delete(self, subject: str) -> str:
        status, body = await self.call("DELETE", "intake", f"/users/{subject}/data", DELETION_ANY)
        assert status in (200, 202), body
        return str(body["request_id"])

    async def request(self, request_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", "intake", f"/deletion_requests/{request_id}", DELETION_ANY)
        assert status == 200, body
        return dict(body)

    async def wait_status(self, request_id: str, wanted: set[str], timeout_s: float = 120) -> dict[str, Any]:
        body: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout_s):
                while (body := await self.request(request_id))["status"] not in wanted:
                    await asyncio.sleep(0.3)
        except TimeoutError:
            raise AssertionError(f"{request_id} stayed {body.get('status')}, not {wanted}: {body}") from None
        return body

    async def audit_story(self, request_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: int | None = None
        while True:
            params = {"type": "data_deletion", "request_id": request_id} | ({"cursor": str(cursor)} if cursor else {})
            status, body = await self.call("GET", "audit", "/audit/logs", AUDIT_READ, params=params)
            assert status == 200, body
            items += body["items"]
            cursor = body.get("next_cursor")
            if not cursor:
                return items

    async def audit_verify(self) -> dict[str, Any]:
        status, body = await self.call("GET", "audit", "/audit/verify", AUDIT_READ)
        assert status == 200, body
        return dict(body)

    async def receipt(self, request_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", "audit", f"/audit/receipts/{request_id}", AUDIT_READ)
        assert status == 200, body
        return dict(body)
