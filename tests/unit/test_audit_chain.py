"""The audit hash chain and signed receipts, in memory: every kind of tampering is found."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.audit.chain import chain, verify_log
from services.audit.handlers import receipt
from services.audit.model import Checkpoint
from shared.datamap import DataMap, Dataset, MongoLocation
from shared.events import DatasetOutcome, DeletionKeysDestroyed, DeletionPurged, DeletionRequested, KeyRef
from shared.signing import Signer, public_key_b64, verify_document

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SIGNER = Signer.from_seed_b64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")


def requested(i: int) -> DeletionRequested:
    return DeletionRequested(
        request_id=f"r{i}",
        subject_id=f"u{i}",
        producer="intake",
        requested_by=f"u{i}",
        deadline_at=T0 + timedelta(days=30),
        backups_purged_by=T0 + timedelta(days=90),
    )


def log_of(n: int):
    return chain((requested(i), T0 + timedelta(seconds=i)) for i in range(n))


def checkpoint_at(entries, seq: int) -> Checkpoint:
    entry = entries[seq - 1]
    unsigned = Checkpoint(seq, entry.hash, T0.isoformat(), SIGNER.key_id, "")
    return replace(unsigned, signature=SIGNER.sign(unsigned.signed_part()))


async def check(entries, *, head=None, checkpoints=()):
    async def stream():
        for entry in sorted(entries, key=lambda e: e.seq):
            yield entry

    last = max(entries, key=lambda e: e.seq)
    return await verify_log(
        stream(),
        head=head or (last.seq, last.hash),
        checkpoints=list(checkpoints),
        public_keys={SIGNER.key_id: SIGNER.public_key},
    )


@pytest.mark.asyncio
async def test_an_untouched_log_verifies():
    entries = log_of(50)
    report = await check(entries, checkpoints=[checkpoint_at(entries, 25), checkpoint_at(entries, 50)])
    assert report.ok
    assert (report.entries_checked, report.checkpoints_checked) == (50, 2)


@pytest.mark.parametrize("position", [1, 17, 49])
@pytest.mark.asyncio
async def test_an_edited_entry_is_found(position):
    entries = log_of(50)
    edited = dict(entries[position - 1].content)
    edited["event"] = {**edited["event"], "subject_id": "someone-else"}
    entries[position - 1] = replace(entries[position - 1], content=edited)
    report = await check(entries)
    assert (report.ok, report.first_bad_seq) == (False, position)
    assert "edited" in report.reason


@pytest.mark.parametrize("position", [1, 17, 49])
@pytest.mark.asyncio
async def test_a_deleted_entry_is_found(position):
    entries = log_of(50)
    del entries[position - 1]
    report = await check(entries, head=(50, log_of(50)[-1].hash))
    assert (report.ok, report.first_bad_seq) == (False, position)


@pytest.mark.asyncio
async def test_two_swapped_entries_are_found():
    entries = log_of(50)
    a, b = entries[9], entries[30]
    entries[9] = replace(b, seq=10)
    entries[30] = replace(a, seq=31)
    report = await check(entries)
    assert (report.ok, report.first_bad_seq) == (False, 10)


@pytest.mark.asyncio
async def test_an_inserted_entry_is_found():
    entries = log_of(50)
    forged = chain([(requested(999), T0)], start_seq=21, prev_hash=entries[19].hash)[0]
    shifted = entries[:20] + [forged] + [replace(e, seq=e.seq + 1) for e in entries[20:]]
    report = await check(shifted)
    assert (report.ok, report.first_bad_seq) == (False, 22)


@pytest.mark.asyncio
async def test_a_truncated_tail_is_found_by_the_head():
    entries = log_of(50)
    report = await check(entries[:45], head=(50, entries[-1].hash))
    assert not report.ok
    assert "removed from the end" in report.reason


@pytest.mark.asyncio
async def test_a_rewritten_chain_is_found_by_its_signed_checkpoint():
    entries = log_of(50)
    checkpoint = checkpoint_at(entries, 40)
    rewritten = chain((requested(i if i != 5 else 555), T0 + timedelta(seconds=i)) for i in range(50))
    report = await check(rewritten, checkpoints=[checkpoint])
    assert (report.ok, report.first_bad_seq) == (False, 40)
    assert "checkpoint" in report.reason


@pytest.mark.asyncio
async def test_a_forged_checkpoint_signature_is_found():
    entries = log_of(10)
    forged = replace(checkpoint_at(entries, 10), signature=checkpoint_at(entries, 9).signature)
    report = await check(entries, checkpoints=[forged])
    assert not report.ok
    assert "bad signature" in report.reason


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        ("type", "deletion.notified"),
        ("request_id", "r-other"),
        ("subject_id", "someone-else"),
        ("occurred_at", T0 - timedelta(days=1)),
        ("event_id", "00000000-0000-0000-0000-000000000000"),
    ],
)
@pytest.mark.asyncio
async def test_an_edited_stored_copy_is_found_and_named_without_its_values(field, edit):
    entries = log_of(50)
    original = getattr(entries[16], field)
    entries[16] = replace(entries[16], **{field: edit})
    report = await check(entries)
    assert (report.ok, report.first_bad_seq, report.field) == (False, 17, field)
    body = report.as_json()
    assert body["first_bad_entry"] == {"seq": 17, "reason": report.reason, "field": field}
    for value in (original, edit):
        assert str(value) not in str(body)


@pytest.mark.asyncio
async def test_a_stored_time_kept_to_the_millisecond_verifies_and_one_a_millisecond_off_does_not():
    event = requested(1).model_copy(update={"occurred_at": T0.replace(microsecond=123_456)})
    [entry] = chain([(event, T0)])
    as_stored = replace(entry, occurred_at=T0.replace(microsecond=123_000))
    assert (await check([as_stored])).ok
    report = await check([replace(entry, occurred_at=T0.replace(microsecond=124_000))])
    assert (report.ok, report.field) == (False, "occurred_at")


def story():
    purged = DeletionPurged(
        request_id="r1",
        subject_id="u1",
        producer="purger",
        outcomes=(
            DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),
            DatasetOutcome(
                dataset="invoices",
                store="mongo",
                outcome="retained",
                rule_id="tax",
                legal_basis="legal obligation",
                legal_ref="HGB §257",
            ),
        ),
    )
    destroyed = DeletionKeysDestroyed(
        request_id="r1",
        subject_id="u1",
        producer="keyvault",
        result="partial",
        destroyed=(KeyRef(dataset="profiles", key_id="dek_" + "a" * 32),),
    )
    asked = requested(1).model_copy(update={"jurisdiction": "ccpa", "deadline_at": T0 + timedelta(days=45)})
    return chain([(asked, T0), (purged, T0), (destroyed, T0)])


def test_a_receipt_covers_every_dataset_of_the_map_and_says_why_anything_was_kept():
    datamap = DataMap(
        datasets=tuple(
            Dataset(name=n, store="mongo", mongo=MongoLocation(collection=n, subject_field="user_id"))
            for n in ("profiles", "invoices", "usage_logs")
        )
    )
    document = receipt("r1", story(), datamap=datamap, checkpoint=None, generated_at=T0)
    by_name = {d["dataset"]: d for d in document["datasets"]}
    assert set(by_name) == {"profiles", "invoices", "usage_logs"}
    assert by_name["invoices"]["legal_ref"] == "HGB §257"
    assert by_name["profiles"]["keys_destroyed"] == ["dek_" + "a" * 32]
    assert by_name["usage_logs"]["outcome"] == "not_reported"
    assert document["result"] == "partial"
    assert document["jurisdiction"] == "ccpa"
    assert datetime.fromisoformat(document["deadline_at"]) == T0 + timedelta(days=45)
    assert document["anchor"]["last_entry"]["seq"] == 3


def test_a_signed_receipt_verifies_with_the_public_key_alone_and_fails_after_any_change():
    signed = SIGNER.sign_document(receipt("r1", story(), datamap=None, checkpoint=None, generated_at=T0))
    key = public_key_b64(SIGNER.public_key)
    assert verify_document(signed, key)
    tampered = {**signed, "document": {**signed["document"], "result": "completed"}}
    assert not verify_document(tampered, key)
    other = Signer.from_seed_b64("HxwdHh8YGRobFBUWFxAREhMMDQ4PCAkKCwQFBgcAAQI=")
    assert not verify_document(signed, public_key_b64(other.public_key))


def test_lethe_verify_receipt_checks_a_receipt_file_offline(tmp_path):
    import json

    from click.testing import CliRunner

    from ops.cli import main

    signed = SIGNER.sign_document(receipt("r1", story(), datamap=None, checkpoint=None, generated_at=T0))
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(signed))
    bad.write_text(json.dumps({**signed, "document": {**signed["document"], "request_id": "r2"}}))
    key = public_key_b64(SIGNER.public_key)
    runner = CliRunner()
    assert runner.invoke(main, ["verify-receipt", str(good), "--public-key", key]).exit_code == 0
    assert runner.invoke(main, ["verify-receipt", str(bad), "--public-key", key]).exit_code == 1
