"""What audit decides: logging each event once, signing checkpoints, and writing a request's receipt."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from services.audit.adapters.log import MongoAuditLog
from services.audit.chain import Checkpoint, Entry
from shared import topics
from shared.consumer import BatchRoute, Handler
from shared.datamap import DataMap
from shared.events import Event
from shared.signing import Signer

log = structlog.get_logger(__name__)

FAMILIES: dict[str, tuple[str, ...]] = {
    "data_deletion": topics.DELETION_TOPICS,
    "retention": (topics.RETENTION_RULES_CHANGED,),
    "legal_hold": (topics.LEGAL_HOLD_PLACED, topics.LEGAL_HOLD_RELEASED),
    "keys": (
        topics.DELETION_KEYS_DESTROYED,
        topics.DELETION_KEYS_SHREDDED,
        topics.DELETION_KEYS_RESTORED,
        topics.DELETION_KEYS_HELD,
    ),
    "notifications": (topics.DELETION_NOTIFIED, topics.DELETION_OVERDUE),
}


async def record(events: Sequence[Event], audit_log: MongoAuditLog, clock: Callable[[], datetime]) -> Sequence[Event]:
    """Append the events (one poll's, in order) to the chain, each once; a replay adds nothing."""
    seqs = await audit_log.append_many(events, recorded_at=clock())
    if seqs:
        log.info("audit.recorded", seqs=seqs, types=sorted({e.type for e in events}))
    return ()


async def checkpoint_if_due(
    audit_log: MongoAuditLog, signer: Signer, *, now: datetime, every_entries: int, every_s: float
) -> Checkpoint | None:
    """Sign the chain head when N entries or M seconds have passed since the last checkpoint."""
    seq, digest = await audit_log.head()
    last = await audit_log.last_checkpoint()
    if seq == 0 or (last is not None and last.seq >= seq):
        return None
    grown = seq - (last.seq if last else 0)
    age = (now - datetime.fromisoformat(last.signed_at)).total_seconds() if last else float("inf")
    if grown < every_entries and age < every_s:
        return None
    unsigned = Checkpoint(seq, digest, now.isoformat(), signer.key_id, "")
    checkpoint = Checkpoint(seq, digest, unsigned.signed_at, signer.key_id, signer.sign(unsigned.signed_part()))
    await audit_log.add_checkpoint(checkpoint)
    log.info("audit.checkpoint", seq=seq)
    return checkpoint


def receipt(
    request_id: str,
    entries: list[Entry],
    *,
    datamap: DataMap | None,
    checkpoint: Checkpoint | None,
    generated_at: datetime,
) -> dict[str, Any]:
    """What was erased, kept and shredded in every dataset for one request, anchored in the chain."""
    events = [e.content["event"] for e in entries]
    stages: dict[str, str] = {}
    for event in events:
        stages.setdefault(event["type"], event["occurred_at"])
    outcomes: dict[str, dict[str, Any]] = {}
    keys: dict[str, dict[str, list[str]]] = {}
    purged_records: dict[str, int] = {}
    held: dict[str, str] = {}  # dataset -> the hold placed after the purge that keeps it now
    restored: dict[str, list[str]] = {}
    result = None
    for event in events:
        if event["type"] == topics.DELETION_PURGED:
            for outcome in event["outcomes"]:
                outcomes[outcome["dataset"]] = outcome  # a later purge (after a hold's release) wins
            held = {d: h for d, h in held.items() if d in event.get("held", ())}
        elif event["type"] == topics.DELETION_HELD:
            held |= dict.fromkeys(event["datasets"], event["hold_id"])
        elif event["type"] == topics.DELETION_KEYS_HELD:
            for ref in event["restored"]:
                restored.setdefault(ref["dataset"], []).append(ref["key_id"])
        elif event["type"] == topics.DELETION_KEYS_DESTROYED:
            result = event["result"]
            for ref in event["destroyed"]:
                keys.setdefault(ref["dataset"], {"destroyed": [], "retained": []})["destroyed"].append(ref["key_id"])
            for ref in event["retained"]:
                keys.setdefault(ref["dataset"], {"destroyed": [], "retained": []})["retained"].append(ref["key_id"])
        elif event["type"] == topics.DELETION_KEYS_SHREDDED:
            for ref in event["shredded"]:
                keys.setdefault(ref["dataset"], {"destroyed": [], "retained": []})["destroyed"].append(ref["key_id"])
        elif event["type"] == topics.DELETION_HARD_DELETED:
            for item in event["datasets"]:
                purged_records[item["dataset"]] = purged_records.get(item["dataset"], 0) + item["records_purged"]
    names = datamap.names if datamap else sorted(outcomes)
    names += [n for n in sorted(outcomes) if n not in names]
    datasets = []
    for name in names:
        outcome = outcomes.get(name, {"outcome": "not_reported"})
        key_ids = keys.get(name, {"destroyed": [], "retained": []})
        datasets.append(
            {
                "dataset": name,
                "outcome": outcome["outcome"],
                "counts": {**outcome.get("counts", {}), "records_purged": purged_records.get(name, 0)},
                "legal_basis": outcome.get("legal_basis"),
                "legal_ref": outcome.get("legal_ref"),
                "rule_id": outcome.get("rule_id"),
                "error": outcome.get("error"),
                "held_by": held.get(name),
                "keys_restored_for_hold": sorted(set(restored.get(name, []))),
                "keys_destroyed": sorted(set(key_ids["destroyed"])),
                "keys_retained": sorted(set(key_ids["retained"]) - set(key_ids["destroyed"])),
            }
        )
    last = entries[-1]
    return {
        "request_id": request_id,
        "subject_id": last.subject_id,
        "result": "partial"
        if held or any(d["outcome"] in ("retained", "failed") for d in datasets)
        else (result or "in_progress"),
        "stages": stages,
        "datasets": datasets,
        "anchor": {
            "entries": [e.seq for e in entries],
            "last_entry": {"seq": last.seq, "hash": last.hash},
            "checkpoint": (
                {
                    "seq": checkpoint.seq,
                    "hash": checkpoint.hash,
                    "signed_at": checkpoint.signed_at,
                    "key_id": checkpoint.key_id,
                    "signature": checkpoint.signature,
                }
                if checkpoint
                else None
            ),
        },
        "generated_at": generated_at.isoformat(),
    }


def routes(audit_log: MongoAuditLog, clock: Callable[[], datetime]) -> Mapping[str, Handler]:
    """The registry of what audit reacts to: every topic, into the one log."""

    async def on_events(events: Sequence[Event]) -> Sequence[Event]:
        return await record(events, audit_log, clock)

    return dict.fromkeys(topics.EVENT_TOPICS, BatchRoute(on_events))  # one route: a poll's events in one batch
