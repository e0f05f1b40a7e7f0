"""notifier's MongoDB state: webhook endpoints, deliveries with their attempts, and per-request notices.

Deliveries waiting for an attempt are also listed in a small ledger with a lease, so the delivery worker
reads only what is pending (never the whole delivery history) and two notifier instances never send the
same attempt at once.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient, ReturnDocument

from services.notifier.model import Attempt, Delivery, DeliveryStatus, Endpoint, Notice, Secret


def _notice(doc: dict[str, Any]) -> Notice:
    fields = {k: v for k, v in doc.items() if k in Notice.__dataclass_fields__}
    return Notice(request_id=doc["_id"], **fields)


def _endpoint(doc: dict[str, Any]) -> Endpoint:
    return Endpoint(
        endpoint_id=doc["_id"],
        url=doc["url"],
        event_types=tuple(doc["event_types"]),
        secrets=tuple(Secret(**s) for s in doc["secrets"]),
        created_at=doc["created_at"],
        status=doc["status"],
        disabled_reason=doc.get("disabled_reason"),
        owner_email=doc.get("owner_email"),
        description=doc.get("description"),
    )


def _delivery(doc: dict[str, Any]) -> Delivery:
    return Delivery(
        message_id=doc["_id"],
        endpoint_id=doc["endpoint_id"],
        event_type=doc["event_type"],
        payload=doc["payload"],
        request_id=doc.get("request_id"),
        created_at=doc["created_at"],
        status=doc["status"],
        attempts=tuple(Attempt(**a) for a in doc.get("attempts", [])),
        next_attempt_at=doc.get("next_attempt_at"),
    )


class MongoWebhookStore:
    """The WebhookStore port on MongoDB."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        db = client[database]
        self._endpoints = db["notifier_endpoints"]
        self._deliveries = db["notifier_deliveries"]
        self._pending = db["notifier_pending"]
        self._notices = db["notifier_notices"]
        self._counters = db["notifier_counters"]
        self._mailed = db["notifier_mailed"]

    async def ensure_indexes(self) -> None:
        await self._deliveries.create_index("endpoint_id")
        await self._notices.create_index([("mail_status", 1), ("deferred_at", 1)])

    # Endpoints

    async def add_endpoint(self, endpoint: Endpoint) -> None:
        doc = asdict(endpoint)
        doc["_id"] = doc.pop("endpoint_id")
        await self._endpoints.insert_one(doc)

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        doc = await self._endpoints.find_one({"_id": endpoint_id})
        return _endpoint(doc) if doc else None

    async def endpoints(self, *, after: str | None = None, limit: int = 100) -> list[Endpoint]:
        query = {"_id": {"$gt": after}} if after else {}
        docs = await self._endpoints.find(query).sort("_id", 1).limit(limit).to_list(None)
        return [_endpoint(d) for d in docs]

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        return (await self._endpoints.delete_one({"_id": endpoint_id})).deleted_count == 1

    async def set_secrets(self, endpoint_id: str, secrets: tuple[Secret, ...]) -> None:
        await self._endpoints.update_one({"_id": endpoint_id}, {"$set": {"secrets": [asdict(s) for s in secrets]}})

    async def disable_endpoint(self, endpoint_id: str, reason: str) -> None:
        await self._endpoints.update_one(
            {"_id": endpoint_id}, {"$set": {"status": "disabled", "disabled_reason": reason}}
        )

    # Deliveries

    async def schedule(self, delivery: Delivery) -> bool:
        """Record a delivery once (its id is stable); returns False if it already existed.

        Two writes: the delivery, then its entry in the pending ledger. A crash (or MongoDB going away) between
        them leaves a pending delivery the worker would never see; the re-consumed event comes back here and adds
        the missing entry, so the ledger is repaired whenever the delivery is still pending.
        """
        doc = asdict(delivery)
        doc["_id"] = doc.pop("message_id")
        result = await self._deliveries.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)
        created = result.upserted_id is not None
        if not created:
            existing = await self._deliveries.find_one({"_id": doc["_id"]}, {"status": 1})
            if existing is None or existing["status"] != "pending":
                return False
        await self._pending.update_one(
            {"_id": delivery.message_id},
            {"$setOnInsert": {"next_attempt_at": delivery.next_attempt_at, "lease_until": None}},
            upsert=True,
        )
        return created

    async def claim_due(self, now: datetime, *, lease: timedelta, limit: int = 50) -> list[Delivery]:
        # The ledger lists only pending deliveries, so reading it whole stays small.
        entries = await self._pending.find({}).to_list(None)
        due = sorted(
            (
                e
                for e in entries
                if e["next_attempt_at"] <= now and (e.get("lease_until") is None or e["lease_until"] <= now)
            ),
            key=lambda e: e["next_attempt_at"],
        )[:limit]
        claimed = []
        for entry in due:
            won = await self._pending.find_one_and_update(
                {"_id": entry["_id"], "lease_until": entry.get("lease_until")},
                {"$set": {"lease_until": now + lease}},
                return_document=ReturnDocument.AFTER,
            )
            if won is None:
                continue  # another instance took it
            doc = await self._deliveries.find_one({"_id": entry["_id"]})
            if doc is None or doc["status"] != "pending":
                await self._pending.delete_one({"_id": entry["_id"]})
                continue
            claimed.append(_delivery(doc))
        return claimed

    async def record_attempt(
        self, message_id: str, attempt: Attempt, *, status: DeliveryStatus, next_attempt_at: datetime | None
    ) -> None:
        await self._deliveries.update_one(
            {"_id": message_id},
            {"$push": {"attempts": asdict(attempt)}, "$set": {"status": status, "next_attempt_at": next_attempt_at}},
        )
        if status == "pending":
            await self._pending.update_one(
                {"_id": message_id}, {"$set": {"next_attempt_at": next_attempt_at, "lease_until": None}}
            )
        else:
            await self._pending.delete_one({"_id": message_id})

    async def delivery(self, message_id: str) -> Delivery | None:
        doc = await self._deliveries.find_one({"_id": message_id})
        return _delivery(doc) if doc else None

    async def deliveries_of(self, endpoint_id: str, *, after: str | None = None, limit: int = 100) -> list[Delivery]:
        query: dict[str, Any] = {"endpoint_id": endpoint_id}
        if after:
            query["_id"] = {"$gt": after}
        docs = await self._deliveries.find(query).sort("_id", 1).limit(limit).to_list(None)
        return [_delivery(d) for d in docs]

    async def deliveries_for_request(self, request_id: str, *, limit: int = 100) -> list[Delivery]:
        docs = await self._deliveries.find({"request_id": request_id}).sort("_id", 1).limit(limit).to_list(None)
        return [_delivery(d) for d in docs]

    async def redeliver(self, message_id: str, now: datetime) -> None:
        await self._deliveries.update_one({"_id": message_id}, {"$set": {"status": "pending", "next_attempt_at": now}})
        await self._pending.update_one(
            {"_id": message_id}, {"$set": {"next_attempt_at": now, "lease_until": None}}, upsert=True
        )

    # Notices to people

    async def notice(self, request_id: str) -> Notice | None:
        doc = await self._notices.find_one({"_id": request_id})
        return _notice(doc) if doc else None

    async def save_notice(self, notice: Notice) -> None:
        """Record the notice as it now is; this also ends a claim on it."""
        doc = asdict(notice)
        doc["_id"] = doc.pop("request_id")
        await self._notices.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def claim_deferred(
        self, now: datetime, *, lease: timedelta, limit: int = 20, mails: bool = True
    ) -> list[Notice]:
        """Oldest first: the deferred notices due for another try (unless not ``mails``), and the ended ones whose
        follow-up is owed. Each comes with a lease, so two notifier instances never send the same mail at once.
        """
        wanted: list[dict[str, Any]] = [{"follow_up": "pending"}]
        if mails:
            wanted.append({"mail_status": "deferred", "next_try_at": {"$lte": now}})
        query = {
            "$and": [
                {"$or": wanted},
                {"$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]},
            ]
        }
        docs = await self._notices.find(query).sort([("deferred_at", 1), ("_id", 1)]).limit(limit).to_list(None)
        claimed = []
        for doc in docs:
            won = await self._notices.find_one_and_update(
                {"_id": doc["_id"], "lease_until": doc.get("lease_until")},
                {"$set": {"lease_until": now + lease}},
                return_document=ReturnDocument.AFTER,
            )
            if won is not None:  # else another instance took it
                claimed.append(_notice(won))
        return claimed

    async def count_mail(self, day: str) -> int:
        """Count one more mail on ``day`` (YYYY-MM-DD); returns the day's total including it."""
        doc = await self._counters.find_one_and_update(
            {"_id": f"mail|{day}"}, {"$inc": {"sent": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        assert doc is not None  # an upsert always returns the document
        return int(doc["sent"])

    async def uncount_mail(self, day: str) -> None:
        """Give back the place count_mail reserved, for a mail that did not go out."""
        await self._counters.update_one({"_id": f"mail|{day}"}, {"$inc": {"sent": -1}})

    async def mail_count(self, day: str) -> int:
        """How many mails ``day`` has counted so far (without counting one)."""
        doc = await self._counters.find_one({"_id": f"mail|{day}"})
        return int(doc["sent"]) if doc else 0

    async def mark_mailed(self, request_id: str, at: datetime) -> None:
        await self._mailed.update_one({"_id": request_id}, {"$setOnInsert": {"at": at}}, upsert=True)

    async def mailed(self, request_id: str) -> bool:
        return await self._mailed.find_one({"_id": request_id}) is not None
