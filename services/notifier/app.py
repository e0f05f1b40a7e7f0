"""Wiring and lifecycle of the notifier service: no decisions here, see handlers.py."""

from __future__ import annotations

from services.notifier import handlers
from services.notifier.settings import NotifierSettings
from shared.mongo import create_mongo_client, mongo_ping
from shared.service import Service
from shared.smtp import smtp_ping
from shared.wiring import ServiceDeps, build_service

DESCRIPTION = "Delivers signed webhooks to integrators and emails the person what was erased and kept."


def create_app(settings: NotifierSettings, *, deps: ServiceDeps | None = None) -> Service:
    mongo = create_mongo_client(settings.mongo)
    checks = {
        "mongo": lambda: mongo_ping(mongo),
        "smtp": lambda: smtp_ping(settings.smtp),
    }
    return build_service(
        name="notifier",
        description=DESCRIPTION,
        settings=settings,
        kafka=settings.kafka,
        routes=handlers.routes(),
        checks=checks,
        deps=deps,
        on_stop=[mongo.close],
    )
