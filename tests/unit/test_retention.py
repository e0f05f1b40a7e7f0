"""Retention is state: the purger and keyvault, chained in memory, ask the rules and holds in force whenever they
destroy anything. Scenario tests name one sequence each; the property test runs random sequences of requests,
holds, releases, rule changes and clock steps and checks the invariants after every step."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.keyvault import handlers as keyvault
from services.keyvault.adapters.kek import LocalKeyring
from services.keyvault.adapters.memory import InMemoryKeyStore
from services.purger import handlers as purger
from services.purger.adapters.memory import InMemoryBackups, InMemoryProgress, InMemoryStores
from shared.events import (
    DeletionHeld,
    DeletionKeysDestroyed,
    DeletionKeysHeld,
    DeletionPurged,
    DeletionRequested,
    Event,
    LegalHoldPlaced,
    LegalHoldReleased,
    RetentionRulesChanged,
)
from shared.fakes import InMemoryRetentionStore
from shared.retention import Hold, Rule, retained_datasets
from tests.support import UNIT_DATAMAP, litigation_hold

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
SUBJECTS = ("u1", "u2", "u3")


DATAMAP = UNIT_DATAMAP
PERSONAL = tuple(d.name for d in DATAMAP.datasets if not d.exempt)
TAX = Rule(rule_id="tax-10y", datasets=("invoices",), legal_basis="legal obligation", legal_ref="HGB §257")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Chain:
    """The purger and keyvault on one set of in-memory stores, with the events between them delivered at once."""

    grace: timedelta = timedelta(0)
    clock: Clock = field(default_factory=Clock)
    retention: InMemoryRetentionStore = field(default_factory=InMemoryRetentionStore)
    stores: InMemoryStores = field(default_factory=InMemoryStores)
    keys: InMemoryKeyStore = field(default_factory=InMemoryKeyStore)
    emitted: list[Event] = field(default_factory=list)
    requests: dict[str, str] = field(default_factory=dict)  # request id -> subject
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.purger = purger.Purger(
            datamap=DATAMAP,
            erasers={"mongo": self.stores, "s3": self.stores, "milvus": self.stores},
            retention=self.retention,
            progress=InMemoryProgress(),
            ledger=self.stores,
            clock=self.clock,
            purge_after=DAY,
        )
        self.vault = keyvault.Vault(
            store=self.keys,
            kek=LocalKeyring({"kek-1": b"k" * 32}, "kek-1"),
            clock=self.clock,
            retention=self.retention,
            datamap=DATAMAP,
            grace=self.grace,
        )

    async def seed(self) -> None:
        for subject in SUBJECTS:
            for dataset in DATAMAP.names:
                for n in range(2):
                    self.stores.records.setdefault(dataset, {})[f"{dataset}-{subject}-{n}"] = subject
                await keyvault.current_key(self.vault, subject, dataset)

    async def deliver(self, events: Sequence[Event]) -> None:
        queue = list(events)
        while queue:
            event = queue.pop(0)
            self.emitted.append(event)
            if isinstance(event, DeletionPurged):
                queue += await keyvault.destroy_keys(event, self.vault)
            elif isinstance(event, DeletionHeld):
                queue += await keyvault.keep_for_hold(event, self.vault)

    async def request(self, subject: str) -> str:
        request_id = f"req_{next(self.ids)}"
        self.requests[request_id] = subject
        event = DeletionRequested(
            request_id=request_id,
            subject_id=subject,
            producer="intake",
            requested_by="svc",
            deadline_at=self.clock.now + 30 * DAY,
            backups_purged_by=self.clock.now + 90 * DAY,
        )
        await self.deliver(await purger.purge(event, self.purger))
        return request_id

    async def hold(self, subject: str | None, *datasets: str, ends_at: datetime | None = None) -> str:
        hold = litigation_hold(f"hold_{next(self.ids)}", subject, *datasets, placed_at=self.clock.now)
        hold = hold.model_copy(update={"ends_at": ends_at})
        await self.retention.place_hold(hold)
        placed = LegalHoldPlaced(
            producer="intake",
            subject_id=subject,
            hold_id=hold.hold_id,
            datasets=datasets,
            legal_basis=hold.legal_basis,
            legal_ref=hold.legal_ref,
            ends_at=ends_at,
        )
        await self.deliver(await purger.on_hold_placed(placed, self.purger))
        return hold.hold_id

    async def release(self, hold_id: str) -> None:
        hold = await self.retention.hold(hold_id)
        assert hold is not None
        await self.retention.release_hold(hold_id, by="legal", at=self.clock.now)
        released = LegalHoldReleased(
            producer="intake", subject_id=hold.subject_id, hold_id=hold_id, datasets=hold.datasets
        )
        await self.deliver(await purger.on_hold_released(released, self.purger))

    async def set_rules(self, *rules: Rule) -> None:
        current = await self.retention.rule_set()
        await self.retention.replace_rules(rules, expected_version=current.version, by="dpo", at=self.clock.now)
        changed = RetentionRulesChanged(
            producer="intake", rule_ids=tuple(r.rule_id for r in rules) or ("none",), version=current.version + 1
        )
        await self.deliver(await purger.on_rules_changed(changed, self.purger))

    async def night(self, after: timedelta = DAY) -> purger.NightlyReport:
        """Time passes; then the scheduled jobs run: ended rules and holds, the nightly purge, key shredding."""
        self.clock.now += after
        await self.deliver(await purger.release_ended(self.purger))
        report = await purger.nightly_purge(self.purger, pause_s=0)
        await self.deliver(report.hard_deleted)
        await self.deliver(await keyvault.shred_expired(self.vault))
        return report

    async def kept(self, subject: str) -> set[str]:
        rules = (await self.retention.rule_set()).rules
        return set(retained_datasets(rules, await self.retention.holds_for(subject), self.clock.now))

    def key_state(self, subject: str, dataset: str) -> str:
        record = self.keys.keys.get((subject, dataset))
        return "none" if record is None else record.state

    def live(self, dataset: str, subject: str) -> list[str]:
        return sorted(r for r, s in self.stores.records.get(dataset, {}).items() if s == subject)

    def last(self, kind: type[Event]) -> Event:
        return [e for e in self.emitted if isinstance(e, kind)][-1]


async def chain(grace: timedelta = timedelta(0)) -> Chain:
    c = Chain(grace=grace)
    await c.seed()
    return c


@pytest.mark.asyncio
async def test_a_hold_released_while_a_rule_still_keeps_invoices_leaves_the_invoices_key_active():
    c = await chain()
    await c.set_rules(TAX)
    hold = await c.hold("u1", "chat_messages")
    await c.request("u1")
    assert c.key_state("u1", "invoices") == "active" and c.key_state("u1", "chat_messages") == "active"
    await c.release(hold)
    follow_up = c.last(DeletionPurged)
    assert isinstance(follow_up, DeletionPurged) and follow_up.round == 1
    # The follow-up states every dataset: invoices still retained under the tax rule.
    outcomes = {o.dataset: o.outcome for o in follow_up.outcomes}
    assert set(outcomes) == set(DATAMAP.names)
    assert outcomes["invoices"] == "retained" and outcomes["chat_messages"] == "tagged"
    assert follow_up.result == "partial"
    keys = c.last(DeletionKeysDestroyed)
    assert isinstance(keys, DeletionKeysDestroyed) and keys.result == "partial"
    assert c.key_state("u1", "invoices") == "active"
    assert c.key_state("u1", "chat_messages") == "destroyed"
    assert len(c.live("invoices", "u1")) == 2


@pytest.mark.asyncio
async def test_a_hold_placed_after_tagging_keeps_the_records_through_the_nightly_purge_and_they_go_after_release():
    c = await chain(grace=timedelta(days=3))
    request_id = await c.request("u1")
    assert c.key_state("u1", "chat_messages") == "disabled"
    hold = await c.hold("u1", "chat_messages")
    held = c.last(DeletionHeld)
    assert isinstance(held, DeletionHeld) and held.request_id == request_id
    assert held.records_kept == ("chat_messages",)
    restored = c.last(DeletionKeysHeld)
    assert isinstance(restored, DeletionKeysHeld) and [k.dataset for k in restored.restored] == ["chat_messages"]
    assert c.key_state("u1", "chat_messages") == "active"  # restored inside the grace window
    report = await c.night()
    assert report.deferred == 1
    assert len(c.live("chat_messages", "u1")) == 2  # kept through the nightly purge
    assert c.live("accounts", "u1") == []  # what no hold keeps went
    await c.release(hold)
    assert c.key_state("u1", "chat_messages") == "disabled"  # destroyed again, by the follow-up
    await c.night()
    assert c.live("chat_messages", "u1") == []


@pytest.mark.asyncio
async def test_a_hold_placed_after_the_keys_were_shredded_reports_them_as_unrestorable():
    c = await chain()
    await c.request("u2")
    await c.hold("u2", "chat_messages", "profiles")
    answer = c.last(DeletionKeysHeld)
    assert isinstance(answer, DeletionKeysHeld)
    assert sorted(k.dataset for k in answer.unrestorable) == ["chat_messages", "profiles"]
    assert answer.restored == ()


@pytest.mark.asyncio
async def test_a_rule_whose_end_date_passes_frees_its_data_with_no_other_change():
    c = await chain()
    await c.set_rules(TAX.model_copy(update={"expires_at": T0 + 2 * DAY}))
    await c.request("u1")
    await c.night()
    assert len(c.live("invoices", "u1")) == 2 and c.key_state("u1", "invoices") == "active"
    await c.night()  # the rule ended during this day
    follow_up = c.last(DeletionPurged)
    assert isinstance(follow_up, DeletionPurged) and follow_up.round == 1
    assert {o.dataset: o.outcome for o in follow_up.outcomes}["invoices"] == "erased"
    assert c.live("invoices", "u1") == [] and c.key_state("u1", "invoices") == "destroyed"


@pytest.mark.asyncio
async def test_a_rule_change_reads_only_the_requests_whose_kept_datasets_it_may_have_freed():
    c = await chain()
    await c.set_rules(TAX)
    for subject in SUBJECTS:
        await c.request(subject)
    asked: list[str] = []
    in_force = c.retention.in_force

    async def counting(subject: str) -> Any:
        asked.append(subject)
        return await in_force(subject)

    c.retention.in_force = counting  # type: ignore[method-assign]
    fraud = Rule(rule_id="fraud-5y", datasets=("profiles",), legal_basis="legitimate interest", legal_ref="AML §8")
    await c.set_rules(TAX, fraud)
    assert asked == []  # the tax rule still covers every kept invoice: no request is read
    assert all(len(c.live("invoices", s)) == 2 for s in SUBJECTS)
    await c.set_rules(fraud)  # the tax rule is gone: every request that kept invoices is looked at again
    assert sorted(set(asked)) == sorted(SUBJECTS)  # (keyvault asks too, for the keys of the follow-ups)
    assert all(c.live("invoices", s) == [] and c.key_state(s, "invoices") == "destroyed" for s in SUBJECTS)


@pytest.mark.asyncio
async def test_a_hold_with_an_end_date_frees_what_it_kept_once_it_ends():
    c = await chain()
    await c.hold("u3", "profiles", ends_at=T0 + 36 * HOUR)
    await c.request("u3")
    assert len(c.live("profiles", "u3")) == 2
    await c.night()
    assert len(c.live("profiles", "u3")) == 2
    await c.night()
    assert c.live("profiles", "u3") == [] and c.key_state("u3", "profiles") == "destroyed"


@pytest.mark.asyncio
async def test_a_key_of_a_dataset_not_in_the_data_map_is_left_and_reported():
    c = await chain()
    await keyvault.current_key(c.vault, "u1", "legacy_crm")
    await c.request("u1")
    keys = c.last(DeletionKeysDestroyed)
    assert isinstance(keys, DeletionKeysDestroyed)
    assert [(k.dataset, k.reason) for k in keys.left] == [
        ("legacy_crm", "its dataset is not in the data map"),
        ("usage_daily", "its dataset is exempt (anonymised)"),
    ]
    assert c.key_state("u1", "legacy_crm") == "active"


@pytest.mark.asyncio
async def test_keyvault_keeps_a_key_that_a_hold_placed_since_the_purge_keeps_even_if_the_report_says_erased():
    c = await chain()
    await c.request("u1")
    report = c.last(DeletionPurged)
    assert isinstance(report, DeletionPurged)
    await keyvault.current_key(c.vault, "u1", "profiles")  # new data since; the key is active again
    await c.retention.place_hold(
        Hold(
            hold_id="hold_x",
            subject_id="u1",
            datasets=("profiles",),
            reason="fraud",
            legal_basis="legal claims",
            legal_ref="case 9",
            placed_by="legal",
            placed_at=c.clock.now,
        )
    )
    replayed = report.model_copy(update={"event_id": report.event_id.__class__(int=1)})
    [answer] = await keyvault.destroy_keys(replayed, c.vault)
    assert isinstance(answer, DeletionKeysDestroyed)
    assert [(k.dataset, k.rule_id) for k in answer.retained] == [("profiles", "hold_x")]
    assert c.key_state("u1", "profiles") == "active"


@pytest.mark.asyncio
async def test_shredding_one_key_by_hand_is_refused_while_a_rule_keeps_its_dataset():
    c = await chain()
    await c.set_rules(TAX)
    with pytest.raises(keyvault.KeyRetainedError, match="tax-10y"):
        await keyvault.shred_now(c.vault, "u1", "invoices", request_id="req_x")
    assert c.key_state("u1", "invoices") == "active"


@pytest.mark.asyncio
async def test_an_ended_grace_window_does_not_shred_a_key_that_a_rule_now_keeps():
    c = await chain(grace=timedelta(days=1))
    await c.request("u1")
    assert c.key_state("u1", "invoices") == "disabled"
    await c.set_rules(TAX)
    await c.night(after=2 * DAY)
    assert c.key_state("u1", "invoices") == "disabled"  # deferred, not shredded
    await c.set_rules()
    await c.night()
    assert c.key_state("u1", "invoices") == "destroyed"


@pytest.mark.asyncio
async def test_a_backup_holding_a_held_dataset_outlives_its_retention_until_the_hold_is_released():
    c = await chain()
    backups = InMemoryBackups()
    old = backups.take(T0, datasets=("profiles", "accounts"))
    hold = await c.hold(None, "profiles")
    c.clock.now += 100 * DAY
    await purger.expire_backups(c.purger, backups, retention=90 * DAY)
    assert [b.backup_id for b in await backups.live()] == [old.backup_id]
    await c.release(hold)
    await purger.expire_backups(c.purger, backups, retention=90 * DAY)
    assert await backups.live() == []


# The property test: random sequences, checked after every step.

Step = tuple[str, ...] | tuple[object, ...]
subjects = st.sampled_from(SUBJECTS)
some_datasets = st.lists(st.sampled_from(PERSONAL), min_size=1, max_size=3, unique=True).map(tuple)
ends = st.one_of(st.none(), st.integers(min_value=1, max_value=72))  # hours from now
steps = st.one_of(
    st.tuples(st.just("request"), subjects),
    st.tuples(st.just("hold"), st.one_of(st.none(), subjects), some_datasets, ends),
    st.tuples(st.just("release"), st.integers(min_value=0, max_value=5)),
    st.tuples(st.just("rules"), st.lists(st.tuples(some_datasets, ends), max_size=2)),
    st.tuples(st.just("night"), st.integers(min_value=1, max_value=48)),
)


async def _apply(c: Chain, step: tuple[object, ...], holds: list[str]) -> None:
    match step:
        case ("request", str(subject)):
            await c.request(subject)
        case ("hold", subject, tuple(datasets), end):
            ends_at = None if end is None else c.clock.now + int(end) * HOUR  # type: ignore[call-overload]
            holds.append(await c.hold(subject if isinstance(subject, str) else None, *datasets, ends_at=ends_at))
        case ("release", int(n)):
            if holds:
                await c.release(holds[n % len(holds)])
        case ("rules", list(specs)):
            rules = [
                Rule(
                    rule_id=f"rule-{i}",
                    datasets=datasets,
                    legal_basis="legal obligation",
                    legal_ref=f"law {i}",
                    expires_at=None if end is None else c.clock.now + end * HOUR,
                )
                for i, (datasets, end) in enumerate(specs)
            ]
            await c.set_rules(*rules)
        case ("night", int(hours)):
            await c.night(after=hours * HOUR)


async def _check_sequence(grace_days: int, sequence: list[tuple[object, ...]]) -> None:
    c = await chain(grace=timedelta(days=grace_days))
    holds: list[str] = []
    requested_at: dict[str, datetime] = {}
    for step in sequence:
        records_before = {d: dict(r) for d, r in c.stores.records.items()}
        keys_before = {k: r.state for k, r in c.keys.keys.items()}
        await _apply(c, step, holds)
        if step[0] == "request":
            requested_at.setdefault(str(step[1]), c.clock.now)
        kept = {s: await c.kept(s) for s in SUBJECTS}
        # 1. Nothing retained at this moment was destroyed by this step: no record, no key.
        for dataset, before in records_before.items():
            for record, subject in before.items():
                if record not in c.stores.records.get(dataset, {}):
                    assert dataset not in kept[subject], f"{step}: erased a kept record {record}"
        for (subject, dataset), state in keys_before.items():
            now = c.keys.keys[(subject, dataset)].state
            if (state, now) in {("active", "disabled"), ("active", "destroyed"), ("disabled", "destroyed")}:
                assert dataset not in kept[subject], f"{step}: destroyed the kept key {subject}/{dataset}"
        # 2. After a night, nothing unretained of a requested subject outlives its deadline: what is not kept
        #    is gone, or tagged and not yet due, and its key is no longer usable.
        if step[0] == "night":
            for subject, since in requested_at.items():
                for dataset in PERSONAL:
                    if dataset in kept[subject]:
                        continue
                    due = [
                        c2
                        for c2 in c.stores.chunks.values()
                        if c2.dataset == dataset and c2.subject_id == subject and not c2.done
                    ]
                    waiting = {r for chunk in due if chunk.purge_after > c.clock.now for r in chunk.ids}
                    left = [r for r in c.live(dataset, subject) if r not in waiting]
                    assert left == [], f"{step}: {subject}/{dataset} outlived its deadline (asked {since})"
                    assert c.key_state(subject, dataset) != "active", f"{step}: {subject}/{dataset} key active"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grace_days=st.sampled_from([0, 2]), sequence=st.lists(steps, min_size=1, max_size=12))
def test_no_random_sequence_destroys_what_is_kept_or_keeps_what_is_not(
    grace_days: int, sequence: list[tuple[object, ...]]
) -> None:
    asyncio.run(_check_sequence(grace_days, sequence))
