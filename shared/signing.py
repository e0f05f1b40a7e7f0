"""Ed25519 signatures over canonical JSON: audit checkpoints and receipts, checkable offline with the public key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def canonical(value: Any) -> bytes:
    """One byte form per JSON value: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    return base64.b64encode(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key, to say which key signed."""
    return "ed25519:" + hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_seed_b64(cls, seed: str) -> Signer:
        raw = base64.b64decode(seed, validate=True)
        if len(raw) != 32:
            raise ValueError("an Ed25519 signing key is 32 bytes (base64)")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """Read the key file; on a first local start, create one (mode 0600)."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.b64encode(os.urandom(32)).decode())
        return cls.from_seed_b64(path.read_text().strip())

    def sign(self, value: Any) -> str:
        return base64.b64encode(self._key.sign(canonical(value))).decode()

    def sign_document(self, document: dict[str, Any]) -> dict[str, Any]:
        """``document`` with its signature, in a form :func:`verify_document` checks with the public key alone."""
        return {
            "document": document,
            "signature": {"algorithm": "Ed25519", "key_id": self.key_id, "value": self.sign(document)},
        }


def verify(value: Any, signature_b64: str, public_key: Ed25519PublicKey) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64), canonical(value))
        return True
    except (InvalidSignature, ValueError):
        return False


def load_public_key(b64: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(b64))


def verify_document(signed: dict[str, Any], public_key_b64: str) -> bool:
    """True if ``signed`` (from :meth:`Signer.sign_document`) is intact and was signed by that key."""
    try:
        return verify(signed["document"], signed["signature"]["value"], load_public_key(public_key_b64))
    except (KeyError, TypeError, ValueError):
        return False
