"""The deadline arithmetic of each configured law (deploy/jurisdictions.yaml): the response period, extensions (and
an extension told too late, or one too many, refused), acknowledgement in business days, and bad files."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from shared.jurisdictions import (
    ExtensionRefusedError,
    JurisdictionsError,
    Period,
    add_months,
    load_jurisdictions,
)

SHIPPED = load_jurisdictions(Path(__file__).parents[2] / "deploy" / "jurisdictions.yaml")


def at(day: str, time: str = "10:30") -> datetime:
    return datetime.fromisoformat(f"{day}T{time}:00+00:00")


def test_the_shipped_file_names_its_laws_and_a_request_without_one_gets_the_default():
    assert set(SHIPPED.jurisdictions) == {"gdpr", "uk_gdpr", "ccpa"}
    assert SHIPPED.get(None)[0] == "gdpr"
    with pytest.raises(KeyError):
        SHIPPED.get("lgpd")


@pytest.mark.parametrize(
    ("received", "due"),
    [
        ("2026-03-10", "2026-04-10"),
        ("2026-01-31", "2026-02-28"),  # February has no 31st: its last day
        ("2028-01-31", "2028-02-29"),  # a leap year
        ("2026-12-15", "2027-01-15"),  # across the year
    ],
)
def test_gdpr_gives_one_calendar_month_keeping_the_time_of_day(received, due):
    _, gdpr = SHIPPED.get("gdpr")
    assert gdpr.deadline(at(received)) == at(due)


def test_gdpr_extends_by_two_months_once_if_the_person_is_told_within_the_first_month():
    _, gdpr = SHIPPED.get("gdpr")
    received = at("2026-01-31")
    assert gdpr.extend(received, 0, now=at("2026-02-20")) == at("2026-04-28")  # 28 Feb + 2 months
    assert gdpr.extend(received, 0, now=at("2026-02-28")) == at("2026-04-28")  # the last moment to tell
    with pytest.raises(ExtensionRefusedError, match=r"too late.*2026-02-28T10:30"):
        gdpr.extend(received, 0, now=at("2026-02-28", "10:31"))
    with pytest.raises(ExtensionRefusedError, match="1 extension"):
        gdpr.extend(received, 1, now=at("2026-02-01"))  # a second one
    assert gdpr.acknowledgement_due(received) is None  # the law sets no time to acknowledge


def test_ccpa_gives_45_days_extendable_once_by_45_and_wants_receipt_confirmed_within_10_business_days():
    _, ccpa = SHIPPED.get("ccpa")
    received = at("2026-11-27")  # a Friday
    assert ccpa.deadline(received) == received + timedelta(days=45)
    assert ccpa.extend(received, 0, now=received + timedelta(days=44)) == received + timedelta(days=90)
    with pytest.raises(ExtensionRefusedError, match="too late"):
        ccpa.extend(received, 0, now=received + timedelta(days=45, seconds=1))
    with pytest.raises(ExtensionRefusedError, match="1 extension"):
        ccpa.extend(received, 1, now=received + timedelta(days=1))
    # Ten business days from a Friday: the Friday two weeks on (two weekends skipped).
    assert ccpa.acknowledgement_due(received) == at("2026-12-11")


def test_uk_gdpr_gives_one_calendar_month_and_two_more_once_told_within_the_first():
    _, uk = SHIPPED.get("uk_gdpr")
    received = at("2026-05-31")
    assert uk.deadline(received) == at("2026-06-30")  # June has no 31st
    assert uk.extend(received, 0, now=at("2026-06-30")) == at("2026-08-30")
    with pytest.raises(ExtensionRefusedError, match=r"too late.*UK GDPR"):
        uk.extend(received, 0, now=at("2026-06-30", "10:31"))
    assert uk.acknowledgement_due(received) is None


@pytest.mark.parametrize("code", sorted(SHIPPED.jurisdictions))
def test_every_configured_law_extends_only_within_its_window_as_often_as_it_allows_and_cites_itself(code):
    """Whatever laws the file holds: the deadline follows receipt, each allowed extension moves it by the law's
    period, one told a second too late or one too many is refused, and the notices have references to cite."""
    _, law = SHIPPED.get(code)
    received = at("2026-03-10")
    due = law.deadline(received)
    assert due > received and law.references.response and law.references.denial and law.references.complaint
    assert law.extension is not None
    tell_by = law.extension.tell_within.after(received)
    for made in range(law.extension.times):
        extended = law.extend(received, made, now=tell_by, deadline=due)
        assert extended == law.extension.period.after(due) and extended > due
        due = extended
    with pytest.raises(ExtensionRefusedError, match="extension"):
        law.extend(received, law.extension.times, now=received)
    with pytest.raises(ExtensionRefusedError, match="too late"):
        law.extend(received, 0, now=tell_by + timedelta(seconds=1))


def test_business_days_skip_weekends_and_the_listed_holidays():
    period = Period(business_days=3)
    thursday = at("2026-12-24")
    assert period.after(thursday) == at("2026-12-29")  # Fri 25, Mon 28, Tue 29
    assert period.after(thursday, frozenset({date(2026, 12, 25)})) == at("2026-12-30")


def test_month_arithmetic_clamps_to_the_last_day_and_crosses_years():
    assert add_months(datetime(2026, 8, 31, tzinfo=UTC), 1) == datetime(2026, 9, 30, tzinfo=UTC)
    assert add_months(datetime(2026, 11, 30, tzinfo=UTC), 3) == datetime(2027, 2, 28, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default: x\njurisdictions: {gdpr: {name: G, response: {months: 1}, references: {response: r}}}", "default"),
        ("default: g\njurisdictions: {g: {name: G, response: {}, references: {response: r}}}", "exactly one"),
        ("default: g\njurisdictions: {g: {name: G, response: {days: 1, months: 1}, references: {response: r}}}", "one"),
        ("default: g\njurisdictions: {g: {name: G, response: {days: 30}}}", "references"),
        ("default: [", "not valid YAML"),
    ],
)
def test_a_bad_file_fails_with_a_message_that_says_where(tmp_path, text, message):
    path = tmp_path / "jurisdictions.yaml"
    path.write_text(text)
    with pytest.raises(JurisdictionsError, match=message):
        load_jurisdictions(path)
