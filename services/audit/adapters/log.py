"""The audit log in MongoDB: append-only entries keyed by sequence number, a head, checkpoints.

Appends are serialised by the entry ``_id`` (the sequence number): two writers racing for the same number
cannot both insert it, and the loser moves on to the next. A crash after an entry is written but before the
head moves is repaired by the next append. An event is logged once: ``event_id`` is unique, so an event
re-consumed after a crash (before it was marked seen), or by a second instance, is not logged again.
Every lookup on the write path is an exact ``_id`` match, except on that rare duplicate.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.audit.chain import GENESIS, chain
from services.audit.model import Checkpoint, Entry
from shared.events import Event


def _doc(entry: Entry) -> dict[str, Any]:
    return {
        "_id": entry.seq,
        "event_id": entry.event_id,
        "type": entry.type,
        "request_id": entry.request_id,
        "subject_id": entry.subject_id,
        "occurred_at": entry.occurred_at,
        "content": entry.content,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


# A copy removed from a document reads as a value no event has, so verification reports the entry as edited
# instead of failing on it.
_REMOVED_TEXT = ""
_REMOVED_TIME = datetime.min.replace(tzinfo=UTC)


def _entry(doc: dict[str, Any]) -> Entry:
    return Entry(
        doc["_id"],
        doc.get("event_id", _REMOVED_TEXT),
        doc.get("type", _REMOVED_TEXT),
        doc.get("request_id"),
        doc.get("subject_id"),
        doc.get("occurred_at", _REMOVED_TIME),
        doc["content"],
        doc["prev_hash"],
        doc["hash"],
    )


class MongoAuditLog:
    """The AuditLog port on MongoDB."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        db = client[database]
        self._entries = db["audit_entries"]
        self._head = db["audit_head"]
        self._seen = db["audit_seen"]
        self._checkpoints = db["audit_checkpoints"]

    async def ensure_indexes(self) -> None:
        for field in ("request_id", "subject_id", "type"):
            await self._entries.create_index(field)
        await self._entries.create_index("event_id", unique=True)

    async def head(self) -> tuple[int, str]:
        doc = await self._head.find_one({"_id": "head"})
        return (doc["seq"], doc["hash"]) if doc else (0, GENESIS)

    async def append(self, event: Event, *, recorded_at: datetime) -> int | None:
        """Append ``event`` once; returns its sequence number, or None if it was already logged."""
        event_id = str(event.event_id)
        if await self._seen.find_one({"_id": event_id}) is not None:
            return None
        for _ in range(100):
            head = await self._head.find_one({"_id": "head"}) or {"seq": 0, "hash": GENESIS}
            seq = int(head["seq"]) + 1
            [entry] = chain([(event, recorded_at)], start_seq=seq, prev_hash=head["hash"])
            digest = entry.hash
            try:
                await self._entries.insert_one(_doc(entry))
            except DuplicateKeyError:
                # Another writer, or an append that crashed before moving the head, holds this number...
                taken = await self._entries.find_one({"_id": seq})
                if taken is not None:
                    await self._move_head(head["seq"], seq, taken["hash"])
                    if taken["event_id"] == event_id:
                        await self._mark_seen(event_id, seq)
                        return None
                    continue
                # ... or this event is logged already, under an earlier number.
                logged = await self._entries.find_one({"event_id": event_id})
                if logged is None:
                    continue
                await self._mark_seen(event_id, logged["_id"])
                return None
            await self._move_head(head["seq"], seq, digest)
            await self._mark_seen(event_id, seq)
            return seq
        raise RuntimeError("could not append to the audit log after 100 tries")

    async def append_many(self, events: Sequence[Event], *, recorded_at: datetime) -> list[int]:
        """Append the events not logged yet, in order, with one write each for the entries, the head and the seen
        marks; returns their sequence numbers. Should another writer take one of the numbers (or an event turn out
        to be logged already), the batch falls back to :meth:`append` event by event from where it stopped, which
        repairs the head and skips what is logged: the same guarantees as one at a time."""
        ids = [str(e.event_id) for e in events]
        seen = {doc["_id"] async for doc in self._seen.find({"_id": {"$in": ids}}, {"_id": 1})}
        fresh: dict[str, Event] = {}
        for event_id, event in zip(ids, events, strict=True):
            if event_id not in seen:
                fresh.setdefault(event_id, event)
        if not fresh:
            return []
        head = await self._head.find_one({"_id": "head"}) or {"seq": 0, "hash": GENESIS}
        pairs = [(event, recorded_at) for event in fresh.values()]
        entries = chain(pairs, start_seq=int(head["seq"]) + 1, prev_hash=str(head["hash"]))
        try:
            await self._entries.insert_many([_doc(e) for e in entries], ordered=True)
        except BulkWriteError as exc:
            written = int(exc.details.get("nInserted", 0))
            if written:
                await self._move_head(int(head["seq"]), entries[written - 1].seq, entries[written - 1].hash)
                await self._mark_all_seen(entries[:written])
            rest = [await self.append(fresh[e.event_id], recorded_at=recorded_at) for e in entries[written:]]
            return [e.seq for e in entries[:written]] + [n for n in rest if n is not None]
        await self._move_head(int(head["seq"]), entries[-1].seq, entries[-1].hash)
        await self._mark_all_seen(entries)
        return [e.seq for e in entries]

    async def _mark_all_seen(self, entries: Sequence[Entry]) -> None:
        with contextlib.suppress(BulkWriteError):  # some were marked already: the others are written anyway
            await self._seen.insert_many([{"_id": e.event_id, "seq": e.seq} for e in entries], ordered=False)

    async def _move_head(self, old: int, new: int, digest: str) -> None:
        # A DuplicateKeyError means the head was already moved on by someone else.
        with contextlib.suppress(DuplicateKeyError):
            await self._head.update_one(
                {"_id": "head", "seq": old}, {"$set": {"seq": new, "hash": digest}}, upsert=old == 0
            )

    async def _mark_seen(self, event_id: str, seq: int) -> None:
        with contextlib.suppress(DuplicateKeyError):
            await self._seen.insert_one({"_id": event_id, "seq": seq})

    async def import_entries(self, entries: Iterable[Entry]) -> None:
        """Write already-chained entries in bulk (restores and tests); the head follows the last one."""
        batch = list(entries)
        if not batch:
            return
        await self._entries.insert_many([_doc(e) for e in batch], ordered=True)
        await self._seen.insert_many([{"_id": e.event_id, "seq": e.seq} for e in batch], ordered=False)
        await self._head.update_one(
            {"_id": "head"}, {"$set": {"seq": batch[-1].seq, "hash": batch[-1].hash}}, upsert=True
        )

    async def all_entries(self, batch: int = 2000) -> AsyncIterator[Entry]:
        """Every entry in sequence order, streamed from one cursor (one pass over the collection)."""
        async for doc in self._entries.find({}).sort("_id", 1).batch_size(batch):
            yield _entry(doc)

    async def query(
        self,
        *,
        types: Iterable[str] | None = None,
        subject_id: str | None = None,
        request_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[Entry]:
        filters: dict[str, Any] = {"_id": {"$gt": after}}
        if types is not None:
            filters["type"] = {"$in": list(types)}
        if subject_id is not None:
            filters["subject_id"] = subject_id
        if request_id is not None:
            filters["request_id"] = request_id
        if since is not None or until is not None:
            filters["occurred_at"] = {k: v for k, v in (("$gte", since), ("$lt", until)) if v is not None}
        docs = await self._entries.find(filters).sort("_id", 1).limit(limit).to_list(None)
        return [_entry(d) for d in docs]

    async def matching(self, **filters: Any) -> list[Entry]:
        """Every entry that ``query`` would page through with these filters, oldest first."""
        entries: list[Entry] = []
        cursor = 0
        while page := await self.query(after=cursor, limit=1000, **filters):
            entries += page
            cursor = page[-1].seq
        return entries

    async def checkpoints(self) -> list[Checkpoint]:
        docs = await self._checkpoints.find({}).sort("_id", 1).to_list(None)
        return [Checkpoint(d["_id"], d["hash"], d["signed_at"], d["key_id"], d["signature"]) for d in docs]

    async def last_checkpoint(self) -> Checkpoint | None:
        docs = await self._checkpoints.find({}).sort("_id", -1).limit(1).to_list(None)
        return (
            Checkpoint(docs[0]["_id"], docs[0]["hash"], docs[0]["signed_at"], docs[0]["key_id"], docs[0]["signature"])
            if docs
            else None
        )

    async def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        await self._checkpoints.update_one(
            {"_id": checkpoint.seq},
            {
                "$setOnInsert": {
                    "hash": checkpoint.hash,
                    "signed_at": checkpoint.signed_at,
                    "key_id": checkpoint.key_id,
                    "signature": checkpoint.signature,
                }
            },
            upsert=True,
        )

    # Direct access, for the tamper tests and operators' forensics only.
    @property
    def entries_collection(self) -> Any:
        return self._entries
