"""Retention rules and legal holds, as an operator changes them: each change is stored with the event that
announces it (the outbox), so that no change goes unannounced even if Kafka is down."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
import yaml
from pydantic import BaseModel, ConfigDict

from services.intake import handlers
from services.intake.ports import RetentionStore
from shared.datamap import DataMap
from shared.events import LegalHoldPlaced, LegalHoldReleased, RetentionRulesChanged
from shared.retention import Hold, Rule, RuleSet, StaleRuleSetError

log = structlog.get_logger(__name__)


class StaleVersionError(Exception):
    """The caller's If-Match names an older rule set."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the rules are at version {current}")
        self.current = current


class RulesKeptChangingError(Exception):
    """Concurrent writers kept moving the rule set while this change was tried."""


class HoldNotFoundError(Exception):
    pass


class HoldRefusedError(ValueError):
    """A hold that cannot be placed; ``errors`` name the fields."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(e["message"] for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class NewHold:
    subject_id: str | None
    datasets: tuple[str, ...]
    reason: str
    legal_basis: str
    legal_ref: str
    ends_at: datetime | None


@dataclass
class RetentionAdmin:
    """What changing rules and holds needs; app.py builds it, api.py calls it."""

    retention: RetentionStore
    datamap: DataMap
    clock: Callable[[], datetime]
    kick_relay: Callable[[], None]

    async def change_rules(
        self, *, upsert: Sequence[Rule], remove: Sequence[str], expected: int | None, by: str
    ) -> tuple[RuleSet, bool]:
        """The rule set after the change, and whether it changed. Raises :class:`handlers.RulePatchError`,
        :class:`StaleVersionError` or :class:`RulesKeptChangingError`."""
        for _ in range(5):
            current = await self.retention.rule_set()
            if expected is not None and expected != current.version:
                raise StaleVersionError(current.version)
            rules, changed = handlers.patch_rules(current.rules, upsert=upsert, remove=remove, datamap=self.datamap)
            if not changed:
                return current, False
            now = self.clock()
            event = RetentionRulesChanged(
                occurred_at=now, producer=handlers.PRODUCER, rule_ids=changed, version=current.version + 1
            )
            try:
                saved = await self.retention.replace_rules(
                    rules, expected_version=current.version, by=by, at=now, outbox=[event]
                )
            except StaleRuleSetError:
                continue
            self.kick_relay()
            log.info("rules.changed", version=saved.version, rule_ids=list(changed), by=by)
            return saved, True
        raise RulesKeptChangingError

    async def place_hold(self, new: NewHold, *, by: str) -> Hold:
        unknown = [(i, d) for i, d in enumerate(new.datasets) if d not in self.datamap.names]
        if unknown:
            raise HoldRefusedError(
                [{"field": f"body.datasets.{i}", "message": f"the data map has no dataset {d!r}"} for i, d in unknown]
            )
        now = self.clock()
        if new.ends_at is not None and new.ends_at <= now:
            raise HoldRefusedError([{"field": "body.ends_at", "message": "must be in the future"}])
        hold = Hold(
            hold_id=f"hold_{uuid.uuid4().hex}",
            subject_id=new.subject_id,
            datasets=new.datasets,
            reason=new.reason,
            legal_basis=new.legal_basis,
            legal_ref=new.legal_ref,
            placed_by=by,
            placed_at=now,
            ends_at=new.ends_at,
        )
        event = LegalHoldPlaced(
            occurred_at=now,
            producer=handlers.PRODUCER,
            subject_id=hold.subject_id,
            hold_id=hold.hold_id,
            datasets=hold.datasets,
            legal_basis=hold.legal_basis,
            legal_ref=hold.legal_ref,
            ends_at=hold.ends_at,
        )
        placed = await self.retention.place_hold(hold, outbox=[event])
        self.kick_relay()
        log.info("hold.placed", hold_id=placed.hold_id, subject_id=placed.subject_id, by=by)
        return placed

    async def release_hold(self, hold_id: str, *, by: str) -> Hold:
        """The released hold (released again: the same answer, nothing new announced)."""
        existing = await self.retention.hold(hold_id)
        if existing is None:
            raise HoldNotFoundError(hold_id)
        now = self.clock()
        event = LegalHoldReleased(
            occurred_at=now,
            producer=handlers.PRODUCER,
            subject_id=existing.subject_id,
            hold_id=hold_id,
            datasets=existing.datasets,
        )
        released = await self.retention.release_hold(hold_id, by=by, at=now, outbox=[event])
        if released is None:
            raise HoldNotFoundError(hold_id)
        if existing.released_at is None:
            self.kick_relay()
            log.info("hold.released", hold_id=hold_id, by=by)
        return released


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: tuple[Rule, ...]


def read_default_rules(path: Path | None, datamap: DataMap) -> tuple[Rule, ...]:
    """The shipped rules, checked against the data map (a rule naming an unknown dataset stops the start)."""
    if path is None:
        return ()
    try:
        rules = _RulesFile.model_validate(yaml.safe_load(path.read_text())).rules
        return handlers.patch_rules((), upsert=rules, remove=(), datamap=datamap)[0]
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise ValueError(f"the default retention rules {path} are invalid: {exc}") from exc


async def load_default_rules(rules: tuple[Rule, ...], retention: RetentionStore, now: datetime) -> None:
    """Start with the shipped rules when there are none yet (a fresh database)."""
    if not rules or (await retention.rule_set()).version > 0:
        return
    changed = tuple(r.rule_id for r in rules)
    event = RetentionRulesChanged(occurred_at=now, producer=handlers.PRODUCER, rule_ids=changed, version=1)
    try:
        await retention.replace_rules(rules, expected_version=0, by="intake (defaults)", at=now, outbox=[event])
        log.info("rules.defaults_loaded", rule_ids=list(changed))
    except StaleRuleSetError:
        pass  # another instance loaded them first
