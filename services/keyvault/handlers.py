"""What keyvault decides: issuing data keys, destroying them on deletion, the grace window, KEK rotation.

The functions take their dependencies (the key store, the KEK, the clock) and return what they decided;
publishing events is the wiring's job.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from services.keyvault.adapters.kek import KeyEncryptionKey
from services.keyvault.adapters.store import KeyRecord, KeyStore
from shared import topics
from shared.consumer import Handler
from shared.contacts import CONTACT_DATASET
from shared.crypto import DataKey, new_data_key
from shared.events import (
    DeletionKeysDestroyed,
    DeletionKeysRestored,
    DeletionKeysShredded,
    DeletionPurged,
    Event,
    KeyRef,
    RetainedKey,
)

log = structlog.get_logger(__name__)

PRODUCER = "keyvault"
# Event ids derived from the event they answer, so a replay emits the very same event (consumers dedupe on it).
_EVENT_IDS = uuid.UUID("3f7c2b1e-9a4d-4c1b-8e2f-6d5a4b3c2d1e")
MAX_GRACE = timedelta(days=30)


class KeyUnavailableError(Exception):
    """The key exists but may not be used: disabled in its grace window, or destroyed."""

    def __init__(self, state: str) -> None:
        super().__init__(f"the key is {state}")
        self.state = state


class UnknownKeyError(Exception):
    """No such key for this subject and dataset."""


class ConcurrentUpdateError(Exception):
    """Another writer changed the key first; the operation is retried from a fresh read."""


@dataclass
class Vault:
    """keyvault's dependencies."""

    store: KeyStore
    kek: KeyEncryptionKey
    clock: Callable[[], datetime]
    grace: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if not timedelta(0) <= self.grace <= MAX_GRACE:
            raise ValueError("the grace window is between 0 and 30 days")


def _context(subject_id: str, dataset: str, key_id: str) -> dict[str, str]:
    return {"subject_id": subject_id, "dataset": dataset, "key_id": key_id}


async def _unwrap(vault: Vault, record: KeyRecord) -> DataKey:
    assert record.wrapped is not None
    material = await vault.kek.unwrap(
        record.kek_id, record.wrapped, _context(record.subject_id, record.dataset, record.key_id)
    )
    return DataKey(record.key_id, material)


async def current_key(vault: Vault, subject_id: str, dataset: str) -> DataKey:
    """The subject's active key for the dataset, created on first use (or after the last one was destroyed)."""
    for _ in range(5):
        record = await vault.store.get(subject_id, dataset)
        if record is not None and record.state == "active":
            return await _unwrap(vault, record)
        if record is not None and record.state == "disabled":
            # Deletion is under way; new data for this subject waits for the window to end or a restore.
            raise KeyUnavailableError("disabled")
        key = new_data_key()
        kek_id, wrapped = await vault.kek.wrap(key.material, _context(subject_id, dataset, key.key_id))
        fresh = KeyRecord(subject_id, dataset, key.key_id, kek_id, wrapped, "active", vault.clock())
        if await vault.store.put_if_current(fresh, expected_key_id=record.key_id if record else None):
            log.info("key.created", subject_id=subject_id, dataset=dataset, key_id=key.key_id)
            return key
    raise ConcurrentUpdateError(f"could not create a key for {dataset} after 5 tries")


async def key_by_id(vault: Vault, subject_id: str, dataset: str, key_id: str) -> DataKey:
    """The key that opens a ciphertext, if it may still be used."""
    record = await vault.store.get(subject_id, dataset)
    if record is None:
        raise UnknownKeyError(f"no key for subject and dataset {dataset!r}")
    if record.key_id != key_id:
        # Only the current generation is kept; an older one was destroyed before it was replaced.
        raise KeyUnavailableError("destroyed")
    if record.state != "active":
        raise KeyUnavailableError(record.state)
    return await _unwrap(vault, record)


async def destroy(
    vault: Vault, record: KeyRecord, *, request_id: str | None, grace: timedelta | None = None
) -> KeyRecord:
    """Disable the key for the grace window, or destroy it at once; a key already gone stays as it is."""
    if record.state == "destroyed" or (record.state == "disabled" and grace is None):
        return record
    now = vault.clock()
    window = vault.grace if grace is None else grace
    if window > timedelta(0):
        changed = record.disabled(now, now + window, request_id)
        # Ledger first: a crash between the two writes leaves a ledger entry the shredder ignores.
        await vault.store.add_to_purge_ledger(changed)
    else:
        changed = record.destroyed(now, request_id)
    if not await vault.store.put_if_current(changed, expected_key_id=record.key_id):
        raise ConcurrentUpdateError(f"the key for {record.dataset} changed while being destroyed")
    log.info(
        "key.destroyed" if changed.state == "destroyed" else "key.disabled",
        subject_id=record.subject_id,
        dataset=record.dataset,
        key_id=record.key_id,
        purge_at=changed.purge_at,
    )
    return changed


async def destroy_keys(event: DeletionPurged, vault: Vault) -> Sequence[Event]:
    """Destroy the subject's keys for every dataset not retained; report both. A replay emits the same event."""
    prior = await vault.store.destruction(str(event.event_id))
    if prior is not None:
        return [DeletionKeysDestroyed.model_validate_json(prior)]
    kept = {o.dataset: o for o in event.outcomes if o.outcome == "retained"}
    destroyed: list[KeyRef] = []
    retained: list[RetainedKey] = []
    grace_until = None
    for record in await vault.store.keys_of(event.subject_id):
        if record.dataset == CONTACT_DATASET:
            continue  # the address for the final notice: notifier shreds its key once the mail is sent
        outcome = kept.get(record.dataset)
        if outcome is not None:
            assert outcome.rule_id and outcome.legal_basis and outcome.legal_ref  # DatasetOutcome guarantees it
            retained.append(
                RetainedKey(
                    dataset=record.dataset,
                    key_id=record.key_id,
                    rule_id=outcome.rule_id,
                    legal_basis=outcome.legal_basis,
                    legal_ref=outcome.legal_ref,
                )
            )
            continue
        changed = await destroy(vault, record, request_id=event.request_id)
        grace_until = changed.purge_at if changed.state == "disabled" else grace_until
        destroyed.append(KeyRef(dataset=record.dataset, key_id=record.key_id))
    result = DeletionKeysDestroyed(
        event_id=uuid.uuid5(_EVENT_IDS, str(event.event_id)),
        request_id=event.request_id,
        subject_id=event.subject_id,
        producer=PRODUCER,
        outcomes=event.outcomes,
        destroyed=tuple(destroyed),
        retained=tuple(retained),
        grace_until=grace_until,
        result=event.result,
    )
    await vault.store.save_destruction(str(event.event_id), result.model_dump_json())
    return [result]


async def shred_expired(vault: Vault) -> list[DeletionKeysShredded]:
    """Physically delete the keys whose grace window has ended; one event per request."""
    shredded: dict[tuple[str, str], list[KeyRef]] = {}
    for subject_id, dataset, key_id in await vault.store.due_for_purge(vault.clock()):
        record = await vault.store.get(subject_id, dataset)
        if record is not None and record.key_id == key_id and record.state == "disabled":
            gone = record.destroyed(vault.clock(), record.request_id)
            if not await vault.store.put_if_current(gone, expected_key_id=key_id):
                continue  # restored or replaced meanwhile; the next run sees the new state
            shredded.setdefault((record.request_id or "", subject_id), []).append(
                KeyRef(dataset=dataset, key_id=key_id)
            )
            log.info("key.shredded", subject_id=subject_id, dataset=dataset, key_id=key_id)
        await vault.store.remove_from_purge_ledger(subject_id, dataset, key_id)
    return [
        DeletionKeysShredded(
            event_id=uuid.uuid5(_EVENT_IDS, "shredded|" + "|".join(sorted(k.key_id for k in keys))),
            request_id=request_id or "unknown",
            subject_id=subject_id,
            producer=PRODUCER,
            shredded=tuple(keys),
        )
        for (request_id, subject_id), keys in sorted(shredded.items())
    ]


async def shred_now(vault: Vault, subject_id: str, dataset: str, *, request_id: str) -> DeletionKeysShredded | None:
    """Destroy one key at once, with no grace window (a contact address once its notice is sent).

    Returns the event to emit, or None when there was nothing left to destroy (so a repeat emits nothing).
    """
    record = await vault.store.get(subject_id, dataset)
    if record is None or record.state == "destroyed":
        return None
    await destroy(vault, record, request_id=request_id, grace=timedelta(0))
    await vault.store.remove_from_purge_ledger(subject_id, dataset, record.key_id)
    return DeletionKeysShredded(
        event_id=uuid.uuid5(_EVENT_IDS, f"shred-now|{record.key_id}"),
        request_id=request_id,
        subject_id=subject_id,
        producer=PRODUCER,
        shredded=(KeyRef(dataset=dataset, key_id=record.key_id),),
    )


async def restore(vault: Vault, subject_id: str, dataset: str, *, restored_by: str) -> DeletionKeysRestored:
    """Re-enable a disabled key inside its grace window (an admin action, audited through the event)."""
    record = await vault.store.get(subject_id, dataset)
    if record is None:
        raise UnknownKeyError(f"no key for subject and dataset {dataset!r}")
    if record.state != "disabled" or record.purge_at is None or record.purge_at <= vault.clock():
        raise KeyUnavailableError(record.state if record.state != "disabled" else "past its grace window")
    active = replace(record, state="active", disabled_at=None, purge_at=None, request_id=None)
    if not await vault.store.put_if_current(active, expected_key_id=record.key_id):
        raise ConcurrentUpdateError("the key changed while being restored")
    await vault.store.remove_from_purge_ledger(subject_id, dataset, record.key_id)
    log.info("key.restored", subject_id=subject_id, dataset=dataset, key_id=record.key_id, by=restored_by)
    return DeletionKeysRestored(
        request_id=record.request_id or "unknown",
        subject_id=subject_id,
        producer=PRODUCER,
        restored=KeyRef(dataset=dataset, key_id=record.key_id),
        restored_by=restored_by,
    )


async def rotate(vault: Vault) -> int:
    """Re-wrap every stored key under the current KEK; returns how many were re-wrapped."""
    count = 0
    async for record in vault.store.all_keys():
        if record.wrapped is None or record.kek_id == vault.kek.current_id:
            continue
        key = await _unwrap(vault, record)
        kek_id, wrapped = await vault.kek.wrap(key.material, _context(record.subject_id, record.dataset, key.key_id))
        rewrapped = replace(record, kek_id=kek_id, wrapped=wrapped)
        if await vault.store.put_if_current(rewrapped, expected_key_id=record.key_id):
            count += 1
    log.info("kek.rotated", rewrapped=count, kek_id=vault.kek.current_id)
    return count


def routes(vault: Vault) -> Mapping[str, Handler]:
    """The registry of what keyvault reacts to: topic -> handler."""

    async def on_purged(event: Event) -> Sequence[Event]:
        assert isinstance(event, DeletionPurged)  # the loop validated the event against its topic
        return await destroy_keys(event, vault)

    return {topics.DELETION_PURGED: on_purged}
