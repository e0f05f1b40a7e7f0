"""Wiring and lifecycle of the intake service: no decisions here, see handlers.py and api.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import structlog
import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from services.intake import api, handlers
from services.intake.adapters.store import MongoAccountDirectory, MongoOutbox, MongoRequestStore, RequestStore
from services.intake.deletions import Deletions
from services.intake.limits import RateLimits
from services.intake.settings import IntakeSettings
from shared.auth import TokenVerifier
from shared.contacts import MongoContactStore
from shared.datamap import DataMap, load_datamap
from shared.events import DeletionRequested, InvalidEventError, RetentionRulesChanged, decode_any, utcnow
from shared.kafka import Publisher
from shared.keyvault_client import KeyCacheInvalidator, KeyvaultClient
from shared.mongo import create_mongo_client, mongo_ping
from shared.problems import body_cap_middleware, problem_middleware
from shared.retention import MongoRetentionStore, RetentionStore, Rule, StaleRuleSetError
from shared.service import Service
from shared.wiring import ServiceDeps, build_service

log = structlog.get_logger(__name__)

DESCRIPTION = (
    "Accepts deletion requests (API and email), keeps retention rules and legal holds, "
    "and tracks every request's status."
)


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: tuple[Rule, ...]


def read_default_rules(path: Path | None, datamap: DataMap) -> tuple[Rule, ...]:
    """The shipped rules, checked against the data map (a rule naming an unknown dataset stops the start)."""
    if path is None:
        return ()
    try:
        rules = _RulesFile.model_validate(yaml.safe_load(path.read_text())).rules
        return handlers.patch_rules((), upsert=rules, remove=(), datamap=datamap)[0]
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise ValueError(f"the default retention rules {path} are invalid: {exc}") from exc


async def load_default_rules(rules: tuple[Rule, ...], retention: RetentionStore, now: datetime) -> None:
    """Start with the shipped rules when there are none yet (a fresh database)."""
    if not rules or (await retention.rule_set()).version > 0:
        return
    changed = tuple(r.rule_id for r in rules)
    event = RetentionRulesChanged(occurred_at=now, producer=handlers.PRODUCER, rule_ids=changed, version=1)
    try:
        await retention.replace_rules(rules, expected_version=0, by="intake (defaults)", at=now, outbox=[event])
        log.info("rules.defaults_loaded", rule_ids=list(changed))
    except StaleRuleSetError:
        pass  # another instance loaded them first


class OutboxRelay:
    """Publishes the events stored in documents' outboxes, then clears them; woken early after each write."""

    def __init__(self, outbox: MongoOutbox, requests: RequestStore, publisher: Publisher, *, interval_s: float) -> None:
        self._outbox, self._requests, self._publisher = outbox, requests, publisher
        self._interval_s = interval_s
        self._wake = asyncio.Event()

    def kick(self) -> None:
        self._wake.set()

    async def drain(self) -> int:
        sent = 0
        for entry in await self._outbox.pending():
            for raw in entry.raw:
                try:
                    event = decode_any(raw)
                except InvalidEventError:
                    log.error("outbox.undecodable_event", collection=entry.collection, doc_id=entry.doc_id)
                    continue
                if isinstance(event, DeletionRequested):
                    # A crash between the claim and the request's insert is repaired here, before anyone is told.
                    await self._requests.ensure(handlers.from_requested(event))
                await self._publisher.publish(event)
                sent += 1
                log.info("outbox.published", type=event.type, event_id=str(event.event_id))
            await self._outbox.clear(entry)
        return sent

    async def run(self) -> None:
        while True:
            try:
                await self.drain()
            except Exception as exc:
                # Kafka or MongoDB is away: the events stay in their outboxes and are sent on a later round.
                log.warning("outbox.retrying", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()


async def watch_deadlines(
    requests: RequestStore, publisher: Publisher, *, clock: Callable[[], datetime], fraction: float, interval_s: float
) -> None:
    """Emit deletion.overdue for open requests near (``fraction`` of the time) and past their deadline."""
    while True:
        try:
            for notice in await handlers.open_requests_due(requests, now=clock(), warn_fraction=fraction):
                await publisher.publish(notice)
                await handlers.track(notice, requests, now=clock())  # recorded at once: not sent again next round
                log.warning("request.overdue", request_id=notice.request_id, past_deadline=notice.past_deadline)
        except Exception:
            log.exception("deadline_watch.failed")
        await asyncio.sleep(interval_s)


def create_app(
    settings: IntakeSettings, *, deps: ServiceDeps | None = None, clock: Callable[[], datetime] = utcnow
) -> Service:
    datamap = load_datamap(settings.datamap_path)
    accounts = datamap.get(settings.accounts_dataset)
    if accounts.mongo is None:
        raise ValueError(f"INTAKE_ACCOUNTS_DATASET={settings.accounts_dataset!r} must be a mongo dataset")
    default_rules = read_default_rules(settings.default_rules_path, datamap)
    mongo = create_mongo_client(settings.mongo)
    db = settings.mongo.database
    requests = MongoRequestStore(mongo, db, idempotency_ttl=timedelta(seconds=settings.idempotency_ttl_s))
    retention = MongoRetentionStore(mongo, db)
    directory = MongoAccountDirectory(
        mongo,
        db,
        collection=accounts.mongo.collection,
        subject_field=accounts.mongo.subject_field,
        hash_field=settings.email_lookup_field,
        address_field=settings.email_address_field,
    )
    keyvault = (
        KeyvaultClient(settings.keyvault_url, token=settings.keyvault_token.get_secret_value())
        if settings.keyvault_token
        else None
    )
    limits = RateLimits(
        per_client=settings.rate_limit,
        per_address=settings.email_rate_limit_per_address,
        per_email_client=settings.email_rate_limit_per_client,
    )
    contacts = MongoContactStore(mongo, db)
    emails: set[asyncio.Task[None]] = set()

    def kick_relay() -> None:
        relay.kick()  # the relay publishes through the service's publisher, so it is built after the service

    deletions = Deletions(
        settings=settings,
        datamap=datamap,
        requests=requests,
        accounts=directory,
        contacts=contacts,
        keyvault=keyvault,
        clock=clock,
        kick_relay=kick_relay,
    )

    async def cancel_email_work() -> None:
        for task in emails:
            task.cancel()
        await asyncio.gather(*emails, return_exceptions=True)

    web_app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[problem_middleware, body_cap_middleware, limits.middleware()],
    )
    service = build_service(
        name="intake",
        description=DESCRIPTION,
        settings=settings,
        kafka=settings.kafka,
        routes=handlers.routes(requests, clock, deletions=deletions, producers=settings.intent_producers),
        checks={"mongo": lambda: mongo_ping(mongo)},
        deps=deps,
        mongo=mongo,
        api_paths=api.API_PATHS,
        api_schemas=api.SCHEMAS,
        web_app=web_app,
        on_start=[
            retention.ensure_indexes,
            directory.ensure_indexes,
            lambda: load_default_rules(default_rules, retention, clock()),
        ],
        on_stop=[cancel_email_work, mongo.close, *([keyvault.close] if keyvault else [])],
    )
    relay = OutboxRelay(MongoOutbox(mongo, db), requests, service.publisher, interval_s=settings.outbox_interval_s)
    api.add_routes(
        web_app,
        api.IntakeApi(
            settings=settings,
            requests=requests,
            retention=retention,
            accounts=directory,
            contacts=contacts,
            deletions=deletions,
            keyvault=keyvault,
            datamap=datamap,
            verifier=TokenVerifier(settings.auth),
            limits=limits,
            clock=clock,
            kick_relay=relay.kick,
            background=emails,
        ),
    )
    if keyvault is not None:
        KeyCacheInvalidator(keyvault, kafka=settings.kafka).wire(service)
    service.background += [
        relay.run,
        lambda: watch_deadlines(
            requests,
            service.publisher,
            clock=clock,
            fraction=settings.deadline_warn_fraction,
            interval_s=settings.deadline_watch_interval_s,
        ),
    ]
    return service
