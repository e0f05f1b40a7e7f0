"""keyvault's decisions with an in-memory key store and a local keyring: issue, destroy, grace, rotate."""

import base64
import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from services.keyvault import handlers
from services.keyvault.adapters.kek import LocalKeyring
from services.keyvault.adapters.memory import InMemoryKeyStore
from services.keyvault.handlers import KeyUnavailableError, Vault
from shared.crypto import DecryptionError, decrypt_field, encrypt_field
from shared.datamap import DataMap, Dataset, MongoLocation
from shared.events import DatasetOutcome, DeletionPurged
from shared.fakes import InMemoryRetentionStore

pytestmark = pytest.mark.asyncio

KEK_1 = os.urandom(32)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


DATAMAP = DataMap(
    datasets=tuple(
        Dataset(name=name, store="mongo", mongo=MongoLocation(collection=name, subject_field="user_id"))
        for name in ("profiles", "invoices", "chat_messages", "accounts", "usage_daily")
    )
)


def vault(
    grace_days: int = 0, keyring: LocalKeyring | None = None, retention: InMemoryRetentionStore | None = None
) -> Vault:
    return Vault(
        store=InMemoryKeyStore(),
        kek=keyring or LocalKeyring({"kek-1": KEK_1}, "kek-1"),
        clock=Clock(),
        retention=retention or InMemoryRetentionStore(),
        datamap=DATAMAP,
        grace=timedelta(days=grace_days),
    )


def purged(subject_id: str, *, retained: tuple[str, ...] = ()) -> DeletionPurged:
    outcomes = [DatasetOutcome(dataset="profiles", store="mongo", outcome="erased")]
    outcomes += [
        DatasetOutcome(
            dataset=ds,
            store="mongo",
            outcome="retained",
            rule_id="tax-10y",
            legal_basis="legal obligation",
            legal_ref="HGB §257",
        )
        for ds in retained
    ]
    return DeletionPurged(request_id="req-1", subject_id=subject_id, producer="purger", outcomes=tuple(outcomes))


async def test_a_subject_gets_one_key_per_dataset_and_keeps_it():
    v = vault()
    first = await handlers.current_key(v, "u1", "profiles")
    assert await handlers.current_key(v, "u1", "profiles") == first
    assert await handlers.current_key(v, "u1", "invoices") != first


async def test_no_two_subjects_share_a_data_key():
    v = vault()
    keys = [await handlers.current_key(v, f"u{i}", "profiles") for i in range(2000)]
    assert len({k.material for k in keys}) == 2000
    assert len({k.key_id for k in keys}) == 2000


async def test_keys_are_stored_only_wrapped():
    v = vault()
    key = await handlers.current_key(v, "u1", "profiles")
    record = await v.store.get("u1", "profiles")
    assert record.wrapped is not None
    assert key.material not in record.wrapped


async def test_destruction_makes_every_copy_unreadable_and_spares_other_subjects():
    v = vault()
    mine = await handlers.current_key(v, "u1", "profiles")
    theirs = await handlers.current_key(v, "u2", "profiles")
    backup_copy = encrypt_field(mine, subject_id="u1", dataset="profiles", plaintext=b"Ada")
    other = encrypt_field(theirs, subject_id="u2", dataset="profiles", plaintext=b"Bob")

    [event] = await handlers.destroy_keys(purged("u1"), v)

    assert [k.key_id for k in event.destroyed] == [mine.key_id]
    with pytest.raises(KeyUnavailableError, match="destroyed"):
        await handlers.key_by_id(v, "u1", "profiles", mine.key_id)
    assert (await v.store.get("u1", "profiles")).wrapped is None
    key = await handlers.key_by_id(v, "u2", "profiles", theirs.key_id)
    assert decrypt_field(key, subject_id="u2", dataset="profiles", ciphertext=other) == b"Bob"
    # A fresh key for the same subject and dataset cannot open what the destroyed one sealed.
    fresh = await handlers.current_key(v, "u1", "profiles")
    assert fresh.key_id != mine.key_id
    with pytest.raises(DecryptionError):
        decrypt_field(fresh, subject_id="u1", dataset="profiles", ciphertext=backup_copy)


async def test_keys_of_retained_datasets_are_kept_and_reported_with_their_reason():
    v = vault()
    await handlers.current_key(v, "u1", "profiles")
    invoices = await handlers.current_key(v, "u1", "invoices")

    [event] = await handlers.destroy_keys(purged("u1", retained=("invoices",)), v)

    assert [k.dataset for k in event.destroyed] == ["profiles"]
    [kept] = event.retained
    assert (kept.dataset, kept.key_id, kept.legal_ref) == ("invoices", invoices.key_id, "HGB §257")
    assert event.result == "partial"
    assert await handlers.key_by_id(v, "u1", "invoices", invoices.key_id) == invoices


async def test_destroying_twice_is_a_no_op_that_emits_the_same_event():
    v = vault()
    await handlers.current_key(v, "u1", "profiles")
    event = purged("u1")
    [first] = await handlers.destroy_keys(event, v)
    [again] = await handlers.destroy_keys(event, v)
    assert again == first


async def test_a_later_purge_after_a_hold_is_released_destroys_the_kept_keys():
    v = vault()
    await handlers.current_key(v, "u1", "profiles")
    invoices = await handlers.current_key(v, "u1", "invoices")
    await handlers.destroy_keys(purged("u1", retained=("invoices",)), v)

    released = DeletionPurged(
        request_id="req-1",
        subject_id="u1",
        producer="purger",
        outcomes=(DatasetOutcome(dataset="invoices", store="mongo", outcome="erased"),),
    )
    [event] = await handlers.destroy_keys(released, v)

    assert invoices.key_id in {k.key_id for k in event.destroyed}
    with pytest.raises(KeyUnavailableError):
        await handlers.key_by_id(v, "u1", "invoices", invoices.key_id)


async def test_in_the_grace_window_a_key_is_disabled_restorable_and_then_shredded():
    v = vault(grace_days=7)
    key = await handlers.current_key(v, "u1", "profiles")
    [event] = await handlers.destroy_keys(purged("u1"), v)
    assert event.grace_until == v.clock() + timedelta(days=7)
    with pytest.raises(KeyUnavailableError, match="disabled"):
        await handlers.key_by_id(v, "u1", "profiles", key.key_id)
    with pytest.raises(KeyUnavailableError, match="disabled"):
        await handlers.current_key(v, "u1", "profiles")

    restored = await handlers.restore(v, "u1", "profiles", restored_by="admin")
    assert restored.restored.key_id == key.key_id
    assert await handlers.key_by_id(v, "u1", "profiles", key.key_id) == key
    assert await handlers.shred_expired(v) == []

    await handlers.destroy_keys(purged("u1"), v)  # a second deletion request: a new window opens
    v.clock.now += timedelta(days=6)
    assert await handlers.shred_expired(v) == []
    v.clock.now += timedelta(days=2)
    [shredded] = await handlers.shred_expired(v)
    assert [k.key_id for k in shredded.shredded] == [key.key_id]
    assert (await v.store.get("u1", "profiles")).wrapped is None
    with pytest.raises(KeyUnavailableError):
        await handlers.restore(v, "u1", "profiles", restored_by="admin")
    assert await handlers.shred_expired(v) == []


async def test_rotating_the_kek_rewraps_keys_without_changing_them():
    v = vault()
    keys = [await handlers.current_key(v, f"u{i}", "profiles") for i in range(20)]
    sealed = [encrypt_field(k, subject_id=f"u{i}", dataset="profiles", plaintext=b"x") for i, k in enumerate(keys)]
    kek_2 = os.urandom(32)
    v.kek = LocalKeyring({"kek-1": KEK_1, "kek-2": kek_2}, "kek-2")

    assert await handlers.rotate(v) == 20
    assert await handlers.rotate(v) == 0

    v.kek = LocalKeyring({"kek-2": kek_2}, "kek-2")  # the old KEK can now be retired
    for i, text in enumerate(sealed):
        key = await handlers.key_by_id(v, f"u{i}", "profiles", keys[i].key_id)
        assert decrypt_field(key, subject_id=f"u{i}", dataset="profiles", ciphertext=text) == b"x"


async def test_a_keyring_must_hold_its_current_kek():
    with pytest.raises(ValueError, match="not in the keyring"):
        LocalKeyring.from_json(json.dumps({"current": "k2", "keys": {"k1": base64.b64encode(KEK_1).decode()}}))


async def test_the_grace_window_is_at_most_30_days():
    with pytest.raises(ValueError):
        vault(grace_days=31)


async def test_one_key_can_be_shredded_at_once_even_with_a_grace_window_and_only_once():
    v = vault(grace_days=7)
    contact = await handlers.current_key(v, "u1", "contact")
    profile = await handlers.current_key(v, "u1", "profiles")

    event = await handlers.shred_now(v, "u1", "contact", request_id="req-1")

    assert [k.key_id for k in event.shredded] == [contact.key_id]
    assert (await v.store.get("u1", "contact")).wrapped is None
    assert await handlers.key_by_id(v, "u1", "profiles", profile.key_id) == profile
    assert await handlers.shred_now(v, "u1", "contact", request_id="req-1") is None


async def test_the_contact_key_outlives_the_deletion_until_the_notice_is_sent():
    v = vault()
    contact = await handlers.current_key(v, "u1", "contact")
    await handlers.current_key(v, "u1", "profiles")
    [event] = await handlers.destroy_keys(purged("u1"), v)
    assert "contact" not in {k.dataset for k in event.destroyed}
    assert await handlers.key_by_id(v, "u1", "contact", contact.key_id) == contact
