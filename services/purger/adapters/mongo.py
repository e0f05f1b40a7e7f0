"""The purger's MongoDB side: erasing and tagging a subject's records, the purge ledger, and each request's progress.

- Records are found through the dataset's subject field (indexed at start) and erased, or tagged with
  ``deletion.tagged_at`` / ``deletion.purge_after`` / ``deletion.request_id``.
- What was tagged is written to ``purge_ledger`` first, in chunks of primary keys, so the nightly job deletes by
  ``_id`` in bounded batches and never searches a collection: its cost follows the number of tagged records.
- ``purger_requests`` holds each request's per-dataset outcomes, per round, so a replayed or re-consumed event
  finishes the datasets not yet done and reports the very same outcomes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from services.purger.model import LedgerChunk, PurgeRecord
from services.purger.ports import ChunkDeleter
from shared.datamap import Dataset
from shared.events import DatasetCounts, DatasetOutcome
from shared.liveread import PURGE_AFTER, TAGGED_AT

LEDGER, PROGRESS = "purge_ledger", "purger_requests"
TAGGED_BY = "deletion.request_id"
log = structlog.get_logger(__name__)


class MongoEraser:
    """Erases (``erase``) or tags (``tag_then_purge``) one subject's records in one collection."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str, *, ledger: MongoPurgeLedger) -> None:
        self._db = client[database]
        self._ledger = ledger

    async def ensure_indexes(self, datasets: Sequence[Dataset]) -> None:
        """Index each dataset's subject field, in the collections that exist.

        Creating an index creates its collection, and the collections are the company's, not the purger's: one
        created here would make a misspelt or dropped collection look real, and every erasure in it ``erased``.
        A missing one is logged now and reported ``failed`` by each erasure; it gets its index at the first start
        after it appears (until then, erasures in it scan).
        """
        existing = set(await self._db.list_collection_names())
        for dataset in datasets:
            if dataset.mongo is None:
                continue
            if dataset.mongo.collection in existing:
                await self._db[dataset.mongo.collection].create_index(dataset.mongo.subject_field)
            else:
                log.warning(
                    "purger.collection_missing",
                    dataset=dataset.name,
                    collection=dataset.mongo.collection,
                    database=self._db.name,
                )

    async def erase(
        self, dataset: Dataset, subject_id: str, *, request_id: str, now: datetime, purge_after: datetime
    ) -> DatasetOutcome:
        assert dataset.mongo is not None
        coll = self._db[dataset.mongo.collection]
        field_ = dataset.mongo.subject_field
        if dataset.mode == "erase":
            result = await coll.delete_many({field_: subject_id})
            if not result.deleted_count and (missing := await self._missing(dataset)):
                return missing
            return DatasetOutcome(
                dataset=dataset.name,
                store="mongo",
                outcome="erased",
                counts=DatasetCounts(records_erased=result.deleted_count),
            )
        # This request's records: untagged ones, and those it tagged in an earlier, interrupted run. Found by the
        # subject field alone (its index; a top-level `$or` makes SecantusDB scan) and told apart here: a subject
        # has few records.
        found = [doc async for doc in coll.find({field_: subject_id}, {"_id": 1, "deletion": 1})]
        tagger = {doc["_id"]: (doc.get("deletion") or {}) for doc in found}
        mine = [i for i, tag in tagger.items() if "tagged_at" not in tag or tag.get("request_id") == request_id]
        ids = sorted(mine, key=str)
        untagged = [i for i in mine if tagger[i].get("request_id") is None]
        # The ledger first, then the tags: at every moment each tagged record is already listed, so whatever
        # happens to this run (a crash, the event dead-lettered), nothing stays hidden yet never hard-deleted.
        # A crash in between leaves records listed but untagged, which the re-run tags (and the nightly job deletes
        # anyway: they are the subject's, to be erased).
        await self._ledger.add(dataset, dataset.mongo.collection, subject_id, request_id, ids, purge_after)
        await self._tag(coll, untagged, request_id, now, purge_after)
        if not ids:  # nothing to wait for: the dataset holds nothing of the subject now
            missing = await self._missing(dataset)
            return missing or DatasetOutcome(dataset=dataset.name, store="mongo", outcome="erased")
        return DatasetOutcome(
            dataset=dataset.name,
            store="mongo",
            outcome="tagged",
            counts=DatasetCounts(records_tagged=len(ids)),
            purge_after=purge_after,
        )

    async def _tag(
        self,
        coll: AsyncCollection[dict[str, Any]],
        ids: Sequence[Any],
        request_id: str,
        now: datetime,
        purge_after: datetime,
    ) -> None:
        if ids:
            tag = {"$set": {TAGGED_AT: now, PURGE_AFTER: purge_after, TAGGED_BY: request_id}}
            await coll.update_many({"_id": {"$in": list(ids)}}, tag)

    async def _missing(self, dataset: Dataset) -> DatasetOutcome | None:
        """``failed`` if the dataset's collection does not exist (asked only when nothing of the subject was found)."""
        assert dataset.mongo is not None
        name = dataset.mongo.collection
        if await self._db.list_collection_names(filter={"name": name}):
            return None
        return DatasetOutcome(
            dataset=dataset.name,
            store="mongo",
            outcome="failed",
            error=f"the collection '{name}' does not exist in database '{self._db.name}'",
        )


class MongoPurgeLedger:
    """The nightly job's work list: chunks of primary keys, each deleted in one call by primary key: in MongoDB
    here, in another store (PostgreSQL) by that store's ``deleters`` entry."""

    def __init__(
        self,
        client: AsyncMongoClient[dict[str, Any]],
        database: str,
        *,
        chunk_size: int = 500,
        deleters: Mapping[str, ChunkDeleter] | None = None,
    ) -> None:
        self._db = client[database]
        self._ledger = self._db[LEDGER]
        self._chunk_size = chunk_size
        self.deleters = dict(deleters or {})

    async def listed(self, request_id: str, dataset: str) -> list[Any]:
        """The ids the chunks of this request and dataset list. Chunks are written one after another from 0, so an
        earlier run's are 0..n-1, each read by ``_id`` (one lookup when there are none: the first run)."""
        return [i for chunk in await self._chunks_of(request_id, dataset) for i in chunk["ids"]]

    async def _chunks_of(self, request_id: str, dataset: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while chunk := await self._ledger.find_one({"_id": f"{request_id}:{dataset}:{len(found)}"}, {"ids": 1}):
            found.append(chunk)
        return found

    async def add(
        self,
        dataset: Dataset,
        location: str,
        subject_id: str,
        request_id: str,
        ids: Sequence[Any],
        purge_after: datetime,
    ) -> None:
        """Add to the ledger, in new chunks, the ids that no chunk of this request and dataset lists yet.

        Re-chunking everything on a re-run would shift records that arrived meanwhile into chunk numbers that
        already exist, and leave them listed nowhere.
        """
        prefix = f"{request_id}:{dataset.name}:"
        chunks = await self._chunks_of(request_id, dataset.name)
        listed = {repr(i) for chunk in chunks for i in chunk["ids"]}  # repr: ids of any BSON type, ObjectId("1") != "1"
        number = len(chunks)
        new = [i for i in ids if repr(i) not in listed]
        for start in range(0, len(new), self._chunk_size):
            # An insert, not an upsert: should another run have written this number meanwhile, the clash fails this
            # run, and its retry reads that chunk, instead of silently listing nothing.
            await self._ledger.insert_one(
                {
                    "_id": f"{prefix}{number}",
                    "request_id": request_id,
                    "subject_id": subject_id,
                    "dataset": dataset.name,
                    "store": dataset.store,
                    "collection": location,
                    "ids": new[start : start + self._chunk_size],
                    "purge_after": purge_after,
                    "done": False,
                }
            )
            number += 1

    async def ensure_indexes(self) -> None:
        await self._ledger.create_index([("done", 1), ("purge_after", 1)])
        await self._ledger.create_index("request_id")  # each request's totals, read when its last chunk is done

    async def due(self, now: datetime) -> AsyncIterator[LedgerChunk]:
        cursor = self._ledger.find({"done": False, "purge_after": {"$lte": now}}).sort("_id", 1)
        async for doc in cursor:
            yield _chunk(doc)

    async def count_due(self, now: datetime) -> tuple[int, int]:
        """(chunks, records) due now: for progress bars."""
        chunks = records = 0
        async for doc in self._ledger.find({"done": False, "purge_after": {"$lte": now}}, {"ids": 1}):
            chunks, records = chunks + 1, records + len(doc["ids"])
        return chunks, records

    async def delete_chunk(self, chunk: LedgerChunk) -> int:
        """Delete the chunk's records by primary key and mark it done; the records of the chunk gone now."""
        if chunk.store == "mongo":
            await self._db[chunk.collection].delete_many({"_id": {"$in": list(chunk.ids)}})
        else:
            await self.deleters[chunk.store].delete_ids(chunk)
        # Done means every listed record is gone, whoever deleted it (this call, an earlier interrupted one, the app).
        await self._ledger.update_one({"_id": chunk.chunk_id}, {"$set": {"done": True, "purged": len(chunk.ids)}})
        return len(chunk.ids)

    async def request_totals(self, request_id: str) -> tuple[bool, dict[str, int]]:
        """(all done, records purged per dataset) over the request's chunks."""
        done, totals = True, dict[str, int]()
        async for doc in self._ledger.find({"request_id": request_id}):
            done = done and doc["done"]
            totals[doc["dataset"]] = totals.get(doc["dataset"], 0) + (len(doc["ids"]) if doc["done"] else 0)
        return done, totals


def _chunk(doc: dict[str, Any]) -> LedgerChunk:
    return LedgerChunk(
        chunk_id=doc["_id"],
        request_id=doc["request_id"],
        subject_id=doc["subject_id"],
        dataset=doc["dataset"],
        collection=doc["collection"],
        ids=tuple(doc["ids"]),
        purge_after=doc["purge_after"],
        done=doc["done"],
        store=doc.get("store", "mongo"),
    )


class MongoPurgeProgress:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self._requests = client[database][PROGRESS]
        self._state = client[database]["purger_state"]

    async def ensure_indexes(self) -> None:
        await self._requests.create_index("retained")
        await self._requests.create_index("held_datasets")
        await self._requests.create_index("subject_id")

    async def get(self, request_id: str) -> PurgeRecord | None:
        doc = await self._requests.find_one({"_id": request_id})
        return None if doc is None else _record(doc)

    async def save_outcome(self, request_id: str, subject_id: str, round_: int, outcome: DatasetOutcome) -> None:
        await self._requests.update_one(
            {"_id": request_id},
            {
                "$setOnInsert": {"subject_id": subject_id},
                "$set": {f"rounds.{round_}.{outcome.dataset}": outcome.model_dump(mode="json")},
            },
            upsert=True,
        )

    async def complete_round(self, record: PurgeRecord, round_: int, at: datetime) -> PurgeRecord:
        record.completed[round_] = at
        fields: dict[str, Any] = {f"completed.{round_}": at, "retained": record.retained, "tagged": record.tagged}
        if record.clean_since is None and not record.tagged:
            record.clean_since = at  # nothing waits for the nightly job: the erased data is gone from live stores
            fields["clean_since"] = at
        await self._requests.update_one({"_id": record.request_id}, {"$set": fields})
        return record

    async def with_retained(self, datasets: Sequence[str], subject_id: str | None) -> list[PurgeRecord]:
        """The requests that kept (by rule or hold) or were held in any of ``datasets``."""
        query: dict[str, Any] = {
            "$or": [{"retained": {"$in": list(datasets)}}, {"held_datasets": {"$in": list(datasets)}}]
        }
        if subject_id is not None:
            query["subject_id"] = subject_id
        return [_record(doc) async for doc in self._requests.find(query)]

    async def in_progress(self, subject_id: str | None) -> list[PurgeRecord]:
        """The requests (of a subject, or everyone's) whose erased data may still exist somewhere: tagged records,
        keys in their grace window, or backups not yet expired."""
        query: dict[str, Any] = {"backups_expired_at": None}
        if subject_id is not None:
            query["subject_id"] = subject_id
        return [_record(doc) async for doc in self._requests.find(query)]

    async def set_held(self, request_id: str, held: Mapping[str, str]) -> None:
        await self._requests.update_one(
            {"_id": request_id}, {"$set": {"held": dict(held), "held_datasets": sorted(held)}}
        )

    async def retention_checked_at(self) -> datetime | None:
        doc = await self._state.find_one({"_id": "retention_checked"})
        return None if doc is None else doc["at"]

    async def set_retention_checked_at(self, at: datetime) -> None:
        # Only forward: a drill run "as of" a later moment (`lethe purge --now --at`) already acted on what ended.
        await self._state.update_one({"_id": "retention_checked"}, {"$max": {"at": at}}, upsert=True)

    async def mark_hard_deleted(self, request_id: str, at: datetime) -> None:
        await self._requests.update_one(
            {"_id": request_id, "hard_deleted_at": None}, {"$set": {"hard_deleted_at": at, "clean_since": at}}
        )

    async def awaiting_backup_expiry(self) -> list[PurgeRecord]:
        cursor = self._requests.find({"clean_since": {"$ne": None}, "backups_expired_at": None})
        return [_record(doc) async for doc in cursor]

    async def mark_backups_expired(self, request_id: str, at: datetime) -> None:
        await self._requests.update_one({"_id": request_id}, {"$set": {"backups_expired_at": at}})


def _record(doc: dict[str, Any]) -> PurgeRecord:
    return PurgeRecord(
        request_id=doc["_id"],
        subject_id=doc["subject_id"],
        rounds={
            int(n): {name: DatasetOutcome.model_validate(o) for name, o in outcomes.items()}
            for n, outcomes in doc.get("rounds", {}).items()
        },
        completed={int(n): at for n, at in doc.get("completed", {}).items()},
        hard_deleted_at=doc.get("hard_deleted_at"),
        clean_since=doc.get("clean_since"),
        backups_expired_at=doc.get("backups_expired_at"),
        held=dict(doc.get("held", {})),
    )
