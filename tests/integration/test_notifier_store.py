"""notifier's WebhookStore (with the NoticeStore it includes): one contract for the in-memory fake and
MongoWebhookStore on the real server."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services.notifier.adapters.memory import InMemoryWebhookStore
from services.notifier.adapters.store import MongoWebhookStore
from services.notifier.model import Attempt, Delivery, Endpoint, Notice, Secret
from shared.events import utcnow
from tests.support import scratch_database

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # whole milliseconds: MongoDB keeps no finer time
LEASE = timedelta(seconds=60)


@pytest_asyncio.fixture(params=["memory", "mongo"])
async def store(request):
    if request.param == "memory":
        yield InMemoryWebhookStore()
        return
    async with scratch_database(request.getfixturevalue("mongo_url"), "lethe_ns") as (client, database):
        store = MongoWebhookStore(client, database)
        await store.ensure_indexes()
        yield store


def endpoint(n: int, **changes) -> Endpoint:
    return Endpoint(
        f"ep_{n:032x}",
        f"https://integrator.test/hook/{n}",
        ("data_deletion.completed", "data_deletion.partial"),
        (Secret(f"whsec_{n}", T0),),
        T0,
        **changes,
    )


def delivery(n: int, *, endpoint_id: str = "ep_a", request_id: str = "req-1", due: datetime = T0) -> Delivery:
    return Delivery(
        f"msg_{n:032x}", endpoint_id, "data_deletion.completed", f'{{"n":{n}}}', request_id, T0, next_attempt_at=due
    )


async def test_an_endpoint_is_kept_whole_listed_in_id_order_page_by_page_and_deleted_once(store):
    stored = [endpoint(n, owner_email=f"ops{n}@integrator.test", description=f"no. {n}") for n in (3, 1, 2)]
    for e in stored:
        await store.add_endpoint(e)
    assert await store.endpoint(stored[0].endpoint_id) == stored[0]
    assert await store.endpoint("ep_" + "f" * 32) is None
    first = await store.endpoints(limit=2)
    assert [e.endpoint_id for e in first] == [endpoint(1).endpoint_id, endpoint(2).endpoint_id]
    assert await store.endpoints(after=first[-1].endpoint_id, limit=2) == [stored[0]]
    assert await store.delete_endpoint(endpoint(2).endpoint_id)
    assert not await store.delete_endpoint(endpoint(2).endpoint_id)
    assert [e.endpoint_id for e in await store.endpoints()] == [endpoint(1).endpoint_id, endpoint(3).endpoint_id]


async def test_an_endpoints_secrets_are_replaced_and_it_is_disabled_with_its_reason(store):
    await store.add_endpoint(endpoint(1))
    rotated = (Secret("whsec_old", T0, T0 + timedelta(hours=24)), Secret("whsec_new", T0 + timedelta(minutes=1)))
    await store.set_secrets(endpoint(1).endpoint_id, rotated)
    await store.disable_endpoint(endpoint(1).endpoint_id, "answered 410 Gone")
    stored = await store.endpoint(endpoint(1).endpoint_id)
    assert stored.secrets == rotated
    assert (stored.status, stored.disabled_reason) == ("disabled", "answered 410 Gone")
    assert stored.live_secrets(T0 + timedelta(hours=25)) == ["whsec_new"]


async def test_a_delivery_is_scheduled_once_and_claimed_when_due_once_each_until_the_lease_runs_out(store):
    assert await store.schedule(delivery(1, due=T0))
    assert await store.schedule(delivery(2, due=T0 + timedelta(seconds=5)))
    assert not await store.schedule(delivery(1, due=T0))  # the same webhook-id: nothing new
    assert await store.claim_due(T0 - timedelta(seconds=1), lease=LEASE) == []
    assert await store.claim_due(T0, lease=LEASE) == [delivery(1)]
    assert await store.claim_due(T0 + timedelta(seconds=5), lease=LEASE) == [delivery(2, due=T0 + timedelta(seconds=5))]
    assert await store.claim_due(T0 + timedelta(seconds=10), lease=LEASE) == []  # both leased
    assert [d.message_id for d in await store.claim_due(T0 + LEASE, lease=LEASE)] == [delivery(1).message_id]


async def test_claims_come_earliest_due_first_and_no_more_than_asked(store):
    for n, seconds in ((1, 30), (2, 10), (3, 20)):
        await store.schedule(delivery(n, due=T0 + timedelta(seconds=seconds)))
    now = T0 + timedelta(minutes=1)
    assert [d.message_id for d in await store.claim_due(now, lease=LEASE, limit=2)] == [
        delivery(2).message_id,
        delivery(3).message_id,
    ]
    assert [d.message_id for d in await store.claim_due(now, lease=LEASE)] == [delivery(1).message_id]


async def test_a_failed_attempt_makes_the_delivery_due_again_and_a_final_one_takes_it_off_the_schedule(store):
    await store.schedule(delivery(1))
    [claimed] = await store.claim_due(T0, lease=LEASE)
    failed, retry_at = Attempt(T0, 500, "HTTP 500", 12), T0 + timedelta(seconds=5)
    await store.record_attempt(claimed.message_id, failed, status="pending", next_attempt_at=retry_at)
    assert await store.claim_due(retry_at - timedelta(seconds=1), lease=LEASE) == []
    [again] = await store.claim_due(retry_at, lease=LEASE)  # the attempt ended the lease
    assert (again.attempts, again.next_attempt_at) == ((failed,), retry_at)
    ok = Attempt(retry_at, 204, None, 8)
    await store.record_attempt(again.message_id, ok, status="delivered", next_attempt_at=None)
    assert await store.claim_due(T0 + timedelta(days=1), lease=LEASE) == []
    done = await store.delivery(again.message_id)
    assert (done.status, done.attempts, done.next_attempt_at) == ("delivered", (failed, ok), None)
    assert not await store.schedule(delivery(1))  # a replayed event does not send it again


async def test_a_dead_delivery_is_redelivered_with_its_history(store):
    await store.schedule(delivery(1))
    dead = Attempt(T0, 410, "HTTP 410", 3)
    await store.record_attempt(delivery(1).message_id, dead, status="dead", next_attempt_at=None)
    assert await store.claim_due(T0 + timedelta(days=1), lease=LEASE) == []
    later = T0 + timedelta(hours=2)
    await store.redeliver(delivery(1).message_id, later)
    [claimed] = await store.claim_due(later, lease=LEASE)
    assert (claimed.status, claimed.attempts, claimed.next_attempt_at) == ("pending", (dead,), later)
    assert await store.delivery("msg_" + "f" * 32) is None


async def test_deliveries_are_listed_by_endpoint_page_by_page_and_by_request_in_id_order(store):
    for n, endpoint_id, request_id in (
        (4, "ep_a", "req-2"),
        (1, "ep_a", "req-1"),
        (3, "ep_b", "req-1"),
        (2, "ep_a", "req-1"),
    ):
        await store.schedule(delivery(n, endpoint_id=endpoint_id, request_id=request_id))
    first = await store.deliveries_of("ep_a", limit=2)
    assert [d.message_id for d in first] == [delivery(1).message_id, delivery(2).message_id]
    assert [d.message_id for d in await store.deliveries_of("ep_a", after=first[-1].message_id)] == [
        delivery(4).message_id
    ]
    assert [(d.message_id, d.endpoint_id) for d in await store.deliveries_for_request("req-1")] == [
        (delivery(1).message_id, "ep_a"),
        (delivery(2).message_id, "ep_a"),
        (delivery(3).message_id, "ep_b"),
    ]
    assert await store.deliveries_for_request("req-1", limit=1) == [delivery(1)]
    assert await store.deliveries_of("ep_none") == []


async def test_deferred_notices_are_claimed_oldest_first_once_each_until_the_lease_runs_out(store):
    t0 = utcnow().replace(microsecond=0)
    for i, request_id in enumerate(["req-b", "req-a", "req-c"]):
        at = t0 + timedelta(minutes=i)
        await store.save_notice(Notice(request_id, "deferred", at, deferred_at=at, deferred_event="{}", next_try_at=at))
    await store.save_notice(Notice("req-sent", "sent", t0))
    await store.save_notice(
        Notice("req-owed", "sent", t0, deferred_at=t0 + timedelta(hours=1), deferred_event="{}", follow_up="pending")
    )
    lease = timedelta(minutes=5)
    now = t0 + timedelta(minutes=10)
    claimed = await store.claim_deferred(now, lease=lease, limit=10)
    assert [c.request_id for c in claimed] == ["req-b", "req-a", "req-c", "req-owed"]
    assert await store.claim_deferred(now, lease=lease) == []  # leased
    await store.save_notice(claimed[0])  # saving ends the claim
    assert [c.request_id for c in await store.claim_deferred(now, lease=lease)] == ["req-b"]
    assert [c.request_id for c in await store.claim_deferred(now + lease, lease=lease, mails=False)] == ["req-owed"]
    assert (await store.notice("req-a")).deferred_at == t0 + timedelta(minutes=1)


async def test_the_days_mail_count_counts_and_gives_back_places(store):
    day = f"2026-03-{uuid.uuid4().int % 28 + 1:02d}-{uuid.uuid4().hex[:4]}"
    assert await store.mail_count(day) == 0
    assert [await store.count_mail(day) for _ in range(3)] == [1, 2, 3]
    await store.uncount_mail(day)
    assert await store.mail_count(day) == 2
