"""The request store, one contract for the in-memory fake and MongoDB (SecantusDB in the local stack)."""

from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services.intake.adapters.memory import InMemoryRequestStore
from services.intake.adapters.store import MongoOutbox, MongoRequestStore
from services.intake.model import DeletionRequest
from shared.events import DeletionCancelled, DeletionRequested, decode_any
from tests.support import scratch_database

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest_asyncio.fixture(params=["fake", "mongo"])
async def store(request, mongo_url):
    if request.param == "fake":
        yield InMemoryRequestStore()
        return
    async with scratch_database(mongo_url, "lethe_rs") as (client, database):
        yield MongoRequestStore(client, database, idempotency_ttl=timedelta(hours=1))


def received(n: int, *stages: str) -> DeletionRequest:
    at = T0 + timedelta(hours=n)
    return DeletionRequest(
        request_id=f"req_{n:03d}",
        subject_id=f"user-{n}",
        created_at=at,
        deadline_at=at + timedelta(days=30),
        stages={"received": at, **dict.fromkeys(stages, at)},
    )


async def test_requests_are_listed_newest_first_by_status_and_time_window_in_pages(store):
    for n in range(6):
        assert await store.save(received(n, *(("purging",) if n % 2 else ()))) is not None

    everything = await store.page(limit=4)
    assert [r.request_id for r in everything] == ["req_005", "req_004", "req_003", "req_002"]
    assert [r.request_id for r in await store.page(limit=4, offset=4)] == ["req_001", "req_000"]
    assert [r.request_id for r in await store.page(status="purging")] == ["req_005", "req_003", "req_001"]
    window = await store.page(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))
    assert [r.request_id for r in window] == ["req_002", "req_001"]

    moved = (await store.get("req_000")).model_copy(update={"stages": {"received": T0, "purging": T0}})
    assert await store.save(moved) is not None
    assert "req_000" in [r.request_id for r in await store.page(status="purging")]  # the status follows each save


async def test_many_requests_are_read_and_saved_in_one_call_each_and_a_moved_one_is_reported(store):
    assert await store.save_many([received(n) for n in range(3)])
    stored = await store.get_many(["req_000", "req_001", "req_002", "req_404"])
    assert sorted(stored) == ["req_000", "req_001", "req_002"]
    moved = stored["req_001"]
    assert await store.save(moved) is not None  # another writer moves req_001 on
    later = [r.model_copy(update={"stages": {**r.stages, "purging": T0}}) for r in stored.values()]
    assert not await store.save_many(later)  # req_001 is stale; the others are saved
    again = await store.get_many(["req_000", "req_001", "req_002"])
    assert "purging" in again["req_000"].stages and "purging" in again["req_002"].stages
    assert "purging" not in again["req_001"].stages


@pytest_asyncio.fixture(params=["fake", "mongo"])
async def store_and_outbox(request, mongo_url):
    """The store, and a read of the events it holds for publication."""
    if request.param == "fake":
        fake = InMemoryRequestStore()

        async def held_fake() -> list[str]:
            return [e.type for e in fake.outbox]

        yield fake, held_fake
        return
    async with scratch_database(mongo_url, "lethe_rs") as (client, database):
        outbox = MongoOutbox(client, database)

        async def held_mongo() -> list[str]:
            return [decode_any(raw).type for entry in await outbox.pending() for raw in entry.raw]

        yield MongoRequestStore(client, database, idempotency_ttl=timedelta(hours=1)), held_mongo


def asked(n: int) -> DeletionRequested:
    return DeletionRequested(
        request_id=f"req_{n:03d}",
        subject_id=f"user-{n}",
        producer="intake",
        occurred_at=T0,
        requested_by="svc",
        deadline_at=T0 + timedelta(days=30),
        backups_purged_by=T0 + timedelta(days=90),
    )


def cancelled(n: int) -> DeletionCancelled:
    return DeletionCancelled(
        request_id=f"req_{n:03d}", subject_id=f"user-{n}", producer="intake", via="token", cancelled_by=f"user-{n}"
    )


async def test_a_held_request_goes_to_the_outbox_at_its_time_or_is_withdrawn_never_both(store_and_outbox):
    store, outbox = store_and_outbox
    hour = timedelta(hours=1)
    assert await store.claim(asked(1), hold_until=T0 + hour) is None
    assert await store.claim(asked(2), hold_until=T0 + hour) is None
    assert await store.claim(asked(3)) is None  # no cooling-off: straight to the outbox
    assert await outbox() == ["deletion.requested"]
    assert sorted(await store.open_request_ids()) == ["req_001", "req_002", "req_003"]
    assert await store.hand_over_due(T0) == 0
    first = cancelled(1)
    assert await store.withdraw("user-1", "req_001", first) == first
    assert await store.withdraw("user-1", "req_001", cancelled(1)) == first  # already: the first, no second one
    assert await store.withdraw("user-1", "req_999", cancelled(1)) is None  # not its open request
    assert await store.hand_over_due(T0 + hour) == 1  # req_002 only: req_001 was withdrawn
    assert sorted(await outbox()) == ["deletion.cancelled", "deletion.requested", "deletion.requested"]
    assert await store.withdraw("user-2", "req_002", cancelled(2)) is None  # handed over: too late
    assert await store.hand_over_due(T0 + 2 * hour) == 0
    assert sorted(await outbox()) == ["deletion.cancelled", "deletion.requested", "deletion.requested"]
