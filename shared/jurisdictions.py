"""The laws a request is answered under (``deploy/jurisdictions.yaml``): how long each gives, how a deadline may be
extended and by when the person must be told, how soon receipt must be acknowledged, and the references the
notices cite. The arithmetic lives here, once, for intake's deadlines and the deadline watch.

Periods count calendar days, calendar months (the same day of the month, or the month's last day when it has no
such day: 31 January + 1 month = 28 or 29 February) or business days (Monday to Friday, minus the jurisdiction's
listed holidays), from the moment the request was received, keeping its time of day.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.configfile import load_yaml

Code = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Period(_Strict):
    """A length of time in exactly one unit."""

    days: int = Field(default=0, ge=0, le=3650)
    months: int = Field(default=0, ge=0, le=120)
    business_days: int = Field(default=0, ge=0, le=3650)

    @model_validator(mode="after")
    def _one_unit(self) -> Self:
        if sum(1 for n in (self.days, self.months, self.business_days) if n) != 1:
            raise ValueError("a period is a number of days, months or business_days (exactly one, above 0)")
        return self

    def after(self, start: datetime, holidays: frozenset[date] = frozenset()) -> datetime:
        """The moment this period after ``start`` ends."""
        if self.days:
            return start + timedelta(days=self.days)
        if self.months:
            return add_months(start, self.months)
        moment, left = start, self.business_days
        while left:
            moment += timedelta(days=1)
            if moment.weekday() < 5 and moment.date() not in holidays:
                left -= 1
        return moment


def add_months(start: datetime, months: int) -> datetime:
    """``start`` moved by calendar months, on the month's last day when it has no such day."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    return start.replace(year=year, month=month, day=min(start.day, calendar.monthrange(year, month)[1]))


class Extension(_Strict):
    """How a deadline may be extended: by ``period`` (each time), at most ``times`` times, and only if the person is
    told within ``tell_within`` of receipt."""

    period: Period
    times: int = Field(default=1, ge=1, le=10)
    tell_within: Period


class References(_Strict):
    """The legal references the notices cite."""

    response: str = Field(min_length=1)
    extension: str | None = None
    denial: str | None = None
    complaint: str | None = Field(default=None, description="where the person may complain, e.g. Art. 77 GDPR")
    acknowledgement: str | None = None


class ExtensionRefusedError(ValueError):
    """The law allows no (further) extension now; the message says why."""


class Jurisdiction(_Strict):
    name: str = Field(min_length=1, max_length=100)
    response: Period = Field(description="the time to answer, from receipt")
    extension: Extension | None = None
    acknowledge_within: Period | None = Field(default=None, description="confirm receipt within; none: not required")
    holidays: tuple[date, ...] = Field(default=(), description="days that are not business days")
    references: References

    def deadline(self, received_at: datetime, extensions: int = 0) -> datetime:
        """When the answer is due after ``extensions`` extensions."""
        deadline = self.response.after(received_at, frozenset(self.holidays))
        for _ in range(extensions):
            assert self.extension is not None
            deadline = self.extension.period.after(deadline, frozenset(self.holidays))
        return deadline

    def extend(
        self, received_at: datetime, extensions: int, now: datetime, deadline: datetime | None = None
    ) -> datetime:
        """The deadline after one more extension decided ``now`` (from ``deadline``, the current one: the law's own
        if unset); refused when the law allows none, no more, or no longer (the person must be told within the
        law's window)."""
        rule = self.extension
        if rule is None:
            raise ExtensionRefusedError(f"{self.name} allows no extension ({self.references.response})")
        if extensions >= rule.times:
            raise ExtensionRefusedError(f"{self.name} allows {rule.times} extension(s), and that many were made")
        tell_by = rule.tell_within.after(received_at, frozenset(self.holidays))
        if now > tell_by:
            raise ExtensionRefusedError(
                f"too late: under {self.name} the person must be told of an extension by {tell_by.isoformat()} "
                f"({self.references.extension or self.references.response})"
            )
        current = deadline or self.deadline(received_at, extensions)
        return rule.period.after(current, frozenset(self.holidays))

    def acknowledgement_due(self, received_at: datetime) -> datetime | None:
        if self.acknowledge_within is None:
            return None
        return self.acknowledge_within.after(received_at, frozenset(self.holidays))


class Jurisdictions(_Strict):
    default: Code
    jurisdictions: dict[Code, Jurisdiction] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_is_listed(self) -> Self:
        if self.default not in self.jurisdictions:
            raise ValueError(f"default: {self.default!r} is not among the jurisdictions")
        return self

    def get(self, code: str | None) -> tuple[str, Jurisdiction]:
        """The jurisdiction ``code`` names (the default for None); KeyError for an unknown one."""
        chosen = code or self.default
        return chosen, self.jurisdictions[chosen]


class JurisdictionsError(ValueError):
    """The jurisdictions file is missing, not YAML, or invalid; the message says where."""


def load_jurisdictions(path: Path) -> Jurisdictions:
    return load_yaml(path, Jurisdictions, what="jurisdictions", error=JurisdictionsError)
