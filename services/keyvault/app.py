"""Wiring and lifecycle of the keyvault service: no decisions here, see handlers.py."""

from __future__ import annotations

from datetime import timedelta

import structlog
from aiohttp import web

from services.keyvault import api, handlers
from services.keyvault.adapters.kek import KmsKek, LocalKeyring
from services.keyvault.adapters.store import MongoKeyStore
from services.keyvault.openapi import SPEC
from services.keyvault.ports import KeyEncryptionKey, KeyStore
from services.keyvault.settings import KeyvaultSettings
from shared.auth import TokenVerifier
from shared.datamap import load_datamap
from shared.events import utcnow
from shared.intake_client import intake_client
from shared.kafka import Publisher
from shared.mongo import create_mongo_client, mongo_ping
from shared.problems import body_cap_middleware, problem_middleware
from shared.service import Hook, Service
from shared.wiring import ServiceDeps, build_service

log = structlog.get_logger(__name__)

DESCRIPTION = "Holds each subject's data keys, wrapped by a key-encryption key, and destroys them on deletion."


def build_kek(settings: KeyvaultSettings) -> tuple[KeyEncryptionKey, list[Hook], list[Hook]]:
    """The configured KEK provider, with its start and stop hooks."""
    if settings.kek_provider == "kms":
        if not settings.kms_key_id:
            raise ValueError("KEYVAULT_KMS_KEY_ID is required when KEYVAULT_KEK_PROVIDER=kms")
        credentials = {}
        if settings.kms_access_key_id and settings.kms_secret_access_key:
            credentials = {
                "aws_access_key_id": settings.kms_access_key_id.get_secret_value(),
                "aws_secret_access_key": settings.kms_secret_access_key.get_secret_value(),
            }
        kms = KmsKek(
            key_id=settings.kms_key_id,
            region=settings.kms_region,
            endpoint_url=settings.kms_endpoint_url,
            **credentials,
        )
        return kms, [kms.start], [kms.stop]
    if settings.local_keyring is not None:
        return LocalKeyring.from_json(settings.local_keyring.get_secret_value()), [], []
    return LocalKeyring.load_or_create(settings.local_keyring_file), [], []


async def shred_due(vault: handlers.Vault, publisher: Publisher) -> None:
    """One round: shred the keys whose grace window has ended (a failed round leaves them in the ledger)."""
    for event in await handlers.shred_expired(vault):
        await publisher.publish(event)


def create_app(
    settings: KeyvaultSettings, *, deps: ServiceDeps | None = None, store: KeyStore | None = None
) -> Service:
    mongo = create_mongo_client(settings.mongo)
    kek, kek_start, kek_stop = build_kek(settings)
    intake = intake_client(settings.intake_url, settings.intake_token)
    vault = handlers.Vault(
        store=store or MongoKeyStore(mongo, settings.mongo.database),
        kek=kek,
        clock=utcnow,
        # intake owns the rules and holds; keyvault asks for the ones in force before it destroys any key.
        retention=intake,
        datamap=load_datamap(settings.datamap_path),
        grace=timedelta(days=settings.grace_days),
    )
    web_app = web.Application(client_max_size=64 * 1024, middlewares=[problem_middleware, body_cap_middleware])
    api.add_routes(web_app, vault=vault, verifier=TokenVerifier(settings.auth), cache_ttl_s=settings.client_cache_ttl_s)
    service = build_service(
        name="keyvault",
        description=DESCRIPTION,
        settings=settings,
        kafka=settings.kafka,
        routes=handlers.routes(vault),
        # Not on intake: keyvault serves keys without it (intake itself waits for keyvault to start), and it
        # asks intake only before destroying a key, retrying while intake is away.
        checks={"mongo": lambda: mongo_ping(mongo)},
        deps=deps,
        mongo=mongo,
        api_paths=SPEC.paths,
        api_schemas=SPEC.schemas,
        web_app=web_app,
        on_start=kek_start,
        on_stop=[mongo.close, intake.close, *kek_stop],
    )
    service.add_periodic("shred", settings.shred_interval_s, lambda: shred_due(vault, service.publisher))
    return service
