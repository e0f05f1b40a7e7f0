"""audit's records: a logged entry of the hash chain, a signed checkpoint, the report of a chain check, and a
console sign-in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One event, as logged: its content is what the hash covers.

    ``event_id``, ``type``, ``request_id``, ``subject_id`` and ``occurred_at`` are copies of the event's own fields,
    kept beside it so the log can be queried; :func:`services.audit.chain.edited_copy` checks them against the
    hashed event.
    """

    seq: int
    event_id: str
    type: str
    request_id: str | None
    subject_id: str | None
    occurred_at: datetime
    content: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Checkpoint:
    """The chain's head at ``seq``, signed with the audit key."""

    seq: int
    hash: str
    signed_at: str
    key_id: str
    signature: str

    def signed_part(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "signed_at": self.signed_at, "key_id": self.key_id}


@dataclass(frozen=True)
class Report:
    """What checking a whole log found: ok, or the first bad entry and why."""

    ok: bool
    entries_checked: int
    checkpoints_checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    field: str | None = None  # the stored copy that was edited, when that is what is wrong

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "ok" if self.ok else "tampered",
            "entries_checked": self.entries_checked,
            "checkpoints_checked": self.checkpoints_checked,
        }
        if not self.ok:
            body["first_bad_entry"] = {"seq": self.first_bad_seq, "reason": self.reason}
            if self.field is not None:
                body["first_bad_entry"]["field"] = self.field
        return body


@dataclass(frozen=True)
class Session:
    """An operator signed in to the console: their token (the console calls the services with it) and CSRF token."""

    token: str
    csrf: str
    operator: str
    scopes: frozenset[str]
    expires_at: datetime
