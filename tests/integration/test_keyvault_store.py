"""The KeyStore contract, run against the in-memory fake and against MongoKeyStore on the real server."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services.keyvault.adapters.memory import InMemoryKeyStore
from services.keyvault.adapters.store import MongoKeyStore
from services.keyvault.model import KeyRecord
from tests.support import scratch_database

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest_asyncio.fixture(params=["memory", "mongo"])
async def store(request):
    if request.param == "memory":
        yield InMemoryKeyStore()
        return
    async with scratch_database(request.getfixturevalue("mongo_url"), "lethe_test") as (client, database):
        yield MongoKeyStore(client, database)


def record(subject: str = "u1", dataset: str = "profiles", key_id: str | None = None) -> KeyRecord:
    return KeyRecord(subject, dataset, key_id or f"dek_{uuid.uuid4().hex}", "kek-1", b"wrapped", "active", NOW)


async def test_a_key_is_stored_only_where_none_is(store):
    first, second = record(), record()
    assert await store.put_if_current(first, expected_key_id=None)
    assert not await store.put_if_current(second, expected_key_id=None)
    assert await store.get("u1", "profiles") == first


async def test_a_key_is_replaced_only_if_it_is_still_the_one_expected(store):
    first = record()
    await store.put_if_current(first, expected_key_id=None)
    gone = first.destroyed(NOW, "req-1")
    assert not await store.put_if_current(gone, expected_key_id="dek_" + "0" * 32)
    assert await store.put_if_current(gone, expected_key_id=first.key_id)
    stored = await store.get("u1", "profiles")
    assert stored.state == "destroyed"
    assert stored.wrapped is None
    assert stored.request_id == "req-1"


async def test_a_subjects_keys_are_replaced_together_or_not_at_all(store):
    keys = [record(dataset=d) for d in ("profiles", "invoices", "uploads")]
    for key in keys:
        await store.put_if_current(key, expected_key_id=None)
    gone = [k.disabled(NOW, NOW + timedelta(days=3), "req-1") for k in keys]
    expected = {k.dataset: k.key_id for k in keys}
    assert not await store.put_all_if_current(gone, expected={**expected, "uploads": "dek_" + "0" * 32})
    assert {r.state for r in await store.keys_of("u1")} == {"active"}  # none of them changed
    await store.add_all_to_purge_ledger(gone)
    assert await store.put_all_if_current(gone, expected=expected)
    assert {r.state for r in await store.keys_of("u1")} == {"disabled"}
    assert len(await store.due_for_purge(NOW + timedelta(days=4))) == 3


async def test_a_subjects_keys_are_listed_by_dataset_and_no_one_elses(store):
    for dataset in ("profiles", "invoices", "uploads"):
        await store.put_if_current(record(dataset=dataset), expected_key_id=None)
    await store.put_if_current(record(subject="u2"), expected_key_id=None)
    assert [r.dataset for r in await store.keys_of("u1")] == ["invoices", "profiles", "uploads"]
    assert await store.keys_of("nobody") == []
    assert len([r async for r in store.all_keys()]) == 4


async def test_the_purge_ledger_lists_only_what_is_due(store):
    soon = record(dataset="profiles").disabled(NOW, NOW + timedelta(days=1), "r")
    later = record(dataset="uploads").disabled(NOW, NOW + timedelta(days=5), "r")
    await store.add_to_purge_ledger(soon)
    await store.add_to_purge_ledger(later)
    await store.add_to_purge_ledger(soon)  # idempotent
    assert await store.due_for_purge(NOW) == []
    assert await store.due_for_purge(NOW + timedelta(days=2)) == [("u1", "profiles", soon.key_id)]
    await store.remove_from_purge_ledger("u1", "profiles", soon.key_id)
    assert await store.due_for_purge(NOW + timedelta(days=9)) == [("u1", "uploads", later.key_id)]


async def test_a_destruction_result_is_kept_once(store):
    await store.save_destruction("e1", '{"first": true}')
    await store.save_destruction("e1", '{"second": true}')
    assert await store.destruction("e1") == '{"first": true}'
    assert await store.destruction("e2") is None
