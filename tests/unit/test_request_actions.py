"""Denying and cancelling a request, with in-memory fakes: possible only in its cooling-off period, never after the
purger got it, each at most once, and never both.

The cooling-off period holds ``deletion.requested`` back; a denial or cancellation takes it out in the same write
that stores its own event, and the relay's hand-over moves it to the outbox, so exactly one of them wins.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.intake import handlers
from services.intake.acknowledgements import Acknowledgements
from services.intake.actions import RequestActions, TooLateError
from services.intake.adapters.memory import InMemoryRequestStore
from services.intake.deletions import Deletions
from services.intake.model import AuthorisedAgent
from services.intake.settings import IntakeSettings
from services.intake.verification import CancelLinks, InvalidLinkError, LinkClaims
from shared.contacts import open_addresses
from shared.events import ActingAgent, DeletionCancelled, DeletionDenied, DeletionRequested
from shared.fakes import InMemoryContactStore, InMemoryKeyvault
from tests.support import UNIT_DATAMAP
from tests.unit.test_intake import LAWS, T0, Relay, accounts

HOUR = timedelta(hours=1)
LINKS = CancelLinks("unit-link-secret-of-at-least-32-bytes!!", "lethe", "https://intake.example.test")


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self):
        return self.now


def lethe(cooling_off: timedelta = HOUR, start: datetime = T0, **addresses: str):
    """Intake's use cases on one in-memory store, with a clock the test moves."""
    clock, relay, store = Clock(start), Relay(), InMemoryRequestStore()
    deletions = Deletions(
        settings=IntakeSettings(backups_days=90, cooling_off_s=cooling_off.total_seconds()),
        datamap=UNIT_DATAMAP,
        requests=store,
        accounts=accounts(**addresses),
        contacts=InMemoryContactStore(),
        keyvault=InMemoryKeyvault(),
        clock=clock,
        kick_relay=relay.kick,
        jurisdictions=LAWS,
    )
    return deletions, RequestActions(store, LAWS, clock, relay.kick, LINKS), clock


def published(store: InMemoryRequestStore, kind: type) -> list:
    return [e for e in store.outbox if isinstance(e, kind)]


async def fold_outbox(store: InMemoryRequestStore, clock: Clock) -> None:
    """What the relay and intake's own status consumer do with the outbox."""
    for event in list(store.outbox):
        await handlers.track(event, store, now=clock())
    store.outbox.clear()


@pytest.mark.asyncio
async def test_in_its_cooling_off_period_a_request_is_held_back_from_the_purger_until_its_time():
    deletions, _, _ = lethe()
    _, record = await deletions.start("u1", requested_by="svc", channel="api")
    store = deletions.requests
    assert record.status == "received" and record.erasure_starts_at == T0 + HOUR
    assert published(store, DeletionRequested) == []  # held, not in the outbox
    assert await store.hand_over_due(T0 + HOUR - timedelta(seconds=1)) == 0
    assert await store.hand_over_due(T0 + HOUR) == 1
    [event] = published(store, DeletionRequested)
    assert event.request_id == record.request_id
    assert await store.hand_over_due(T0 + 2 * HOUR) == 0  # once


@pytest.mark.asyncio
async def test_a_denial_in_the_window_means_the_purger_never_gets_the_request_and_the_person_is_told_why():
    deletions, act, clock = lethe()
    _, record = await deletions.start("u1", requested_by="svc", channel="api")
    clock.now = T0 + timedelta(minutes=10)
    basis = "Art. 17(3)(e) GDPR: the data is needed to defend a legal claim"
    denial = await act.deny(record.request_id, legal_basis=basis, reference="CASE-2026-17", by="dpo")
    assert (denial.jurisdiction, denial.legal_ref) == ("gdpr", "Art. 17(3) and Art. 12(4) GDPR")
    assert "Art. 77 GDPR" in (denial.complaint or "")
    again = await act.deny(record.request_id, legal_basis="another basis", reference="OTHER", by="someone")
    assert again == denial  # a repeated call: the first denial stands, stored once
    with pytest.raises(TooLateError, match="already denied"):
        await act.cancel(record.request_id, by="u1", via="token", reason=None)
    store = deletions.requests
    assert published(store, DeletionDenied) == [denial]
    assert await store.hand_over_due(T0 + 2 * HOUR) == 0 and published(store, DeletionRequested) == []
    await fold_outbox(store, clock)
    ended = await store.get(record.request_id)
    assert ended.status == "denied" and not ended.is_open
    assert ended.closure.reference == "CASE-2026-17" and ended.closure.denied_by == "dpo"
    assert await store.open_request_ids() == []  # the subject may ask again
    replayed = await act.deny(record.request_id, legal_basis=basis, reference="x", by="dpo")
    assert (replayed.event_id, replayed.reference, replayed.occurred_at) == (denial.event_id, "CASE-2026-17", clock())
    started, fresh = await deletions.start("u1", requested_by="svc", channel="api")
    assert started and fresh.request_id != record.request_id


@pytest.mark.asyncio
async def test_once_the_window_ended_and_the_purger_has_it_a_cancellation_is_refused_with_when_erasure_started():
    deletions, act, clock = lethe()
    _, record = await deletions.start("u1", requested_by="svc", channel="api")
    clock.now = T0 + 2 * HOUR
    assert await deletions.requests.hand_over_due(clock()) == 1
    with pytest.raises(TooLateError, match="erasure started at 2026-01-01 01:00 UTC"):
        await act.cancel(record.request_id, by="u1", via="token", reason="changed my mind")
    with pytest.raises(TooLateError, match="erasure started"):
        await act.deny(record.request_id, legal_basis="b", reference="r", by="dpo")
    assert published(deletions.requests, DeletionCancelled) == []


@pytest.mark.asyncio
async def test_without_a_cooling_off_period_erasure_starts_at_once_and_nothing_can_be_withdrawn():
    deletions, act, _ = lethe(cooling_off=timedelta(0))
    _, record = await deletions.start("u1", requested_by="svc", channel="api")
    assert record.erasure_starts_at is None and len(published(deletions.requests, DeletionRequested)) == 1
    with pytest.raises(TooLateError, match="erasure started at 2026-01-01 00:00 UTC"):
        await act.cancel(record.request_id, by="ops", via="operator", reason=None)


@pytest.mark.asyncio
async def test_the_acknowledgement_mails_cancel_link_cancels_its_own_request_only_and_only_until_erasure_starts():
    # Links are JWTs checked against the wall clock: this test's clock starts now.
    start = datetime.now(UTC).replace(microsecond=0)
    deletions, act, clock = lethe(start=start, u1="ada@example.test", u2="bob@example.test")
    _, mine = await deletions.start("u1", requested_by="svc", channel="api")
    _, other = await deletions.start("u2", requested_by="svc", channel="api")
    sent: list = []

    async def send(message) -> None:
        sent.append(message)

    job = Acknowledgements(
        deletions.requests, deletions.contacts, deletions.keyvault, LAWS, send, "p@example.test", clock, links=LINKS
    )
    assert await job.run() == 2  # GDPR sets no time to acknowledge, but the cooling-off period wants the link
    body = next(m for m in sent if m["To"] == "ada@example.test").get_content()
    assert f"Erasure starts on {start + HOUR:%Y-%m-%d at %H:%M UTC}" in body
    url = next(line.strip() for line in body.splitlines() if "/cancel?token=" in line)
    assert url.startswith(f"https://intake.example.test/deletion_requests/{mine.request_id}/cancel?token=")
    token = url.split("token=", 1)[1]
    with pytest.raises(InvalidLinkError, match="another request"):
        await act.cancel_by_link(other.request_id, token, reason=None)
    expired = LINKS.url(LinkClaims(mine.request_id, "u1"), now=start - 2 * HOUR, until=start - HOUR)
    expired = expired.split("token=")[1]
    with pytest.raises(InvalidLinkError, match="expired"):
        await act.cancel_by_link(mine.request_id, expired, reason=None)
    cancelled = await act.cancel_by_link(mine.request_id, token, reason="I changed my mind")
    assert (cancelled.via, cancelled.cancelled_by, cancelled.reason) == ("link", "u1", "I changed my mind")
    await fold_outbox(deletions.requests, clock)
    ended = await deletions.requests.get(mine.request_id)
    assert ended.status == "cancelled" and ended.closure.via == "link"
    assert await job.run() == 0  # an ended request is not acknowledged again


# One request, and a random interleaving of what may happen to it: an operator denies it, the person cancels it,
# time passes and the relay hands what is due over, intake folds what was published.
STEPS = st.lists(st.sampled_from(["deny", "cancel", "tick", "relay"]), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_any_sequence_ends_in_exactly_one_of_erasure_or_withdrawal_and_a_refusal_always_says_why(steps):
    asyncio.run(_run_sequence(steps))


async def _run_sequence(steps: list[str]) -> None:
    deletions, act, clock = lethe()
    _, record = await deletions.start("u1", requested_by="svc", channel="api")
    store = deletions.requests
    seen: list = []
    for step in steps:
        if step == "tick":
            clock.now += timedelta(minutes=25)
        elif step == "relay":
            await store.hand_over_due(clock())
            seen += store.outbox
            await fold_outbox(store, clock)
        else:
            try:
                if step == "deny":
                    await act.deny(record.request_id, legal_basis="b", reference="r", by="dpo")
                else:
                    await act.cancel(record.request_id, by="u1", via="token", reason=None)
            except TooLateError as exc:
                assert str(exc)  # a refusal always says why, and comes only once it is handed over or withdrawn
                handed = any(isinstance(e, DeletionRequested) for e in [*seen, *store.outbox])
                withdrawn_by = store.withdrawn.get(record.request_id)
                assert handed or (withdrawn_by is not None and withdrawn_by.type != f"deletion.{step}")
    clock.now += 2 * HOUR
    await store.hand_over_due(clock())
    seen += store.outbox
    await fold_outbox(store, clock)
    handed_over = [e for e in seen if isinstance(e, DeletionRequested)]
    withdrawn = [e for e in seen if isinstance(e, DeletionDenied | DeletionCancelled)]
    assert len(handed_over) + len(withdrawn) == 1, seen  # the purger got it, or it was withdrawn, once: never both
    final = await store.get(record.request_id)
    if withdrawn:
        assert final.status == withdrawn[0].type.removeprefix("deletion.") and not final.is_open
    else:
        assert final.status == "purging" and final.closure is None


@pytest.mark.asyncio
async def test_an_authorised_agents_request_records_the_agent_and_its_proof_and_the_agent_is_copied_on_notices():
    start = datetime.now(UTC).replace(microsecond=0)
    deletions, _, clock = lethe(start=start, u1="ada@example.test")
    agent = AuthorisedAgent("Privacy Helpers Ltd", "agent@helpers.example", "POA-2026-0042")
    _, record = await deletions.start("u1", requested_by="svc", channel="api", agent=agent)
    assert record.agent == ActingAgent(name="Privacy Helpers Ltd", proof_ref="POA-2026-0042")
    contact = await deletions.contacts.get(record.request_id)
    assert contact is not None and len(contact.copies) == 1
    assert "agent@helpers.example" not in repr(contact)  # sealed like the person's address
    assert await open_addresses(deletions.keyvault, contact) == ("ada@example.test", ["agent@helpers.example"])
    await deletions.requests.hand_over_due(start + 2 * HOUR)
    [event] = published(deletions.requests, DeletionRequested)
    assert event.agent == record.agent and "agent@" not in event.model_dump_json()  # no address on the bus
    sent: list = []

    async def send(message) -> None:
        sent.append(message)

    job = Acknowledgements(
        deletions.requests, deletions.contacts, deletions.keyvault, LAWS, send, "p@example.test", clock, links=LINKS
    )
    assert await job.run() == 1
    [mail] = sent
    assert (mail["To"], mail["Cc"]) == ("ada@example.test", "agent@helpers.example")


@pytest.mark.asyncio
async def test_an_agent_for_a_person_lethe_has_no_address_for_gets_the_notices_alone():
    deletions, _, _ = lethe()  # no account address for u9
    agent = AuthorisedAgent("Helper", "agent@helpers.example", "proof-1")
    _, record = await deletions.start("u9", requested_by="svc", channel="api", agent=agent)
    contact = await deletions.contacts.get(record.request_id)
    assert contact is not None and contact.copies == ()
    assert await open_addresses(deletions.keyvault, contact) == ("agent@helpers.example", [])
