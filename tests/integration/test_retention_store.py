"""One contract for the retention store (rules and holds), run against the in-memory fake and MongoDB."""

from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services.intake.adapters.retention import MongoRetentionStore
from shared.events import LegalHoldPlaced
from shared.fakes import InMemoryRetentionStore
from shared.retention import Rule, StaleRuleSetError
from tests.support import litigation_hold, scratch_database

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
T0 = datetime(2026, 5, 1, tzinfo=UTC)
TAX = Rule(rule_id="tax-10y", datasets=("invoices",), legal_basis="legal obligation", legal_ref="HGB §257")
AML = Rule(rule_id="aml-5y", datasets=("invoices",), legal_basis="legal obligation", legal_ref="GwG §8")


@pytest_asyncio.fixture(params=["fake", "mongo"])
async def store(request, mongo_url):
    if request.param == "fake":
        yield InMemoryRetentionStore()
        return
    async with scratch_database(mongo_url, "lethe_ret") as (client, name):
        retention = MongoRetentionStore(client, name)
        await retention.ensure_indexes()
        yield retention


def hold(hold_id, subject_id):
    return litigation_hold(hold_id, subject_id, "chat_messages", placed_at=T0)


async def test_rule_versions_move_one_at_a_time_and_a_stale_writer_loses(store):
    assert (await store.rule_set()).version == 0
    first = await store.replace_rules((TAX,), expected_version=0, by="a", at=T0)
    assert first.version == 1
    with pytest.raises(StaleRuleSetError):
        await store.replace_rules((AML,), expected_version=0, by="b", at=T0)
    second = await store.replace_rules((TAX, AML), expected_version=1, by="c", at=T0 + timedelta(hours=1))
    with pytest.raises(StaleRuleSetError):
        await store.replace_rules((), expected_version=1, by="loser", at=T0)
    current = await store.rule_set()
    assert (
        (current.version, current.rules, current.changed_by)
        == (2, (TAX, AML), "c")
        == (
            second.version,
            second.rules,
            second.changed_by,
        )
    )


async def test_holds_are_placed_once_released_once_and_found_for_their_subject_or_everyone(store):
    event = LegalHoldPlaced(producer="t", hold_id="hold_a", datasets=("chat_messages",), legal_basis="b", legal_ref="r")
    placed = await store.place_hold(hold("hold_a", "u1"), outbox=[event])
    assert await store.place_hold(hold("hold_a", "u2")) == placed  # the first one stays
    await store.place_hold(hold("hold_b", None))
    assert {h.hold_id for h in await store.holds_for("u1")} == {"hold_a", "hold_b"}
    assert {h.hold_id for h in await store.holds_for("u9")} == {"hold_b"}
    released = await store.release_hold("hold_a", by="legal", at=T0 + timedelta(days=1))
    again = await store.release_hold("hold_a", by="someone else", at=T0 + timedelta(days=2))
    assert released == again and not released.active(T0) and released.released_by == "legal"
    assert {h.hold_id for h in await store.holds_for("u1")} == {"hold_b"}
    assert {h.hold_id for h in (await store.in_force("u1")).holds} == {"hold_b"}
    page = await store.holds(subject_id=None, active_only=False, limit=1, after=None)
    rest = await store.holds(subject_id=None, active_only=False, limit=10, after=page[0].hold_id)
    assert [h.hold_id for h in page + rest] == ["hold_a", "hold_b"]
    assert [h.hold_id for h in await store.holds(subject_id="u1", active_only=True, limit=10, after=None)] == []


async def test_holds_with_an_end_are_found_once_their_end_falls_in_the_window_and_stop_keeping_after_it(store):
    ends = T0 + timedelta(days=3)
    await store.place_hold(hold("hold_e", "u1").model_copy(update={"ends_at": ends}))
    await store.place_hold(hold("hold_f", "u1"))
    assert {h.hold_id for h in await store.active_holds()} == {"hold_e", "hold_f"}
    assert await store.holds_ending(after=None, until=ends - timedelta(seconds=1)) == []
    [ending] = await store.holds_ending(after=ends - timedelta(days=1), until=ends)
    assert ending.hold_id == "hold_e" and ending.active(ends - timedelta(seconds=1)) and not ending.active(ends)
    assert await store.holds_ending(after=ends, until=ends + timedelta(days=30)) == []  # acted on once
    await store.release_hold("hold_e", by="legal", at=T0)
    assert await store.holds_ending(after=None, until=ends) == []
