"""Wiring and lifecycle of the notifier service: no decisions here, see handlers.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from email.message import EmailMessage

import structlog
from aiohttp import web

from services.notifier import api, handlers
from services.notifier.adapters.http import WebhookSender
from services.notifier.adapters.store import MongoWebhookStore
from services.notifier.openapi import SPEC
from services.notifier.settings import NotifierSettings
from shared.auth import TokenVerifier
from shared.consumer import Handler
from shared.contacts import MongoContactStore
from shared.events import Event, utcnow
from shared.kafka import Publisher
from shared.keyvault_client import KeyCacheInvalidator, KeyvaultClient
from shared.mongo import create_mongo_client, mongo_ping
from shared.problems import body_cap_middleware, problem_middleware
from shared.scrub import scrub
from shared.service import Service
from shared.smtp import send_mail, smtp_ping
from shared.wiring import ServiceDeps, build_service

log = structlog.get_logger(__name__)

DESCRIPTION = "Delivers signed webhooks to integrators and emails the person what was erased and kept."


async def deliver_periodically(
    n: handlers.Notifier, sender: WebhookSender, interval_s: float, wake: asyncio.Event
) -> None:
    """The delivery worker: attempts every due delivery, then waits ``interval_s``, or less when an event just
    queued deliveries (``wake``), so a first attempt does not wait for the next round."""
    while True:
        wake.clear()
        try:
            await handlers.deliver_due(n, sender.send)
        except Exception as exc:
            # The pending ledger still lists the work; the next round picks it up.
            log.error("webhook.worker_failed", error_type=type(exc).__name__, error=scrub(repr(exc)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval_s)


def waking(routes: Mapping[str, Handler], wake: asyncio.Event) -> dict[str, Handler]:
    """The routes, each setting ``wake`` once it has handled an event (it may have queued deliveries)."""

    def wrap(handler: Handler) -> Handler:
        async def handle(event: Event) -> Sequence[Event]:
            results = await handler(event)
            wake.set()
            return results

        return handle

    return {topic: wrap(handler) for topic, handler in routes.items()}


async def send_deferred_periodically(mail: handlers.Mail, publisher: Publisher, interval_s: float) -> None:
    """The deferred-mail job: sends what the daily cap or a 4xx reply held back, then waits ``interval_s``."""
    while True:
        try:
            await handlers.send_deferred(mail, publisher.publish)
        except Exception as exc:
            # The notices still say what is deferred; the next round (or, after the lease, another instance) resumes.
            # Not log.exception: the rendered error could quote an address.
            log.error("mail.deferred_worker_failed", error_type=type(exc).__name__, error=scrub(repr(exc)))
        await asyncio.sleep(interval_s)


def keyvault_client(settings: NotifierSettings) -> KeyvaultClient | None:
    """keyvault, to open the person's sealed address; None without a token (no mail is sent then)."""
    if not settings.keyvault_token:  # unset, or set empty
        return None
    return KeyvaultClient(settings.keyvault_url, token=settings.keyvault_token.get_secret_value())


def create_app(settings: NotifierSettings, *, deps: ServiceDeps | None = None) -> Service:
    mongo = create_mongo_client(settings.mongo)
    store = MongoWebhookStore(mongo, settings.mongo.database)
    keyvault = keyvault_client(settings)

    async def mail(message: EmailMessage) -> None:
        await send_mail(settings.smtp, message)

    notifier = handlers.Notifier(
        store=store,
        contacts=MongoContactStore(mongo, settings.mongo.database),
        keyvault=keyvault,
        send_mail=mail,
        sender=settings.smtp.sender,
        clock=utcnow,
        schedule=settings.retry_schedule_s,
        mail_daily_cap=settings.mail_daily_cap,
        mail_give_up_after=timedelta(hours=settings.mail_give_up_after_h),
    )
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
        checks={"mongo": lambda: mongo_ping(mongo), "smtp": lambda: smtp_ping(settings.smtp)},
        deps=deps,
        mongo=mongo,
        api_paths=SPEC.paths,
        api_schemas=SPEC.schemas,
        web_app=web_app,
        on_start=[store.ensure_indexes, sender.start],
        on_stop=[mongo.close, sender.stop, close_keyvault],
    )
    service.background.append(lambda: deliver_periodically(notifier, sender, settings.worker_interval_s, wake))
    service.background.append(
        lambda: send_deferred_periodically(notifier.mail, service.publisher, settings.mail_deferred_interval_s)
    )
    if keyvault is not None:
        KeyCacheInvalidator(keyvault, kafka=settings.kafka).wire(service)
    return service
