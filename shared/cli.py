"""The ``lethe`` command: operator and developer tasks (``lethe --help`` lists them)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import click

from shared import topics
from shared.auth import SCOPES, issue_token
from shared.kafka import ensure_topics
from shared.logging import configure_logging
from shared.mongo import create_mongo_client, mongo_ping
from shared.s3 import s3_ping
from shared.settings import AuthSettings, KafkaSettings, LogSettings, MongoSettings, S3Settings, SmtpSettings
from shared.smtp import smtp_ping


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """lethe: erase a person's data from every store, and prove it."""
    configure_logging(LogSettings(format="console"), service="lethe")
    # While a server is still starting, the Kafka client logs every refused connection; wait-for says enough.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@main.group(name="topics")
def topics_group() -> None:
    """Kafka topics of lethe."""


@topics_group.command(name="ensure")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the broker.")
def topics_ensure(timeout: float) -> None:
    """Create every topic and its .dlq twin (6 partitions each) that does not exist yet."""
    created = asyncio.run(
        ensure_topics(KafkaSettings(), topics.ALL_TOPICS, partitions=topics.PARTITIONS, timeout_s=timeout)
    )
    click.echo(f"{len(topics.ALL_TOPICS)} topics present ({len(created)} created)")


async def _mongo_ok() -> bool:
    client = create_mongo_client(MongoSettings())
    try:
        return await mongo_ping(client)
    finally:
        await client.close()


_PROBES: dict[str, Callable[[], Awaitable[bool]]] = {
    "kafka": lambda: _kafka_ok(),
    "mongo": _mongo_ok,
    "s3": lambda: s3_ping(S3Settings()),
    "smtp": lambda: smtp_ping(SmtpSettings()),
}


async def _kafka_ok() -> bool:
    await ensure_topics(KafkaSettings(), (), partitions=topics.PARTITIONS, timeout_s=1)
    return True


@main.command(name="token")
@click.option("--sub", "subject", required=True, help="Subject of the token: a person's id, or a service's name.")
@click.option("--scope", "scope", required=True, help=f"Space-separated scopes, of: {' '.join(sorted(SCOPES))}.")
@click.option("--ttl", default=3600, show_default=True, help="Seconds until the token expires.")
def token(subject: str, scope: str, ttl: int) -> None:
    """Print a bearer token that the local stack accepts (signed with LETHE_AUTH_JWT_SECRET)."""
    scopes = scope.split()
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise click.BadParameter(f"unknown scopes: {', '.join(unknown)}", param_hint="--scope")
    try:
        click.echo(issue_token(AuthSettings(), subject=subject, scopes=scopes, ttl=timedelta(seconds=ttl)))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command(name="wait-for")
@click.argument("servers", nargs=-1, type=click.Choice(sorted(_PROBES)), required=True)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for each server.")
def wait_for(servers: tuple[str, ...], timeout: float) -> None:
    """Poll each server (addresses from LETHE_* settings) until it answers a real request."""
    for name in servers:
        started = time.monotonic()
        last_error = ""
        while True:
            try:
                if asyncio.run(asyncio.wait_for(_PROBES[name](), 10)):
                    break
            except Exception as exc:  # any failure means "not yet"; the last one is reported on timeout
                last_error = repr(exc)
            if time.monotonic() - started > timeout:
                raise click.ClickException(f"{name} did not answer within {timeout:.0f} s: {last_error}")
            time.sleep(0.3)
        click.echo(f"{name} ready after {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
