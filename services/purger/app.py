"""Wiring and lifecycle of the purger service: no decisions here, see handlers.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

import structlog
from pymongo import AsyncMongoClient

from services.purger import handlers
from services.purger.adapters.backups import BackupStore
from services.purger.adapters.milvus import MilvusEraser
from services.purger.adapters.mongo import MongoEraser, MongoPurgeLedger, MongoPurgeProgress
from services.purger.adapters.postgres import PostgresEraser
from services.purger.adapters.s3 import S3Eraser
from services.purger.settings import PurgerSettings
from shared.datamap import load_datamap
from shared.events import utcnow
from shared.intake_client import IntakeClient, intake_client
from shared.kafka import Publisher
from shared.mongo import create_mongo_client, mongo_ping
from shared.s3 import S3Connection
from shared.service import Hook, Service
from shared.wiring import ServiceDeps, build_service

log = structlog.get_logger(__name__)

DESCRIPTION = "Erases a subject's data from every dataset of the data map; runs the nightly purge and backup expiry."


@dataclass
class PurgerParts:
    """The purger's decisions' dependencies, plus what starts and stops them (shared by the service and the CLI)."""

    purger: handlers.Purger
    backups: BackupStore
    s3: S3Connection
    intake: IntakeClient
    postgres: PostgresEraser | None
    on_start: list[Hook]
    on_stop: list[Hook]


def build_purger(
    settings: PurgerSettings, mongo: AsyncMongoClient[dict[str, Any]], *, clock: Callable[[], datetime] = utcnow
) -> PurgerParts:
    datamap = load_datamap(settings.datamap_path)
    db = settings.mongo.database
    ledger = MongoPurgeLedger(mongo, db, chunk_size=settings.purge_batch_size)
    mongo_eraser = MongoEraser(mongo, db, ledger=ledger)
    in_postgres = [d for d in datamap.datasets if d.postgres is not None]
    postgres = None
    if in_postgres:
        postgres = PostgresEraser(
            settings.postgres.url.get_secret_value(),
            ledger=ledger,
            datasets=in_postgres,
            max_size=settings.postgres.pool_size,
        )
        ledger.deleters["postgres"] = postgres
    milvus = MilvusEraser(settings.milvus)
    s3 = S3Connection(settings.s3)
    progress = MongoPurgeProgress(mongo, db)
    intake = intake_client(settings.intake_url, settings.intake_token)
    purger = handlers.Purger(
        datamap=datamap,
        erasers={
            "mongo": mongo_eraser,
            **({"postgres": postgres} if postgres else {}),
            "s3": S3Eraser(s3, attempts=settings.s3_delete_attempts),
            "milvus": milvus,
        },
        retention=intake,
        progress=progress,
        ledger=ledger,
        clock=clock,
        purge_after=timedelta(hours=settings.purge_after_hours),
    )

    async def ensure_indexes() -> None:
        await mongo_eraser.ensure_indexes(datamap.datasets)
        await ledger.ensure_indexes()
        await progress.ensure_indexes()
        if postgres is not None:
            await postgres.check()  # missing tables and indexes are logged, never silently scanned

    backups = BackupStore(mongo, db, settings.s3, bucket=settings.backups_bucket, postgres=postgres)
    on_stop: list[Hook] = [milvus.close, s3.close, intake.close, *([postgres.close] if postgres else [])]
    return PurgerParts(purger, backups, s3, intake, postgres, on_start=[ensure_indexes], on_stop=on_stop)


def seconds_until(at: str, now: datetime) -> float:
    """Seconds from ``now`` to the next ``HH:MM`` (UTC)."""
    hours, minutes = (int(x) for x in at.split(":"))
    target = datetime.combine(now.date(), time(hours, minutes), tzinfo=now.tzinfo)
    if target <= now:
        target += timedelta(days=1)
    return (target - now).total_seconds()


async def run_nightly(parts: PurgerParts, publisher: Publisher, *, pause_s: float) -> handlers.NightlyReport:
    """One nightly purge: delete what is due, publish each finished request's report, then record it."""
    await run_release_ended(parts, publisher)
    report = await handlers.nightly_purge(parts.purger, pause_s=pause_s)
    for event in report.hard_deleted:
        await publisher.publish(event)
    await handlers.reported_hard_deleted(parts.purger, report)
    log.info(
        "nightly.done",
        chunks=report.chunks,
        records=report.records,
        deferred=report.deferred,
        requests=len(report.hard_deleted),
    )
    return report


async def nightly_schedule(parts: PurgerParts, publisher: Publisher, settings: PurgerSettings) -> None:
    while True:
        wait = seconds_until(settings.nightly_at, parts.purger.clock())
        log.info("nightly.scheduled", at=settings.nightly_at, in_s=round(wait))
        await asyncio.sleep(wait)
        try:
            await run_nightly(parts, publisher, pause_s=settings.purge_batch_pause_s)
        except Exception:
            log.exception("nightly.failed")  # the ledger still lists what is left: tomorrow, or `lethe purge --now`


async def run_release_ended(parts: PurgerParts, publisher: Publisher) -> int:
    """Act on the rules and holds that ended since the last check: publish each follow-up report."""
    events = await handlers.release_ended(parts.purger)
    for event in events:
        await publisher.publish(event)
    return len(events)


async def run_backup_expiry(parts: PurgerParts, publisher: Publisher, *, retention: timedelta) -> int:
    events = await handlers.expire_backups(parts.purger, parts.backups, retention=retention)
    for event in events:
        await publisher.publish(event)
        await parts.purger.progress.mark_backups_expired(event.request_id, event.occurred_at)
    return len(events)


def create_app(
    settings: PurgerSettings, *, deps: ServiceDeps | None = None, clock: Callable[[], datetime] = utcnow
) -> Service:
    mongo = create_mongo_client(settings.mongo)
    parts = build_purger(settings, mongo, clock=clock)
    service = build_service(
        name="purger",
        description=DESCRIPTION,
        settings=settings,
        kafka=settings.kafka,
        routes=handlers.routes(parts.purger),
        checks={
            "mongo": lambda: mongo_ping(mongo),
            "s3": parts.s3.ping,
            "intake": parts.intake.ping,
            **({"postgres": parts.postgres.ping} if parts.postgres else {}),
        },
        deps=deps,
        mongo=mongo,
        on_start=parts.on_start,
        on_stop=[*parts.on_stop, mongo.close],
    )
    publisher, backup_retention = service.publisher, timedelta(days=settings.backup_retention_days)
    service.add_job("nightly_purge", lambda: nightly_schedule(parts, publisher, settings))
    service.add_periodic(
        "backup_expiry",
        settings.backup_expiry_interval_s,
        lambda: run_backup_expiry(parts, publisher, retention=backup_retention),
    )
    # The check time advances only after a round's follow-ups are decided: a failed round is re-run.
    service.add_periodic(
        "retention_ends", settings.retention_check_interval_s, lambda: run_release_ended(parts, publisher)
    )
    return service
