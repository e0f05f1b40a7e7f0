"""What keyvault decides: issuing data keys, destroying them on deletion, the grace window, KEK rotation.

A key is destroyed only when the purge reported its dataset erased or tagged *and* no rule or hold in force at
that moment keeps it: retention is read when keyvault acts, never inferred from what one event left out.

The functions take their dependencies (the key store, the KEK, the clock, the rules and holds) and return what
they decided; publishing events is the wiring's job.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from services.keyvault.model import KeyRecord
from services.keyvault.ports import KeyEncryptionKey, KeyStore, RetentionReader
from shared import topics
from shared.consumer import Handler
from shared.contacts import CONTACT_DATASET
from shared.crypto import DataKey, new_data_key
from shared.datamap import DataMap
from shared.events import (
    DatasetOutcome,
    DeletionHeld,
    DeletionKeysDestroyed,
    DeletionKeysHeld,
    DeletionKeysRestored,
    DeletionKeysShredded,
    DeletionPurged,
    Event,
    KeyRef,
    LeftKey,
    RetainedKey,
)
from shared.retention import Retention

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


class KeyRetainedError(Exception):
    """The key's dataset is kept now, by a rule or a hold: its key may not be destroyed."""

    def __init__(self, why: Retention) -> None:
        super().__init__(
            f"the dataset {why.dataset!r} is kept by {why.rule_id} ({why.legal_basis}; {why.legal_ref}): "
            "its key may not be destroyed while that applies"
        )
        self.why = why


@dataclass
class Vault:
    """keyvault's dependencies."""

    store: KeyStore
    kek: KeyEncryptionKey
    clock: Callable[[], datetime]
    retention: RetentionReader
    datamap: DataMap
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
    _log_destroyed(changed)
    return changed


def _log_destroyed(record: KeyRecord) -> None:
    log.info(
        "key.destroyed" if record.state == "destroyed" else "key.disabled",
        subject_id=record.subject_id,
        dataset=record.dataset,
        key_id=record.key_id,
        purge_at=record.purge_at,
    )


async def destroy_all(vault: Vault, records: Sequence[KeyRecord], *, request_id: str) -> datetime | None:
    """:func:`destroy` for one subject's keys, with one write for the grace ledger and one for the keys; the end
    of their grace window (None if they were destroyed at once or were gone already)."""
    now = vault.clock()
    live = [r for r in records if r.state == "active"]
    if vault.grace > timedelta(0):
        changed = [r.disabled(now, now + vault.grace, request_id) for r in live]
        await vault.store.add_all_to_purge_ledger(changed)  # ledger first, as in destroy()
    else:
        changed = [r.destroyed(now, request_id) for r in live]
    if not await vault.store.put_all_if_current(changed, expected={r.dataset: r.key_id for r in live}):
        raise ConcurrentUpdateError(f"a key of {sorted(r.dataset for r in live)} changed while being destroyed")
    for record in changed:
        _log_destroyed(record)
    waiting = [*changed, *(r for r in records if r.state == "disabled")]
    return max((r.purge_at for r in waiting if r.state == "disabled" and r.purge_at), default=None)


async def retained_now(vault: Vault, subject_id: str) -> dict[str, Retention]:
    """What the rules and holds in force right now keep of this subject, and why."""
    return (await vault.retention.in_force(subject_id)).retained(vault.clock())


def _kept_by(outcome: DatasetOutcome) -> Retention:
    assert outcome.rule_id and outcome.legal_basis and outcome.legal_ref  # DatasetOutcome guarantees it
    return Retention(outcome.dataset, outcome.rule_id, outcome.legal_basis, outcome.legal_ref)


def _left_reason(dataset: str, outcome: DatasetOutcome | None, datamap: DataMap) -> str | None:
    """Why a key is neither destroyed nor retained (None: it is destroyed)."""
    if dataset not in datamap.names:
        return "its dataset is not in the data map"
    if outcome is None:
        return "the purge report does not list its dataset"
    if outcome.outcome == "exempt":
        return "its dataset is exempt (anonymised)"
    if outcome.outcome == "failed":
        return f"its dataset could not be erased: {outcome.error}"
    return None


async def destroy_keys(event: DeletionPurged, vault: Vault) -> Sequence[Event]:
    """Destroy exactly the keys of the datasets the purge erased or tagged and nothing keeps now; report every
    key of the subject: destroyed, retained (with the rule or hold) or left (with the reason).
    A replay emits the same event."""
    prior = await vault.store.destruction(str(event.event_id))
    if prior is not None:
        return [DeletionKeysDestroyed.model_validate_json(prior)]
    outcomes = {o.dataset: o for o in event.outcomes}
    kept_now = await retained_now(vault, event.subject_id)
    destroyed: list[KeyRef] = []
    retained: list[RetainedKey] = []
    left: list[LeftKey] = []
    doomed: list[KeyRecord] = []
    for record in await vault.store.keys_of(event.subject_id):
        if record.dataset == CONTACT_DATASET:
            continue  # the address for the final notice: notifier shreds its key once the mail is sent
        outcome = outcomes.get(record.dataset)
        why = kept_now.get(record.dataset) or (
            _kept_by(outcome) if outcome is not None and outcome.outcome == "retained" else None
        )
        ref = {"dataset": record.dataset, "key_id": record.key_id}
        if why is not None:
            retained.append(
                RetainedKey(**ref, rule_id=why.rule_id, legal_basis=why.legal_basis, legal_ref=why.legal_ref)
            )
        elif (reason := _left_reason(record.dataset, outcome, vault.datamap)) is not None:
            left.append(LeftKey(**ref, reason=reason))
        else:
            doomed.append(record)
            destroyed.append(KeyRef(**ref))
    grace_until = await destroy_all(vault, doomed, request_id=event.request_id)
    if left:
        log.warning("keys.left", request_id=event.request_id, keys=[(k.dataset, k.reason) for k in left])
    result = DeletionKeysDestroyed(
        event_id=uuid.uuid5(_EVENT_IDS, str(event.event_id)),
        request_id=event.request_id,
        subject_id=event.subject_id,
        producer=PRODUCER,
        outcomes=event.outcomes,
        destroyed=tuple(destroyed),
        retained=tuple(retained),
        left=tuple(left),
        grace_until=grace_until,
        result=event.result,
    )
    await vault.store.save_destruction(str(event.event_id), result.model_dump_json())
    return [result]


async def keep_for_hold(event: DeletionHeld, vault: Vault) -> Sequence[Event]:
    """A hold placed after the purge: restore the disabled keys of the held datasets while their grace window
    lasts, and report those already shredded (the data under them stays unreadable). A replay emits the same."""
    prior = await vault.store.destruction(str(event.event_id))
    if prior is not None:
        return [DeletionKeysHeld.model_validate_json(prior)]
    restored: list[KeyRef] = []
    lost: list[KeyRef] = []
    now = vault.clock()
    for dataset in event.datasets:
        record = await vault.store.get(event.subject_id, dataset)
        if record is None or record.state == "active":
            continue
        ref = KeyRef(dataset=dataset, key_id=record.key_id)
        if record.state == "disabled" and record.purge_at is not None and record.purge_at > now:
            await _reactivate(vault, record)
            restored.append(ref)
        else:
            lost.append(ref)
    log.info("keys.held", request_id=event.request_id, hold_id=event.hold_id, restored=len(restored), lost=len(lost))
    result = DeletionKeysHeld(
        event_id=uuid.uuid5(_EVENT_IDS, str(event.event_id)),
        request_id=event.request_id,
        subject_id=event.subject_id,
        producer=PRODUCER,
        hold_id=event.hold_id,
        restored=tuple(restored),
        unrestorable=tuple(lost),
    )
    await vault.store.save_destruction(str(event.event_id), result.model_dump_json())
    return [result]


async def shred_expired(vault: Vault) -> list[DeletionKeysShredded]:
    """Physically delete the keys whose grace window has ended; one event per request."""
    shredded: dict[tuple[str, str], list[KeyRef]] = {}
    for subject_id, dataset, key_id in await vault.store.due_for_purge(vault.clock()):
        if (why := (await retained_now(vault, subject_id)).get(dataset)) is not None:
            # Kept now (a rule or hold placed since): left disabled in the ledger, shredded once that ends.
            log.info("key.shred_deferred", subject_id=subject_id, dataset=dataset, kept_by=why.rule_id)
            continue
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
    Raises :class:`KeyRetainedError` when a rule or hold in force keeps the dataset.
    """
    record = await vault.store.get(subject_id, dataset)
    if record is None or record.state == "destroyed":
        return None
    if (why := (await retained_now(vault, subject_id)).get(dataset)) is not None:
        raise KeyRetainedError(why)
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
    await _reactivate(vault, record)
    log.info("key.restored", subject_id=subject_id, dataset=dataset, key_id=record.key_id, by=restored_by)
    return DeletionKeysRestored(
        request_id=record.request_id or "unknown",
        subject_id=subject_id,
        producer=PRODUCER,
        restored=KeyRef(dataset=dataset, key_id=record.key_id),
        restored_by=restored_by,
    )


async def _reactivate(vault: Vault, record: KeyRecord) -> None:
    """A disabled key made usable again, and taken off the shredder's list."""
    active = replace(record, state="active", disabled_at=None, purge_at=None, request_id=None)
    if not await vault.store.put_if_current(active, expected_key_id=record.key_id):
        raise ConcurrentUpdateError("the key changed while being restored")
    await vault.store.remove_from_purge_ledger(record.subject_id, record.dataset, record.key_id)


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

    async def on_held(event: Event) -> Sequence[Event]:
        assert isinstance(event, DeletionHeld)
        return await keep_for_hold(event, vault)

    return {topics.DELETION_PURGED: on_purged, topics.DELETION_HELD: on_held}
