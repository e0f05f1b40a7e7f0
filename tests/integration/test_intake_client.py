"""The readers' ports against both sides: the rules and holds in force (the purger's and keyvault's
RetentionReader) and a request's contact (notifier's ContactStore), from the in-memory fake and from a real intake
through shared.intake_client. Plus what the client does when intake refuses it or is away."""

from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from shared.auth import AUDIT_READ, CONTACTS_READ, RETENTION_READ
from shared.contacts import Contact
from shared.fakes import InMemoryContactStore, InMemoryRetentionStore
from shared.intake_client import IntakeClient
from shared.retention import Hold, Rule
from shared.settings import AuthSettings
from tests.support import free_port, running_intake

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]
AUTH = AuthSettings(jwt_secret="intake-client-secret-of-at-least-32-bytes")
NOW = datetime.now(UTC).replace(microsecond=0)
TAX = Rule(rule_id="tax-10y", datasets=("invoices",), legal_basis="legal obligation", legal_ref="HGB §257")


def hold(hold_id: str, subject: str | None, *, ends_at: datetime | None = None) -> Hold:
    return Hold(
        hold_id=hold_id,
        subject_id=subject,
        datasets=("profiles",),
        reason="litigation",
        legal_basis="legal claims",
        legal_ref="Art. 17(3)(e) GDPR",
        placed_by="legal",
        placed_at=NOW,
        ends_at=ends_at,
    )


@pytest_asyncio.fixture(params=["fake", "intake"])
async def sides(request):
    """(writer of intake's stores, reader the purger/keyvault/notifier use) for each side."""
    if request.param == "fake":
        retention, contacts = InMemoryRetentionStore(), InMemoryContactStore()
        yield retention, contacts, retention, contacts
        return
    kafka, mongo = request.getfixturevalue("kafka_bootstrap"), request.getfixturevalue("mongo_url")
    async with running_intake(kafka, mongo, AUTH) as intake:
        retention_reader = IntakeClient(intake.url, token=intake.token(RETENTION_READ).get_secret_value())
        contact_reader = IntakeClient(intake.url, token=intake.token(CONTACTS_READ).get_secret_value())
        yield intake.retention, intake.contacts, retention_reader, contact_reader
        await retention_reader.close()
        await contact_reader.close()


async def test_the_rules_in_force_and_their_version(sides):
    writer, _, reader, _ = sides
    assert (await reader.rule_set()).version == 0
    await writer.replace_rules((TAX,), expected_version=0, by="dpo", at=NOW)
    read = await reader.rule_set()
    assert (read.version, read.rules, read.changed_by) == (1, (TAX,), "dpo")


async def test_a_subjects_holds_are_its_own_and_everyones_and_never_a_released_one(sides):
    writer, _, reader, _ = sides
    await writer.place_hold(hold("hold_a", "u1"))
    await writer.place_hold(hold("hold_all", None))
    await writer.place_hold(hold("hold_b", "u2"))
    await writer.place_hold(hold("hold_gone", "u1"))
    await writer.release_hold("hold_gone", by="legal", at=NOW)
    assert sorted(h.hold_id for h in await reader.holds_for("u1")) == ["hold_a", "hold_all"]
    assert sorted(h.hold_id for h in await reader.active_holds()) == ["hold_a", "hold_all", "hold_b"]


async def test_the_retention_in_force_for_a_subject_is_the_rule_set_and_its_holds_in_one_answer(sides):
    writer, _, reader, _ = sides
    await writer.replace_rules((TAX,), expected_version=0, by="dpo", at=NOW)
    await writer.place_hold(hold("hold_a", "u1"))
    await writer.place_hold(hold("hold_all", None))
    await writer.place_hold(hold("hold_b", "u2"))
    state = await reader.in_force("u1")
    assert (state.rules.version, state.rules.rules) == (1, (TAX,))
    assert sorted(h.hold_id for h in state.holds) == ["hold_a", "hold_all"]
    assert set(state.retained(NOW)) == {*TAX.datasets, *hold("hold_a", "u1").datasets}


async def test_the_holds_ending_in_a_window(sides):
    writer, _, reader, _ = sides
    await writer.place_hold(hold("hold_soon", "u1", ends_at=NOW + timedelta(hours=1)))
    await writer.place_hold(hold("hold_later", "u1", ends_at=NOW + timedelta(days=3)))
    await writer.place_hold(hold("hold_never", "u1"))
    ending = await reader.holds_ending(after=NOW, until=NOW + timedelta(days=1))
    assert [h.hold_id for h in ending] == ["hold_soon"]
    assert {h.hold_id for h in await reader.holds_ending(after=None, until=NOW + timedelta(days=4))} == {
        "hold_soon",
        "hold_later",
    }


async def test_a_requests_contact_or_none(sides):
    _, writer, _, reader = sides
    await writer.put(Contact("req-1", "u1", "lethe:v1:sealed"))
    assert await reader.contact("req-1") == Contact("req-1", "u1", "lethe:v1:sealed")
    assert await reader.contact("req-none") is None


async def test_intake_refusing_the_token_or_away_is_a_connection_error_to_wait_out(kafka_bootstrap, mongo_url):
    async with running_intake(kafka_bootstrap, mongo_url, AUTH) as intake:
        wrong_scope = IntakeClient(intake.url, token=intake.token(AUDIT_READ).get_secret_value())
        with pytest.raises(ConnectionError, match="403"):
            await wrong_scope.rule_set()
        with pytest.raises(ConnectionError, match="403"):
            await wrong_scope.contact("req-1")  # a retention reader may not read contacts, nor the reverse
        assert await wrong_scope.ping()  # intake is up: /readyz of the reader is fine, its calls are refused
        await wrong_scope.close()
    away = IntakeClient(f"http://127.0.0.1:{free_port()}", token="t")
    with pytest.raises(ConnectionError, match="does not answer"):
        await away.holds_for("u1")
    assert not await away.ping()
    await away.close()
