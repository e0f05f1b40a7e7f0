"""docker-compose.yml stays in step with the code: every service, port and environment variable is real."""

from pathlib import Path

import pytest
import yaml
from pydantic_settings import BaseSettings

from services.audit.settings import AuditSettings
from services.intake.settings import IntakeSettings
from services.keyvault.settings import KeyvaultSettings
from services.notifier.settings import NotifierSettings
from services.purger.settings import PurgerSettings
from shared.settings import LogSettings

COMPOSE = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
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
    "auth": "LETHE_AUTH_JWT_SECRET",
}


def env_names(settings_cls: type[BaseSettings]) -> set[str]:
    prefix = settings_cls.model_config.get("env_prefix", "")
    names = set()
    for field, info in settings_cls.model_fields.items():
        factory = info.default_factory
        if isinstance(factory, type) and issubclass(factory, BaseSettings):
            names |= env_names(factory)
        else:
            names.add(f"{prefix}{field}".upper())
    return names


def nested_kinds(settings_cls: type[BaseSettings]) -> set[str]:
    return {
        field
        for field, info in settings_cls.model_fields.items()
        if isinstance(info.default_factory, type) and issubclass(info.default_factory, BaseSettings)
    }


def container_ports(service: dict) -> set[int]:
    declared = [str(p) for p in service.get("ports", []) + service.get("expose", [])]
    return {int(p.rsplit(":", 1)[-1]) for p in declared}


def test_the_servers_are_the_real_images():
    images = {name: COMPOSE["services"][name]["image"] for name in ("kafka", "mongo", "s3", "smtp")}
    assert images["kafka"].startswith("apache/kafka:4.")
    assert images["mongo"] == "mongo:8"
    assert "seaweedfs" in images["s3"]


def test_every_server_and_service_has_a_healthcheck_and_the_services_restart():
    for name in ("kafka", "mongo", "s3", "smtp", "milvus", *SERVICES):
        assert "healthcheck" in COMPOSE["services"][name], name
    for name in SERVICES:
        assert COMPOSE["services"][name]["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_runs_its_own_module_from_the_one_image(name):
    service = COMPOSE["services"][name]
    assert service["command"] == ["python", "-m", f"services.{name}"]
    assert service["build"] == "."
    assert service["depends_on"]["topics"] == {"condition": "service_completed_successfully"}


@pytest.mark.parametrize(("name", "settings_cls"), sorted(SERVICES.items()))
def test_each_service_listens_on_the_port_its_settings_name(name, settings_cls):
    service = COMPOSE["services"][name]
    port = int(service["environment"][f"{name.upper()}_HTTP_PORT"])
    assert port == settings_cls.model_fields["http_port"].default
    assert container_ports(service) == {port}
    assert f"http://127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"])


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
