"""Wiring and lifecycle of the keyvault service: no decisions here, see handlers.py."""

from __future__ import annotations

from services.keyvault import handlers
from services.keyvault.settings import KeyvaultSettings
from shared.mongo import create_mongo_client, mongo_ping
from shared.service import Service
from shared.wiring import ServiceDeps, build_service

DESCRIPTION = "Holds each subject's data keys, wrapped by a key-encryption key, and destroys them on deletion."


def create_app(settings: KeyvaultSettings, *, deps: ServiceDeps | None = None) -> Service:
    mongo = create_mongo_client(settings.mongo)
    checks = {
        "mongo": lambda: mongo_ping(mongo),
    }
    return build_service(
        name="keyvault",
        description=DESCRIPTION,
        settings=settings,
        kafka=settings.kafka,
        routes=handlers.routes(),
        checks=checks,
        deps=deps,
        on_stop=[mongo.close],
    )
