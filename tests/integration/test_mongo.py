"""What lethe needs of a MongoDB server, against the real one of the stack (SecantusDB locally, MongoDB in compose)."""

import asyncio
import uuid

import pytest
import pytest_asyncio
from pymongo.errors import DuplicateKeyError

from shared.mongo import create_mongo_client, mongo_ping
from shared.settings import MongoSettings

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]


@pytest_asyncio.fixture
async def collection(mongo_url):
    client = create_mongo_client(MongoSettings(url=mongo_url, database="lethe_test"))
    coll = client["lethe_test"][f"records_{uuid.uuid4().hex[:8]}"]
    yield coll
    await coll.drop()
    await client.close()


async def test_the_server_answers_a_ping(mongo_url):
    client = create_mongo_client(MongoSettings(url=mongo_url))
    try:
        assert await mongo_ping(client)
    finally:
        await client.close()


async def test_records_are_inserted_found_through_an_index_and_deleted_by_primary_key(collection):
    await collection.create_index("subject_id", name="subject_id_1")
    docs = [{"_id": f"rec-{i}", "subject_id": f"user-{i % 3}", "body": "x" * 10} for i in range(30)]
    await collection.insert_many(docs)

    index_names = [ix["name"] async for ix in await collection.list_indexes()]
    assert "subject_id_1" in index_names
    mine = await collection.find({"subject_id": "user-1"}, {"_id": 1}).to_list(None)
    assert len(mine) == 10

    deleted = 0
    for doc in mine:
        deleted += (await collection.delete_one({"_id": doc["_id"]})).deleted_count
    assert deleted == 10
    assert await collection.count_documents({"subject_id": "user-1"}) == 0
    assert await collection.count_documents({}) == 20


async def test_a_unique_index_rejects_a_second_insert_so_upserts_can_be_idempotent(collection):
    await collection.create_index("event_id", unique=True)
    await collection.insert_one({"event_id": "e-1"})
    with pytest.raises(DuplicateKeyError):
        await collection.insert_one({"event_id": "e-1"})
    await collection.update_one({"event_id": "e-1"}, {"$set": {"seen": 2}}, upsert=True)
    assert await collection.count_documents({"event_id": "e-1"}) == 1


async def test_concurrent_updates_of_one_document_are_all_applied(collection):
    """Each update applies atomically, with no proxy in front (FerretDB on SQLite lost concurrent updates)."""
    await collection.insert_one({"_id": "counter", "n": 0, "m": 0, "version": 0})

    async def bump(field, times):
        for _ in range(times):
            await collection.update_one({"_id": "counter"}, {"$inc": {field: 1}})

    async def claim_next_version(times):
        won = 0
        for _ in range(times):
            current = (await collection.find_one({"_id": "counter"}))["version"]
            result = await collection.update_one(
                {"_id": "counter", "version": current}, {"$set": {"version": current + 1}}
            )
            won += result.modified_count
        return won

    results = await asyncio.gather(
        bump("n", 100), bump("m", 100), bump("n", 100), *(claim_next_version(50) for _ in range(3))
    )
    doc = await collection.find_one({"_id": "counter"})
    assert (doc["n"], doc["m"]) == (200, 100)
    # Every successful conditional update moved the version by exactly one: no two writers won the same version.
    assert doc["version"] == sum(results[3:])


async def test_a_thousand_updates_and_deletes_by_id_apply_in_one_call_each(collection):
    """The purger tags and the nightly job deletes a whole batch in one call (FerretDB hung on a bulk of 100)."""
    await collection.insert_many([{"_id": f"r-{i}", "user_id": "u-1"} for i in range(1000)])
    ids = [f"r-{i}" for i in range(1000)]
    tagged = await collection.update_many({"_id": {"$in": ids}}, {"$set": {"deletion.request_id": "req-1"}})
    assert tagged.modified_count == 1000
    assert await collection.count_documents({"deletion.request_id": "req-1"}) == 1000
    deleted = await collection.delete_many({"_id": {"$in": ids[:600]}})
    assert deleted.deleted_count == 600
    assert await collection.count_documents({}) == 400
