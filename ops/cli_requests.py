"""Operator commands on intake (typer + rich): ``lethe delete``, ``status``, ``extend``, ``deny``, ``cancel``,
``rules`` and ``holds``.

They talk to intake over HTTP, so they work the same against ``make run`` and a compose deployment. The token is
LETHE_ADMIN_TOKEN, or, for the local stack, one signed for five minutes with LETHE_AUTH_JWT_SECRET.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.auth import DELETION_ANY, REQUESTS_ADMIN, RETENTION_ADMIN, operator_token
from shared.settings import CliSettings

console = Console()
app = typer.Typer(no_args_is_help=True, add_completion=False, help="Deletion requests, rules and holds (via intake).")
rules_app = typer.Typer(add_completion=False, help="Retention rules: show them, or change them from a YAML file.")
holds_app = typer.Typer(add_completion=False, help="Legal holds: list, place and release them.")
app.add_typer(rules_app, name="rules")
app.add_typer(holds_app, name="holds")

# The status path a request walks; the bar shows how far along it is.
PATH = ("received", "purging", "keys_destroyed", "completed", "hard_deleted", "erased")
FINAL = {"completed", "partial", "hard_deleted", "erased", "failed", "denied", "cancelled"}


def _client() -> httpx.Client:
    settings = CliSettings()
    token = operator_token(settings, DELETION_ANY, RETENTION_ADMIN, REQUESTS_ADMIN)
    if token is None:
        raise typer.BadParameter("set LETHE_ADMIN_TOKEN (or LETHE_AUTH_JWT_SECRET for the local stack)")
    return httpx.Client(base_url=settings.intake_url, headers={"Authorization": f"Bearer {token}"}, timeout=15)


def _call(method: str, path: str, **kwargs: Any) -> Any:
    try:
        with _client() as http:
            response = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach intake at {CliSettings().intake_url}: {exc}[/red]")
        raise typer.Exit(2) from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        console.print(f"[red]{response.status_code}: {detail}[/red]")
        raise typer.Exit(1)
    return response.json()


def _show_request(body: dict[str, Any]) -> None:
    table = Table(title=f"{body['request_id']} · {body['status']}", show_header=False)
    table.add_row("subject", body["subject_id"])
    table.add_row("deadline", body.get("deadline_at") or "-")
    if body.get("erasure_starts_at") and not body.get("closure"):
        table.add_row("erasure starts", f"{body['erasure_starts_at']} (until then: lethe deny / lethe cancel)")
    if agent := body.get("agent"):
        table.add_row("asked by agent", f"{agent['name']} (proof {agent['proof_ref']})")
    if closure := body.get("closure"):
        why = closure.get("legal_basis") or closure.get("reason") or ""
        table.add_row(closure["status"], f"{closure['at']} by {closure['by']}: {why} (nothing was erased)")
    table.add_row("backups purged by", body.get("backups_purged_by") or "-")
    for stage, at in body.get("stages", {}).items():
        table.add_row(f"stage {stage}", at)
    for outcome in body.get("outcomes", []):
        why = f" ({outcome['rule_id']}: {outcome['legal_ref']})" if outcome["outcome"] == "retained" else ""
        table.add_row(f"dataset {outcome['dataset']}", f"{outcome['outcome']}{why}")
    console.print(table)


@app.command()
def delete(
    subject: Annotated[str, typer.Argument(help="The subject id whose data is erased.")],
    idempotency_key: Annotated[str | None, typer.Option(help="Replays the first answer if sent again.")] = None,
) -> None:
    """Start erasing SUBJECT's data (or show the request already open for them)."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    body = _call("DELETE", f"/users/{subject}/data", headers=headers)
    _show_request(body)
    console.print(f"follow it with: lethe status {body['request_id']} --watch")


@app.command()
def status(
    request_id: Annotated[str, typer.Argument(help="The request id (req_...).")],
    watch: Annotated[bool, typer.Option("--watch", help="Follow the stages live until a final state.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls with --watch.")] = 1.0,
    timeout: Annotated[float, typer.Option(help="Give up watching after this many seconds.")] = 3600.0,
) -> None:
    """Show a request's status, stages and per-dataset outcomes."""
    body = _call("GET", f"/deletion_requests/{request_id}")
    if watch:
        started = time.monotonic()
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"))
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task(request_id, total=len(PATH), status=body["status"])
            while body["status"] not in FINAL and time.monotonic() - started < timeout:
                step = body["status"] if body["status"] != "partial" else "completed"
                progress.update(task, completed=PATH.index(step) + 1 if step in PATH else 0, status=body["status"])
                time.sleep(interval)
                body = _call("GET", f"/deletion_requests/{request_id}")
            step = "completed" if body["status"] == "partial" else body["status"]
            progress.update(task, completed=PATH.index(step) + 1 if step in PATH else 0, status=body["status"])
    _show_request(body)
    if watch and body["status"] not in FINAL:
        raise typer.Exit(1)


@app.command()
def extend(
    request_id: Annotated[str, typer.Argument(help="The request id (req_...).")],
    reason: Annotated[str, typer.Option(help="Why more time is needed (the person is told).")],
) -> None:
    """Extend a request's deadline as its law allows (once under GDPR and CCPA, told in time); the person is mailed."""
    body = _call("POST", f"/deletion_requests/{request_id}/extend", json={"reason": reason})
    console.print(
        f"{request_id}: extension {body['extension']} under {body['jurisdiction']} ({body['legal_ref']}): "
        f"deadline {body['previous_deadline_at'][:10]} -> [bold]{body['deadline_at'][:10]}[/bold]"
    )


@app.command()
def deny(
    request_id: Annotated[str, typer.Argument(help="The request id (req_...).")],
    legal_basis: Annotated[str, typer.Option(help="Why it is refused, e.g. 'Art. 17(3)(e) GDPR: a legal claim'.")],
    reference: Annotated[str, typer.Option(help="Your case reference (the person can quote it).")],
) -> None:
    """Refuse a request in its cooling-off period: nothing is erased; the person is told why and where to complain."""
    body = _call(
        "POST", f"/deletion_requests/{request_id}/deny", json={"legal_basis": legal_basis, "reference": reference}
    )
    console.print(f"{request_id}: [bold]denied[/bold] under {body['jurisdiction']} ({body['legal_ref']})")


@app.command()
def cancel(
    request_id: Annotated[str, typer.Argument(help="The request id (req_...).")],
    reason: Annotated[str | None, typer.Option(help="How or why the person asked (optional).")] = None,
) -> None:
    """Cancel a request at the person's wish, in its cooling-off period: nothing is erased; the person is told."""
    body = _call("POST", f"/deletion_requests/{request_id}/cancel", json={"reason": reason} if reason else {})
    console.print(f"{request_id}: [bold]cancelled[/bold] ({body['via']})")


@rules_app.callback(invoke_without_command=True)
def rules(ctx: typer.Context) -> None:
    """Show the current retention rules (with no sub-command)."""
    if ctx.invoked_subcommand is not None:
        return
    body = _call("GET", "/data_retention/rules")
    table = Table(title=f"retention rules · version {body['version']}")
    for column in ("rule", "datasets", "legal basis", "legal ref", "expires"):
        table.add_column(column)
    for rule in body["rules"]:
        table.add_row(
            rule["rule_id"],
            ", ".join(rule["datasets"]),
            rule["legal_basis"],
            rule["legal_ref"],
            rule["expires_at"] or "-",
        )
    console.print(table)


@rules_app.command("apply")
def rules_apply(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML with `rules:` to add or replace.")],
    remove: Annotated[list[str] | None, typer.Option(help="A rule id to remove (repeatable).")] = None,
) -> None:
    """Add or replace the rules in FILE (a new version, published and audited)."""
    rules = (yaml.safe_load(file.read_text()) or {}).get("rules", [])
    body = _call("PATCH", "/data_retention/rules", json={"rules": rules, "remove": remove or []})
    console.print(f"rules now at version {body['version']}")


@holds_app.callback(invoke_without_command=True)
def holds(
    ctx: typer.Context,
    subject: Annotated[str | None, typer.Option(help="Only this subject's holds.")] = None,
    released: Annotated[bool, typer.Option("--released", help="Include released holds.")] = False,
) -> None:
    """List legal holds (with no sub-command)."""
    if ctx.invoked_subcommand is not None:
        return
    params: dict[str, Any] = {"active": str(not released).lower(), "limit": 100}
    if subject:
        params["subject_id"] = subject
    table = Table(title="legal holds")
    for column in ("hold", "subject", "datasets", "legal ref", "placed", "released"):
        table.add_column(column)
    while True:
        page = _call("GET", "/legal_holds", params=params)
        for h in page["holds"]:
            table.add_row(
                h["hold_id"],
                h["subject_id"] or "(everyone)",
                ", ".join(h["datasets"]),
                h["legal_ref"],
                h["placed_at"],
                h["released_at"] or "-",
            )
        if not page["next_after"]:
            break
        params["after"] = page["next_after"]
    console.print(table)


@holds_app.command("place")
def holds_place(
    dataset: Annotated[list[str], typer.Option(help="A dataset to hold (repeatable).")],
    reason: Annotated[str, typer.Option(help="Why the data must be kept.")],
    legal_basis: Annotated[str, typer.Option(help="The legal basis, e.g. 'legal claims (Art. 17(3)(e))'.")],
    legal_ref: Annotated[str, typer.Option(help="The case or statute reference.")],
    subject: Annotated[str | None, typer.Option(help="Whose data; omit to hold the datasets for everyone.")] = None,
) -> None:
    """Place a legal hold: the purger keeps these datasets until it is released."""
    body = _call(
        "POST",
        "/legal_holds",
        json={
            "subject_id": subject,
            "datasets": dataset,
            "reason": reason,
            "legal_basis": legal_basis,
            "legal_ref": legal_ref,
        },
    )
    console.print(f"placed {body['hold_id']}")


@holds_app.command("release")
def holds_release(hold_id: Annotated[str, typer.Argument(help="The hold id (hold_...).")]) -> None:
    """Release a hold: what it kept is erased by the purger."""
    body = _call("DELETE", f"/legal_holds/{hold_id}")
    console.print(f"released {body['hold_id']} at {body['released_at']}")
