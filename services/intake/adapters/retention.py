"""Where intake keeps the retention rules (one versioned document, and every past version) and the legal holds
(one document each). Each write carries the events that announce it in the same document (the outbox)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from shared.events import Event
from shared.retention import Hold, InForce, Rule, RuleSet, StaleRuleSetError

# Documents that carry events still to be published keep them (as JSON) in this field until a relay sends them.
OUTBOX_FIELD = "outbox"
RULES_COLLECTION, HOLDS_COLLECTION = "retention_rules", "legal_holds"


def _rule_doc(rule: Rule) -> dict[str, Any]:
    return rule.model_dump(mode="python")


class MongoRetentionStore:
    """Rules as one versioned document (plus every past version, for the record); holds one document each."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        db = client[database]
        self._rules = db[RULES_COLLECTION]
        self._history = db["retention_rules_history"]
        self._holds = db[HOLDS_COLLECTION]

    async def ensure_indexes(self) -> None:
        await self._holds.create_index("subject_id")
        await self._holds.create_index("ends_at")

    async def rule_set(self) -> RuleSet:
        doc = await self._rules.find_one({"_id": "current"})
        if doc is None:
            return RuleSet(version=0, rules=())
        return RuleSet(
            version=doc["version"],
            rules=tuple(Rule.model_validate(r) for r in doc["rules"]),
            changed_at=doc.get("changed_at"),
            changed_by=doc.get("changed_by"),
        )

    async def replace_rules(
        self, rules: tuple[Rule, ...], *, expected_version: int, by: str, at: datetime, outbox: Sequence[Event] = ()
    ) -> RuleSet:
        version = expected_version + 1
        fields = {"version": version, "rules": [_rule_doc(r) for r in rules], "changed_at": at, "changed_by": by}
        pending = {"$push": {OUTBOX_FIELD: {"$each": [e.model_dump_json() for e in outbox]}}} if outbox else {}
        if expected_version == 0:
            try:
                await self._rules.insert_one(
                    {"_id": "current", **fields, OUTBOX_FIELD: [e.model_dump_json() for e in outbox]}
                )
            except DuplicateKeyError as exc:
                raise StaleRuleSetError from exc
        else:
            result = await self._rules.update_one(
                {"_id": "current", "version": expected_version}, {"$set": fields, **pending}
            )
            if result.matched_count == 0:
                raise StaleRuleSetError
        # Only the winner of the swap writes its version's history entry (the audit log has every change too).
        await self._history.replace_one({"_id": version}, fields, upsert=True)
        return RuleSet(version=version, rules=rules, changed_at=at, changed_by=by)

    async def place_hold(self, hold: Hold, *, outbox: Sequence[Event] = ()) -> Hold:
        fields = {
            **hold.model_dump(mode="python", exclude={"hold_id"}),
            OUTBOX_FIELD: [e.model_dump_json() for e in outbox],
        }
        await self._holds.update_one({"_id": hold.hold_id}, {"$setOnInsert": fields}, upsert=True)
        placed = await self.hold(hold.hold_id)
        assert placed is not None
        return placed

    async def release_hold(self, hold_id: str, *, by: str, at: datetime, outbox: Sequence[Event] = ()) -> Hold | None:
        await self._holds.update_one(
            {"_id": hold_id, "released_at": None},
            {
                "$set": {"released_at": at, "released_by": by},
                "$push": {OUTBOX_FIELD: {"$each": [e.model_dump_json() for e in outbox]}},
            },
        )
        return await self.hold(hold_id)

    async def hold(self, hold_id: str) -> Hold | None:
        doc = await self._holds.find_one({"_id": hold_id})
        return None if doc is None else _hold(doc)

    async def holds(self, *, subject_id: str | None, active_only: bool, limit: int, after: str | None) -> list[Hold]:
        query: dict[str, Any] = {}
        if subject_id is not None:
            query["subject_id"] = subject_id
        if active_only:
            query["released_at"] = None
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self._holds.find(query).sort("_id", 1).limit(limit)
        return [_hold(doc) async for doc in cursor]

    async def holds_for(self, subject_id: str) -> list[Hold]:
        """The active holds that cover this subject: their own, and those on everyone."""
        cursor = self._holds.find({"subject_id": {"$in": [subject_id, None]}, "released_at": None})
        return [_hold(doc) async for doc in cursor]

    async def in_force(self, subject_id: str) -> InForce:
        """The rule set and this subject's unreleased holds, read side by side (one call for a destructive step)."""
        rules, holds = await asyncio.gather(self.rule_set(), self.holds_for(subject_id))
        return InForce(rules, tuple(holds))

    async def active_holds(self) -> list[Hold]:
        """Every hold not released (those past their ``ends_at`` too: ask :meth:`Hold.active`)."""
        return [_hold(doc) async for doc in self._holds.find({"released_at": None})]

    async def holds_ending(self, *, after: datetime | None, until: datetime) -> list[Hold]:
        """The unreleased holds whose ``ends_at`` falls in ``(after, until]``: what the release job acts on."""
        window: dict[str, Any] = {"$lte": until} if after is None else {"$gt": after, "$lte": until}
        return [_hold(doc) async for doc in self._holds.find({"released_at": None, "ends_at": window})]


def _hold(doc: dict[str, Any]) -> Hold:
    return Hold(hold_id=doc["_id"], **{k: v for k, v in doc.items() if k not in ("_id", OUTBOX_FIELD)})
