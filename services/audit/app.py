"""Wiring and lifecycle of the audit service: no decisions here, see handlers.py."""

from __future__ import annotations

from services.audit import handlers
from services.audit.settings import AuditSettings
from shared.mongo import create_mongo_client, mongo_ping
from shared.service import Service
from shared.wiring import ServiceDeps, build_service

DESCRIPTION = "Keeps the append-only, hash-chained log of every event, and a receipt per request."


def create_app(settings: AuditSettings, *, deps: ServiceDeps | None = None) -> Service:
    mongo = create_mongo_client(settings.mongo)
    checks = {
        "mongo": lambda: mongo_ping(mongo),
    }
    return build_service(
        name="audit",
        description=DESCRIPTION,
        settings=settings,
        kafka=settings.kafka,
        routes=handlers.routes(),
        checks=checks,
        deps=deps,
        on_stop=[mongo.close],
    )
