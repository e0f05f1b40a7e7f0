"""The purger's decisions with in-memory fakes: what is erased, tagged, kept or skipped, replays, re-evaluation
after a hold is released, the nightly job (interrupted and resumed) and backup expiry on a simulated clock."""

from datetime import UTC, datetime, timedelta

import pytest

from services.purger import handlers
from services.purger.adapters.memory import InMemoryBackups, InMemoryProgress, InMemoryStores
from shared import topics
from shared.events import DeletionRequested, LegalHoldReleased, RetentionRulesChanged
from shared.fakes import InMemoryRetentionStore
from shared.retention import Rule
from tests.support import UNIT_DATAMAP, litigation_hold

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


DATAMAP = UNIT_DATAMAP
TAX = Rule(rule_id="tax-10y", datasets=("invoices",), legal_basis="legal obligation", legal_ref="HGB §257")


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


@pytest.fixture
def world():
    stores = InMemoryStores(
        records={
            "accounts": {"a1": "u1", "a2": "u2"},
            "profiles": {"p1": "u1"},
            "invoices": {"i1": "u1", "i2": "u1"},
            "chat_messages": {f"c{i}": "u1" for i in range(5)} | {"c9": "u2"},
            "uploads": {"f1": "u1"},
            "embeddings": {"v1": "u1", "v2": "u1"},
            "usage_daily": {"d1": "u1"},
        }
    )
    retention = InMemoryRetentionStore()
    clock = Clock()
    purger = handlers.Purger(
        datamap=DATAMAP,
        erasers={"mongo": stores, "s3": stores, "milvus": stores},
        retention=retention,
        progress=InMemoryProgress(),
        ledger=stores,
        clock=clock,
        purge_after=DAY,
    )
    return purger, stores, retention, clock


def requested(subject="u1", request_id="req_1"):
    return DeletionRequested(
        request_id=request_id,
        subject_id=subject,
        producer="intake",
        requested_by="svc",
        deadline_at=T0 + 30 * DAY,
        backups_purged_by=T0 + 90 * DAY,
    )


async def test_each_dataset_gets_one_outcome_and_only_the_subjects_data_is_touched(world):
    purger, stores, retention, _ = world
    await retention.replace_rules((TAX,), expected_version=0, by="dpo", at=T0)
    [report] = await handlers.purge(requested(), purger)
    outcomes = {o.dataset: o for o in report.outcomes}
    assert [o.dataset for o in report.outcomes] == DATAMAP.names
    assert {n: o.outcome for n, o in outcomes.items()} == {
        "accounts": "tagged",
        "profiles": "erased",
        "invoices": "retained",
        "chat_messages": "tagged",
        "uploads": "erased",
        "embeddings": "erased",
        "usage_daily": "exempt",
    }
    assert (outcomes["invoices"].rule_id, outcomes["invoices"].legal_ref) == ("tax-10y", "HGB §257")
    assert outcomes["chat_messages"].counts.records_tagged == 5
    assert outcomes["chat_messages"].purge_after == T0 + DAY
    assert report.result == "partial"
    assert stores.records["invoices"] == {"i1": "u1", "i2": "u1"}  # kept
    assert stores.records["usage_daily"] == {"d1": "u1"}  # exempt: untouched
    assert stores.live("chat_messages", "u1") == [] and stores.live("chat_messages", "u2") == ["c9"]
    assert stores.records["accounts"]["a2"] == "u2"


async def test_the_same_event_twice_erases_nothing_more_and_reports_the_same(world):
    purger, stores, _, clock = world
    [first] = await handlers.purge(requested(), purger)
    calls = stores.erase_calls
    clock.now += DAY
    [again] = await handlers.purge(requested(), purger)
    assert again == first
    assert stores.erase_calls == calls


async def test_a_store_down_mid_way_keeps_what_was_done_and_the_retry_finishes_with_exact_counts(world):
    purger, stores, _, _ = world
    stores.fail_on = {"uploads"}
    with pytest.raises(ConnectionError):
        await handlers.purge(requested(), purger)
    stores.fail_on = set()
    [report] = await handlers.purge(requested(), purger)
    counts = {o.dataset: o.counts for o in report.outcomes}
    # profiles was erased on the first try: the retry does not report it as 0.
    assert counts["profiles"].records_erased == 1
    assert counts["chat_messages"].records_tagged == 5


async def test_a_polls_requests_are_purged_side_by_side_and_reported_in_their_order(world):
    purger, stores, _, _ = world
    route = handlers.routes(purger)[topics.DELETION_REQUESTED]
    reports = await route.handle_many([requested("u2", "req_b"), requested("u1", "req_a")])
    assert [(r.request_id, r.subject_id) for r in reports] == [("req_b", "u2"), ("req_a", "u1")]
    assert stores.live("chat_messages", "u2") == [] and stores.live("chat_messages", "u1") == []
    assert stores.records["profiles"] == {}


async def test_one_failing_request_fails_the_batch_and_alone_its_retry_finishes_it(world):
    purger, stores, _, _ = world
    route = handlers.routes(purger)[topics.DELETION_REQUESTED]
    stores.fail_on = {"uploads"}
    with pytest.raises(ExceptionGroup):
        await route.handle_many([requested("u1", "req_a"), requested("u2", "req_b")])
    stores.fail_on = set()
    [report] = await route.handle_many([requested("u1", "req_a")])  # the loop's one-at-a-time path
    assert {o.dataset: o.outcome for o in report.outcomes}["uploads"] == "erased"


async def test_a_held_dataset_is_erased_with_a_follow_up_report_once_the_hold_is_released(world):
    purger, stores, retention, clock = world
    hold = litigation_hold("hold_1", "u1", "profiles", placed_at=T0)
    await retention.place_hold(hold)
    [report] = await handlers.purge(requested(), purger)
    assert {o.dataset: o.outcome for o in report.outcomes}["profiles"] == "retained"
    assert stores.records["profiles"] == {"p1": "u1"}
    clock.now += DAY
    await retention.release_hold("hold_1", by="legal", at=clock.now)
    released = LegalHoldReleased(producer="intake", subject_id="u1", hold_id="hold_1", datasets=("profiles",))
    [follow_up] = await handlers.on_hold_released(released, purger)
    assert follow_up.request_id == "req_1" and follow_up.event_id != report.event_id
    # The follow-up is a full snapshot: every dataset, the ones it did not touch as they were.
    assert {o.dataset: o.outcome for o in follow_up.outcomes} == {
        **{o.dataset: o.outcome for o in report.outcomes},
        "profiles": "erased",
    }
    assert follow_up.round == 1
    assert stores.records["profiles"] == {}
    assert await handlers.on_hold_released(released, purger) == []  # nothing is held any more


async def test_a_rule_that_ends_frees_what_it_kept(world):
    purger, stores, retention, _clock = world
    await retention.replace_rules((TAX,), expected_version=0, by="dpo", at=T0)
    await handlers.purge(requested(), purger)
    await retention.replace_rules((), expected_version=1, by="dpo", at=T0 + DAY)
    [follow_up] = await handlers.on_rules_changed(
        RetentionRulesChanged(producer="intake", rule_ids=("tax-10y",), version=2), purger
    )
    assert len(follow_up.outcomes) == len(DATAMAP.datasets)
    assert {o.dataset: o.outcome for o in follow_up.outcomes}["invoices"] == "erased"
    assert stores.records["invoices"] == {}


async def test_the_nightly_job_deletes_only_what_is_due_and_resumes_exactly_after_a_crash(world):
    purger, stores, _, clock = world
    await handlers.purge(requested(), purger)  # 1 account + 5 messages tagged, in chunks of 2
    report = await handlers.nightly_purge(purger, pause_s=0)
    assert (report.chunks, report.hard_deleted) == (0, ())  # not due yet
    clock.now += 2 * DAY

    class Killed(Exception):
        pass

    def kill_after_two(chunk, purged):
        if sum(c.done for c in stores.chunks.values()) == 2:
            raise Killed

    with pytest.raises(Killed):
        await handlers.nightly_purge(purger, pause_s=0, on_chunk=kill_after_two)
    assert len(stores.records["chat_messages"]) < 6  # some deleted, not all
    report = await handlers.nightly_purge(purger, pause_s=0)
    [event] = report.hard_deleted
    assert {d.dataset: d.records_purged for d in event.datasets} == {"accounts": 1, "chat_messages": 5}
    assert stores.records["chat_messages"] == {"c9": "u2"} and stores.records["accounts"] == {"a2": "u2"}
    await handlers.reported_hard_deleted(purger, report)
    again = await handlers.nightly_purge(purger, pause_s=0)
    assert again.hard_deleted == ()


async def test_backups_expired_is_emitted_once_every_backup_older_than_the_erasure_is_gone(world):
    purger, _, _, clock = world
    backups = InMemoryBackups()
    backups.take(T0 - 10 * DAY)
    [_] = await handlers.purge(requested(subject="u2", request_id="req_2"), purger)
    clock.now += 2 * DAY
    report = await handlers.nightly_purge(purger, pause_s=0)  # u2's account was tagged: gone now
    await handlers.reported_hard_deleted(purger, report)
    backups.take(clock.now + DAY)  # taken after the erasure: does not hold u2
    clock.now = T0 + 79 * DAY
    assert await handlers.expire_backups(purger, backups, retention=90 * DAY) == []
    clock.now = T0 + 81 * DAY  # the backup from before the erasure is now 91 days old
    [event] = await handlers.expire_backups(purger, backups, retention=90 * DAY)
    assert event.request_id == "req_2" and event.expired_before == clock.now - 90 * DAY
    assert [b.expired_at is not None for b in backups.backups] == [True, False]


async def test_the_live_filter_merges_into_the_query_so_the_subject_index_serves_it():
    from shared.liveread import LIVE, TAGGED_AT, live

    assert live({"user_id": "u1"}) == {"user_id": "u1", **LIVE}
    assert live({}) == LIVE
    # A query that names the tag itself keeps both conditions.
    assert live({TAGGED_AT: {"$lt": 5}}) == {"$and": [{TAGGED_AT: {"$lt": 5}}, LIVE]}
