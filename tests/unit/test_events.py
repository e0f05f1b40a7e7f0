"""The event contracts: round trips, strictness, and the topic each event belongs on."""

import json
import uuid
from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from shared import topics
from shared.events import (
    EVENT_TYPES,
    DatasetOutcome,
    DeletionPurged,
    DeletionRejected,
    DeletionRequested,
    InvalidEventError,
    RequestDeletion,
    decode_event,
    utcnow,
)
from tests.support import ERASED_PROFILES, KEPT_INVOICES


def requested(**overrides: object) -> DeletionRequested:
    fields: dict[str, object] = {
        "request_id": "req-1",
        "subject_id": "user-1",
        "producer": "intake",
        "requested_by": "user-1",
        "deadline_at": utcnow() + timedelta(days=30),
        "backups_purged_by": utcnow() + timedelta(days=90),
    }
    fields.update(overrides)
    return DeletionRequested.model_validate(fields)


def test_every_event_topic_has_exactly_one_model():
    assert set(EVENT_TYPES) == set(topics.EVENT_TOPICS)


def test_every_topic_has_a_dead_letter_twin():
    assert {t + ".dlq" for t in topics.EVENT_TOPICS} <= set(topics.ALL_TOPICS)
    assert len(topics.ALL_TOPICS) == 2 * len(topics.EVENT_TOPICS)


def test_an_event_survives_a_round_trip_through_bytes():
    event = requested()
    assert decode_event(topics.DELETION_REQUESTED, event.to_bytes()) == event


def test_the_partition_key_is_the_subject_id():
    assert requested(subject_id="user-42").key() == b"user-42"


def test_unknown_fields_are_rejected():
    raw = requested().model_dump(mode="json") | {"email": "someone@example.com"}
    with pytest.raises(ValidationError, match="email"):
        DeletionRequested.model_validate(raw)


def test_events_are_immutable():
    with pytest.raises(ValidationError):
        requested().subject_id = "someone-else"  # type: ignore[misc]


def test_naive_timestamps_are_rejected():
    with pytest.raises(ValidationError, match="deadline_at"):
        requested(deadline_at=datetime(2030, 1, 1))


def test_timestamps_are_stored_in_utc():
    from zoneinfo import ZoneInfo

    paris = datetime(2030, 1, 1, 12, tzinfo=ZoneInfo("Europe/Paris"))
    assert requested(occurred_at=paris).occurred_at.utcoffset() == timedelta(0)


def test_an_event_on_the_wrong_topic_is_invalid():
    with pytest.raises(InvalidEventError, match="does not belong"):
        decode_event(topics.DELETION_PURGED, requested().to_bytes())


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"{}", b'{"type": "deletion.requested"}'])
def test_garbage_is_an_invalid_event(raw):
    with pytest.raises(InvalidEventError):
        decode_event(topics.DELETION_REQUESTED, raw)


def test_a_retained_dataset_must_say_why():
    with pytest.raises(ValidationError, match="legal_ref"):
        DatasetOutcome(dataset="invoices", store="mongo", outcome="retained", rule_id="tax")


def test_a_request_with_anything_retained_is_partial():
    erased, kept = ERASED_PROFILES, KEPT_INVOICES
    base = {"request_id": "r", "subject_id": "s", "producer": "purger"}
    assert DeletionPurged(outcomes=(erased,), **base).result == "completed"
    assert DeletionPurged(outcomes=(erased, kept), **base).result == "partial"


def intent_doc(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "type": "deletion.intents",
        "producer": "billing",
        "subject_id": "user-1",
        "reason": "account closed",
    }
    return doc | overrides


def test_the_intent_is_a_small_versioned_command_keyed_by_its_subject():
    intent = RequestDeletion(producer="billing", subject_id="user-1", reason=" account closed ", idempotency_key="k-1")
    assert decode_event(topics.DELETION_INTENTS, intent.to_bytes()) == intent
    assert intent.key() == b"user-1" and intent.schema_version == 1
    assert intent.reason == "account closed" and intent.request_id is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"subject_id": "user 1"}, "subject_id"),  # the HTTP path's pattern: no spaces, slashes or controls
        ({"subject_id": "../etc"}, "subject_id"),
        ({"subject_id": "x" * 201}, "subject_id"),
        ({"schema_version": 2}, "schema_version"),
        ({"request_id": "req_1"}, "request_id"),  # intake names the request
        ({"reason": ""}, "reason"),
        ({"reason": "x" * 201}, "reason"),
        ({"idempotency_key": "has space"}, "idempotency_key"),
        ({"email": "someone@example.com"}, "email"),
    ],
)
def test_an_intent_that_breaks_the_contract_is_invalid(overrides, field):
    raw = json.dumps(intent_doc(**overrides)).encode()
    with pytest.raises(InvalidEventError, match=field):
        decode_event(topics.DELETION_INTENTS, raw)


def test_an_intent_needs_its_subject_reason_and_producer():
    for missing in ("subject_id", "reason", "producer"):
        doc = intent_doc()
        del doc[missing]
        with pytest.raises(InvalidEventError, match=missing):
            decode_event(topics.DELETION_INTENTS, json.dumps(doc).encode())


def test_a_rejection_carries_what_could_be_read_of_the_intent():
    bare = DeletionRejected(producer="intake", cause="invalid", reason="not JSON")
    assert decode_event(topics.DELETION_REJECTED, bare.to_bytes()) == bare
    assert bare.key() == str(bare.event_id).encode()
    told = DeletionRejected(
        producer="intake",
        cause="unauthorized",
        reason="may not ask",
        subject_id="user-1",
        intent_producer="marketing",
        intent_event_id=uuid.uuid4(),
    )
    assert told.key() == b"user-1"
    with pytest.raises(ValidationError, match="cause"):
        DeletionRejected(producer="intake", cause="because", reason="x")
