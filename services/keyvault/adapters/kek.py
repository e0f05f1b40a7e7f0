"""Key-encryption keys (KEKs), the KeyEncryptionKey port (ports.py): a local keyring, or AWS KMS through aioboto3.

Only keyvault ever holds a KEK. Rotation adds a new current KEK; existing data keys are re-wrapped under it
(the data they protect is never re-encrypted).
"""

from __future__ import annotations

import base64
import json
import os
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aioboto3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.keyvault.ports import KekError


def _aad(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


class LocalKeyring:
    """KEKs held in this process: ``{"current": id, "keys": {id: base64 32 bytes}}`` from a file or settings."""

    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        if current not in keys:
            raise ValueError(f"the current KEK {current!r} is not in the keyring")
        if any(len(k) != 32 for k in keys.values()):
            raise ValueError("every KEK is 32 bytes (AES-256)")
        self._keys = {kid: AESGCM(k) for kid, k in keys.items()}
        self._current = current

    @classmethod
    def from_json(cls, text: str) -> LocalKeyring:
        try:
            data = json.loads(text)
            keys = {kid: base64.b64decode(k, validate=True) for kid, k in data["keys"].items()}
            return cls(keys, data["current"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"malformed KEK keyring: {exc}") from exc

    @classmethod
    def load_or_create(cls, path: Path) -> LocalKeyring:
        """Read the keyring file; on a first local start, create one with a fresh KEK (mode 0600)."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            keyring = {"current": "kek-1", "keys": {"kek-1": base64.b64encode(os.urandom(32)).decode()}}
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(keyring, out)
        return cls.from_json(path.read_text())

    @property
    def current_id(self) -> str:
        return self._current

    async def wrap(self, dek: bytes, context: dict[str, str]) -> tuple[str, bytes]:
        nonce = os.urandom(12)
        return self._current, nonce + self._keys[self._current].encrypt(nonce, dek, _aad(context))

    async def unwrap(self, kek_id: str, wrapped: bytes, context: dict[str, str]) -> bytes:
        kek = self._keys.get(kek_id)
        if kek is None:
            raise KekError(f"KEK {kek_id!r} is not in the keyring")
        try:
            return kek.decrypt(wrapped[:12], wrapped[12:], _aad(context))
        except InvalidTag as exc:
            raise KekError("the wrapped key does not open under its KEK and context") from exc


class KmsKek:
    """AWS KMS (or a KMS-compatible endpoint): Encrypt/Decrypt with the context as EncryptionContext."""

    def __init__(self, *, key_id: str, region: str, endpoint_url: str | None = None, **credentials: Any) -> None:
        self._key_id = key_id
        self._session = aioboto3.Session(region_name=region, **credentials)
        self._endpoint_url = endpoint_url
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def start(self) -> None:
        self._client = await self._stack.enter_async_context(
            self._session.client("kms", endpoint_url=self._endpoint_url)
        )

    async def stop(self) -> None:
        await self._stack.aclose()

    @property
    def current_id(self) -> str:
        return self._key_id

    async def wrap(self, dek: bytes, context: dict[str, str]) -> tuple[str, bytes]:
        reply = await self._client.encrypt(KeyId=self._key_id, Plaintext=dek, EncryptionContext=context)
        return self._key_id, bytes(reply["CiphertextBlob"])

    async def unwrap(self, kek_id: str, wrapped: bytes, context: dict[str, str]) -> bytes:
        try:
            reply = await self._client.decrypt(KeyId=kek_id, CiphertextBlob=wrapped, EncryptionContext=context)
        except self._client.exceptions.InvalidCiphertextException as exc:
            raise KekError("KMS refused the wrapped key for this context") from exc
        return bytes(reply["Plaintext"])
