"""Retention rules and legal holds: what a deletion must leave alone, and why.

intake writes them (``PATCH /data_retention/rules``, ``POST /legal_holds``); the purger reads them before it
erases anything. Both live in MongoDB, so both services see the same versioned rule set and the same holds.

- A **rule** exempts datasets for everyone on a legal basis (e.g. invoices under a tax law), until it expires.
- A **hold** keeps named datasets of one subject (or of everyone, ``subject_id`` unset) until it is released or
  its ``ends_at`` passes.

Both are *state*: every destructive step (erase, nightly hard delete, key destruction) asks
:func:`retained_datasets` at the moment it acts, never what an earlier event said.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from shared.events import Event

RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
DatasetName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
# Documents that carry events still to be published keep them (as JSON) in this field until a relay sends them.
OUTBOX_FIELD = "outbox"
RULES_COLLECTION, HOLDS_COLLECTION = "retention_rules", "legal_holds"
Text = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]


class Rule(BaseModel):
    """Datasets kept for everyone on a legal basis, until ``expires_at`` (never, if unset)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: RuleId
    datasets: tuple[DatasetName, ...] = Field(min_length=1, max_length=100)
    legal_basis: Text
    legal_ref: Text
    description: Annotated[str, StringConstraints(max_length=1000)] = ""
    expires_at: AwareDatetime | None = None

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


class Hold(BaseModel):
    """A legal hold: datasets kept for one subject (or everyone) until released."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hold_id: str
    subject_id: str | None = None  # None: the hold covers everyone in its datasets
    datasets: tuple[DatasetName, ...]
    reason: str
    legal_basis: str
    legal_ref: str
    placed_by: str
    placed_at: AwareDatetime
    ends_at: AwareDatetime | None = None
    released_at: AwareDatetime | None = None
    released_by: str | None = None

    def active(self, now: datetime) -> bool:
        return self.released_at is None and (self.ends_at is None or self.ends_at > now)


@dataclass(frozen=True)
class RuleSet:
    version: int
    rules: tuple[Rule, ...]
    changed_at: datetime | None = None
    changed_by: str | None = None


@dataclass(frozen=True)
class Retention:
    """Why a dataset is kept: the rule or hold that keeps it."""

    dataset: str
    rule_id: str
    legal_basis: str
    legal_ref: str


def retained_datasets(rules: Iterable[Rule], holds: Iterable[Hold], now: datetime) -> dict[str, Retention]:
    """For one subject: each kept dataset and the first hold (holds win) or active rule that keeps it."""
    kept: dict[str, Retention] = {}
    for hold in holds:
        if hold.active(now):
            for dataset in hold.datasets:
                kept.setdefault(dataset, Retention(dataset, hold.hold_id, hold.legal_basis, hold.legal_ref))
    for rule in rules:
        if rule.active(now):
            for dataset in rule.datasets:
                kept.setdefault(dataset, Retention(dataset, rule.rule_id, rule.legal_basis, rule.legal_ref))
    return kept


class StaleRuleSetError(Exception):
    """The rule set changed since it was read (another admin's change won): read again and retry."""


class RetentionStore(Protocol):
    """Writes take the events that announce them (``outbox``): they are stored in the same document, atomically,
    and a relay publishes them, so no change goes unannounced even if Kafka is down or the writer crashes."""

    async def rule_set(self) -> RuleSet: ...

    async def replace_rules(
        self, rules: tuple[Rule, ...], *, expected_version: int, by: str, at: datetime, outbox: Sequence[Event] = ()
    ) -> RuleSet: ...

    async def place_hold(self, hold: Hold, *, outbox: Sequence[Event] = ()) -> Hold: ...

    async def release_hold(
        self, hold_id: str, *, by: str, at: datetime, outbox: Sequence[Event] = ()
    ) -> Hold | None: ...

    async def hold(self, hold_id: str) -> Hold | None: ...

    async def holds(
        self, *, subject_id: str | None, active_only: bool, limit: int, after: str | None
    ) -> list[Hold]: ...

    async def holds_for(self, subject_id: str) -> list[Hold]: ...

    async def active_holds(self) -> list[Hold]: ...

    async def holds_ending(self, *, after: datetime | None, until: datetime) -> list[Hold]: ...


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

    async def active_holds(self) -> list[Hold]:
        """Every hold not released (those past their ``ends_at`` too: ask :meth:`Hold.active`)."""
        return [_hold(doc) async for doc in self._holds.find({"released_at": None})]

    async def holds_ending(self, *, after: datetime | None, until: datetime) -> list[Hold]:
        """The unreleased holds whose ``ends_at`` falls in ``(after, until]``: what the release job acts on."""
        window: dict[str, Any] = {"$lte": until} if after is None else {"$gt": after, "$lte": until}
        return [_hold(doc) async for doc in self._holds.find({"released_at": None, "ends_at": window})]


def _hold(doc: dict[str, Any]) -> Hold:
    return Hold(hold_id=doc["_id"], **{k: v for k, v in doc.items() if k not in ("_id", OUTBOX_FIELD)})
