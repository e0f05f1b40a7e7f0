"""Wiring and lifecycle of the notifier service: no decisions here, see handlers.py."""

from __future__ import annotations

from dataclasses import dataclass

from services.notifier import handlers
from services.notifier.settings import NotifierSettings
from shared.kafka import Publisher
from shared.mongo import create_mongo_client, mongo_ping
from shared.service import Service
from shared.smtp import smtp_ping
from shared.wiring import build_service

DESCRIPTION = "Delivers signed webhooks to integrators and emails the person what was erased and kept."


@dataclass
class NotifierDeps:
    """Dependencies a test may replace with fakes; anything left ``None`` is built from settings."""

    publisher: Publisher | None = None


def create_app(settings: NotifierSettings, *, deps: NotifierDeps | None = None) -> Service:
    deps = deps or NotifierDeps()
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
        publisher=deps.publisher,
        on_stop=[mongo.close],
    )
