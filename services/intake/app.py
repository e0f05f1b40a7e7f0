"""Wiring and lifecycle of the intake service: no decisions here, see handlers.py."""

from __future__ import annotations

from services.intake import handlers
from services.intake.settings import IntakeSettings
from shared.mongo import create_mongo_client, mongo_ping
from shared.service import Service
from shared.wiring import ServiceDeps, build_service

DESCRIPTION = (
    "Accepts deletion requests (API and email), keeps retention rules and legal holds, "
    "and tracks every request's status."
)


def create_app(settings: IntakeSettings, *, deps: ServiceDeps | None = None) -> Service:
    mongo = create_mongo_client(settings.mongo)
    checks = {
        "mongo": lambda: mongo_ping(mongo),
    }
    return build_service(
        name="intake",
        description=DESCRIPTION,
        settings=settings,
        kafka=settings.kafka,
        routes=handlers.routes(),
        checks=checks,
        deps=deps,
        on_stop=[mongo.close],
    )
