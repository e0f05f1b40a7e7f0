"""Our MongoDB adapter against the real MongoDB-protocol server of the stack (FerretDB locally)."""

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
    """MongoDB applies each update atomically; FerretDB on SQLite needs the stack's serializing proxy for that."""
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
