"""Deleting a subject's vectors by filter expression, in Milvus Lite or a Milvus / Zilliz server (pymilvus is
synchronous, so each call runs in a worker thread).

Milvus Lite answers a filter by scanning the whole collection (about 0.2 s at 30,000 vectors, however many
subjects the filter names), so erasures of one collection that arrive while a delete is running are joined into
the next one: one query counting each subject's vectors and one delete for all of them (a group commit). A lone
erasure goes at once, as one delete."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import structlog
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from shared.datamap import Dataset
from shared.events import DatasetCounts, DatasetOutcome
from shared.settings import MilvusSettings

log = structlog.get_logger(__name__)

MAX_GROUP = 100  # subjects per joined delete: keeps the expression and the counting query small


def quoted(subject_id: str) -> str:
    """``subject_id`` as a filter-expression string literal, escaped."""
    escaped = subject_id.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def subject_filter(field: str, subject_id: str) -> str:
    """A filter expression matching ``subject_id`` exactly, with the string escaped."""
    return f"{field} == {quoted(subject_id)}"


def subjects_filter(field: str, subject_ids: list[str]) -> str:
    """A filter expression matching any of ``subject_ids`` exactly."""
    if len(subject_ids) == 1:
        return subject_filter(field, subject_ids[0])
    return f"{field} in [{', '.join(quoted(s) for s in subject_ids)}]"


def _unreachable(exc: MilvusException) -> bool:
    """A lost server (retried for as long as it is lost), as opposed to a request it refuses (dead-lettered)."""
    text = str(exc).lower()
    return any(word in text for word in ("unavailable", "connect", "deadline exceeded", "closed channel"))


@dataclass
class _Waiting:
    """Erasures of one collection and field waiting for the next delete."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queue: list[tuple[str, asyncio.Future[int | None]]] = field(default_factory=list)


class MilvusEraser:
    def __init__(self, settings: MilvusSettings) -> None:
        self._settings = settings
        self._client: MilvusClient | None = None
        self._waiting: defaultdict[tuple[str, str], _Waiting] = defaultdict(_Waiting)

    def _connect(self) -> MilvusClient:
        if self._client is None:
            token = self._settings.token.get_secret_value() if self._settings.token else ""
            try:
                self._client = MilvusClient(uri=self._settings.uri, token=token)
            except MilvusException as exc:
                # The server is away: the event is retried until it is back, never dead-lettered for this.
                raise ConnectionError(f"Milvus at {self._settings.uri} does not answer: {exc}") from exc
        return self._client

    def _delete(self, collection: str, field_: str, subject_ids: list[str]) -> dict[str, int] | None:
        """How many vectors were deleted per subject; None if the collection does not exist."""
        client = self._connect()
        expression = subjects_filter(field_, subject_ids)
        try:
            if not client.has_collection(collection):
                return None
            if len(subject_ids) == 1:
                result: Any = client.delete(collection, filter=expression)
                # Milvus Lite answers with the deleted primary keys, a server with {"delete_count": n}.
                count = len(result) if isinstance(result, list) else int(result.get("delete_count", 0))
                return {subject_ids[0]: count}
            found = self._query(client, collection, expression, field_)
            client.delete(collection, filter=expression)
        except MilvusException as exc:
            if _unreachable(exc):
                self._client = None  # reconnect on the next try
                raise ConnectionError(f"Milvus at {self._settings.uri} went away: {exc}") from exc
            raise
        return dict(Counter(row[field_] for row in found))

    @staticmethod
    def _query(client: MilvusClient, collection: str, expression: str, field_: str) -> list[dict[str, Any]]:
        """The matching rows' subject field. A query needs the collection loaded (a delete does not): a collection
        a server restart left released is loaded once, then asked again."""
        try:
            rows: list[dict[str, Any]] = client.query(collection, filter=expression, output_fields=[field_])
        except MilvusException as exc:
            if "load" not in str(exc).lower():
                raise
            client.load_collection(collection)
            rows = client.query(collection, filter=expression, output_fields=[field_])
        return rows

    async def _joined(self, collection: str, field_: str, subject_id: str) -> int | None:
        """Join the next delete of this collection; the first waiter to hold the lock runs it for everyone queued."""
        waiting = self._waiting[(collection, field_)]
        mine: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        waiting.queue.append((subject_id, mine))
        async with waiting.lock:
            if not mine.done():
                group, waiting.queue = waiting.queue[:MAX_GROUP], waiting.queue[MAX_GROUP:]
                subjects = list(dict.fromkeys(s for s, _ in group))
                try:
                    counts = await asyncio.to_thread(self._delete, collection, field_, subjects)
                except BaseException as exc:
                    failure = exc if isinstance(exc, Exception) else ConnectionError("the delete was interrupted")
                    for _, future in group:
                        if not future.done() and future is not mine:
                            future.set_exception(failure)
                    raise
                for subject, future in group:
                    if not future.done():
                        future.set_result(None if counts is None else counts.get(subject, 0))
                if len(group) > 1:
                    log.debug("milvus.joined_delete", collection=collection, subjects=len(subjects))
        return await mine

    async def erase(self, dataset: Dataset, subject_id: str, **_: Any) -> DatasetOutcome:
        assert dataset.milvus is not None
        deleted = await self._joined(dataset.milvus.collection, dataset.milvus.filter_field, subject_id)
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
