"""Wiring of the intake service: no decisions here (handlers.py, deletions.py, email_channel.py, admin.py), no
routes (api.py), no jobs (jobs.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from pymongo import AsyncMongoClient

from services.intake import api, handlers
from services.intake.acknowledgements import Acknowledgements
from services.intake.actions import RequestActions
from services.intake.adapters.contacts import MongoContactStore
from services.intake.adapters.retention import MongoRetentionStore
from services.intake.adapters.store import MongoAccountDirectory, MongoOutbox, MongoRequestStore
from services.intake.admin import RetentionAdmin, load_default_rules, read_default_rules
from services.intake.deletions import Deletions
from services.intake.email_channel import EmailChannel
from services.intake.jobs import OutboxRelay, warn_overdue
from services.intake.limits import RateLimits
from services.intake.openapi import SPEC
from services.intake.processors import ProcessorAnswers
from services.intake.settings import IntakeSettings
from services.intake.verification import CancelLinks
from shared.auth import TokenVerifier
from shared.datamap import DataMap, load_datamap, processor_secrets
from shared.events import utcnow
from shared.jurisdictions import load_jurisdictions
from shared.keyvault_client import KeyCacheInvalidator, keyvault_client
from shared.mongo import create_mongo_client, mongo_ping
from shared.problems import body_cap_middleware, problem_middleware
from shared.service import BackgroundTasks, Service
from shared.smtp import send_mail
from shared.wiring import ServiceDeps, build_service

DESCRIPTION = (
    "Accepts deletion requests (API and email), keeps retention rules and legal holds, "
    "and tracks every request's status."
)


@dataclass
class Stores:
    requests: MongoRequestStore
    retention: MongoRetentionStore
    directory: MongoAccountDirectory
    contacts: MongoContactStore
    outbox: MongoOutbox


def build_stores(settings: IntakeSettings, mongo: AsyncMongoClient[dict[str, Any]], datamap: DataMap) -> Stores:
    accounts = datamap.get(settings.accounts_dataset)
    if accounts.mongo is None:
        raise ValueError(f"INTAKE_ACCOUNTS_DATASET={settings.accounts_dataset!r} must be a mongo dataset")
    db = settings.mongo.database
    return Stores(
        requests=MongoRequestStore(mongo, db, idempotency_ttl=timedelta(seconds=settings.idempotency_ttl_s)),
        retention=MongoRetentionStore(mongo, db),
        directory=MongoAccountDirectory(
            mongo,
            db,
            collection=accounts.mongo.collection,
            subject_field=accounts.mongo.subject_field,
            hash_field=settings.email_lookup_field,
            address_field=settings.email_address_field,
            jurisdiction_field=accounts.jurisdiction_field,
        ),
        contacts=MongoContactStore(mongo, db),
        outbox=MongoOutbox(mongo, db),
    )


def web_api(
    settings: IntakeSettings,
    stores: Stores,
    deletions: Deletions,
    email: EmailChannel,
    admin: RetentionAdmin,
    processors: ProcessorAnswers,
    actions: RequestActions,
    clock: Callable[[], datetime],
    emails: BackgroundTasks,
) -> web.Application:
    """The HTTP app with intake's routes, its body cap and rate limits."""
    limits = RateLimits(
        per_client=settings.rate_limit,
        per_address=settings.email_rate_limit_per_address,
        per_email_client=settings.email_rate_limit_per_client,
    )
    web_app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[problem_middleware, body_cap_middleware, limits.middleware()],
    )
    verifier = TokenVerifier(settings.auth)
    routes = api.IntakeApi(
        settings,
        stores.requests,
        stores.retention,
        stores.contacts,
        deletions,
        email,
        admin,
        processors,
        actions,
        verifier,
        limits,
        clock,
        emails,
    )
    api.add_routes(web_app, routes)
    return web_app


def create_app(
    settings: IntakeSettings, *, deps: ServiceDeps | None = None, clock: Callable[[], datetime] = utcnow
) -> Service:
    datamap = load_datamap(settings.datamap_path)
    default_rules = read_default_rules(settings.default_rules_path, datamap)
    mongo = create_mongo_client(settings.mongo)
    stores = build_stores(settings, mongo, datamap)
    keyvault = keyvault_client(settings.keyvault_url, settings.keyvault_token)
    relay = OutboxRelay(stores.outbox, stores.requests, clock, holds=settings.cooling_off_s > 0)
    laws = load_jurisdictions(settings.jurisdictions_path)
    secret = settings.link_secret()
    links = CancelLinks(secret, settings.auth.issuer, settings.public_url) if secret else None
    acknowledgements = Acknowledgements(
        stores.requests,
        stores.contacts,
        keyvault,
        laws,
        lambda message: send_mail(settings.smtp, message),
        settings.smtp.sender,
        clock,
        interval_s=settings.acknowledgement_interval_s,
        links=links,
    )
    deletions = Deletions(
        settings,
        datamap,
        stores.requests,
        stores.directory,
        stores.contacts,
        keyvault,
        clock,
        relay.kick,
        laws,
        acknowledgements.accepted,
    )
    emails = BackgroundTasks()
    web_app = web_api(
        settings,
        stores,
        deletions,
        EmailChannel(
            settings,
            stores.requests,
            stores.directory,
            stores.contacts,
            keyvault,
            clock,
            relay.kick,
            laws,
            acknowledgements.accepted,
        ),
        RetentionAdmin(stores.retention, datamap, clock, relay.kick),
        ProcessorAnswers(datamap, processor_secrets(datamap), stores.requests, clock, relay.kick),
        RequestActions(stores.requests, laws, clock, relay.kick, links),
        clock,
        emails,
    )
    service = build_service(
        name="intake",
        description=DESCRIPTION,
        settings=settings,
        kafka=settings.kafka,
        routes=handlers.routes(stores.requests, clock, deletions=deletions, producers=settings.intent_producers),
        checks={"mongo": lambda: mongo_ping(mongo)},
        deps=deps,
        mongo=mongo,
        api_paths=SPEC.paths,
        api_schemas=SPEC.schemas,
        web_app=web_app,
        on_start=[
            stores.retention.ensure_indexes,
            stores.directory.ensure_indexes,
            lambda: load_default_rules(default_rules, stores.retention, clock()),
        ],
        on_stop=[emails.cancel, mongo.close, *([keyvault.close] if keyvault else [])],
    )
    if keyvault is not None:
        KeyCacheInvalidator(keyvault, kafka=settings.kafka).wire(service)
    service.add_periodic(
        "outbox_relay", settings.outbox_interval_s, lambda: relay.drain(service.publisher), wake=relay.wake
    )
    service.add_periodic(
        "acknowledgements", settings.acknowledgement_interval_s, acknowledgements.run, wake=acknowledgements.wake
    )
    service.add_periodic(
        "deadline_watch",
        settings.deadline_watch_interval_s,
        lambda: warn_overdue(stores.requests, service.publisher, clock=clock, fraction=settings.deadline_warn_fraction),
    )
    return service
