"""Wiring and lifecycle of the audit service: no decisions here, see handlers.py."""

from __future__ import annotations

import structlog
from aiohttp import web

from services.audit import api, console, handlers
from services.audit.adapters.kafka_lag import consumer_lag
from services.audit.adapters.log import MongoAuditLog
from services.audit.adapters.sessions import MongoConsoleSessions
from services.audit.adapters.upstream import Upstream, service_urls
from services.audit.openapi import build_spec
from services.audit.ports import AuditLog
from services.audit.settings import AuditSettings
from shared.auth import TokenVerifier
from shared.datamap import DataMap, load_datamap
from shared.events import utcnow
from shared.mongo import create_mongo_client, mongo_ping
from shared.problems import body_cap_middleware, problem_middleware
from shared.service import Service
from shared.signing import Signer
from shared.wiring import ServiceDeps, build_service

log = structlog.get_logger(__name__)

DESCRIPTION = (
    "Keeps the append-only, hash-chained log of every event, and a receipt per request; serves the operator "
    "console at /console."
)


def build_signer(settings: AuditSettings) -> Signer:
    if settings.signing_key is not None:
        return Signer.from_seed_b64(settings.signing_key.get_secret_value())
    return Signer.load_or_create(settings.signing_key_file)


async def checkpoint(audit_log: AuditLog, signer: Signer, settings: AuditSettings) -> None:
    """One round of the checkpoint job (the only holder of the signing key besides the receipt endpoint)."""
    await handlers.checkpoint_if_due(
        audit_log,
        signer,
        now=utcnow(),
        every_entries=settings.checkpoint_every_entries,
        every_s=settings.checkpoint_every_s,
    )


def create_app(settings: AuditSettings, *, deps: ServiceDeps | None = None) -> Service:
    mongo = create_mongo_client(settings.mongo)
    audit_log = MongoAuditLog(mongo, settings.mongo.database)
    signer = build_signer(settings)
    datamap: DataMap | None = load_datamap(settings.datamap_path) if settings.datamap_path.exists() else None
    web_app = web.Application(client_max_size=16 * 1024, middlewares=[problem_middleware, body_cap_middleware])
    api.add_routes(
        web_app,
        audit_log=audit_log,
        signer=signer,
        verifier=TokenVerifier(settings.auth),
        datamap=datamap,
        clock=utcnow,
        page_cap=settings.page_size_cap,
    )
    upstream = Upstream(service_urls(settings))
    console.add_console(
        web_app,
        settings=settings,
        audit_log=audit_log,
        signer=signer,
        verifier=TokenVerifier(settings.auth),
        sessions=MongoConsoleSessions(mongo, settings.mongo.database),
        upstream=upstream,
        read_lag=lambda: consumer_lag(settings.kafka),
        datamap=datamap,
        clock=utcnow,
    )
    spec = build_spec(settings.page_size_cap)
    service = build_service(
        name="audit",
        description=DESCRIPTION,
        settings=settings,
        kafka=settings.kafka,
        routes=handlers.routes(audit_log, utcnow),
        checks={"mongo": lambda: mongo_ping(mongo)},
        deps=deps,
        mongo=mongo,
        api_paths=spec.paths,
        api_schemas=spec.schemas,
        web_app=web_app,
        on_start=[audit_log.ensure_indexes, upstream.start],
        on_stop=[upstream.stop, mongo.close],
        partitions_at_once=1,  # every entry extends one hash chain: concurrent appends would only contend for its head
    )
    interval = min(settings.checkpoint_every_s, 5.0)
    service.add_periodic("checkpoints", interval, lambda: checkpoint(audit_log, signer, settings))
    return service
