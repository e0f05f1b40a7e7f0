"""The bus is authenticated and least-privilege, on the local stack's Kafka (SASL/SCRAM, ACLs from the topology).

Each principal writes only what shared/topology.py says it produces; an anonymous client and a wrong password are
refused; `lethe kafka setup` is idempotent.
"""

import os
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAuthorizationFailedError

from shared import topics, topology
from shared.bus import PrincipalPasswords, grants, setup
from shared.events import DatasetOutcome, DeletionPurged
from shared.settings import KafkaSettings

pytestmark = pytest.mark.asyncio


def principal(bootstrap: str, name: str, password: str | None = None) -> KafkaSettings:
    secret = password if password is not None else os.environ.get(f"LETHE_KAFKA_PASSWORD_{name.upper()}", "")
    return KafkaSettings(bootstrap_servers=bootstrap, sasl_username=name, sasl_password=secret)


def purged() -> DeletionPurged:
    return DeletionPurged(
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        subject_id=f"acl-{uuid.uuid4().hex[:6]}",
        producer="purger",
        outcomes=(DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),),
    )


async def publish(settings: KafkaSettings, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(**settings.client_options(), request_timeout_ms=10_000, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"acl-test")
    finally:
        await producer.stop()


async def test_only_the_purger_may_publish_deletion_purged(kafka_bootstrap):
    event = purged()
    await publish(principal(kafka_bootstrap, "purger"), topics.DELETION_PURGED, event.to_bytes())
    for other in ("notifier", "intake", "keyvault", "audit", "upstream"):
        with pytest.raises((TopicAuthorizationFailedError, KafkaError)):
            await publish(principal(kafka_bootstrap, other), topics.DELETION_PURGED, event.to_bytes())


async def test_only_intake_may_publish_deletion_requested_and_upstream_only_its_intents(kafka_bootstrap):
    with pytest.raises((TopicAuthorizationFailedError, KafkaError)):
        await publish(principal(kafka_bootstrap, "upstream"), topics.DELETION_REQUESTED, b"{}")
    with pytest.raises((TopicAuthorizationFailedError, KafkaError)):
        await publish(principal(kafka_bootstrap, "purger"), topics.DELETION_REQUESTED, b"{}")
    intents = [f.topic for f in topology.FLOWS if topology.UPSTREAM in f.producers]
    for topic in intents:  # whatever the topology lets upstream write, it can
        await publish(principal(kafka_bootstrap, "upstream"), topic, b"{}")


async def test_an_anonymous_client_is_refused(kafka_bootstrap):
    anonymous = KafkaSettings(bootstrap_servers=kafka_bootstrap, security_protocol="PLAINTEXT")
    producer = AIOKafkaProducer(**anonymous.client_options(), request_timeout_ms=3000, metadata_max_age_ms=3000)
    with pytest.raises((KafkaConnectionError, KafkaError)):
        await producer.start()
        await producer.send_and_wait(topics.DELETION_PURGED, b"{}")
    await producer.stop()


async def test_a_wrong_password_is_refused(kafka_bootstrap):
    with pytest.raises((KafkaConnectionError, KafkaError)):
        await publish(principal(kafka_bootstrap, "purger", password="not-the-password"), topics.DELETION_PURGED, b"{}")


async def test_each_principal_sees_exactly_the_topics_it_may_read_or_write(kafka_bootstrap):
    # A topic a principal may neither read nor write is not even described to it (Kafka hides it), so the topics
    # a principal sees are exactly its grants.
    for name in topology.PRINCIPALS:
        reader = AIOKafkaConsumer(**principal(kafka_bootstrap, name).client_options(), request_timeout_ms=10_000)
        await reader.start()
        try:
            visible = await reader.topics()
        finally:
            await reader.stop()
        granted = {g.name for g in grants() if g.principal == name and g.resource == "TOPIC"}
        assert visible == granted, name
        assert (topics.DELETION_PURGED in visible) == (name in ("purger", "keyvault", "intake", "audit"))


async def test_setup_is_idempotent_and_puts_in_force_exactly_the_topologys_acls(kafka_bootstrap):
    admin = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    passwords = PrincipalPasswords()  # type: ignore[call-arg]  # from the stack's environment
    first = setup(admin, passwords)
    again = setup(admin, passwords)
    assert first.granted == again.granted == len(grants())
    assert again.revoked == 0
    assert set(again.users) == set(topology.PRINCIPALS)
