"""Where wrapped data keys live: the KeyStore port (ports.py) on MongoDB.

One document per subject (``_id`` = subject id) holds that subject's key for every dataset, so every lookup
is an exact ``_id`` match, served from the ``_id`` index. Keys awaiting the end of a grace window are
also listed in a small ledger, so the shredding job never scans the key collection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from bson import Binary
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.errors import DuplicateKeyError

from services.keyvault.model import KeyRecord


def _to_doc(record: KeyRecord) -> dict[str, Any]:
    doc = asdict(record)
    del doc["subject_id"], doc["dataset"]
    if record.wrapped is not None:
        doc["wrapped"] = Binary(record.wrapped)
    return doc


def _ledger_entry(record: KeyRecord) -> UpdateOne:
    fields = {"subject_id": record.subject_id, "dataset": record.dataset, "key_id": record.key_id}
    return UpdateOne(
        {"_id": f"{record.subject_id}|{record.dataset}|{record.key_id}"},
        {"$set": {**fields, "purge_at": record.purge_at}},
        upsert=True,
    )


def _from_doc(subject_id: str, dataset: str, doc: dict[str, Any]) -> KeyRecord:
    wrapped = doc.get("wrapped")
    return KeyRecord(
        subject_id=subject_id,
        dataset=dataset,
        key_id=doc["key_id"],
        kek_id=doc["kek_id"],
        wrapped=bytes(wrapped) if wrapped is not None else None,
        state=doc["state"],
        created_at=doc["created_at"],
        disabled_at=doc.get("disabled_at"),
        purge_at=doc.get("purge_at"),
        destroyed_at=doc.get("destroyed_at"),
        request_id=doc.get("request_id"),
    )


class MongoKeyStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        db = client[database]
        self._subjects = db["keyvault_subjects"]
        self._ledger = db["keyvault_purge_ledger"]
        self._destructions = db["keyvault_destructions"]

    async def get(self, subject_id: str, dataset: str) -> KeyRecord | None:
        doc = await self._subjects.find_one({"_id": subject_id})
        key = (doc or {}).get("keys", {}).get(dataset)
        return _from_doc(subject_id, dataset, key) if key else None

    async def keys_of(self, subject_id: str) -> list[KeyRecord]:
        doc = await self._subjects.find_one({"_id": subject_id})
        return [_from_doc(subject_id, ds, key) for ds, key in sorted((doc or {}).get("keys", {}).items())]

    async def put_if_current(self, record: KeyRecord, *, expected_key_id: str | None) -> bool:
        path = f"keys.{record.dataset}"
        condition: dict[str, Any] = (
            {f"{path}.key_id": expected_key_id} if expected_key_id else {path: {"$exists": False}}
        )
        try:
            result = await self._subjects.update_one(
                {"_id": record.subject_id, **condition},
                {"$set": {path: _to_doc(record)}},
                upsert=expected_key_id is None,
            )
        except DuplicateKeyError:
            # The subject's document exists and already holds a key for this dataset: someone else won.
            return False
        return result.matched_count == 1 or result.upserted_id is not None

    async def put_all_if_current(self, records: Sequence[KeyRecord], *, expected: Mapping[str, str]) -> bool:
        if not records:
            return True
        subject_id = records[0].subject_id
        assert all(r.subject_id == subject_id for r in records), "one subject's keys at a time"
        condition = {f"keys.{r.dataset}.key_id": expected[r.dataset] for r in records}
        changes = {f"keys.{r.dataset}": _to_doc(r) for r in records}
        result = await self._subjects.update_one({"_id": subject_id, **condition}, {"$set": changes})
        return result.matched_count == 1

    async def add_to_purge_ledger(self, record: KeyRecord) -> None:
        await self.add_all_to_purge_ledger([record])

    async def add_all_to_purge_ledger(self, records: Sequence[KeyRecord]) -> None:
        if records:
            await self._ledger.bulk_write([_ledger_entry(r) for r in records], ordered=False)

    async def remove_from_purge_ledger(self, subject_id: str, dataset: str, key_id: str) -> None:
        await self._ledger.delete_one({"_id": f"{subject_id}|{dataset}|{key_id}"})

    async def due_for_purge(self, now: datetime) -> list[tuple[str, str, str]]:
        # The ledger holds only keys inside a grace window, so reading it whole stays small.
        entries = await self._ledger.find({}).to_list(None)
        return sorted((e["subject_id"], e["dataset"], e["key_id"]) for e in entries if e["purge_at"] <= now)

    async def destruction(self, event_id: str) -> str | None:
        doc = await self._destructions.find_one({"_id": event_id})
        return doc["result"] if doc else None

    async def save_destruction(self, event_id: str, result_json: str) -> None:
        await self._destructions.update_one({"_id": event_id}, {"$setOnInsert": {"result": result_json}}, upsert=True)

    async def all_keys(self) -> AsyncIterator[KeyRecord]:
        async for doc in self._subjects.find({}):
            for dataset, key in sorted(doc.get("keys", {}).items()):
                yield _from_doc(doc["_id"], dataset, key)
