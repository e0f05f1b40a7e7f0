"""intake's decisions with in-memory fakes: status folding, deadlines, rule changes, one open request per subject."""

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from services.intake import handlers
from services.intake.adapters.memory import InMemoryRequestStore
from services.intake.handlers import DeletionRequest, RulePatchError, due_overdue, fold, new_request, patch_rules
from shared.datamap import DataMap, Dataset, MongoLocation
from shared.events import (
    DatasetOutcome,
    DeletionBackupsExpired,
    DeletionHardDeleted,
    DeletionKeysDestroyed,
    DeletionNotified,
    DeletionPurged,
    HardDeletedDataset,
    KeyRef,
)
from shared.fakes import InMemoryRetentionStore
from shared.retention import Rule, StaleRuleSetError, retained_datasets
from tests.support import PARTIAL, litigation_hold

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
TAGGED = DatasetOutcome(dataset="accounts", store="mongo", outcome="tagged")
ERASED = DatasetOutcome(dataset="profiles", store="mongo", outcome="erased")


def requested(subject: str = "u1", at: datetime = T0):
    return new_request(
        subject_id=subject, requested_by="svc", channel="api", now=at, deadline=30 * DAY, backups=90 * DAY
    )


def chain(record: DeletionRequest, outcomes=(ERASED,)):
    rid, sid = record.request_id, record.subject_id
    ids = {"request_id": rid, "subject_id": sid, "producer": "test"}
    return [
        DeletionPurged(**ids, occurred_at=T0 + DAY, outcomes=outcomes),
        DeletionKeysDestroyed(
            **ids, occurred_at=T0 + 2 * DAY, destroyed=(KeyRef(dataset="profiles", key_id="dek_1"),), result="completed"
        ),
        DeletionNotified(**ids, occurred_at=T0 + 3 * DAY, result="completed", webhook_endpoints=1, email_sent=False),
    ]


def fold_all(record, events):
    for event in events:
        record = fold(record, event, seen_at=T0 + 10 * DAY)
    return record


def test_a_request_walks_its_statuses_as_the_chain_reports():
    record, event = requested()
    assert record.status == "received"
    record = fold(record, event, seen_at=T0)
    assert record.status == "purging"
    purged, keys, notified = chain(record)
    statuses = []
    for e in (purged, keys, notified):
        record = fold(record, e, seen_at=T0)
        statuses.append(record.status)
    assert statuses == ["purging", "keys_destroyed", "completed"]
    assert set(record.stages) == {"received", "purging", "purged", "keys_destroyed", "notified"}
    record = fold(
        record,
        DeletionBackupsExpired(**_ids(record), expired_before=T0 + 90 * DAY, occurred_at=T0 + 91 * DAY),
        seen_at=T0,
    )
    assert record.status == "erased"


def _ids(record):
    return {"request_id": record.request_id, "subject_id": record.subject_id, "producer": "test"}


def test_events_in_any_order_and_replayed_give_the_same_record():
    record, event = requested()
    events = [event, *chain(record, outcomes=(ERASED, TAGGED))]
    events.append(
        DeletionHardDeleted(
            **_ids(record),
            occurred_at=T0 + 4 * DAY,
            datasets=(HardDeletedDataset(dataset="accounts", records_purged=3),),
        )
    )
    expected = fold_all(None, events)
    assert expected.status == "hard_deleted"
    for order in itertools.islice(itertools.permutations(events), 0, None, 7):
        shuffled = list(order) + random.Random(1).sample(events, 3)  # plus some replays
        assert fold_all(None, shuffled) == expected


def test_a_tagged_dataset_holds_the_request_at_its_result_until_the_nightly_job_reports():
    record, _ = requested()
    record = fold_all(record, chain(record, outcomes=(ERASED, TAGGED)))
    assert record.status == "completed"
    record = fold(
        record,
        DeletionHardDeleted(**_ids(record), datasets=(HardDeletedDataset(dataset="accounts", records_purged=2),)),
        seen_at=T0,
    )
    assert record.status == "hard_deleted"
    assert record.hard_deleted == {"accounts": 2}


def test_anything_retained_makes_the_result_partial():
    record, _ = requested()
    record = fold_all(record, chain(record, outcomes=PARTIAL))
    assert record.status == "partial"
    assert record.outcomes["invoices"].rule_id == "tax-10y"


def test_a_follow_up_purge_replaces_the_outcome_it_changes():
    record, _ = requested()
    record = fold_all(record, chain(record, outcomes=PARTIAL))
    erased_invoices = DatasetOutcome(dataset="invoices", store="mongo", outcome="erased")
    later = DeletionPurged(**_ids(record), occurred_at=T0 + 20 * DAY, outcomes=(erased_invoices,))
    record = fold(record, later, seen_at=T0)
    assert record.outcomes["invoices"].outcome == "erased"
    assert record.result == "completed"
    # The older report, seen again, does not undo the newer one.
    assert fold(record, chain(record, outcomes=PARTIAL)[0], seen_at=T0).outcomes["invoices"].outcome == "erased"


def test_overdue_warns_past_eighty_percent_then_once_past_the_deadline():
    record, _ = requested()
    assert due_overdue(record, now=T0 + 23 * DAY, warn_fraction=0.8) is None
    warn = due_overdue(record, now=T0 + 25 * DAY, warn_fraction=0.8)
    assert warn is not None and not warn.past_deadline
    record = fold(record, warn, seen_at=T0)
    assert due_overdue(record, now=T0 + 26 * DAY, warn_fraction=0.8) is None
    past = due_overdue(record, now=T0 + 31 * DAY, warn_fraction=0.8)
    assert past is not None and past.past_deadline and past.status == "received"
    assert past.event_id == due_overdue(record, now=T0 + 32 * DAY, warn_fraction=0.8).event_id
    record = fold(record, past, seen_at=T0)
    assert due_overdue(record, now=T0 + 40 * DAY, warn_fraction=0.8) is None


def test_a_finished_request_is_never_overdue():
    record, _ = requested()
    record = fold_all(record, chain(record))
    assert due_overdue(record, now=T0 + 60 * DAY, warn_fraction=0.8) is None


DATAMAP = DataMap(
    datasets=tuple(
        Dataset(name=n, store="mongo", mongo=MongoLocation(collection=n, subject_field="user_id"))
        for n in ("invoices", "profiles")
    )
)
TAX = Rule(rule_id="tax-10y", datasets=("invoices",), legal_basis="legal obligation", legal_ref="HGB §257")


def test_rule_changes_name_each_unknown_dataset_and_rule():
    bad = Rule(rule_id="r2", datasets=("invoices", "nope"), legal_basis="b", legal_ref="r")
    with pytest.raises(RulePatchError) as caught:
        patch_rules((TAX,), upsert=(bad,), remove=("missing",), datamap=DATAMAP)
    fields = {e["field"] for e in caught.value.errors}
    assert fields == {"body.rules.0.datasets.1", "body.remove.0"}


def test_rule_changes_report_only_what_changed():
    rules, changed = patch_rules((TAX,), upsert=(TAX,), remove=(), datamap=DATAMAP)
    assert (rules, changed) == ((TAX,), ())
    other = Rule(rule_id="contract", datasets=("profiles",), legal_basis="contract", legal_ref="§1")
    rules, changed = patch_rules((TAX,), upsert=(other,), remove=("tax-10y",), datamap=DATAMAP)
    assert rules == (other,) and changed == ("contract", "tax-10y")


def test_holds_win_over_rules_and_expired_rules_keep_nothing():
    expired = Rule(rule_id="old", datasets=("profiles",), legal_basis="b", legal_ref="r", expires_at=T0 - DAY)
    hold = litigation_hold("hold_1", "u1", "invoices", placed_at=T0)
    kept = retained_datasets((TAX, expired), (hold,), T0)
    assert set(kept) == {"invoices"}
    assert kept["invoices"].rule_id == "hold_1"


@pytest.mark.asyncio
async def test_the_in_memory_rule_store_refuses_a_stale_version():
    store = InMemoryRetentionStore()
    await store.replace_rules((TAX,), expected_version=0, by="a", at=T0)
    with pytest.raises(StaleRuleSetError):
        await store.replace_rules((), expected_version=0, by="b", at=T0)


@pytest.mark.asyncio
async def test_a_subject_has_one_open_request_and_may_start_another_once_it_is_done():
    store = InMemoryRequestStore()
    kwargs = {"subject_id": "u1", "requested_by": "svc", "channel": "api", "deadline": 30 * DAY, "backups": 90 * DAY}
    started, first = await handlers.request_deletion(store, now=T0, **kwargs)
    again, same = await handlers.request_deletion(store, now=T0, **kwargs)
    assert started and not again and same.request_id == first.request_id
    assert len(store.outbox) == 1
    for event in chain(first):
        await handlers.track(event, store, now=T0)
    assert (await store.get(first.request_id)).status == "completed"
    assert store.claims == {}
    started, second = await handlers.request_deletion(store, now=T0 + DAY, **kwargs)
    assert started and second.request_id != first.request_id


@pytest.mark.asyncio
async def test_a_client_over_its_limit_gets_429_with_retry_after_and_others_do_not():
    from services.intake.limits import RateLimits
    from shared.problems import ProblemError

    limits = RateLimits(per_client="3/minute", per_address="1/hour", per_email_client="10/hour")
    for _ in range(3):
        await limits.client("10.0.0.1")
    with pytest.raises(ProblemError) as caught:
        await limits.client("10.0.0.1")
    assert caught.value.status == 429
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 60
    await limits.client("10.0.0.2")
    await limits.email(address="a@example.com", client="10.0.0.3")
    with pytest.raises(ProblemError):
        await limits.email(address="a@example.com", client="10.0.0.4")  # the address's limit, from any client
