"""The five services as separate processes on the real stack: ready, self-describing, and stopped cleanly."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from shared.settings import AuthSettings
from tests.support import free_port, intake_reader_env

pytestmark = pytest.mark.integration

SERVICES = ("intake", "purger", "keyvault", "notifier", "audit")
ROOT = Path(__file__).parents[2]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def running(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher, tmp_path_factory):
    """Start every service on a free port (so a `make run` on the usual ports does not clash)."""
    logs = tmp_path_factory.mktemp("service-logs")
    ports = {name: free_port() for name in SERVICES}
    procs = {}
    for name in SERVICES:
        env = os.environ | {
            f"{name.upper()}_HTTP_PORT": str(ports[name]),
            "LETHE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "LETHE_MONGO_URL": mongo_url,
            "LETHE_S3_ENDPOINT_URL": s3_endpoint,
            "LETHE_SMTP_HOST": smtp_catcher[0],
            "LETHE_SMTP_PORT": str(smtp_catcher[1]),
            "LETHE_LOG_FORMAT": "json",
            **intake_reader_env(f"http://127.0.0.1:{ports['intake']}", AuthSettings()),
        }
        log = (logs / f"{name}.log").open("wb")
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    yield ports, procs, logs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"service exited with {proc.returncode}"
        try:
            status, body = get(f"http://127.0.0.1:{port}/readyz")
            last = json.loads(body)
            if status == 200:
                return last
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout} s; last answer: {last}")


def test_every_service_becomes_ready_with_its_real_dependencies(running):
    ports, procs, logs = running
    for name in SERVICES:
        try:
            answer = wait_ready(ports[name], procs[name])
        except AssertionError:
            print((logs / f"{name}.log").read_text()[-3000:])
            raise
        assert answer["service"] == name
        assert answer["checks"]["kafka"] is True
        assert answer["checks"]["mongo"] is True
    assert get(f"http://127.0.0.1:{ports['purger']}/readyz")[1].count(b'"s3": true') == 1
    assert get(f"http://127.0.0.1:{ports['notifier']}/readyz")[1].count(b'"smtp": true') == 1


def test_every_service_serves_liveness_metrics_and_openapi(running):
    ports, _, _ = running
    for name in SERVICES:
        base = f"http://127.0.0.1:{ports[name]}"
        assert get(f"{base}/healthz")[0] == 200
        status, metrics = get(f"{base}/metrics")
        assert status == 200
        assert b"lethe_events_consumed_total" in metrics
        status, spec = get(f"{base}/openapi.json")
        document = json.loads(spec)
        assert document["openapi"].startswith("3.1")
        assert {"/healthz", "/readyz", "/metrics"} <= set(document["paths"])


def test_sigterm_stops_every_service_gracefully(running):
    ports, procs, logs = running
    for name in SERVICES:
        wait_ready(ports[name], procs[name])
    for proc in procs.values():
        proc.send_signal(signal.SIGTERM)
    for name, proc in procs.items():
        assert proc.wait(timeout=30) == 0, f"{name} exited with {proc.returncode}"
        lines = [json.loads(line) for line in (logs / f"{name}.log").read_text().splitlines() if line.startswith("{")]
        assert any(line["event"] == "service.stopped" for line in lines), name
