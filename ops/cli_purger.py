"""The purger's operator commands (typer + rich): ``lethe purge --now``, ``lethe backup`` and ``lethe seed``.

They run the purger's own code against the servers named by the PURGER_* and LETHE_* settings, so
``lethe purge --now`` is exactly the nightly job, run by hand.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.purger import app as purger_app
from services.purger import handlers
from services.purger.settings import PurgerSettings
from shared.auth import RETENTION_READ, operator_token
from shared.events import utcnow
from shared.kafka import KafkaPublisher
from shared.mongo import create_mongo_client
from shared.settings import CliSettings

console = Console()
app = typer.Typer(add_completion=False)
T = TypeVar("T")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


# Drills and tests run the jobs "as of" another moment (e.g. 91 days on, to see backups expire); never needed live.
AtOption = Annotated[
    datetime | None,
    typer.Option(
        "--at",
        formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"],
        help="Run as if it were this moment (ISO 8601, UTC if no offset): for drills and tests.",
    ),
]


def _purger_settings() -> PurgerSettings:
    """The purger's settings; without PURGER_INTAKE_TOKEN, an operator token (LETHE_ADMIN_TOKEN, or one signed with
    the local secret) reads the rules and holds in force from intake."""
    settings = PurgerSettings()
    if settings.intake_token is None and (token := operator_token(CliSettings(), RETENTION_READ)) is not None:
        settings = settings.model_copy(update={"intake_token": SecretStr(token)})
    return settings


def _with_purger(work: Callable[[purger_app.PurgerParts, KafkaPublisher], Awaitable[T]], at: datetime | None) -> T:
    settings = _purger_settings()
    moment = None if at is None else at if at.tzinfo else at.replace(tzinfo=UTC)

    async def run() -> T:
        mongo = create_mongo_client(settings.mongo)
        parts = purger_app.build_purger(settings, mongo, clock=(lambda: moment) if moment else utcnow)
        publisher = KafkaPublisher(settings.kafka, client_id="lethe-cli-purger")
        await publisher.start()
        try:
            for hook in parts.on_start:
                await hook()
            return await work(parts, publisher)
        finally:
            await publisher.stop()
            for hook in parts.on_stop:
                await hook()
            await mongo.close()

    return asyncio.run(run())


@app.command()
def purge(
    now: Annotated[bool, typer.Option("--now", help="Run the nightly purge now (required: it deletes data).")] = False,
    pause: Annotated[
        float | None, typer.Option(help="Seconds between batches (default: PURGER_PURGE_BATCH_PAUSE_S).")
    ] = None,
    at: AtOption = None,
) -> None:
    """Run the nightly purge by hand: act on ended rules and holds, then hard-delete the tagged records that are
    due (skipping those a rule or hold keeps now), by primary key, in batches."""
    if not now:
        raise typer.BadParameter("add --now to delete the tagged records that are due")
    settings = PurgerSettings()

    async def work(parts: purger_app.PurgerParts, publisher: KafkaPublisher) -> handlers.NightlyReport:
        if at is None:
            follow_ups = await purger_app.run_release_ended(parts, publisher)
            if follow_ups:
                console.print(
                    f"{follow_ups} request(s) had data freed by an ended rule or hold: follow-up reports sent"
                )
        else:
            # A drill "as of" another moment must not act on rules and holds that have not ended yet in fact: the
            # purger's job does that at the real moment, and keyvault (on the real clock) would disagree.
            console.print("--at: ended rules and holds are left to the purger's own job, on the real clock")
        chunks, records = await parts.purger.ledger.count_due(parts.purger.clock())
        with _progress() as bar:
            task = bar.add_task(f"purging {chunks} batch(es)", total=records)
            report = await handlers.nightly_purge(
                parts.purger,
                pause_s=settings.purge_batch_pause_s if pause is None else pause,
                on_chunk=lambda _, purged: bar.advance(task, purged),
            )
        for event in report.hard_deleted:
            await publisher.publish(event)
        await handlers.reported_hard_deleted(parts.purger, report)
        return report

    report = _with_purger(work, at)
    console.print(
        f"purged {report.records} record(s) in {report.chunks} batch(es); "
        f"{len(report.hard_deleted)} request(s) now hard-deleted"
        + (f"; {report.deferred} batch(es) deferred (kept by a rule or hold now)" if report.deferred else "")
    )


@app.command()
def backup(
    expire: Annotated[
        bool, typer.Option("--expire", help="Instead, delete the backups older than the retention window now.")
    ] = False,
    at: AtOption = None,
) -> None:
    """Snapshot every MongoDB and PostgreSQL dataset into the backups bucket (encrypted fields stay ciphertext)."""
    settings = PurgerSettings()

    async def work(parts: purger_app.PurgerParts, publisher: KafkaPublisher) -> str:
        if expire:
            count = await purger_app.run_backup_expiry(
                parts, publisher, retention=timedelta(days=settings.backup_retention_days)
            )
            return f"expired backups older than {settings.backup_retention_days} days; {count} request(s) now erased"
        stored = [d for d in parts.purger.datamap.datasets if d.mongo is not None or d.postgres is not None]
        with _progress() as bar:
            task = bar.add_task("backing up", total=len(stored))
            made = await parts.backups.create(
                stored, now=parts.purger.clock(), on_dataset=lambda _name, _n: bar.advance(task)
            )
        return f"backup {made.backup_id}: {made.documents} document(s) in s3://{parts.backups.bucket}/{made.backup_id}/"

    console.print(_with_purger(work, at))


SEED_BATCH = 200  # people per bulk write


@app.command()
def seed(
    users: Annotated[int, typer.Option(min=1, max=1_000_000, help="How many people to create.")] = 10,
    prefix: Annotated[str, typer.Option(help="Subject ids are PREFIX-000001, PREFIX-000002, ...")] = "user",
    seed_value: Annotated[int, typer.Option("--random-seed", help="Seed of the generated values.")] = 1,
) -> None:
    """Fill every dataset of the data map with realistic records for N people (encrypted through keyvault)."""
    from ops import seeding

    settings = PurgerSettings()
    rng = random.Random(seed_value)
    subjects = [f"{prefix}-{n:06d}" for n in range(1, users + 1)]

    async def run() -> dict[str, Any]:
        async with seeding.Seeder.from_settings(settings) as seeder:
            with _progress() as bar:
                task = bar.add_task(f"seeding {users} people", total=users)
                for start in range(0, len(subjects), SEED_BATCH):
                    batch = subjects[start : start + SEED_BATCH]
                    await seeder.people(batch, rng)
                    bar.advance(task, len(batch))
            await seeder.aggregates(rng)
            return seeder.counts

    try:
        counts = asyncio.run(run())
    except seeding.SeedError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    for dataset, count in sorted(counts.items()):
        console.print(f"{dataset:<18} {count}")
    console.print(f"try: lethe delete {subjects[0]}")
