"""The authenticated, least-privilege bus: each principal's SCRAM credential and ACLs, derived from the topology.

``lethe kafka setup`` (run by ``make up`` and compose's one-shot setup job, as the ``admin`` super user) makes the
broker hold exactly these: every service writes only the topics it produces (and the dead-letter twins of what it
reads), reads only the topics it consumes, and the ``upstream`` principal writes only ``deletion.intents``. What is
not allowed is refused (``allow.everyone.if.no.acl.found=false``), an anonymous client included.

aiokafka has no ACL or SCRAM admin API, so this uses confluent-kafka's AdminClient (librdkafka).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import topics, topology
from shared.settings import KafkaSettings

# Consumer group names carry a deployment prefix (``LETHE_KAFKA_GROUP_PREFIX``) that differs between deployments
# and test runs, so services may join any group; the topics are what the ACLs narrow.
ANY = "*"
SCRAM_ITERATIONS = 8192


class PrincipalPasswords(BaseSettings):
    """Every principal's password (``LETHE_KAFKA_PASSWORD_<NAME>``): required, no defaults outside local scripts."""

    model_config = SettingsConfigDict(env_prefix="LETHE_KAFKA_PASSWORD_", extra="ignore")

    intake: SecretStr
    purger: SecretStr
    keyvault: SecretStr
    notifier: SecretStr
    audit: SecretStr
    upstream: SecretStr

    def of(self, principal: str) -> SecretStr:
        value: SecretStr = getattr(self, principal)
        return value


@dataclass(frozen=True, order=True)
class Grant:
    """One ACL: ``principal`` may ``operation`` the ``resource`` (``topic`` or ``group``) named ``name``."""

    principal: str
    operation: str  # READ, WRITE, DESCRIBE
    resource: str  # TOPIC, GROUP
    name: str
    prefixed: bool = False


def grants() -> list[Grant]:
    """Every ACL the bus needs, from ``shared.topology``: nothing more."""
    wanted: set[Grant] = set()
    for flow in topology.FLOWS:
        for p in flow.producers:
            wanted.add(Grant(p, "WRITE", "TOPIC", flow.topic))
        for p in {*flow.consumers, *flow.watchers}:
            wanted.add(Grant(p, "READ", "TOPIC", flow.topic))
        for p in flow.consumers:
            if p != topology.UPSTREAM:
                wanted.add(Grant(p, "WRITE", "TOPIC", topics.dlq(flow.topic)))
    for principal in topology.SERVICES:
        wanted.add(Grant(principal, "READ", "GROUP", ANY))
    # The upstream services' own consumer groups (to read deletion.rejected) start with "upstream".
    wanted.add(Grant(topology.UPSTREAM, "READ", "GROUP", topology.UPSTREAM, prefixed=True))
    # The console shows every dead letter and every group's lag.
    for topic in topics.EVENT_TOPICS:
        wanted.add(Grant("audit", "READ", "TOPIC", topics.dlq(topic)))
    wanted.add(Grant("audit", "DESCRIBE", "GROUP", ANY))
    return sorted(wanted)


def admin_config(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka's configuration for the same broker and principal as ``kafka``."""
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security_protocol,
    }
    if kafka.security_protocol != "PLAINTEXT":
        options = kafka.client_options()
        config |= {
            "sasl.mechanism": options["sasl_mechanism"],
            "sasl.username": options["sasl_plain_username"],
            "sasl.password": options["sasl_plain_password"],
        }
    return config


@dataclass(frozen=True)
class SetupReport:
    users: tuple[str, ...]
    granted: int
    revoked: int


def _binding(g: Grant) -> AclBinding:
    return AclBinding(
        ResourceType[g.resource],
        g.name,
        ResourcePatternType.PREFIXED if g.prefixed else ResourcePatternType.LITERAL,
        f"User:{g.principal}",
        "*",
        AclOperation[g.operation],
        AclPermissionType.ALLOW,
    )


def _upsert_users(admin: AdminClient, kafka: KafkaSettings, passwords: PrincipalPasswords, timeout_s: float) -> None:
    mechanism = (
        ScramMechanism.SCRAM_SHA_512 if kafka.sasl_mechanism == "SCRAM-SHA-512" else ScramMechanism.SCRAM_SHA_256
    )
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            p, ScramCredentialInfo(mechanism, SCRAM_ITERATIONS), passwords.of(p).get_secret_value().encode()
        )
        for p in topology.PRINCIPALS
    ]
    for future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout_s).values():
        future.result()


def _revoke_others(admin: AdminClient, wanted: set[AclBinding], timeout_s: float) -> int:
    """Take back anything else granted to our principals (a flow removed since): least privilege stays exact."""
    ours = {f"User:{p}" for p in topology.PRINCIPALS}
    # None matches any name, principal and host (the stubs say str; librdkafka takes None as "any").
    any_filter = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    existing = admin.describe_acls(any_filter, request_timeout=timeout_s).result()
    stale = [b for b in existing if b.principal in ours and b not in wanted]
    if stale:
        for future in admin.delete_acls(stale, request_timeout=timeout_s).values():
            future.result()
    return len(stale)


def setup(kafka: KafkaSettings, passwords: PrincipalPasswords, *, timeout_s: float = 30) -> SetupReport:
    """Make the broker's SCRAM users and ACLs for lethe's principals exactly what the topology says (idempotent).

    Blocking (librdkafka's futures); call it in a thread from async code.
    """
    admin = AdminClient(admin_config(kafka))
    _upsert_users(admin, kafka, passwords, timeout_s)
    wanted = grants()
    bindings = {_binding(g) for g in wanted}
    for future in admin.create_acls(list(bindings), request_timeout=timeout_s).values():
        future.result()
    revoked = _revoke_others(admin, bindings, timeout_s)
    return SetupReport(users=topology.PRINCIPALS, granted=len(wanted), revoked=revoked)


def describe(grants_: Iterable[Grant]) -> list[str]:
    """One line per ACL, for ``lethe kafka acls``."""
    return [
        f"User:{g.principal:<9} {g.operation:<8} {g.resource.lower()} {g.name}{'*' if g.prefixed else ''}"
        for g in grants_
    ]
