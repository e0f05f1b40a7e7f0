"""Wiring and lifecycle of the purger service: no decisions here, see handlers.py."""

from __future__ import annotations

from services.purger import handlers
from services.purger.settings import PurgerSettings
from shared.mongo import create_mongo_client, mongo_ping
from shared.s3 import s3_ping
from shared.service import Service
from shared.wiring import ServiceDeps, build_service

DESCRIPTION = "Erases a subject's data from every dataset of the data map; runs the nightly purge and backup expiry."


def create_app(settings: PurgerSettings, *, deps: ServiceDeps | None = None) -> Service:
    mongo = create_mongo_client(settings.mongo)
    checks = {
        "mongo": lambda: mongo_ping(mongo),
        "s3": lambda: s3_ping(settings.s3),
    }
    return build_service(
        name="purger",
        description=DESCRIPTION,
        settings=settings,
        kafka=settings.kafka,
        routes=handlers.routes(),
        checks=checks,
        deps=deps,
        on_stop=[mongo.close],
    )
