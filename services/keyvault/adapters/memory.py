"""In-memory fakes of keyvault's ports, for unit tests: the KeyStore (the same contract test runs against it and
MongoKeyStore). The KEK needs none: LocalKeyring (adapters/kek.py) already runs in memory, with no I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime

from services.keyvault.model import KeyRecord


class InMemoryKeyStore:
    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], KeyRecord] = {}
        self.ledger: dict[tuple[str, str, str], datetime] = {}
        self.destructions: dict[str, str] = {}

    async def get(self, subject_id: str, dataset: str) -> KeyRecord | None:
        return self.keys.get((subject_id, dataset))

    async def keys_of(self, subject_id: str) -> list[KeyRecord]:
        return [r for (s, _), r in sorted(self.keys.items()) if s == subject_id]

    async def put_if_current(self, record: KeyRecord, *, expected_key_id: str | None) -> bool:
        current = self.keys.get((record.subject_id, record.dataset))
        if (current.key_id if current else None) != expected_key_id:
            return False
        self.keys[(record.subject_id, record.dataset)] = record
        return True

    async def put_all_if_current(self, records: Sequence[KeyRecord], *, expected: Mapping[str, str]) -> bool:
        current = {r.dataset: self.keys.get((r.subject_id, r.dataset)) for r in records}
        if any((c.key_id if c else None) != expected[d] for d, c in current.items()):
            return False
        for record in records:
            self.keys[(record.subject_id, record.dataset)] = record
        return True

    async def add_all_to_purge_ledger(self, records: Sequence[KeyRecord]) -> None:
        for record in records:
            await self.add_to_purge_ledger(record)

    async def add_to_purge_ledger(self, record: KeyRecord) -> None:
        assert record.purge_at is not None
        self.ledger[(record.subject_id, record.dataset, record.key_id)] = record.purge_at

    async def remove_from_purge_ledger(self, subject_id: str, dataset: str, key_id: str) -> None:
        self.ledger.pop((subject_id, dataset, key_id), None)

    async def due_for_purge(self, now: datetime) -> list[tuple[str, str, str]]:
        return sorted(k for k, at in self.ledger.items() if at <= now)

    async def destruction(self, event_id: str) -> str | None:
        return self.destructions.get(event_id)

    async def save_destruction(self, event_id: str, result_json: str) -> None:
        self.destructions.setdefault(event_id, result_json)

    async def all_keys(self) -> AsyncIterator[KeyRecord]:
        for _, record in sorted(self.keys.items()):
            yield record
