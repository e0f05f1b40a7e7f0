"""Field encryption: AES-256-GCM bound to subject, dataset and key; fresh nonces; no shared keys."""

import base64

import pytest

from shared.crypto import DecryptionError, decrypt_field, encrypt_field, key_id_of, new_data_key


def test_a_field_round_trips_and_names_its_key():
    key = new_data_key()
    sealed = encrypt_field(key, subject_id="u1", dataset="profiles", plaintext=b"Ada Lovelace")
    assert key_id_of(sealed) == key.key_id
    assert decrypt_field(key, subject_id="u1", dataset="profiles", ciphertext=sealed) == b"Ada Lovelace"


@pytest.mark.parametrize(("subject_id", "dataset"), [("u2", "profiles"), ("u1", "accounts")])
def test_a_ciphertext_moved_to_another_subject_or_dataset_fails(subject_id, dataset):
    key = new_data_key()
    sealed = encrypt_field(key, subject_id="u1", dataset="profiles", plaintext=b"secret")
    with pytest.raises(DecryptionError):
        decrypt_field(key, subject_id=subject_id, dataset=dataset, ciphertext=sealed)


def test_a_tampered_ciphertext_fails():
    key = new_data_key()
    sealed = encrypt_field(key, subject_id="u1", dataset="profiles", plaintext=b"secret")
    head, blob = sealed.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(blob))
    raw[-1] ^= 1
    with pytest.raises(DecryptionError):
        decrypt_field(
            key, subject_id="u1", dataset="profiles", ciphertext=f"{head}:{base64.urlsafe_b64encode(raw).decode()}"
        )


def test_another_key_cannot_open_it():
    sealed = encrypt_field(new_data_key(), subject_id="u1", dataset="profiles", plaintext=b"secret")
    with pytest.raises(DecryptionError):
        decrypt_field(new_data_key(), subject_id="u1", dataset="profiles", ciphertext=sealed)


@pytest.mark.parametrize("garbage", ["", "plain text", "lethe:v1:", "lethe:v1:dek_nothex:abc"])
def test_garbage_is_not_a_ciphertext(garbage):
    with pytest.raises(DecryptionError):
        key_id_of(garbage)


def test_a_million_encryptions_under_one_key_never_repeat_a_nonce():
    key = new_data_key()
    nonces = set()
    for _ in range(1_000_000):
        sealed = encrypt_field(key, subject_id="u1", dataset="profiles", plaintext=b"x")
        nonces.add(base64.urlsafe_b64decode(sealed.rsplit(":", 1)[1])[:12])
    assert len(nonces) == 1_000_000


def test_key_material_never_shows_in_its_repr():
    key = new_data_key()
    assert key.material.hex() not in repr(key)
    assert str(key.material) not in repr(key)
