"""Field encryption under a subject's data key: AES-256-GCM, random 96-bit nonces, bound to subject/dataset/key.

A ciphertext reads ``lethe:v1:<key_id>:<base64url(nonce || ciphertext+tag)>``, so it names the key that opens
it. The associated data binds it to its subject, dataset and key id: a ciphertext copied into another subject's
record, or another dataset, fails to decrypt.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "lethe:v1:"
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_ID = re.compile(r"^dek_[0-9a-f]{32}$")


class DecryptionError(ValueError):
    """The ciphertext is malformed, was tampered with, or belongs to another subject, dataset or key."""


@dataclass(frozen=True)
class DataKey:
    """A plaintext data key (DEK) and its id. Only keyvault stores it, and only wrapped."""

    key_id: str
    material: bytes

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise ValueError("a data key is 32 bytes (AES-256)")

    def __repr__(self) -> str:  # never print key material
        return f"DataKey(key_id={self.key_id!r})"


def new_data_key() -> DataKey:
    return DataKey(key_id="dek_" + os.urandom(16).hex(), material=AESGCM.generate_key(bit_length=256))


def associated_data(subject_id: str, dataset: str, key_id: str) -> bytes:
    return f"lethe:v1|{subject_id}|{dataset}|{key_id}".encode()


def encrypt_field(key: DataKey, *, subject_id: str, dataset: str, plaintext: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key.material).encrypt(nonce, plaintext, associated_data(subject_id, dataset, key.key_id))
    return f"{PREFIX}{key.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def key_id_of(ciphertext: str) -> str:
    """The id of the key a ciphertext was sealed under."""
    if not ciphertext.startswith(PREFIX):
        raise DecryptionError("not a lethe ciphertext")
    key_id, sep, _ = ciphertext[len(PREFIX) :].partition(":")
    if not sep or not KEY_ID.match(key_id):
        raise DecryptionError("malformed lethe ciphertext")
    return key_id


def decrypt_field(key: DataKey, *, subject_id: str, dataset: str, ciphertext: str) -> bytes:
    if key_id_of(ciphertext) != key.key_id:
        raise DecryptionError("the ciphertext was sealed under another key")
    try:
        blob = base64.urlsafe_b64decode(ciphertext.rsplit(":", 1)[1])
    except ValueError as exc:
        raise DecryptionError("malformed lethe ciphertext") from exc
    nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
    try:
        return AESGCM(key.material).decrypt(nonce, sealed, associated_data(subject_id, dataset, key.key_id))
    except InvalidTag as exc:
        raise DecryptionError("the ciphertext does not open for this subject, dataset and key") from exc
