"""The hash chain of the audit log: how an entry's hash is made, and how a whole log is checked."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.audit.model import Checkpoint, Entry, Report
from shared.events import Event
from shared.signing import canonical, verify

GENESIS = "0" * 64


def content_of(event: Event, *, seq: int, recorded_at: datetime) -> dict[str, Any]:
    """What an entry says. Events carry no personal data beyond pseudonymous ids, so the event is kept whole."""
    return {"seq": seq, "recorded_at": recorded_at.isoformat(), "event": event.model_dump(mode="json")}


def entry_hash(prev_hash: str, content: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(content)).hexdigest()


def chain(events: Iterable[tuple[Event, datetime]], *, start_seq: int = 1, prev_hash: str = GENESIS) -> list[Entry]:
    """Entries for ``events`` appended after (start_seq - 1, prev_hash)."""
    entries = []
    for offset, (event, recorded_at) in enumerate(events):
        seq = start_seq + offset
        content = content_of(event, seq=seq, recorded_at=recorded_at)
        digest = entry_hash(prev_hash, content)
        entries.append(
            Entry(
                seq,
                str(event.event_id),
                event.type,
                event.request_id,
                event.subject_id,
                event.occurred_at,
                content,
                prev_hash,
                digest,
            )
        )
        prev_hash = digest
    return entries


STORED_COPIES = ("event_id", "type", "request_id", "subject_id", "occurred_at")


def _to_millis(value: Any) -> Any:
    # MongoDB keeps a datetime to the millisecond (truncated), so a stored copy can be no more precise than that.
    return value.replace(microsecond=value.microsecond // 1000 * 1000) if isinstance(value, datetime) else value


def edited_copy(entry: Entry) -> str | None:
    """The first of the entry's stored copies that differs from the field of its (hashed) event, or None."""
    event = entry.content.get("event", {})
    for field in STORED_COPIES:
        stored, logged = getattr(entry, field), event.get(field)
        if field == "occurred_at":
            stored, logged = _to_millis(stored), _to_millis(datetime.fromisoformat(logged))
        if stored != logged:
            return field
    return None


async def verify_log(
    entries: AsyncIterator[Entry],
    *,
    head: tuple[int, str],
    checkpoints: list[Checkpoint],
    public_keys: dict[str, Ed25519PublicKey],
) -> Report:
    """Recompute the chain from the first entry and check every checkpoint; report the first bad entry."""
    prev, expected, checked = GENESIS, 1, 0
    hashes_at_checkpoints: dict[int, str] = {}
    wanted = {c.seq for c in checkpoints}

    def bad(seq: int, reason: str, field: str | None = None) -> Report:
        return Report(False, checked, 0, seq, reason, field)

    async for entry in entries:
        if entry.seq != expected:
            return bad(expected, f"entry {expected} is missing (the next entry found is {entry.seq})")
        if entry.content.get("seq") != entry.seq:
            return bad(entry.seq, f"entry {entry.seq} holds the content of entry {entry.content.get('seq')} (moved)")
        if entry.prev_hash != prev:
            return bad(entry.seq, "its link to the previous entry is broken (an entry was inserted or removed)")
        if entry_hash(prev, entry.content) != entry.hash:
            return bad(entry.seq, "its content does not match its hash (edited)")
        if (field := edited_copy(entry)) is not None:
            # Only the field's name: the values may be personal data, and the report is shown to operators.
            return bad(entry.seq, f"its stored {field} differs from the {field} of its hashed event (edited)", field)
        if entry.seq in wanted:
            hashes_at_checkpoints[entry.seq] = entry.hash
        prev, expected, checked = entry.hash, expected + 1, checked + 1
    last = expected - 1
    if head != (last, prev):
        return bad(
            last + 1 if head[0] > last else head[0],
            f"the log ends at entry {last} but its head says {head[0]} "
            "(entries were removed from the end, or the head was changed)",
        )
    for number, checkpoint in enumerate(sorted(checkpoints, key=lambda c: c.seq), start=1):
        key = public_keys.get(checkpoint.key_id)
        if key is None or not verify(checkpoint.signed_part(), checkpoint.signature, key):
            return Report(
                False, checked, number - 1, checkpoint.seq, f"checkpoint at {checkpoint.seq} has a bad signature"
            )
        if hashes_at_checkpoints.get(checkpoint.seq) != checkpoint.hash:
            return Report(
                False,
                checked,
                number - 1,
                checkpoint.seq,
                f"the chain no longer matches the signed checkpoint at entry {checkpoint.seq} (rewritten)",
            )
    return Report(True, checked, len(checkpoints))
