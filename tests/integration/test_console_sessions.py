"""audit's ConsoleSessions: one contract for the in-memory fake and MongoConsoleSessions on the real server."""

from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services.audit.adapters.memory import InMemoryConsoleSessions
from services.audit.adapters.sessions import MongoConsoleSessions
from services.audit.model import Session
from tests.support import scratch_database

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
T0 = datetime(2026, 1, 1, tzinfo=UTC)  # whole seconds: MongoDB keeps no finer time than milliseconds


@pytest_asyncio.fixture(params=["memory", "mongo"])
async def store(request):
    """(the sessions, a reader of the keys they are kept under)."""
    if request.param == "memory":
        sessions = InMemoryConsoleSessions()

        async def memory_keys() -> set[str]:
            return set(sessions.sessions)

        yield sessions, memory_keys
        return
    async with scratch_database(request.getfixturevalue("mongo_url"), "lethe_cs") as (client, database):

        async def mongo_keys() -> set[str]:
            return {doc["_id"] async for doc in client[database]["console_sessions"].find({}, {"_id": 1})}

        yield MongoConsoleSessions(client, database), mongo_keys


def session(expires_at: datetime = T0 + timedelta(hours=8), operator: str = "ops-1") -> Session:
    return Session(f"token-of-{operator}", f"csrf-of-{operator}", operator, frozenset({"audit:read"}), expires_at)


async def test_a_created_session_is_found_by_its_id_as_it_was_kept(store):
    sessions, _ = store
    first, second = session(), session(operator="ops-2")
    first_id, second_id = await sessions.create(first), await sessions.create(second)
    assert first_id != second_id
    assert await sessions.get(first_id, T0) == first
    assert await sessions.get(second_id, T0 + timedelta(hours=7, minutes=59)) == second


async def test_an_expired_session_is_gone_for_good(store):
    sessions, keys = store
    session_id = await sessions.create(session(expires_at=T0 + timedelta(hours=1)))
    assert await sessions.get(session_id, T0 + timedelta(hours=1)) is None  # expiry is exclusive
    assert await keys() == set()  # deleted on sight, not merely hidden
    assert await sessions.get(session_id, T0) is None


async def test_a_deleted_session_is_gone_and_the_others_stay(store):
    sessions, _ = store
    gone, kept = await sessions.create(session()), await sessions.create(session(operator="ops-2"))
    await sessions.delete(gone)
    await sessions.delete(gone)  # signing out twice changes nothing
    await sessions.delete("never-issued")
    assert await sessions.get(gone, T0) is None
    assert await sessions.get(kept, T0) == session(operator="ops-2")


async def test_a_wrong_id_finds_nothing(store):
    sessions, _ = store
    session_id = await sessions.create(session())
    for wrong in ("", "never-issued", session_id[:-1], session_id + "x", session_id.upper()):
        assert await sessions.get(wrong, T0) is None
    assert await sessions.get(session_id, T0) == session()


async def test_the_store_keeps_no_session_id_in_the_clear(store):
    sessions, keys = store
    session_id = await sessions.create(session())
    kept = await keys()
    assert len(kept) == 1
    assert session_id not in kept
