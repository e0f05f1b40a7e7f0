"""schemathesis against each running service's /openapi.json, with valid and invalid tokens: no 5xx, no
undocumented status code, no response that breaks the document."""

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from shared.auth import SCOPES, issue_token
from shared.settings import AuthSettings
from tests.support import free_port, intake_reader_env, ready

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
SECRET = "openapi-fuzz-secret-of-at-least-32-bytes"
SERVICES = ("intake", "purger", "keyvault", "notifier", "audit")


@pytest.fixture(scope="module")
def services(kafka_bootstrap, mongo_url, s3_endpoint, smtp_catcher, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    ports = {name: free_port() for name in SERVICES}
    env = os.environ | {
        "LETHE_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "LETHE_KAFKA_GROUP_PREFIX": f"fuzz-{uuid.uuid4().hex[:6]}",
        "LETHE_KAFKA_START_FROM": "latest",
        "LETHE_MONGO_URL": mongo_url,
        "LETHE_MONGO_DATABASE": f"lethe_fuzz_{uuid.uuid4().hex[:8]}",
        "LETHE_AUTH_JWT_SECRET": SECRET,
        "LETHE_SMTP_HOST": smtp_catcher[0],
        "LETHE_SMTP_PORT": str(smtp_catcher[1]),
        "LETHE_S3_ENDPOINT_URL": s3_endpoint,
        "KEYVAULT_LOCAL_KEYRING_FILE": str(tmp / "keyring.json"),
        "AUDIT_SIGNING_KEY_FILE": str(tmp / "audit.key"),
        # The fuzzer is one client sending hundreds of requests: the limits are tested on their own elsewhere.
        "INTAKE_RATE_LIMIT": "1000000/minute",
        "INTAKE_EMAIL_RATE_LIMIT_PER_ADDRESS": "1000000/hour",
        "INTAKE_EMAIL_RATE_LIMIT_PER_CLIENT": "1000000/hour",
        **{f"{name.upper()}_HTTP_PORT": str(port) for name, port in ports.items()},
        **intake_reader_env(f"http://127.0.0.1:{ports['intake']}", AuthSettings(jwt_secret=SECRET)),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in SERVICES
    ]
    deadline = time.monotonic() + 90
    while not all(ready(p) for p in ports.values()):
        assert time.monotonic() < deadline, "services not ready"
        time.sleep(0.3)
    yield ports
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=30)


@pytest.mark.parametrize("name", SERVICES)
@pytest.mark.parametrize("token_kind", ["all scopes", "no scopes", "forged"])
def test_the_api_keeps_its_openapi_promises(services, name, token_kind):
    secret = "another-secret-that-signs-forged-tokens!" if token_kind == "forged" else SECRET
    scopes = [] if token_kind == "no scopes" else sorted(SCOPES)
    token = issue_token(AuthSettings(jwt_secret=secret), subject="fuzz", scopes=scopes, ttl=timedelta(minutes=10))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"http://127.0.0.1:{services[name]}/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:]
