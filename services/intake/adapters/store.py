"""Where intake keeps requests: the MongoDB adapters of its RequestStore and AccountDirectory ports (ports.py).

- ``deletion_requests``: one document per request (``_id`` = request id), guarded by a ``version`` field.
- ``open_requests``: one document per subject with an open request (``_id`` = subject id). Inserting it is
  how "one open request per subject" is enforced atomically, and it carries the ``deletion.requested`` event in
  its outbox until the relay has published it. It stays small: a request leaves it when it completes. In a
  cooling-off period the event waits in ``held`` instead, until ``publish_at``: then the relay moves it to the outbox
  (:meth:`MongoRequestStore.hand_over_due`), unless a denial or cancellation took it out first
  (:meth:`MongoRequestStore.withdraw`); each is one conditional write, so exactly one of them wins.
- ``idempotency_keys``: the first answer to each ``Idempotency-Key``.

Every lookup is an exact ``_id`` match (the ``_id`` index); the relay and the deadline watch
read only ``open_requests`` and documents with a non-empty outbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient, InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.intake.adapters.retention import HOLDS_COLLECTION, OUTBOX_FIELD, RULES_COLLECTION
from services.intake.model import DeletionRequest, PendingEvents, Reservation, StoredReply
from shared.events import DeletionRequested, Event, decode_any
from shared.liveread import live

REQUESTS, CLAIMS, IDEMPOTENCY = "deletion_requests", "open_requests", "idempotency_keys"
HELD, PUBLISH_AT, WITHDRAWN_BY = "held", "publish_at", "withdrawn_by"
OUTBOX_COLLECTIONS = (CLAIMS, RULES_COLLECTION, HOLDS_COLLECTION)


def _doc(record: DeletionRequest) -> dict[str, Any]:
    # The status is derived, and stored beside the record only so that lists can filter on it.
    return {**record.model_dump(mode="python", exclude={"request_id"}), "status": record.status}


def _record(doc: dict[str, Any]) -> DeletionRequest:
    fields = {k: v for k, v in doc.items() if k not in ("_id", "status")}
    return DeletionRequest.model_validate({"request_id": doc["_id"], **fields})


def page_filter(
    status: str | None, since: datetime | None, until: datetime | None, subject_id: str | None = None
) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if status is not None:
        query["status"] = status
    if subject_id is not None:
        query["subject_id"] = subject_id
    window = {op: at for op, at in (("$gte", since), ("$lt", until)) if at is not None}
    if window:
        query["created_at"] = window
    return query


class MongoRequestStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str, *, idempotency_ttl: timedelta) -> None:
        db = client[database]
        self._requests = db[REQUESTS]
        self._claims = db[CLAIMS]
        self._keys = db[IDEMPOTENCY]
        self._ttl = idempotency_ttl

    async def get(self, request_id: str) -> DeletionRequest | None:
        doc = await self._requests.find_one({"_id": request_id})
        return None if doc is None else _record(doc)

    async def save(self, record: DeletionRequest) -> DeletionRequest | None:
        stored = record.model_copy(update={"version": record.version + 1})
        if record.version == 0:
            try:
                await self._requests.insert_one({"_id": record.request_id, **_doc(stored)})
            except DuplicateKeyError:
                return None
            return stored
        result = await self._requests.update_one(
            {"_id": record.request_id, "version": record.version}, {"$set": _doc(stored)}
        )
        return stored if result.matched_count else None

    async def get_many(self, request_ids: Sequence[str]) -> dict[str, DeletionRequest]:
        found = self._requests.find({"_id": {"$in": list(request_ids)}})
        return {doc["_id"]: _record(doc) async for doc in found}

    async def save_many(self, records: Sequence[DeletionRequest]) -> bool:
        writes: list[InsertOne[dict[str, Any]] | UpdateOne] = []
        for record in records:
            stored = _doc(record.model_copy(update={"version": record.version + 1}))
            if record.version == 0:
                writes.append(InsertOne({"_id": record.request_id, **stored}))
            else:
                writes.append(UpdateOne({"_id": record.request_id, "version": record.version}, {"$set": stored}))
        try:
            result = await self._requests.bulk_write(writes, ordered=False)
        except BulkWriteError:
            return False  # a request inserted meanwhile
        return result.inserted_count + result.matched_count == len(writes)

    async def ensure(self, record: DeletionRequest) -> None:
        stored = record.model_copy(update={"version": 1})
        await self._requests.update_one({"_id": record.request_id}, {"$setOnInsert": _doc(stored)}, upsert=True)

    async def claim(self, event: DeletionRequested, *, hold_until: datetime | None = None) -> str | None:
        raw = [event.model_dump_json()]
        doc: dict[str, Any] = {"_id": event.subject_id, "request_id": event.request_id}
        doc |= {OUTBOX_FIELD: [], HELD: raw, PUBLISH_AT: hold_until} if hold_until else {OUTBOX_FIELD: raw}
        try:
            await self._claims.insert_one(doc)
        except DuplicateKeyError:
            found = await self._claims.find_one({"_id": event.subject_id})
            if found is None:  # released in between: try once more
                return await self.claim(event, hold_until=hold_until)
            return None if found["request_id"] == event.request_id else str(found["request_id"])
        return None

    async def hand_over_due(self, now: datetime) -> int:
        moved = 0
        async for doc in self._claims.find({f"{HELD}.0": {"$exists": True}, PUBLISH_AT: {"$lte": now}}):
            result = await self._claims.update_one(
                {"_id": doc["_id"], "request_id": doc["request_id"], f"{HELD}.0": {"$exists": True}},
                {"$push": {OUTBOX_FIELD: {"$each": doc[HELD]}}, "$set": {HELD: []}, "$unset": {PUBLISH_AT: ""}},
            )
            moved += result.modified_count
        return moved

    async def withdraw(self, subject_id: str, request_id: str, event: Event) -> Event | None:
        claim = {"_id": subject_id, "request_id": request_id}
        raw = event.model_dump_json()
        result = await self._claims.update_one(
            {**claim, f"{HELD}.0": {"$exists": True}},
            {"$push": {OUTBOX_FIELD: raw}, "$set": {HELD: [], WITHDRAWN_BY: raw}, "$unset": {PUBLISH_AT: ""}},
        )
        if result.modified_count == 1:
            return event
        doc = await self._claims.find_one(claim, {WITHDRAWN_BY: 1})
        return None if doc is None or WITHDRAWN_BY not in doc else decode_any(doc[WITHDRAWN_BY])

    async def announce(self, subject_id: str, request_id: str, event: Event) -> bool:
        result = await self._claims.update_one(
            {"_id": subject_id, "request_id": request_id}, {"$push": {OUTBOX_FIELD: event.model_dump_json()}}
        )
        return result.matched_count == 1

    async def release(self, subject_id: str, request_id: str) -> None:
        await self._claims.delete_one({"_id": subject_id, "request_id": request_id})

    async def open_request_ids(self) -> list[str]:
        return [str(doc["request_id"]) async for doc in self._claims.find({}, {"request_id": 1})]

    async def page(
        self,
        *,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        subject_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[DeletionRequest]:
        cursor = (
            self._requests.find(page_filter(status, since, until, subject_id))
            .sort([("created_at", -1), ("_id", 1)])
            .skip(offset)
            .limit(limit)
        )
        return [_record(doc) async for doc in cursor]

    async def reserve_key(
        self, key: str, *, fingerprint: str, now: datetime, lease: timedelta
    ) -> Reservation | StoredReply:
        fresh = {"fingerprint": fingerprint, "state": "pending", "lease_until": now + lease, "created_at": now}
        try:
            await self._keys.insert_one({"_id": key, **fresh})
            return "reserved"
        except DuplicateKeyError:
            pass
        doc = await self._keys.find_one({"_id": key})
        if doc is None:
            return "busy"
        if doc["created_at"] + self._ttl < now:
            # Expired: the key may be used afresh (a TTL index would remove it only at its next pass).
            result = await self._keys.replace_one({"_id": key, "created_at": doc["created_at"]}, fresh)
            return "reserved" if result.modified_count else "busy"
        if doc["fingerprint"] != fingerprint:
            return "mismatch"
        if doc["state"] == "done":
            return StoredReply(doc["fingerprint"], doc["status"], doc["body"])
        if doc["lease_until"] < now:  # its first holder died mid-way: take over
            result = await self._keys.update_one(
                {"_id": key, "state": "pending", "lease_until": doc["lease_until"]},
                {"$set": {"lease_until": now + lease}},
            )
            return "reserved" if result.modified_count else "busy"
        return "busy"

    async def complete_key(self, key: str, *, reply: StoredReply, now: datetime) -> None:
        await self._keys.update_one(
            {"_id": key}, {"$set": {"state": "done", "status": reply.status, "body": reply.body, "completed_at": now}}
        )

    async def forget_key(self, key: str) -> None:
        await self._keys.delete_one({"_id": key, "state": "pending"})


class MongoOutbox:
    """The events documents carry for publication, across every collection that has an outbox."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self._db = client[database]

    async def pending(self, limit: int = 100) -> list[PendingEvents]:
        found: list[PendingEvents] = []
        for name in OUTBOX_COLLECTIONS:
            cursor = self._db[name].find({f"{OUTBOX_FIELD}.0": {"$exists": True}}, {OUTBOX_FIELD: 1}).limit(limit)
            found += [PendingEvents(name, doc["_id"], tuple(doc[OUTBOX_FIELD])) async for doc in cursor]
        return found

    async def clear(self, entry: PendingEvents) -> None:
        """Drop the published events, keeping any appended since they were read."""
        await self._db[entry.collection].update_one(
            {"_id": entry.doc_id}, {"$pullAll": {OUTBOX_FIELD: list(entry.raw)}}
        )


class MongoAccountDirectory:
    """Finds the account behind an address through its keyed hash (the address itself is stored encrypted)."""

    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        database: str,
        *,
        collection: str,
        subject_field: str,
        hash_field: str,
        address_field: str = "email",
        jurisdiction_field: str | None = None,
    ) -> None:
        self._accounts = client[database][collection]
        self._subject_field, self._hash_field, self._address_field = subject_field, hash_field, address_field
        self._jurisdiction_field = jurisdiction_field

    async def ensure_indexes(self) -> None:
        await self._accounts.create_index(self._hash_field)

    async def subject_for(self, email_hash: str) -> str | None:
        doc = await self._accounts.find_one(live({self._hash_field: email_hash}), {self._subject_field: 1})
        return None if doc is None else str(doc[self._subject_field])

    async def stored_address(self, subject_id: str) -> str | None:
        doc = await self._accounts.find_one(live({self._subject_field: subject_id}), {self._address_field: 1})
        value = None if doc is None else doc.get(self._address_field)
        return value if isinstance(value, str) and value else None

    async def jurisdiction_of(self, subject_id: str) -> str | None:
        if self._jurisdiction_field is None:
            return None
        doc = await self._accounts.find_one(live({self._subject_field: subject_id}), {self._jurisdiction_field: 1})
        value = None if doc is None else doc.get(self._jurisdiction_field)
        return value if isinstance(value, str) and value else None
