"""Wiring and lifecycle of the notifier service: no decisions here, see handlers.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta
from email.message import EmailMessage

import structlog
from aiohttp import web

from services.notifier import api, handlers
from services.notifier.adapters.http import WebhookSender
from services.notifier.adapters.store import MongoWebhookStore
from services.notifier.model import Endpoint, Secret
from services.notifier.openapi import SPEC
from services.notifier.settings import NotifierSettings
from shared.auth import TokenVerifier
from shared.consumer import Handler
from shared.datamap import load_datamap, processor_secrets
from shared.events import Event, utcnow
from shared.intake_client import IntakeClient, intake_client
from shared.keyvault_client import KeyCacheInvalidator, KeyvaultClient, keyvault_client
from shared.mongo import create_mongo_client, mongo_ping
from shared.problems import body_cap_middleware, problem_middleware
from shared.service import Service
from shared.smtp import send_mail, smtp_ping
from shared.wiring import ServiceDeps, build_service

log = structlog.get_logger(__name__)

DESCRIPTION = "Delivers signed webhooks to integrators and emails the person what was erased and kept."


def waking(routes: Mapping[str, Handler], wake: asyncio.Event) -> dict[str, Handler]:
    """The routes, each setting ``wake`` once it has handled an event (it may have queued deliveries)."""

    def wrap(handler: Handler) -> Handler:
        async def handle(event: Event) -> Sequence[Event]:
            results = await handler(event)
            wake.set()
            return results

        return handle

    return {topic: wrap(handler) for topic, handler in routes.items()}


def build_notifier(
    settings: NotifierSettings,
    store: MongoWebhookStore,
    intake: IntakeClient,
    keyvault: KeyvaultClient | None,
) -> handlers.Notifier:
    async def mail(message: EmailMessage) -> None:
        await send_mail(settings.smtp, message)

    datamap = load_datamap(settings.datamap_path)
    secrets, created = processor_secrets(datamap), utcnow()
    processors = {
        d.name: Endpoint(
            endpoint_id=f"processor-{d.name}",
            url=d.processor.endpoint,
            event_types=(handlers.ERASURE_REQUESTED,),
            secrets=(Secret(secrets[d.name], created),),
            created_at=created,
            description=f"the processor {d.processor.name}",
        )
        for d in datamap.processors
        if d.processor is not None
    }
    confirm_base = (settings.intake_public_url or settings.intake_url).rstrip("/")
    return handlers.Notifier(
        processors=processors,
        confirm_url=f"{confirm_base}/processor_confirmations",
        store=store,
        contacts=intake,  # intake captured the address; notifier reads it from intake's API
        keyvault=keyvault,
        send_mail=mail,
        sender=settings.smtp.sender,
        clock=utcnow,
        schedule=settings.retry_schedule_s,
        mail_daily_cap=settings.mail_daily_cap,
        mail_give_up_after=timedelta(hours=settings.mail_give_up_after_h),
    )


def create_app(settings: NotifierSettings, *, deps: ServiceDeps | None = None) -> Service:
    mongo = create_mongo_client(settings.mongo)
    keyvault = keyvault_client(settings.keyvault_url, settings.keyvault_token)
    store = MongoWebhookStore(mongo, settings.mongo.database)
    intake = intake_client(settings.intake_url, settings.intake_token)
    notifier = build_notifier(settings, store, intake, keyvault)
    wake = asyncio.Event()  # set when an event may have queued deliveries
    sender = WebhookSender(timeout_s=settings.delivery_timeout_s, allow_loopback=settings.allow_loopback_webhooks)
    web_app = web.Application(client_max_size=64 * 1024, middlewares=[problem_middleware, body_cap_middleware])
    api.add_routes(
        web_app,
        store=store,
        clock=notifier.clock,
        verifier=TokenVerifier(settings.auth),
        allow_loopback=settings.allow_loopback_webhooks,
    )

    async def close_keyvault() -> None:
        if keyvault is not None:
            await keyvault.close()

    service = build_service(
        name="notifier",
        description=DESCRIPTION,
        settings=settings,
        kafka=settings.kafka,
        routes=waking(handlers.routes(notifier), wake),
        checks={"mongo": lambda: mongo_ping(mongo), "smtp": lambda: smtp_ping(settings.smtp), "intake": intake.ping},
        deps=deps,
        mongo=mongo,
        api_paths=SPEC.paths,
        api_schemas=SPEC.schemas,
        web_app=web_app,
        on_start=[store.ensure_indexes, sender.start],
        on_stop=[mongo.close, sender.stop, close_keyvault, intake.close],
    )
    # The pending ledger and the notices list what is left: a failed round is picked up by the next.
    service.add_periodic(
        "deliveries", settings.worker_interval_s, lambda: handlers.deliver_due(notifier, sender.send), wake=wake
    )
    service.add_periodic(
        "deferred_mail",
        settings.mail_deferred_interval_s,
        lambda: handlers.send_deferred(notifier.mail, service.publisher.publish),
    )
    if keyvault is not None:
        KeyCacheInvalidator(keyvault, kafka=settings.kafka).wire(service)
    return service
