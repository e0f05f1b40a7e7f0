"""Helpers the test layers share: free ports, a typical partial deletion, and a Kafka broker of a test's own."""

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from shared.auth import CONTACTS_READ, RETENTION_READ, issue_token
from shared.datamap import DataMap, Dataset, MilvusLocation, MongoLocation, S3Location
from shared.events import DatasetOutcome, DeletionRequested
from shared.mongo import create_mongo_client
from shared.retention import Hold
from shared.settings import AuthSettings, KafkaSettings, MongoSettings

ERASED_PROFILES = DatasetOutcome(dataset="profiles", store="mongo", outcome="erased")
KEPT_INVOICES = DatasetOutcome(
    dataset="invoices",
    store="mongo",
    outcome="retained",
    rule_id="tax-10y",
    legal_basis="legal obligation",
    legal_ref="HGB §257",
)
PARTIAL = (ERASED_PROFILES, KEPT_INVOICES)


def ready(port: int) -> bool:
    """A service on loopback answers 200 on /readyz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_listening(process: subprocess.Popen[bytes], port: int, what: str, timeout_s: float) -> None:
    """Until ``process`` accepts connections on ``port``; fails if it exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert process.poll() is None, f"{what} exited"
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen in time")


def terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 60 s."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnKafkaBroker:
    """A single-node KRaft broker of a test's own, from the local stack's jars, that the test may stop and restart.

    It keeps its data directory across restarts, as a real broker restart does.
    """

    def __init__(self, classpath: str, log4j: str, data_dir: Path) -> None:
        self.classpath, self.log4j, self.data_dir = classpath, log4j, data_dir
        self.port, self.controller_port = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._props = data_dir / "server.properties"

    def _java(self, *args: str) -> list[str]:
        return ["java", f"-Dlog4j2.configurationFile={self.log4j}", "-cp", self.classpath, *args]

    def format(self) -> None:
        """Storage formatted with the admin's SCRAM credential, and the local stack's configuration (SASL, ACLs)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        admin = os.environ.get("LETHE_KAFKA_PASSWORD_ADMIN", "lethe-local-admin")
        template = (Path(__file__).parents[1] / "deploy" / "local" / "kafka" / "server.properties.in").read_text()
        for placeholder, value in (
            ("@PORT@", str(self.port)),
            ("@CONTROLLER_PORT@", str(self.controller_port)),
            ("@DATA_DIR@", str(self.data_dir / "logs")),
            ("@ADMIN_PASSWORD@", admin),
        ):
            template = template.replace(placeholder, value)
        self._props.write_text(template)
        cluster = subprocess.run(
            self._java("kafka.tools.StorageTool", "random-uuid"), check=True, capture_output=True, text=True
        ).stdout.strip()
        scram = f"SCRAM-SHA-512=[name=admin,password={admin}]"
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster,
                "-c",
                str(self._props),
                "--add-scram",
                scram,
            ),
            check=True,
            capture_output=True,
        )
        self._set_up = False

    def start(self, timeout_s: float = 90) -> None:
        self._process = subprocess.Popen(
            self._java("kafka.Kafka", str(self._props)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self._process, self.port, "the test broker", timeout_s)
        if not self._set_up:  # the principals, topics and ACLs, once (they live in the metadata log)
            from shared.bus import PrincipalPasswords, setup
            from shared.kafka import ensure_topics
            from shared.topics import ALL_TOPICS, PARTITIONS

            settings = KafkaSettings(bootstrap_servers=self.bootstrap)
            try:
                asyncio.run(ensure_topics(settings, ALL_TOPICS, partitions=PARTITIONS))
                setup(settings, PrincipalPasswords())  # type: ignore[call-arg]  # from the stack's environment
            except BaseException:
                self.stop()  # never leave a broker behind that no test will stop
                raise
            self._set_up = True

    def stop(self) -> None:
        terminate(self._process)
        self._process = None


def deletion_requested(subject_id: str = "u1", request_id: str = "req_1", *, at: datetime) -> DeletionRequested:
    """The event intake publishes for a request received at ``at`` (30 days' deadline, backups gone in 90)."""
    return DeletionRequested(
        request_id=request_id,
        subject_id=subject_id,
        producer="intake",
        requested_by="svc",
        deadline_at=at + timedelta(days=30),
        backups_purged_by=at + timedelta(days=90),
    )


def litigation_hold(hold_id: str, subject_id: str | None, *datasets: str, placed_at: datetime | None = None) -> Hold:
    """A legal hold as the legal team would place it: litigation, under Art. 17(3)(e)."""
    return Hold(
        hold_id=hold_id,
        subject_id=subject_id,
        datasets=datasets,
        reason="litigation",
        legal_basis="legal claims (Art. 17(3)(e))",
        legal_ref="case 7",
        placed_by="legal",
        placed_at=placed_at or datetime.now(UTC),
    )


async def drop_bucket(s3: Any, bucket: str) -> None:
    """Delete a test's bucket with every version in it: SeaweedFS gives each bucket volumes of its own."""
    from services.purger.adapters.s3 import list_versions

    versions = await list_versions(s3, bucket, "")
    for start in range(0, len(versions), 1000):
        batch = versions[start : start + 1000]
        await s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": v.key, "VersionId": v.version_id} for v in batch], "Quiet": True}
        )
    await s3.delete_bucket(Bucket=bucket)


@contextlib.asynccontextmanager
async def scratch_database(url: str, prefix: str) -> AsyncIterator[tuple[AsyncMongoClient[dict[str, Any]], str]]:
    """A client and a database of the test's own (``<prefix>_<random>``), dropped and closed after it."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    client = create_mongo_client(MongoSettings(url=url, database=name))
    try:
        yield client, name
    finally:
        await client.drop_database(name)
        await client.close()


@contextlib.asynccontextmanager
async def scratch_schema(url: str, prefix: str) -> AsyncIterator[tuple[Any, str]]:
    """A PostgreSQL schema of the test's own (``prefix`` + random), dropped with everything in it afterwards:
    (a connection pool, the schema's name)."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        await pool.execute(f'CREATE SCHEMA "{schema}"')
        yield pool, schema
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()


class OwnMongo:
    """A MongoDB-protocol server of a test's own (the stack's SecantusDB, on its own directory), to stop and restart."""

    def __init__(self, binary: Path, data_dir: Path) -> None:
        self.binary, self.data_dir = binary, data_dir
        self.port = free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}/?retryWrites=false"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [str(self.binary), "--host=127.0.0.1", f"--port={self.port}", f"--storage-path={self.data_dir}"],
            stdout=subprocess.DEVNULL,
            stderr=(self.data_dir / "mongo.log").open("ab"),
        )
        wait_listening(self._process, self.port, "the test's MongoDB server", timeout_s)

    def stop(self) -> None:
        terminate(self._process)
        self._process = None


def mongo_dataset(name: str, mode: str = "erase", category: str = "personal") -> Dataset:
    return Dataset.model_validate(
        {
            "name": name,
            "store": "mongo",
            "mongo": MongoLocation(collection=name, subject_field="user_id"),
            "mode": mode,
            "category": category,
        }
    )


# The unit tests' data map: every store and mode, a dataset a rule keeps (invoices) and an exempt one.
UNIT_DATAMAP = DataMap(
    datasets=(
        mongo_dataset("accounts", mode="tag_then_purge"),
        mongo_dataset("profiles"),
        mongo_dataset("invoices"),
        mongo_dataset("chat_messages", mode="tag_then_purge"),
        Dataset(name="uploads", store="s3", s3=S3Location(bucket="uploads", prefix="users/{subject_id}/")),
        Dataset(name="embeddings", store="milvus", milvus=MilvusLocation(collection="vec", filter_field="subject_id")),
        mongo_dataset("usage_daily", category="anonymized_analytics"),
    )
)


def kafka_options(bootstrap: str) -> dict[str, Any]:
    """What a test's own Kafka client is given: the broker, and the admin principal of the stack's environment."""
    return KafkaSettings(bootstrap_servers=bootstrap).client_options()


@dataclasses.dataclass(frozen=True)
class RunningIntake:
    """An intake service of a test's own: the purger and keyvault read the rules and holds in force from it, and
    notifier a request's contact (``retention``/``contacts`` write its stores directly, as intake itself would)."""

    url: str
    auth: AuthSettings
    retention: Any  # services.intake.adapters.retention.MongoRetentionStore on its database
    contacts: Any  # services.intake.adapters.contacts.MongoContactStore on its database

    def token(self, *scopes: str) -> SecretStr:
        return SecretStr(issue_token(self.auth, subject="svc-test", scopes=scopes, ttl=timedelta(hours=1)))

    def reader(self, kind: str = "retention") -> dict[str, Any]:
        """The settings a purger, keyvault or notifier needs to read from it: ``intake_url``, ``intake_token``."""
        scope = RETENTION_READ if kind == "retention" else CONTACTS_READ
        return {"intake_url": self.url, "intake_token": self.token(scope)}


@contextlib.asynccontextmanager
async def running_intake(
    kafka_bootstrap: str, mongo_url: str, auth: AuthSettings, *, datamap: Path | None = None
) -> AsyncIterator[RunningIntake]:
    """Start a real intake (its own database, a consumer group starting at the end, no default rules)."""
    from services.intake.adapters.contacts import MongoContactStore
    from services.intake.adapters.retention import MongoRetentionStore
    from services.intake.app import create_app
    from services.intake.settings import IntakeSettings

    tag = uuid.uuid4().hex[:8]
    settings = IntakeSettings(
        http_port=free_port(),
        datamap_path=datamap or Path(__file__).parents[1] / "deploy" / "datamap.yaml",
        default_rules_path=None,
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, group_prefix=f"ti{tag}", start_from="latest"),
        mongo=MongoSettings(url=mongo_url, database=f"lethe_ti_{tag}"),
        auth=auth,
    )
    service = create_app(settings)
    await service.start()
    client = create_mongo_client(settings.mongo)
    try:
        yield RunningIntake(
            f"http://127.0.0.1:{settings.http_port}",
            auth,
            MongoRetentionStore(client, settings.mongo.database),
            MongoContactStore(client, settings.mongo.database),
        )
    finally:
        await service.stop()
        await client.drop_database(settings.mongo.database)
        await client.close()


def intake_reader_env(intake_url: str, auth: AuthSettings) -> dict[str, str]:
    """The environment that lets the purger and keyvault (rules and holds) and notifier (contacts) read from an
    intake: its URL and a service token each, signed as ``auth`` verifies."""

    def token(scope: str, subject: str) -> str:
        return issue_token(auth, subject=subject, scopes=[scope], ttl=timedelta(hours=6))

    readers = {"purger": RETENTION_READ, "keyvault": RETENTION_READ, "notifier": CONTACTS_READ}
    env = {f"{name.upper()}_INTAKE_URL": intake_url for name in readers}
    return env | {f"{name.upper()}_INTAKE_TOKEN": token(scope, name) for name, scope in readers.items()}
