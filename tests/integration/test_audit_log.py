"""audit's AuditLog: one contract for the in-memory fake and MongoAuditLog on the real server."""

from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services.audit.adapters.log import MongoAuditLog
from services.audit.adapters.memory import InMemoryAuditLog
from services.audit.chain import GENESIS, chain, verify_log
from services.audit.model import Checkpoint
from shared.events import DeletionPurged, DeletionRequested, LegalHoldPlaced
from shared.signing import Signer
from tests.support import PARTIAL, scratch_database

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
T0 = datetime(2026, 1, 1, tzinfo=UTC)  # whole seconds: MongoDB keeps no finer time than milliseconds
SIGNER = Signer.from_seed_b64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")


@pytest_asyncio.fixture(params=["memory", "mongo"])
async def audit_log(request):
    if request.param == "memory":
        yield InMemoryAuditLog()
        return
    async with scratch_database(request.getfixturevalue("mongo_url"), "lethe_al") as (client, database):
        audit_log = MongoAuditLog(client, database)
        await audit_log.ensure_indexes()
        yield audit_log


def requested(n: int, subject_id: str = "u1") -> DeletionRequested:
    return DeletionRequested(
        request_id=f"r{n}",
        subject_id=subject_id,
        producer="intake",
        requested_by=subject_id,
        deadline_at=T0 + timedelta(days=30),
        backups_purged_by=T0 + timedelta(days=90),
        occurred_at=T0 + timedelta(minutes=n),
    )


async def entries_of(audit_log) -> list:
    return [e async for e in audit_log.all_entries()]


def seqs(entries) -> list[int]:
    return [e.seq for e in entries]


def checkpoint(seq: int, digest: str, signed_at: datetime = T0) -> Checkpoint:
    unsigned = Checkpoint(seq, digest, signed_at.isoformat(), SIGNER.key_id, "")
    return Checkpoint(seq, digest, unsigned.signed_at, SIGNER.key_id, SIGNER.sign(unsigned.signed_part()))


async def test_an_empty_log_has_the_genesis_head_no_entries_and_no_checkpoint(audit_log):
    assert await audit_log.head() == (0, GENESIS)
    assert await entries_of(audit_log) == []
    assert await audit_log.checkpoints() == []
    assert await audit_log.last_checkpoint() is None
    assert await audit_log.matching(request_id="r1") == []


async def test_events_are_chained_in_order_each_once_however_often_they_come(audit_log):
    events = [requested(n) for n in range(1, 4)]
    assert await audit_log.append_many([*events, events[0]], recorded_at=T0) == [1, 2, 3]
    assert await audit_log.append_many(events[1:], recorded_at=T0) == []  # a replayed batch
    later = requested(4)
    assert await audit_log.append_many([events[2], later], recorded_at=T0 + timedelta(hours=1)) == [4]
    expected = chain([(e, T0) for e in events])
    expected += chain([(later, T0 + timedelta(hours=1))], start_seq=4, prev_hash=expected[-1].hash)
    assert await entries_of(audit_log) == expected
    assert await audit_log.head() == (4, expected[-1].hash)
    report = await verify_log(audit_log.all_entries(), head=await audit_log.head(), checkpoints=[], public_keys={})
    assert report.ok and report.entries_checked == 4


async def test_entries_are_found_by_type_subject_request_and_time_page_by_page(audit_log):
    story = [
        requested(1, "u1"),
        DeletionPurged(request_id="r1", subject_id="u1", producer="purger", outcomes=PARTIAL, occurred_at=T0),
        requested(2, "u2"),
        LegalHoldPlaced(
            hold_id="hold-1",
            subject_id="u2",
            datasets=("invoices",),
            legal_basis="legal claims (GDPR Art. 17(3)(e))",
            legal_ref="case 1",
            producer="intake",
            occurred_at=T0 + timedelta(minutes=5),
        ),
        requested(3, "u1"),
    ]
    await audit_log.append_many(story, recorded_at=T0)
    assert seqs(await audit_log.query(request_id="r1")) == [1, 2]
    assert seqs(await audit_log.query(subject_id="u1", types=["deletion.requested"])) == [1, 5]
    assert seqs(await audit_log.query(types=["legal_hold.placed", "deletion.purged"])) == [2, 4]
    assert seqs(await audit_log.query(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=5))) == [3, 5]
    assert seqs(await audit_log.query(limit=2)) == [1, 2]
    assert seqs(await audit_log.query(after=2, limit=2)) == [3, 4]
    assert seqs(await audit_log.matching(subject_id="u2")) == [3, 4]
    assert seqs(await audit_log.matching(types=["deletion.requested"], subject_id="u9")) == []


async def test_checkpoints_are_kept_in_order_and_the_first_at_a_sequence_number_stays(audit_log):
    await audit_log.append_many([requested(n) for n in range(1, 4)], recorded_at=T0)
    entries = await entries_of(audit_log)
    second, third = checkpoint(2, entries[1].hash), checkpoint(3, entries[2].hash, T0 + timedelta(minutes=1))
    await audit_log.add_checkpoint(third)
    await audit_log.add_checkpoint(second)
    await audit_log.add_checkpoint(checkpoint(3, "f" * 64, T0 + timedelta(minutes=2)))  # a second signing of 3
    assert await audit_log.checkpoints() == [second, third]
    assert await audit_log.last_checkpoint() == third
    keys = {SIGNER.key_id: SIGNER.public_key}
    report = await verify_log(
        audit_log.all_entries(),
        head=await audit_log.head(),
        checkpoints=await audit_log.checkpoints(),
        public_keys=keys,
    )
    assert report.ok and report.checkpoints_checked == 2
