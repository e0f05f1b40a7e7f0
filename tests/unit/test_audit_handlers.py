"""audit's use cases against the in-memory log: recording a poll's events once, checkpoints when due, the chain
verified, and a signed receipt (milliseconds, no server)."""

from datetime import timedelta

import pytest

from services.audit import handlers
from services.audit.adapters.memory import InMemoryAuditLog
from shared import topics
from shared.events import DatasetOutcome, DeletionDenied, DeletionExtended, DeletionPurged
from shared.signing import public_key_b64, verify_document
from tests.unit.test_audit_chain import SIGNER, T0, requested  # the chain tests' subject and key

pytestmark = pytest.mark.asyncio


async def test_a_polls_events_are_recorded_once_in_order_and_the_chain_verifies():
    log = InMemoryAuditLog()
    route = handlers.routes(log, lambda: T0)[topics.DELETION_REQUESTED]
    events = [requested(i) for i in range(3)]
    assert await route.handle_many(events) == ()
    await route.handle_many(events[1:])  # a replay after a crash adds nothing
    assert (await log.head())[0] == 3
    assert [e.request_id for e in await log.matching(request_id="r1")] == ["r1"]
    report = await handlers.verify_chain(log, SIGNER)
    assert report.ok, report


async def test_a_checkpoint_is_signed_once_enough_entries_or_time_have_passed():
    log = InMemoryAuditLog()
    await handlers.record([requested(i) for i in range(2)], log, lambda: T0)
    due = {"every_entries": 3, "every_s": 3600}
    assert await handlers.checkpoint_if_due(log, SIGNER, now=T0, **due) is not None  # the first one
    await handlers.record([requested(2)], log, lambda: T0)
    assert await handlers.checkpoint_if_due(log, SIGNER, now=T0 + timedelta(minutes=1), **due) is None
    await handlers.record([requested(i) for i in range(3, 6)], log, lambda: T0)
    signed = await handlers.checkpoint_if_due(log, SIGNER, now=T0 + timedelta(minutes=2), **due)
    assert signed is not None and signed.seq == 6
    assert (await handlers.verify_chain(log, SIGNER)).ok


async def test_a_requests_receipt_is_signed_and_lists_its_outcomes():
    log = InMemoryAuditLog()
    purged = DeletionPurged(
        request_id="r0",
        subject_id="u0",
        producer="purger",
        round=0,
        outcomes=(DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),),
    )
    await handlers.record([requested(0), purged], log, lambda: T0)
    signed = await handlers.signed_receipt(log, SIGNER, "r0", datamap=None, now=T0)
    assert signed is not None and verify_document(signed, public_key_b64(SIGNER.public_key))
    assert signed["document"]["datasets"][0]["outcome"] == "erased"
    assert await handlers.signed_receipt(log, SIGNER, "nobody", datamap=None, now=T0) is None


async def test_a_denied_requests_receipt_says_denied_why_and_that_nothing_was_erased_and_an_extended_one_when():
    log = InMemoryAuditLog()
    denied = DeletionDenied(
        request_id="r7",
        subject_id="u7",
        producer="intake",
        occurred_at=T0,
        jurisdiction="gdpr",
        legal_basis="Art. 17(3)(e) GDPR: a legal claim",
        reference="CASE-7",
        legal_ref="Art. 17(3) and Art. 12(4) GDPR",
        complaint="Art. 77 GDPR",
        denied_by="dpo",
    )
    await handlers.record([denied], log, lambda: T0)
    signed = await handlers.signed_receipt(log, SIGNER, "r7", datamap=None, now=T0)
    assert signed is not None and verify_document(signed, public_key_b64(SIGNER.public_key))
    document = signed["document"]
    assert (document["result"], document["jurisdiction"]) == ("denied", "gdpr")
    assert document["closure"]["reference"] == "CASE-7" and document["datasets"] == []

    extended = DeletionExtended(
        request_id="r0",
        subject_id="u0",
        producer="intake",
        occurred_at=T0 + timedelta(days=3),
        extension=1,
        deadline_at=T0 + timedelta(days=90),
        previous_deadline_at=T0 + timedelta(days=30),
        jurisdiction="gdpr",
        legal_ref="Art. 12(3) GDPR",
        reason="the archive is restored first",
        extended_by="dpo",
    )
    await handlers.record([requested(0), extended], log, lambda: T0)
    document = (await handlers.signed_receipt(log, SIGNER, "r0", datamap=None, now=T0))["document"]
    [extension] = document["extensions"]
    assert (extension["reason"], extension["legal_ref"]) == ("the archive is restored first", "Art. 12(3) GDPR")
    assert document["closure"] is None and document["agent"] is None
