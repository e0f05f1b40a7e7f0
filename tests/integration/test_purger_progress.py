"""The purger's Progress port, one contract for the in-memory fake and MongoPurgeProgress on the real server."""

from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services.purger.adapters.memory import InMemoryProgress
from services.purger.adapters.mongo import MongoPurgeProgress
from services.purger.model import PurgeRecord
from shared.events import DatasetCounts, DatasetOutcome
from tests.support import scratch_database

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
T0 = datetime(2026, 5, 1, tzinfo=UTC)  # whole seconds: MongoDB keeps milliseconds
DAY = timedelta(days=1)


@pytest_asyncio.fixture(params=["memory", "mongo"])
async def progress(request):
    if request.param == "memory":
        yield InMemoryProgress()
        return
    async with scratch_database(request.getfixturevalue("mongo_url"), "lethe_pp") as (client, name):
        store = MongoPurgeProgress(client, name)
        await store.ensure_indexes()
        yield store


ERASED = DatasetOutcome(dataset="profiles", store="mongo", outcome="erased", counts=DatasetCounts(records_erased=1))
TAGGED = DatasetOutcome(
    dataset="chat_messages",
    store="mongo",
    outcome="tagged",
    counts=DatasetCounts(records_tagged=3),
    purge_after=T0 + DAY,
)
RETAINED = DatasetOutcome(
    dataset="invoices",
    store="mongo",
    outcome="retained",
    rule_id="tax-10y",
    legal_basis="legal obligation",
    legal_ref="HGB §257",
)


async def first_round(progress, request_id, subject_id, *outcomes, at=T0):
    """Round 0 of a request: each outcome saved as it is done, then the round completed (as the handlers do)."""
    for outcome in outcomes:
        await progress.save_outcome(request_id, subject_id, 0, outcome)
    record = await progress.get(request_id)
    return await progress.complete_round(record, 0, at)


async def test_an_unknown_request_has_no_record(progress):
    assert await progress.get("req_none") is None


async def test_each_outcome_is_kept_as_soon_as_it_is_saved_and_a_second_save_replaces_it(progress):
    await progress.save_outcome("req_a", "u1", 0, TAGGED)
    await progress.save_outcome("req_a", "u1", 0, ERASED)
    erased_now = TAGGED.model_copy(update={"outcome": "erased", "purge_after": None})
    await progress.save_outcome("req_a", "u1", 0, erased_now)
    record = await progress.get("req_a")
    assert (record.request_id, record.subject_id) == ("req_a", "u1")
    assert record.rounds == {0: {"chat_messages": erased_now, "profiles": ERASED}}
    assert record.completed == {}  # saved, not completed: the round is still running
    assert record.outcomes == {}
    assert record.saved_outcomes == {"chat_messages": erased_now, "profiles": ERASED}


async def test_a_completed_round_is_clean_at_once_unless_something_waits_for_the_nightly_job(progress):
    clean = await first_round(progress, "req_a", "u1", ERASED, RETAINED)
    assert (clean.completed, clean.clean_since) == ({0: T0}, T0)
    waiting = await first_round(progress, "req_b", "u1", ERASED, TAGGED)
    assert (waiting.completed, waiting.clean_since) == ({0: T0}, None)
    for request_id, record in (("req_a", clean), ("req_b", waiting)):
        assert await progress.get(request_id) == record


async def test_a_later_round_keeps_the_first_clean_moment_and_each_rounds_outcomes(progress):
    await first_round(progress, "req_a", "u1", ERASED, RETAINED)
    freed = RETAINED.model_copy(update={"outcome": "erased", "rule_id": None, "legal_basis": None, "legal_ref": None})
    await progress.save_outcome("req_a", "u1", 1, freed)
    record = await progress.complete_round(await progress.get("req_a"), 1, T0 + DAY)
    stored = await progress.get("req_a")
    assert stored == record
    assert (stored.last_round, stored.clean_since) == (1, T0)
    assert stored.outcomes_as_of(0)["invoices"] == RETAINED
    assert stored.outcomes["invoices"] == freed
    assert stored.retained == []


async def test_requests_that_kept_or_hold_a_dataset_are_found_by_dataset_and_subject(progress):
    await first_round(progress, "req_a", "u1", ERASED, RETAINED)
    await first_round(progress, "req_b", "u2", ERASED, RETAINED)
    await first_round(progress, "req_c", "u1", ERASED, TAGGED)
    await progress.set_held("req_c", {"profiles": "hold_1"})
    assert sorted(r.request_id for r in await progress.with_retained(["invoices"], None)) == ["req_a", "req_b"]
    assert [r.request_id for r in await progress.with_retained(["invoices"], "u2")] == ["req_b"]
    assert [r.request_id for r in await progress.with_retained(["profiles"], None)] == ["req_c"]
    assert await progress.with_retained(["chat_messages"], None) == []  # tagged is not kept
    found = {r.request_id: r for r in await progress.with_retained(["profiles", "invoices"], "u1")}
    assert sorted(found) == ["req_a", "req_c"]
    assert found["req_c"].held == {"profiles": "hold_1"}


async def test_a_hold_set_on_a_request_is_replaced_whole(progress):
    await first_round(progress, "req_a", "u1", ERASED, TAGGED)
    await progress.set_held("req_a", {"profiles": "hold_1", "chat_messages": "hold_1"})
    await progress.set_held("req_a", {"chat_messages": "hold_2"})
    assert (await progress.get("req_a")).held == {"chat_messages": "hold_2"}
    assert await progress.with_retained(["profiles"], None) == []
    assert [r.request_id for r in await progress.with_retained(["chat_messages"], "u1")] == ["req_a"]


async def test_the_retention_check_time_only_moves_forward(progress):
    assert await progress.retention_checked_at() is None
    await progress.set_retention_checked_at(T0 + DAY)
    await progress.set_retention_checked_at(T0)  # a drill "as of" an earlier moment
    assert await progress.retention_checked_at() == T0 + DAY
    await progress.set_retention_checked_at(T0 + 2 * DAY)
    assert await progress.retention_checked_at() == T0 + 2 * DAY


async def test_a_hard_delete_is_recorded_once_and_makes_the_request_clean(progress):
    await first_round(progress, "req_a", "u1", ERASED, TAGGED)
    assert await progress.awaiting_backup_expiry() == []  # tagged records still live: not clean yet
    await progress.mark_hard_deleted("req_a", T0 + DAY)
    await progress.mark_hard_deleted("req_a", T0 + 2 * DAY)  # a replayed report changes nothing
    record = await progress.get("req_a")
    assert (record.hard_deleted_at, record.clean_since) == (T0 + DAY, T0 + DAY)
    assert [r.request_id for r in await progress.awaiting_backup_expiry()] == ["req_a"]


async def test_a_request_is_in_progress_until_its_backups_have_expired(progress):
    await first_round(progress, "req_a", "u1", ERASED)
    await first_round(progress, "req_b", "u2", ERASED)
    assert sorted(r.request_id for r in await progress.in_progress(None)) == ["req_a", "req_b"]
    assert [r.request_id for r in await progress.in_progress("u1")] == ["req_a"]
    assert sorted(r.request_id for r in await progress.awaiting_backup_expiry()) == ["req_a", "req_b"]
    await progress.mark_backups_expired("req_a", T0 + 90 * DAY)
    assert (await progress.get("req_a")).backups_expired_at == T0 + 90 * DAY
    assert [r.request_id for r in await progress.in_progress(None)] == ["req_b"]
    assert await progress.in_progress("u1") == []
    assert [r.request_id for r in await progress.awaiting_backup_expiry()] == ["req_b"]


async def test_a_record_read_is_a_copy_that_changes_nothing_stored_until_it_is_written(progress):
    stored = await first_round(progress, "req_a", "u1", ERASED, RETAINED)
    expected = PurgeRecord(
        "req_a", "u1", rounds={0: dict(stored.rounds[0])}, completed={0: T0}, clean_since=T0, held={}
    )
    for read in (
        await progress.get("req_a"),
        *(await progress.with_retained(["invoices"], None)),
        *(await progress.in_progress("u1")),
        *(await progress.awaiting_backup_expiry()),
    ):
        read.rounds.setdefault(1, {})["profiles"] = ERASED
        read.rounds[0].clear()
        read.completed[1] = T0 + DAY
        read.held["invoices"] = "hold_1"
    assert await progress.get("req_a") == expected
