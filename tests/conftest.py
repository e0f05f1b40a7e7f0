"""Where the tests find the real servers.

Each fixture takes an already-running server from the environment variable that the stack scripts set
(``make test`` starts the stack and sets them). Where no address is given and a Docker engine answers, it
starts one with testcontainers. With neither, it fails and says how to start the stack: it never skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

HOW_TO_START = (
    "{var} is not set and no Docker engine answers. Start the local stack with `make up` "
    "(or run the suite with `make test`, which starts it), or set {var} to a running server."
)


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _from_env_or_container(var: str, start_container) -> Iterator[str]:
    value = os.environ.get(var)
    if value:
        yield value
        return
    if not _docker_available():
        pytest.fail(HOW_TO_START.format(var=var), pytrace=False)
    yield from start_container()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    def container() -> Iterator[str]:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()

    yield from _from_env_or_container("LETHE_KAFKA_BOOTSTRAP_SERVERS", container)


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    def container() -> Iterator[str]:
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:8") as mongo:
            yield mongo.get_connection_url()

    yield from _from_env_or_container("LETHE_MONGO_URL", container)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A plain postgresql:// DSN, as asyncpg takes it (the local stack's LETHE_POSTGRES_URL, or a container's)."""

    def container() -> Iterator[str]:
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:17.6", username="lethe", password="lethe", dbname="lethe") as postgres:
            # Without a driver: the default is SQLAlchemy's postgresql+psycopg2://, which asyncpg refuses.
            yield postgres.get_connection_url(driver=None)

    yield from _from_env_or_container("LETHE_POSTGRES_URL", container)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    def container() -> Iterator[str]:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        weed = (
            DockerContainer("chrislusf/seaweedfs:latest")
            .with_command("server -s3 -s3.port=8333")
            .with_env("AWS_ACCESS_KEY_ID", os.environ.get("LETHE_S3_ACCESS_KEY_ID", "lethe"))
            .with_env("AWS_SECRET_ACCESS_KEY", os.environ.get("LETHE_S3_SECRET_ACCESS_KEY", "lethe-local-secret"))
            .with_exposed_ports(8333)
        )
        with weed:
            wait_for_logs(weed, "Start Seaweed S3 API Server", timeout=120)
            yield f"http://{weed.get_container_host_ip()}:{weed.get_exposed_port(8333)}"

    yield from _from_env_or_container("LETHE_S3_ENDPOINT_URL", container)


@pytest.fixture(scope="session")
def smtp_catcher() -> Iterator[tuple[str, int, Path]]:
    """(host, port, directory where the catcher writes <n>.eml). Only the project's own catcher writes files."""
    host = os.environ.get("LETHE_SMTP_HOST")
    directory = os.environ.get("LETHE_SMTP_CATCHER_DIR")
    if not (host and directory):
        pytest.fail(HOW_TO_START.format(var="LETHE_SMTP_HOST and LETHE_SMTP_CATCHER_DIR"), pytrace=False)
    yield host, int(os.environ.get("LETHE_SMTP_PORT", "1025")), Path(directory)


@pytest.fixture
def milvus_uri(tmp_path: Path) -> str:
    """Milvus Lite is embedded: a fresh database file per test. LETHE_MILVUS_TEST_URI points at a server instead."""
    return os.environ.get("LETHE_MILVUS_TEST_URI") or str(tmp_path / "milvus.db")


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[object]:
    """A broker this test alone uses and may stop and restart (``.stop()``, ``.start()``, ``.bootstrap``).

    From the local stack's jars (LETHE_TEST_KAFKA_CLASSPATH, set by the stack scripts); with Docker instead, a
    container that ``stop`` pauses and ``start`` resumes, so its address stays the same.
    """
    classpath = os.environ.get("LETHE_TEST_KAFKA_CLASSPATH")
    if classpath:
        from tests.support import OwnKafkaBroker

        broker = OwnKafkaBroker(classpath, os.environ.get("LETHE_TEST_KAFKA_LOG4J", ""), tmp_path / "kafka")
        broker.format()
        broker.start()
        yield broker
        broker.stop()
        return
    if not _docker_available():
        pytest.fail(HOW_TO_START.format(var="LETHE_TEST_KAFKA_CLASSPATH"), pytrace=False)
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:

        class Paused:
            bootstrap = kafka.get_bootstrap_server()

            def stop(self) -> None:
                kafka.get_wrapped_container().pause()

            def start(self) -> None:
                kafka.get_wrapped_container().unpause()

        yield Paused()


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[object]:
    """A MongoDB-protocol server this test alone uses and may stop and restart (``.stop()``, ``.start()``, ``.url``).

    The local stack's SecantusDB (LETHE_TEST_MONGO_BIN, set by the stack scripts) on a directory of its own.
    """
    binary = os.environ.get("LETHE_TEST_MONGO_BIN")
    if not (binary and Path(binary).exists()):
        pytest.fail(HOW_TO_START.format(var="LETHE_TEST_MONGO_BIN"), pytrace=False)
    from tests.support import OwnMongo

    server = OwnMongo(Path(binary), tmp_path / "mongo")
    server.start()
    yield server
    server.stop()
