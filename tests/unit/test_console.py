"""The console's deadline colours: green, amber past 80% of the time, red past the deadline; done when final."""

from datetime import UTC, datetime, timedelta

from services.audit.console import deadline_state

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def request(status: str = "purging", **stages: datetime) -> dict:
    return {
        "status": status,
        "created_at": T0.isoformat(),
        "deadline_at": (T0 + timedelta(days=30)).isoformat(),
        "stages": {name: at.isoformat() for name, at in stages.items()},
    }


def test_the_deadline_turns_amber_past_80_percent_and_red_past_the_deadline():
    assert deadline_state(request(), T0 + timedelta(days=23)) == ("green", "7d 0h left")
    assert deadline_state(request(), T0 + timedelta(days=24, hours=1))[0] == "amber"
    assert deadline_state(request(), T0 + timedelta(days=31)) == ("red", "1d 0h overdue")


def test_a_final_request_says_whether_it_was_done_in_time():
    early = request("completed", received=T0, notified=T0 + timedelta(days=2))
    assert deadline_state(early, T0 + timedelta(days=40)) == ("done", "done in time")
    late = request("partial", received=T0, notified=T0 + timedelta(days=33))
    assert deadline_state(late, T0 + timedelta(days=40)) == ("late", "done after the deadline")


def test_a_request_without_a_deadline_shows_none():
    assert deadline_state({"status": "verification_pending"}, T0) == ("none", "-")
