"""What audit decides: logging each event once, signing checkpoints, checking the chain, and writing a request's
signed receipt."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from services.audit.chain import verify_log
from services.audit.model import Checkpoint, Entry, Report
from services.audit.ports import AuditLog
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


async def record(events: Sequence[Event], audit_log: AuditLog, clock: Callable[[], datetime]) -> Sequence[Event]:
    """Append the events (one poll's, in order) to the chain, each once; a replay adds nothing."""
    seqs = await audit_log.append_many(events, recorded_at=clock())
    if seqs:
        log.info("audit.recorded", seqs=seqs, types=sorted({e.type for e in events}))
    return ()


async def checkpoint_if_due(
    audit_log: AuditLog, signer: Signer, *, now: datetime, every_entries: int, every_s: float
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


async def verify_chain(audit_log: AuditLog, signer: Signer) -> Report:
    """Recompute the whole chain against its head and signed checkpoints."""
    return await verify_log(
        audit_log.all_entries(),
        head=await audit_log.head(),
        checkpoints=await audit_log.checkpoints(),
        public_keys={signer.key_id: signer.public_key},
    )


async def signed_receipt(
    audit_log: AuditLog, signer: Signer, request_id: str, *, datamap: DataMap | None, now: datetime
) -> dict[str, Any] | None:
    """The request's receipt, anchored to the first checkpoint covering it and signed; None without entries."""
    entries = await audit_log.matching(request_id=request_id)
    if not entries:
        return None
    checkpoint = next((c for c in await audit_log.checkpoints() if c.seq >= entries[-1].seq), None)
    document = receipt(request_id, entries, datamap=datamap, checkpoint=checkpoint, generated_at=now)
    return signer.sign_document(document)


@dataclass
class _Story:
    """What a request's events say about each dataset, read oldest first."""

    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    purged_records: dict[str, int] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)  # dataset -> the hold placed after the purge that keeps it now
    restored: dict[str, list[str]] = field(default_factory=dict)
    result: str | None = None

    def key_ids(self, dataset: str) -> dict[str, list[str]]:
        return self.keys.setdefault(dataset, {"destroyed": [], "retained": []})

    def read(self, event: dict[str, Any]) -> None:
        if event["type"] == topics.DELETION_PURGED:
            for outcome in event["outcomes"]:
                self.outcomes[outcome["dataset"]] = outcome  # a later purge (after a hold's release) wins
            self.held = {d: h for d, h in self.held.items() if d in event.get("held", ())}
        elif event["type"] == topics.DELETION_HELD:
            self.held |= dict.fromkeys(event["datasets"], event["hold_id"])
        elif event["type"] == topics.DELETION_KEYS_HELD:
            for ref in event["restored"]:
                self.restored.setdefault(ref["dataset"], []).append(ref["key_id"])
        elif event["type"] == topics.DELETION_KEYS_DESTROYED:
            self.result = event["result"]
            for ref in event["destroyed"]:
                self.key_ids(ref["dataset"])["destroyed"].append(ref["key_id"])
            for ref in event["retained"]:
                self.key_ids(ref["dataset"])["retained"].append(ref["key_id"])
        elif event["type"] == topics.DELETION_KEYS_SHREDDED:
            for ref in event["shredded"]:
                self.key_ids(ref["dataset"])["destroyed"].append(ref["key_id"])
        elif event["type"] == topics.DELETION_HARD_DELETED:
            for item in event["datasets"]:
                name = item["dataset"]
                self.purged_records[name] = self.purged_records.get(name, 0) + item["records_purged"]

    def dataset(self, name: str) -> dict[str, Any]:
        outcome = self.outcomes.get(name, {"outcome": "not_reported"})
        key_ids = self.keys.get(name, {"destroyed": [], "retained": []})
        return {
            "dataset": name,
            "outcome": outcome["outcome"],
            "counts": {**outcome.get("counts", {}), "records_purged": self.purged_records.get(name, 0)},
            "legal_basis": outcome.get("legal_basis"),
            "legal_ref": outcome.get("legal_ref"),
            "rule_id": outcome.get("rule_id"),
            "error": outcome.get("error"),
            "held_by": self.held.get(name),
            "keys_restored_for_hold": sorted(set(self.restored.get(name, []))),
            "keys_destroyed": sorted(set(key_ids["destroyed"])),
            "keys_retained": sorted(set(key_ids["retained"]) - set(key_ids["destroyed"])),
            # A processor's answer: when it confirmed (or refused), and whether it or an operator (with a note) did.
            "confirmed_at": outcome.get("confirmed_at"),
            "confirmed_via": outcome.get("confirmed_via"),
            "note": outcome.get("note"),
        }


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
    story = _Story()
    for event in events:
        stages.setdefault(event["type"], event["occurred_at"])
        story.read(event)
    names = datamap.names if datamap else sorted(story.outcomes)
    names += [n for n in sorted(story.outcomes) if n not in names]
    datasets = [story.dataset(name) for name in names]
    last = entries[-1]
    asked: dict[str, Any] = next((e for e in events if e["type"] == topics.DELETION_REQUESTED), {})
    # Denied or cancelled in its cooling-off period: deletion.requested was never published, nothing was erased.
    closed = next((e for e in events if e["type"] in (topics.DELETION_DENIED, topics.DELETION_CANCELLED)), None)
    return {
        "request_id": request_id,
        "subject_id": last.subject_id,
        # The law it was answered under, and the deadline that law set (the extension, if any, in its stages).
        "jurisdiction": asked.get("jurisdiction") or (closed or {}).get("jurisdiction"),
        "deadline_at": asked.get("deadline_at"),
        "result": closed["type"].removeprefix("deletion.") if closed else _result(story, datasets),
        "closure": None if closed is None else {k: v for k, v in closed.items() if k in CLOSURE_FIELDS},
        # Who asked on the person's behalf, and the proof's reference (an authorised agent).
        "agent": asked.get("agent"),
        # Each extension of the deadline: when, to when, why, under which provision.
        "extensions": [
            {k: e.get(k) for k in ("extension", "occurred_at", "deadline_at", "reason", "legal_ref", "extended_by")}
            for e in events
            if e["type"] == topics.DELETION_EXTENDED
        ],
        "processors": [
            {k: d[k] for k in ("dataset", "outcome", "confirmed_at", "confirmed_via", "note", "error")}
            for d in datasets
            if (datamap is not None and d["dataset"] in {p.name for p in datamap.processors})
            or d["outcome"] in ("pending_confirmation", "refused")
            or d["confirmed_at"]
        ],
        "stages": stages,
        "datasets": datasets,
        "anchor": {
            "entries": [e.seq for e in entries],
            "last_entry": {"seq": last.seq, "hash": last.hash},
            "checkpoint": {**checkpoint.signed_part(), "signature": checkpoint.signature} if checkpoint else None,
        },
        "generated_at": generated_at.isoformat(),
    }


CLOSURE_FIELDS = (
    "type",
    "occurred_at",
    "legal_basis",
    "reference",
    "legal_ref",
    "complaint",
    "denied_by",
    "via",
    "cancelled_by",
    "reason",
)


def _result(story: _Story, datasets: list[dict[str, Any]]) -> str:
    if any(d["outcome"] == "pending_confirmation" for d in datasets):
        return "pending"  # a processor has yet to answer
    if story.held or any(d["outcome"] in ("retained", "failed", "refused") for d in datasets):
        return "partial"
    return story.result or "in_progress"


def routes(audit_log: AuditLog, clock: Callable[[], datetime]) -> Mapping[str, Handler]:
    """The registry of what audit reacts to: every topic, into the one log."""

    async def on_events(events: Sequence[Event]) -> Sequence[Event]:
        return await record(events, audit_log, clock)

    return dict.fromkeys(topics.EVENT_TOPICS, BatchRoute(on_events))  # one route: a poll's events in one batch
