"""docker-compose.yml stays in step with the code and the images it runs (no Docker engine runs here to try it).

Every service, port, variable and Kafka principal is real; each service's settings validate with exactly the
environment compose gives it; every secret is required; every volume is mounted where its server writes and is
writable by the user its image runs as.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from services.audit.settings import AuditSettings
from services.intake.settings import IntakeSettings
from services.keyvault.settings import KeyvaultSettings
from services.notifier.settings import NotifierSettings
from services.purger.settings import PurgerSettings
from shared import topology
from shared.bus import PrincipalPasswords
from shared.settings import KafkaSettings, LogSettings

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
KAFKA_PROPERTIES = ROOT / "deploy/compose/kafka/server.properties"
SERVICES: dict[str, type[BaseSettings]] = {
    "intake": IntakeSettings,
    "purger": PurgerSettings,
    "keyvault": KeyvaultSettings,
    "notifier": NotifierSettings,
    "audit": AuditSettings,
}
# The variable that says where each kind of server is; a service using that kind must set it.
ADDRESS_OF = {
    "kafka": "LETHE_KAFKA_BOOTSTRAP_SERVERS",
    "mongo": "LETHE_MONGO_URL",
    "s3": "LETHE_S3_ENDPOINT_URL",
    "smtp": "LETHE_SMTP_HOST",
    "milvus": "LETHE_MILVUS_URI",
    "postgres": "LETHE_POSTGRES_URL",
    "auth": "LETHE_AUTH_JWT_SECRET",
}
# intake's public API keeps the fixed host port its public URL names; every other service can be scaled.
FIXED_HOST_PORT = {"intake"}
# Secret settings that compose may give a literal value, and why.
LITERAL_SECRETS = {
    # The URL holds no credential here: this file's MongoDB has no users and is reached on the compose network only.
    "LETHE_MONGO_URL",
}
# Secret URLs whose one secret, the password, is a required variable: the one the server it reaches is given too.
PASSWORD_IN_URL = {"LETHE_POSTGRES_URL": "POSTGRES_PASSWORD"}


@dataclass(frozen=True)
class ImageUser:
    """Who an image's server runs as, and the directories the image creates owned by (and writable for) it.

    A new named volume mounted on a directory that exists in the image starts with that directory's owner;
    mounted anywhere else, it belongs to root and a non-root server cannot write it.
    """

    uid: int
    writable: frozenset[str]


IMAGE_USERS = {
    # apache/kafka's docker/jvm/Dockerfile: `adduser appuser` (Alpine's first uid), `USER appuser`; /var/lib/kafka
    # is chowned to appuser and made ug+w, /opt/kafka (where start.sh renders the config) chowned to appuser.
    "apache/kafka": ImageUser(1000, frozenset({"/var/lib/kafka/data", "/opt/kafka/config"})),
    # docker-library/mongo's Dockerfile: `useradd --uid 999 mongodb`, /data/db and /data/configdb chowned to it; the
    # entrypoint starts as root and steps down to mongodb with gosu.
    "mongo": ImageUser(999, frozenset({"/data/db", "/data/configdb"})),
    # docker-library/postgres's Dockerfile: `useradd --uid=999 postgres`, $PGDATA (/var/lib/postgresql/data) and
    # /var/run/postgresql installed owned by it; the entrypoint starts as root and steps down to postgres with gosu.
    "postgres": ImageUser(999, frozenset({"/var/lib/postgresql/data", "/var/run/postgresql"})),
    # seaweedfs's docker/Dockerfile.go_build: `adduser -u 1000 seaweed`, /data and /etc/seaweedfs chowned to it; its
    # docker/entrypoint.sh starts as root, gives /data to seaweed if it is not yet and drops to it with su-exec.
    "chrislusf/seaweedfs": ImageUser(1000, frozenset({"/data", "/etc/seaweedfs"})),
    # Mailpit keeps its mail in memory here: no volume, so no entry.
    # Ours: the Dockerfile (test_the_dockerfile_runs_as_the_declared_user_and_owns_its_volume_directories).
    "lethe": ImageUser(10001, frozenset({"/app/var/keyvault", "/app/var/audit", "/app/var/milvus"})),
}

# A Compose variable reference: $$ (a literal dollar), ${NAME}, ${NAME:-default}, ${NAME:?error}, ... or $NAME.
VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
REQUIRED = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):\?[^}]+\}$")


def interpolate(value: str) -> str:
    """The value compose would give, with every required variable set to ``required:<NAME>``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name") or match.group("bare"), match.group("op"), match.group("arg")
        if op in (":?", "?"):
            return f"required:{name}"
        if op in (":-", "-"):
            return arg or ""
        raise AssertionError(f"${{{name}}} has neither a default nor an error: compose would put an empty string")

    return VARIABLE.sub(substitute, value)


def environment(name: str) -> dict[str, str]:
    return {key: interpolate(str(value)) for key, value in COMPOSE["services"][name]["environment"].items()}


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in strings(key) + strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def settings_fields(settings_cls: type[BaseSettings]) -> dict[str, Any]:
    """Each environment variable a settings class reads, with its field."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    fields: dict[str, Any] = {}
    for field, info in settings_cls.model_fields.items():
        factory = info.default_factory
        if isinstance(factory, type) and issubclass(factory, BaseSettings):
            fields |= settings_fields(factory)
        else:
            fields[f"{prefix}{field}".upper()] = info
    return fields


def env_names(settings_cls: type[BaseSettings]) -> set[str]:
    return set(settings_fields(settings_cls))


def nested_kinds(settings_cls: type[BaseSettings]) -> set[str]:
    return {
        field
        for field, info in settings_cls.model_fields.items()
        if isinstance(info.default_factory, type) and issubclass(info.default_factory, BaseSettings)
    }


def is_secret(info: Any) -> bool:
    annotation = info.annotation
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def container_ports(service: dict[str, Any]) -> set[int]:
    declared = [str(p) for p in service.get("ports", []) + service.get("expose", [])]
    return {int(p.rsplit(":", 1)[-1]) for p in declared}


def host_port(spec: str) -> str:
    """The host port of a short-syntax port ("8002", "127.0.0.1::8002" or "8001:8001"); "" when ephemeral."""
    parts = spec.split(":")
    return parts[-2] if len(parts) > 1 else ""


def volumes(name: str) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each of a service's volumes, in short syntax."""
    mounts = []
    for spec in COMPOSE["services"][name].get("volumes", []):
        source, target, *mode = spec.split(":")
        mounts.append((source, target, mode == ["ro"]))
    return mounts


def named_volume(name: str, volume: str) -> str:
    (target,) = [t for s, t, _ in volumes(name) if s == volume]
    return target


def image_user(service: dict[str, Any]) -> ImageUser:
    repository = service["image"].rsplit(":", 1)[0]
    return IMAGE_USERS[repository]


def kafka_properties() -> dict[str, str]:
    lines = [line for line in KAFKA_PROPERTIES.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def with_environment(env: dict[str, str]) -> Any:
    return mock.patch.dict(os.environ, env, clear=True)


def test_every_image_is_pinned_to_a_release():
    for name, service in COMPOSE["services"].items():
        image = service["image"]
        if "build" in service:
            assert image == "lethe:local", name
            continue
        _, _, tag = image.rpartition(":")
        assert re.fullmatch(r"v?\d+(\.\d+)+", tag), f"{name} runs {image}: pin a release, not a moving tag"
    for base in re.findall(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE):
        assert re.search(r":\d+\.\d+\.\d+", base), f"the Dockerfile starts from {base}: pin a release"


def test_kafka_is_the_release_the_local_stack_runs():
    pom = (ROOT / "deploy/local/kafka/pom.xml").read_text()
    (version,) = re.findall(r"<kafka.version>(.+)</kafka.version>", pom)
    assert COMPOSE["services"]["kafka"]["image"] == f"apache/kafka:{version}"


def test_the_servers_are_the_real_images():
    images = {name: COMPOSE["services"][name]["image"] for name in ("kafka", "mongo", "postgres", "s3", "smtp")}
    assert images["kafka"].startswith("apache/kafka:4.")
    assert images["mongo"].startswith("mongo:8.")
    assert images["postgres"].startswith("postgres:17.")
    assert images["s3"].startswith("chrislusf/seaweedfs:")
    assert images["smtp"].startswith("axllent/mailpit:")


def test_every_server_and_service_has_a_healthcheck_and_the_services_restart():
    for name in ("kafka", "mongo", "postgres", "s3", "smtp", "milvus", *SERVICES):
        assert "healthcheck" in COMPOSE["services"][name], name
    for name in SERVICES:
        assert COMPOSE["services"][name]["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_runs_its_own_module_from_the_one_image_after_the_bus_is_set_up(name):
    service = COMPOSE["services"][name]
    assert service["command"] == ["python", "-m", f"services.{name}"]
    assert service["build"] == "."
    assert service["depends_on"]["kafka-setup"] == {"condition": "service_completed_successfully"}
    assert service["depends_on"]["mongo"] == {"condition": "service_healthy"}


def test_the_setup_job_runs_once_kafka_is_healthy():
    job = COMPOSE["services"]["kafka-setup"]
    assert job["command"] == ["python", "-m", "ops.cli", "kafka", "setup"]
    assert job["image"] == "lethe:local"
    assert job["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert job.get("restart", "no") == "no", "a one-shot job; the services wait for it to complete"


# A service with a keyvault token calls the key API (audit only links to keyvault's readiness in its console).
KEYVAULT_CLIENTS = sorted(n for n, cls in SERVICES.items() if f"{n.upper()}_KEYVAULT_TOKEN" in env_names(cls))


@pytest.mark.parametrize("name", KEYVAULT_CLIENTS)
def test_a_service_that_calls_keyvault_waits_until_it_is_healthy(name):
    assert f"{name.upper()}_KEYVAULT_TOKEN" in COMPOSE["services"][name]["environment"]
    assert COMPOSE["services"][name]["depends_on"]["keyvault"] == {"condition": "service_healthy"}


@pytest.mark.parametrize(("name", "settings_cls"), sorted(SERVICES.items()))
def test_each_service_listens_on_the_port_its_settings_name(name, settings_cls):
    service = COMPOSE["services"][name]
    port = int(service["environment"][f"{name.upper()}_HTTP_PORT"])
    assert port == settings_cls.model_fields["http_port"].default
    assert container_ports(service) == {port}
    assert f"http://127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"])


@pytest.mark.parametrize("name", sorted(set(SERVICES) - FIXED_HOST_PORT))
def test_a_scalable_service_publishes_no_fixed_host_port(name):
    for spec in COMPOSE["services"][name].get("ports", []):
        assert host_port(str(spec)) == "", f"{name} publishes {spec}: a second replica could not bind it"


def test_intake_publishes_the_port_of_its_public_url():
    (spec,) = COMPOSE["services"]["intake"]["ports"]
    public_url = environment("intake")["INTAKE_PUBLIC_URL"]
    assert public_url.endswith(f":{host_port(spec)}")


@pytest.mark.parametrize(("name", "settings_cls"), sorted(SERVICES.items()))
def test_every_environment_variable_is_a_setting_the_service_reads(name, settings_cls):
    known = env_names(settings_cls) | env_names(LogSettings)
    unknown = set(COMPOSE["services"][name]["environment"]) - known
    assert not unknown, f"{name} is given variables no settings class reads: {sorted(unknown)}"


@pytest.mark.parametrize(("name", "settings_cls"), sorted(SERVICES.items()))
def test_every_server_a_service_uses_has_its_address_set(name, settings_cls):
    env = COMPOSE["services"][name]["environment"]
    for kind in nested_kinds(settings_cls):
        assert ADDRESS_OF[kind] in env, f"{name} uses {kind} but compose does not say where it is"


def test_every_variable_is_required_or_has_a_default():
    for value in strings(COMPOSE):
        interpolate(value)  # raises on a bare ${NAME}


@pytest.mark.parametrize(("name", "settings_cls"), sorted(SERVICES.items()))
def test_each_service_settings_validate_with_the_environment_compose_gives_it(name, settings_cls):
    with with_environment(environment(name)):
        settings: Any = settings_cls()
        LogSettings()
    kafka: KafkaSettings = settings.kafka
    assert kafka.bootstrap_servers == "kafka:9092"
    assert kafka.security_protocol == "SASL_PLAINTEXT"
    assert kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert kafka.sasl_username == name, f"{name} must connect as its own principal"
    assert kafka.sasl_password == SecretStr(f"required:KAFKA_PASSWORD_{name.upper()}")


@pytest.mark.parametrize(("name", "settings_cls"), sorted(SERVICES.items()))
def test_every_secret_comes_from_a_required_variable(name, settings_cls):
    fields = settings_fields(settings_cls) | settings_fields(LogSettings)
    raw = COMPOSE["services"][name]["environment"]
    for variable, info in fields.items():
        if not is_secret(info) or variable in LITERAL_SECRETS:
            continue
        if info.default is not None:
            assert variable in raw, f"{name} would run with {variable}'s development default"
        if variable in PASSWORD_IN_URL and variable in raw:
            password = urlsplit(interpolate(str(raw[variable]))).password
            assert password == f"required:{PASSWORD_IN_URL[variable]}", f"{name}'s {variable} has a literal password"
        elif variable in raw:
            assert REQUIRED.match(str(raw[variable])), f"{name}'s {variable} must be ${{VAR:?…}}, not a literal"


def test_the_s3_server_and_the_purger_share_the_same_required_credentials():
    server, purger = COMPOSE["services"]["s3"]["environment"], COMPOSE["services"]["purger"]["environment"]
    for variable in ("LETHE_S3_ACCESS_KEY_ID", "LETHE_S3_SECRET_ACCESS_KEY"):
        assert REQUIRED.match(server[variable])
        assert server[variable] == purger[variable]


def test_the_purger_reaches_postgres_as_the_user_and_database_the_server_creates_with_its_password():
    server, url = environment("postgres"), urlsplit(environment("purger")["LETHE_POSTGRES_URL"])
    assert REQUIRED.match(COMPOSE["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"])
    assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432)
    assert (url.username, url.password) == (server["POSTGRES_USER"], server["POSTGRES_PASSWORD"])
    assert url.path == f"/{server['POSTGRES_DB']}"
    assert COMPOSE["services"]["purger"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_the_setup_job_registers_the_password_each_principal_connects_with():
    env = environment("kafka-setup")
    with with_environment(env):
        PrincipalPasswords()  # every principal's password is set
        admin = KafkaSettings()
    assert admin.sasl_username == "admin"
    assert admin.sasl_password == SecretStr("required:KAFKA_PASSWORD_ADMIN")
    assert environment("kafka")["LETHE_KAFKA_PASSWORD_ADMIN"] == "required:KAFKA_PASSWORD_ADMIN"
    for principal in topology.PRINCIPALS:
        assert env[f"LETHE_KAFKA_PASSWORD_{principal.upper()}"] == f"required:KAFKA_PASSWORD_{principal.upper()}"
    for service in topology.SERVICES:
        assert environment(service)["LETHE_KAFKA_SASL_PASSWORD"] == f"required:KAFKA_PASSWORD_{service.upper()}"


def test_the_broker_authenticates_every_client_and_refuses_what_no_acl_allows():
    properties = kafka_properties()
    assert properties["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["super.users"] == "User:admin"
    protocols = dict(pair.split(":") for pair in properties["listener.security.protocol.map"].split(","))
    assert all(protocol.startswith("SASL_") for protocol in protocols.values()), protocols
    for listener in protocols:
        if listener != properties["controller.listener.names"]:
            assert properties[f"listener.name.{listener.lower()}.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert "SASL_PLAINTEXT://kafka:9092" in properties["advertised.listeners"].split(",")
    assert COMPOSE["x-kafka-client"]["LETHE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_the_kafka_healthcheck_authenticates_with_the_file_start_sh_writes():
    probe = " ".join(COMPOSE["services"]["kafka"]["healthcheck"]["test"])
    (config,) = re.findall(r"--command-config (\S+)", probe)
    start = (ROOT / "deploy/compose/kafka/start.sh").read_text()
    directory = re.search(r"^conf=(\S+)", start, re.MULTILINE)
    assert directory and str(PurePosixPath(directory.group(1)) / "admin.properties") == config
    assert '"$conf/admin.properties"' in start
    assert config.startswith(tuple(IMAGE_USERS["apache/kafka"].writable))


@pytest.mark.parametrize("name", sorted(n for n, s in COMPOSE["services"].items() if s.get("volumes")))
def test_every_volume_is_writable_by_the_user_its_image_runs_as(name):
    service = COMPOSE["services"][name]
    user = image_user(service)
    assert "user" not in service, f"{name} overrides the image's user: update IMAGE_USERS"
    for source, target, read_only in volumes(name):
        if source in COMPOSE["volumes"]:
            assert target in user.writable, f"{name}: {source} on {target}, which uid {user.uid} cannot write"
        else:
            assert read_only, f"{name}: the bind mount {source} must be read-only"
            assert_readable_by_anyone(ROOT / source)


def assert_readable_by_anyone(path: Path) -> None:
    # The container's user is not the host's owner of the checkout.
    assert path.exists(), path
    for item in [path, *path.rglob("*")]:
        mode = item.stat().st_mode
        assert mode & stat.S_IROTH, f"{item} is not world-readable (the container's user could not read it)"
        if item.is_dir():
            assert mode & stat.S_IXOTH, f"{item} is not world-searchable"


def test_each_server_writes_where_its_volume_is_mounted():
    def argument(name: str, flag: str) -> str:
        command = COMPOSE["services"][name]["command"]
        return str(command[command.index(flag) + 1])

    def directory_of(name: str, variable: str) -> str:
        return str(PurePosixPath(environment(name)[variable]).parent)

    writes_to = {
        "kafka": ("kafka-data", kafka_properties()["log.dirs"]),
        "milvus": ("milvus-data", argument("milvus", "--data-dir")),
        "keyvault": ("keyvault-data", directory_of("keyvault", "KEYVAULT_LOCAL_KEYRING_FILE")),
        "audit": ("audit-data", directory_of("audit", "AUDIT_SIGNING_KEY_FILE")),
        # mongod's default dbPath; the seaweedfs entrypoint's -dir.
        "mongo": ("mongo-data", "/data/db"),
        "s3": ("s3-data", "/data"),
        # The postgres image's PGDATA.
        "postgres": ("postgres-data", "/var/lib/postgresql/data"),
    }
    assert {volume for volume, _ in writes_to.values()} == set(COMPOSE["volumes"])
    for name, (volume, path) in writes_to.items():
        assert named_volume(name, volume) == path, f"{name} writes to {path}, not to its volume {volume}"


@pytest.mark.parametrize("name", ["kafka", "s3"])
def test_a_server_started_by_a_script_of_ours_finds_it_in_a_mount(name):
    service = COMPOSE["services"][name]
    shell, script = service["entrypoint"]
    assert shell == "/bin/sh"  # so the script needs no exec bit
    (source,) = [s for s, t, _ in volumes(name) if script.startswith(t + "/")]
    assert (ROOT / source / PurePosixPath(script).name).is_file()


def test_the_dockerfile_runs_as_the_declared_user_and_owns_its_volume_directories():
    dockerfile = (ROOT / "Dockerfile").read_text()
    (uid, user) = re.findall(r"useradd .*--uid (\d+) (\w+)", dockerfile)[0]
    assert re.findall(r"^USER (\w+)", dockerfile, re.MULTILINE) == [user]
    assert int(uid) == IMAGE_USERS["lethe"].uid
    (created,) = re.findall(r"mkdir -p ([^&]+)&&", dockerfile)
    (owned,) = re.findall(rf"chown -R {user} (\S+)", dockerfile)
    assert IMAGE_USERS["lethe"].writable <= set(created.split())
    assert all(directory.startswith(owned + "/") for directory in IMAGE_USERS["lethe"].writable)
