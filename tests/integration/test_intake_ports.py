"""intake's outbox and accounts directory, one contract each for the in-memory fake and MongoDB (SecantusDB in the
local stack). The request store's contract is test_request_store.py, the retention store's test_retention_store.py."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from services.intake.adapters.memory import InMemoryAccountDirectory, InMemoryOutbox, InMemoryRequestStore
from services.intake.adapters.retention import MongoRetentionStore
from services.intake.adapters.store import MongoAccountDirectory, MongoOutbox, MongoRequestStore
from services.intake.ports import AccountDirectory, Outbox, RequestStore, RetentionStore
from shared.events import DeletionRequested, LegalHoldPlaced, decode_any
from shared.fakes import InMemoryRetentionStore
from shared.liveread import TAGGED_AT
from tests.support import litigation_hold, scratch_database

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class Writers:
    requests: RequestStore
    retention: RetentionStore
    outbox: Outbox


@pytest_asyncio.fixture(params=["fake", "mongo"])
async def writers(request, mongo_url):
    if request.param == "fake":
        requests, retention = InMemoryRequestStore(), InMemoryRetentionStore()
        yield Writers(requests, retention, InMemoryOutbox(requests, retention))
        return
    async with scratch_database(mongo_url, "lethe_ob") as (client, database):
        yield Writers(
            MongoRequestStore(client, database, idempotency_ttl=timedelta(hours=1)),
            MongoRetentionStore(client, database),
            MongoOutbox(client, database),
        )


def requested(subject: str) -> DeletionRequested:
    return DeletionRequested(
        producer="intake",
        request_id=f"req_{subject}",
        subject_id=subject,
        requested_by="svc-test",
        deadline_at=T0 + timedelta(days=30),
        backups_purged_by=T0 + timedelta(days=90),
    )


def placed(hold_id: str) -> LegalHoldPlaced:
    return LegalHoldPlaced(producer="intake", hold_id=hold_id, datasets=("profiles",), legal_basis="b", legal_ref="r")


async def pending_ids(outbox: Outbox) -> set[str]:
    return {str(decode_any(raw).event_id) for entry in await outbox.pending() for raw in entry.raw}


async def test_what_a_write_carries_is_pending_until_cleared_and_only_that_is_cleared(writers):
    first, hold_event = requested("u1"), placed("hold_a")
    assert await writers.outbox.pending() == []
    assert await writers.requests.claim(first) is None
    await writers.retention.place_hold(litigation_hold("hold_a", "u1", "profiles"), outbox=[hold_event])
    assert await pending_ids(writers.outbox) == {str(first.event_id), str(hold_event.event_id)}

    read = await writers.outbox.pending()
    later = requested("u2")
    assert await writers.requests.claim(later) is None  # written after the relay read, before it cleared
    for entry in read:
        await writers.outbox.clear(entry)
    assert await pending_ids(writers.outbox) == {str(later.event_id)}  # kept: it was not among those published


async def test_a_claim_repeated_after_a_crash_adds_nothing_to_publish(writers):
    event = requested("u1")
    assert await writers.requests.claim(event) is None
    assert await writers.requests.claim(event) is None  # the same request claims again (a retry)
    assert len([raw for entry in await writers.outbox.pending() for raw in entry.raw]) == 1


@dataclass
class Directory:
    port: AccountDirectory
    add: Any  # (subject_id, email_hash, address, tagged, jurisdiction=None) -> awaitable


@pytest_asyncio.fixture(params=["fake", "mongo"])
async def directory(request, mongo_url):
    if request.param == "fake":
        fake = InMemoryAccountDirectory()

        async def add_fake(
            subject: str, email_hash: str, address: str | None, tagged: bool, jurisdiction: str | None = None
        ) -> None:
            fake.add(subject, email_hash=email_hash, address=address, tagged=tagged, jurisdiction=jurisdiction)

        yield Directory(fake, add_fake)
        return
    async with scratch_database(mongo_url, "lethe_ad") as (client, database):
        real = MongoAccountDirectory(
            client,
            database,
            collection="accounts",
            subject_field="user_id",
            hash_field="email_hash",
            jurisdiction_field="region",
        )
        await real.ensure_indexes()

        async def add_real(
            subject: str, email_hash: str, address: str | None, tagged: bool, jurisdiction: str | None = None
        ) -> None:
            doc: dict[str, Any] = {"user_id": subject, "email_hash": email_hash, "name": "someone"}
            if jurisdiction is not None:
                doc["region"] = jurisdiction
            if address is not None:
                doc["email"] = address
            if tagged:
                doc[TAGGED_AT.split(".")[0]] = {TAGGED_AT.split(".")[1]: T0}
            await client[database]["accounts"].insert_one(doc)

        yield Directory(real, add_real)


async def test_an_account_is_found_by_the_hash_of_its_address_and_its_stored_address_read(directory):
    await directory.add("u1", "hash-1", "lethe:v1:sealed-address", False)
    await directory.add("u2", "hash-2", None, False)
    assert await directory.port.subject_for("hash-1") == "u1"
    assert await directory.port.subject_for("hash-9") is None
    assert await directory.port.stored_address("u1") == "lethe:v1:sealed-address"
    assert await directory.port.stored_address("u2") is None  # an account without an address
    assert await directory.port.stored_address("u9") is None


async def test_an_accounts_jurisdiction_field_is_read_and_absent_is_none(directory):
    await directory.add("u1", "hash-1", None, False, "ccpa")
    await directory.add("u2", "hash-2", None, False)
    await directory.add("u3", "hash-3", None, True, "ccpa")
    assert await directory.port.jurisdiction_of("u1") == "ccpa"
    assert await directory.port.jurisdiction_of("u2") is None
    assert await directory.port.jurisdiction_of("u3") is None  # tagged for deletion: not found
    assert await directory.port.jurisdiction_of("u9") is None


async def test_an_account_tagged_for_deletion_is_found_by_neither_lookup(directory):
    await directory.add("u3", "hash-3", "lethe:v1:sealed", True)
    assert await directory.port.subject_for("hash-3") is None
    assert await directory.port.stored_address("u3") is None
