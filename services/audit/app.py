"""Wiring and lifecycle of the audit service: no decisions here, see handlers.py."""

from __future__ import annotations

from dataclasses import dataclass

from services.audit import handlers
from services.audit.settings import AuditSettings
from shared.kafka import Publisher
from shared.mongo import create_mongo_client, mongo_ping
from shared.service import Service
from shared.wiring import build_service

DESCRIPTION = "Keeps the append-only, hash-chained log of every event, and a receipt per request."


@dataclass
class AuditDeps:
    """Dependencies a test may replace with fakes; anything left ``None`` is built from settings."""

    publisher: Publisher | None = None


def create_app(settings: AuditSettings, *, deps: AuditDeps | None = None) -> Service:
    deps = deps or AuditDeps()
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
        publisher=deps.publisher,
        on_stop=[mongo.close],
    )
