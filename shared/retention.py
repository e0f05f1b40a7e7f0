"""Retention rules and legal holds: what a deletion must leave alone, and why.

intake owns them (``PATCH /data_retention/rules``, ``POST /legal_holds``, its store in
services/intake/adapters/retention.py); the purger and keyvault read the ones in force from intake's API
(shared.intake_client) each time they are about to destroy something, so every service sees the same versioned
rule set and the same holds.

- A **rule** exempts datasets for everyone on a legal basis (e.g. invoices under a tax law), until it expires.
- A **hold** keeps named datasets of one subject (or of everyone, ``subject_id`` unset) until it is released or
  its ``ends_at`` passes.

Both are *state*: every destructive step (erase, nightly hard delete, key destruction) asks
:func:`retained_datasets` at the moment it acts, never what an earlier event said.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
DatasetName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
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
class InForce:
    """The retention state one subject's destructive step decides from: the rule set and the subject's unreleased
    holds (its own and everyone's), read together in one call at the moment it acts."""

    rules: RuleSet
    holds: tuple[Hold, ...]

    def retained(self, now: datetime) -> dict[str, Retention]:
        return retained_datasets(self.rules.rules, self.holds, now)


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
