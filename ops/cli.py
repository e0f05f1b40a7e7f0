"""The ``lethe`` command: operator and developer tasks (``lethe --help`` lists them)."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import click
import typer

from ops.cli_purger import app as purger_commands
from ops.cli_requests import app as requests_app
from shared import topics
from shared.auth import AUDIT_READ, KEYS_ADMIN, SCOPES, issue_token, operator_token
from shared.kafka import ensure_topics
from shared.logging import configure_logging
from shared.mongo import create_mongo_client, mongo_ping
from shared.s3 import s3_ping
from shared.settings import (
    AuthSettings,
    CliSettings,
    KafkaSettings,
    LogSettings,
    MilvusSettings,
    MongoSettings,
    PostgresSettings,
    S3Settings,
    SmtpSettings,
)
from shared.smtp import smtp_ping


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """lethe: erase a person's data from every store, and prove it."""
    configure_logging(LogSettings(format="console"), service="lethe")
    # While a server is still starting, the Kafka client logs every refused connection; wait-for says enough.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll would drown the live views


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


@main.group(name="kafka")
def kafka_group() -> None:
    """The authenticated bus: principals, ACLs and topics."""


@kafka_group.command(name="setup")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the broker.")
def kafka_setup(timeout: float) -> None:
    """Create every topic, every principal's SCRAM credential and exactly the ACLs of shared/topology.py.

    Runs as the admin super user (LETHE_KAFKA_SASL_USERNAME / _PASSWORD); each principal's password comes from
    LETHE_KAFKA_PASSWORD_<NAME>. Idempotent: run it after every change of the topology.
    """
    from pydantic import ValidationError

    from shared.bus import PrincipalPasswords, setup

    try:
        passwords = PrincipalPasswords()  # every field comes from the environment
    except ValidationError as exc:
        names = ", ".join(f"LETHE_KAFKA_PASSWORD_{str(e['loc'][0]).upper()}" for e in exc.errors())
        raise click.UsageError(f"set every principal's password: {names}") from exc
    settings = KafkaSettings()
    created = asyncio.run(ensure_topics(settings, topics.ALL_TOPICS, partitions=topics.PARTITIONS, timeout_s=timeout))
    report = setup(settings, passwords)
    click.echo(
        f"{len(topics.ALL_TOPICS)} topics present ({len(created)} created); {len(report.users)} principals; "
        f"{report.granted} ACLs in force ({report.revoked} stale ones removed)"
    )


@kafka_group.command(name="acls")
def kafka_acls() -> None:
    """Print the ACLs that `lethe kafka setup` puts in force (who may read and write what)."""
    from shared.bus import describe, grants

    for line in describe(grants()):
        click.echo(line)


async def _mongo_ok() -> bool:
    client = create_mongo_client(MongoSettings())
    try:
        return await mongo_ping(client)
    finally:
        await client.close()


async def _milvus_ok() -> bool:
    from pymilvus import MilvusClient

    settings = MilvusSettings()

    def probe() -> bool:
        client = MilvusClient(uri=settings.uri, token=settings.token.get_secret_value() if settings.token else "")
        try:
            client.list_collections()
            return True
        finally:
            client.close()

    return await asyncio.to_thread(probe)


async def _postgres_ok() -> bool:
    import asyncpg

    connection = await asyncpg.connect(PostgresSettings().url.get_secret_value(), timeout=5)
    try:
        return bool(await connection.fetchval("SELECT 1") == 1)
    finally:
        await connection.close()


_PROBES: dict[str, Callable[[], Awaitable[bool]]] = {
    "kafka": lambda: _kafka_ok(),
    "milvus": _milvus_ok,
    "mongo": _mongo_ok,
    "postgres": _postgres_ok,
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


async def _retained_from_audit(settings: CliSettings, subject_id: str, token: str) -> dict[str, str]:
    """Datasets the latest purge of this subject kept under a rule or hold, as the audit log records them."""
    import aiohttp

    retained: dict[str, str] = {}
    params = {"subject_id": subject_id, "event_type": "deletion.purged", "limit": "500"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(
            f"{settings.audit_url.rstrip('/')}/audit/logs", params=params, headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        response.raise_for_status()
        items = (await response.json())["items"]
    for item in items:  # oldest first: a later purge (after a hold is released) overrides
        for outcome in item["event"]["outcomes"]:
            if outcome["outcome"] == "retained":
                retained[outcome["dataset"]] = (
                    f"{outcome['rule_id']}: {outcome['legal_basis']} ({outcome['legal_ref']})"
                )
            else:
                retained.pop(outcome["dataset"], None)
    return retained


@main.command(name="verify-erasure")
@click.argument("subject_id")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON, for scripts.")
@click.option(
    "--retained",
    multiple=True,
    metavar="DATASET=REASON",
    help="A dataset kept under a rule or hold (repeatable); by default read from the audit log.",
)
@click.option("--no-audit", is_flag=True, help="Do not ask the audit log which datasets were retained.")
def verify_erasure(subject_id: str, as_json: bool, retained: tuple[str, ...], no_audit: bool) -> None:
    """Look for SUBJECT_ID in every dataset of the data map; exit 1 if anything remains that was not retained.

    Looks at MongoDB records (tagged or not), S3 versions and delete markers, Milvus vectors and the subject's
    data keys in keyvault, independently of what the services reported. Exit codes: 0 clean, 1 data remains,
    2 a store could not be checked.
    """
    import json as json_module
    from pathlib import Path

    from ops.erasure import check_erasure
    from shared.datamap import DataMapError, load_datamap

    settings = CliSettings()
    try:
        datamap = load_datamap(Path(settings.datamap_path))
    except DataMapError as exc:
        raise click.ClickException(str(exc)) from exc
    kept = dict(item.split("=", 1) for item in retained if "=" in item)
    token = operator_token(settings, AUDIT_READ, KEYS_ADMIN)

    async def run() -> Any:
        if not no_audit and not retained and token:
            try:
                kept.update(await _retained_from_audit(settings, subject_id, token))
            except Exception as exc:  # strict without the audit log: nothing counts as retained
                click.echo(f"warning: could not read retained datasets from the audit log: {exc!r}", err=True)
        return await check_erasure(
            subject_id,
            datamap,
            mongo=MongoSettings(),
            s3=S3Settings(),
            milvus=MilvusSettings(),
            retained=kept,
            keyvault_url=settings.keyvault_url if token else None,
            keyvault_token=token,
        )

    report = asyncio.run(run())
    if as_json:
        click.echo(json_module.dumps(report.as_json(), indent=2))
    else:
        for finding in report.findings:
            mark = {
                "clean": "ok",
                "remains": "REMAINS",
                "retained": "kept",
                "exempt": "exempt",
                "error": "ERROR",
                "skipped": "skipped",
            }[finding.status]
            click.echo(f"{mark:>8}  {finding.dataset:<16} {finding.store:<8} {finding.detail}")
        click.echo("erased: nothing remains" if report.clean else "NOT ERASED: data remains (see above)")
    if any(f.status == "error" for f in report.findings):
        sys.exit(2)
    sys.exit(0 if report.clean else 1)


@main.command(name="verify-receipt")
@click.argument("receipt", type=click.File("r"))
@click.option("--public-key", required=True, help="The audit service's public key (base64), from /audit/public_key.")
def verify_receipt(receipt: Any, public_key: str) -> None:
    """Check a signed receipt (a JSON file, or - for stdin) offline, with the public key alone."""
    import json as json_module

    from shared.signing import verify_document

    try:
        signed = json_module.load(receipt)
    except ValueError as exc:
        raise click.ClickException(f"not JSON: {exc}") from exc
    if verify_document(signed, public_key):
        click.echo(
            f"valid: receipt of request {signed['document'].get('request_id')} signed by "
            f"{signed['signature'].get('key_id')}"
        )
        return
    click.echo("INVALID: the receipt was changed, or not signed by this key", err=True)
    sys.exit(1)


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


def _forward(name: str, command: Any) -> click.Command:
    """A click command that hands its arguments to a typer command (typer ships its own click, so the two cannot
    share one command tree): the typer command parses, prints its rich help and exits by itself."""

    @click.command(
        name=name,
        help=command.help,
        short_help=(command.help or "").split("\n")[0],
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.pass_context
    def forward(ctx: click.Context) -> None:
        command.main(args=ctx.args, prog_name=f"lethe {name}", standalone_mode=True)

    return forward


for _app in (requests_app, purger_commands):
    for _name, _command in typer.main.get_group(_app).commands.items():
        main.add_command(_forward(_name, _command))

if __name__ == "__main__":
    main()
