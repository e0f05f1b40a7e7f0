"""Kafka at the edge: an idempotent publisher, the topic admin, and the port a handler's results go through."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Protocol

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from shared.events import Event
from shared.metrics import Metrics
from shared.settings import KafkaSettings

log = structlog.get_logger(__name__)


class Publisher(Protocol):
    """Where events go. The Kafka one below; an in-memory fake in ``shared.fakes``."""

    async def publish(self, event: Event) -> None: ...

    async def publish_raw(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None: ...


class KafkaPublisher:
    """An idempotent producer (``acks=all``) that returns only once Kafka has the event durably."""

    def __init__(self, settings: KafkaSettings, *, client_id: str, metrics: Metrics | None = None) -> None:
        self._producer = AIOKafkaProducer(
            **settings.client_options(),
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
        )
        self._metrics = metrics

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, event: Event) -> None:
        await self.publish_raw(event.topic, event.to_bytes(), key=event.key(), headers=[])

    async def publish_raw(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        await self._producer.send_and_wait(topic, value, key=key, headers=headers)
        if self._metrics is not None:
            self._metrics.published.labels(topic).inc()


async def ensure_topics(
    settings: KafkaSettings, names: Iterable[str], *, partitions: int, timeout_s: float = 120.0
) -> list[str]:
    """Create the topics that don't exist yet; wait for the broker to answer first. Returns those created."""
    wanted = list(names)
    deadline = asyncio.get_running_loop().time() + timeout_s
    admin = AIOKafkaAdminClient(**settings.client_options(), client_id="lethe-admin")
    while True:
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.debug("kafka.waiting", bootstrap_servers=settings.bootstrap_servers)
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            # Another process may create some of them at the same moment; that is what we wanted.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in missing]
                )
        return missing
    finally:
        await admin.close()
