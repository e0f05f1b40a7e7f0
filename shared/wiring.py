"""The one factory that wires a service: metrics, publisher, consumer loop, HTTP app and readiness checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from pymongo import AsyncMongoClient

from shared.consumer import Handler, KafkaConsumerLoop, MessageProcessor
from shared.http import ReadinessCheck, add_ops_routes, openapi_document
from shared.kafka import KafkaPublisher, Publisher
from shared.metrics import Metrics
from shared.mongo import CommandCountCollector, command_count
from shared.problems import body_cap_middleware
from shared.service import Hook, Service
from shared.settings import KafkaSettings, ServiceSettings

log = structlog.get_logger(__name__)

# The service's publisher, for HTTP handlers that emit events.
PUBLISHER = web.AppKey("publisher", Publisher)


@dataclass
class ServiceDeps:
    """Dependencies a test may replace with fakes; anything left ``None`` is built from settings."""

    publisher: Publisher | None = None


def _consumer(
    name: str,
    routes: Mapping[str, Handler],
    kafka: KafkaSettings,
    publisher: Publisher,
    metrics: Metrics,
    partitions_at_once: int | None,
) -> KafkaConsumerLoop:
    processor = MessageProcessor(routes=routes, publisher=publisher, settings=kafka, metrics=metrics)
    return KafkaConsumerLoop(
        kafka,
        group_id=kafka.group_of(name),
        client_id=f"lethe-{name}",
        processor=processor,
        partitions_at_once=partitions_at_once or kafka.partitions_at_once,
    )


def build_service(
    *,
    name: str,
    description: str,
    settings: ServiceSettings,
    kafka: KafkaSettings,
    routes: Mapping[str, Handler],
    checks: Mapping[str, ReadinessCheck],
    deps: ServiceDeps | None = None,
    api_paths: Mapping[str, Any] | None = None,
    api_schemas: Mapping[str, Any] | None = None,
    web_app: web.Application | None = None,
    on_start: Sequence[Hook] = (),
    on_stop: Sequence[Hook] = (),
    partitions_at_once: int | None = None,
    mongo: AsyncMongoClient[dict[str, Any]] | None = None,
) -> Service:
    """Build (without any I/O) a service that consumes ``routes`` and serves ops endpoints plus ``web_app``."""
    metrics = Metrics(service=name)
    if mongo is not None:  # its round trips on /metrics, for the benchmark's per-deletion figures
        metrics.registry.register(CommandCountCollector(command_count(mongo)))
    starts: list[Hook] = list(on_start)
    stops: list[Hook] = list(on_stop)
    publisher = (deps or ServiceDeps()).publisher
    if publisher is None:
        kafka_publisher = KafkaPublisher(kafka, client_id=f"lethe-{name}", metrics=metrics)
        starts.insert(0, kafka_publisher.start)
        stops.insert(0, kafka_publisher.stop)
        publisher = kafka_publisher
    consumer = _consumer(name, routes, kafka, publisher, metrics, partitions_at_once) if routes else None
    all_checks = dict(checks)
    if consumer is not None:
        loop = consumer

        async def kafka_ready() -> bool:
            return loop.ready

        all_checks = {"kafka": kafka_ready, **all_checks}
    app = web_app or web.Application(client_max_size=1024 * 1024, middlewares=[body_cap_middleware])
    app[PUBLISHER] = publisher
    openapi = openapi_document(title=f"lethe {name}", description=description, paths=api_paths, schemas=api_schemas)
    add_ops_routes(app, service=name, metrics=metrics, checks=all_checks, openapi=openapi)
    return Service(
        name=name,
        publisher=publisher,
        web_app=app,
        host=settings.http_host,
        port=settings.http_port,
        metrics=metrics,
        consumer=consumer,
        on_start=starts,
        on_stop=stops,
    )
