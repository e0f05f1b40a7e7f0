"""Deleting a subject's vectors by filter expression, in Milvus Lite or a Milvus / Zilliz server (pymilvus is
synchronous, so each call runs in a worker thread)."""

from __future__ import annotations

import asyncio
from typing import Any

from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from shared.datamap import Dataset
from shared.events import DatasetCounts, DatasetOutcome
from shared.settings import MilvusSettings


def subject_filter(field: str, subject_id: str) -> str:
    """A filter expression matching ``subject_id`` exactly, with the string escaped."""
    escaped = subject_id.replace("\\", "\\\\").replace('"', '\\"')
    return f'{field} == "{escaped}"'


def _unreachable(exc: MilvusException) -> bool:
    """A lost server (retried for as long as it is lost), as opposed to a request it refuses (dead-lettered)."""
    text = str(exc).lower()
    return any(word in text for word in ("unavailable", "connect", "deadline exceeded", "closed channel"))


class MilvusEraser:
    def __init__(self, settings: MilvusSettings) -> None:
        self._settings = settings
        self._client: MilvusClient | None = None

    def _connect(self) -> MilvusClient:
        if self._client is None:
            token = self._settings.token.get_secret_value() if self._settings.token else ""
            try:
                self._client = MilvusClient(uri=self._settings.uri, token=token)
            except MilvusException as exc:
                # The server is away: the event is retried until it is back, never dead-lettered for this.
                raise ConnectionError(f"Milvus at {self._settings.uri} does not answer: {exc}") from exc
        return self._client

    def _delete(self, collection: str, expression: str) -> int | None:
        """How many vectors were deleted; None if the collection does not exist."""
        client = self._connect()
        try:
            if not client.has_collection(collection):
                return None
            result: Any = client.delete(collection, filter=expression)
        except MilvusException as exc:
            if _unreachable(exc):
                self._client = None  # reconnect on the next try
                raise ConnectionError(f"Milvus at {self._settings.uri} went away: {exc}") from exc
            raise
        # Milvus Lite answers with the deleted primary keys, a server with {"delete_count": n}.
        return len(result) if isinstance(result, list) else int(result.get("delete_count", 0))

    async def erase(self, dataset: Dataset, subject_id: str, **_: Any) -> DatasetOutcome:
        assert dataset.milvus is not None
        expression = subject_filter(dataset.milvus.filter_field, subject_id)
        deleted = await asyncio.to_thread(self._delete, dataset.milvus.collection, expression)
        if deleted is None:
            # A misspelt or dropped collection: reporting it erased would hide that nothing was looked at.
            return DatasetOutcome(
                dataset=dataset.name,
                store="milvus",
                outcome="failed",
                error=f"the collection '{dataset.milvus.collection}' does not exist in Milvus",
            )
        return DatasetOutcome(
            dataset=dataset.name, store="milvus", outcome="erased", counts=DatasetCounts(vectors_deleted=deleted)
        )

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None
