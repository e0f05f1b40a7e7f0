"""What keyvault needs from outside, one Protocol each: the key store (adapters/store.py on MongoDB,
adapters/memory.py in memory), the KEK (adapters/kek.py: a local keyring, or AWS KMS) and the retention rules and
holds (shared/retention.py, faked in shared/fakes.py). One contract runs against every implementation of each:
tests/integration/test_keyvault_store.py, test_keyvault_kek.py and test_retention_store.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from services.keyvault.model import KeyRecord
from shared.retention import InForce


class KeyStore(Protocol):
    async def get(self, subject_id: str, dataset: str) -> KeyRecord | None: ...

    async def keys_of(self, subject_id: str) -> list[KeyRecord]: ...

    async def put_if_current(self, record: KeyRecord, *, expected_key_id: str | None) -> bool:
        """Store ``record`` if the subject's key for its dataset is still ``expected_key_id`` (None: no key)."""
        ...

    async def put_all_if_current(self, records: Sequence[KeyRecord], *, expected: Mapping[str, str]) -> bool:
        """Store one subject's ``records`` at once if each dataset's key is still ``expected[dataset]``: all or none."""
        ...

    async def add_to_purge_ledger(self, record: KeyRecord) -> None: ...

    async def add_all_to_purge_ledger(self, records: Sequence[KeyRecord]) -> None: ...

    async def remove_from_purge_ledger(self, subject_id: str, dataset: str, key_id: str) -> None: ...

    async def due_for_purge(self, now: datetime) -> list[tuple[str, str, str]]:
        """(subject_id, dataset, key_id) of disabled keys whose grace window has ended."""
        ...

    async def destruction(self, event_id: str) -> str | None: ...

    async def save_destruction(self, event_id: str, result_json: str) -> None: ...

    def all_keys(self) -> AsyncIterator[KeyRecord]: ...


class KekError(Exception):
    """A data key could not be wrapped or unwrapped (unknown KEK, tampered blob, KMS refused)."""


class KeyEncryptionKey(Protocol):
    """What wraps every data key (a KEK), bound to a context; raises :class:`KekError` when a key will not open."""

    @property
    def current_id(self) -> str: ...

    async def wrap(self, dek: bytes, context: dict[str, str]) -> tuple[str, bytes]:
        """Wrap ``dek`` under the current KEK, bound to ``context``; returns (kek_id, wrapped)."""
        ...

    async def unwrap(self, kek_id: str, wrapped: bytes, context: dict[str, str]) -> bytes: ...


class RetentionReader(Protocol):
    """The rules and holds in force (intake writes them), asked before any key is destroyed."""

    async def in_force(self, subject_id: str) -> InForce:
        """The rule set and this subject's unreleased holds, read together."""
        ...
