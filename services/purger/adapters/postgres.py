"""The purger's PostgreSQL side (asyncpg): erasing or tagging a subject's rows of a table and of the child tables
the data map declares (``cascade``), and the nightly job's delete of a ledger chunk by primary key.

- ``erase``: one transaction per dataset; the children's rows first (deepest first), then the parent's.
- ``tag_then_purge``: the subject's untagged rows are listed in the purge ledger (MongoDB, as for every store), then
  tagged (``tag_column = now``) in one statement; SQL readers skip tagged rows (``shared.liveread``). The nightly job
  deletes a chunk's rows by primary key, children first, in one transaction: its cost follows the tagged rows.
- Identifiers come from the data map only (checked against a strict pattern there) and are quoted here; the
  subject id and primary keys are always bound parameters.
- At start, ``check`` reports each table that does not exist and each subject column or foreign key without an
  index (an erasure there would scan the table).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from services.purger.adapters.mongo import MongoPurgeLedger
from services.purger.model import LedgerChunk
from shared.datamap import Dataset, PostgresChild, PostgresLocation
from shared.events import DatasetCounts, DatasetOutcome

log = structlog.get_logger(__name__)

# What asyncpg raises when the server is away or the connection broke: the consumer waits those out.
_UNREACHABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


def quoted(name: str) -> str:
    """``shop.orders`` -> ``"shop"."orders"`` (each part quoted; the data map allows no quote characters)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def child_deletes(children: Sequence[PostgresChild], parent_keys: str) -> list[str]:
    """DELETE statements for the rows of ``children`` (and theirs) that belong to the parent rows whose primary
    keys ``parent_keys`` (a subquery) selects: deepest first, so no foreign key is ever left dangling."""
    statements: list[str] = []
    for child in children:
        table, fk = quoted(child.table), quoted(child.foreign_key)
        own_keys = f"SELECT {quoted(child.primary_key)} FROM {table} WHERE {fk} IN ({parent_keys})"
        statements += child_deletes(child.cascade, own_keys)
        statements.append(f"DELETE FROM {table} WHERE {fk} IN ({parent_keys})")
    return statements


def _count(status: str) -> int:
    """The row count of a command status such as ``DELETE 3`` or ``UPDATE 2``."""
    return int(status.rsplit(" ", 1)[-1])


def _ledger_id(value: Any) -> Any:
    """A primary key as the ledger (BSON) can hold it: ints and text as they are, anything else (uuid) as text."""
    return value if isinstance(value, int | str) else str(value)


class PostgresEraser:
    """Erases or tags one subject's rows of one PostgreSQL dataset; deletes ledger chunks for the nightly job."""

    def __init__(self, dsn: str, *, ledger: MongoPurgeLedger, datasets: Sequence[Dataset], max_size: int = 8) -> None:
        self._dsn, self._max_size = dsn, max_size
        self._ledger = ledger
        self._datasets = {d.name: d for d in datasets if d.postgres is not None}
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._max_size)
                except _UNREACHABLE as exc:
                    raise ConnectionError(f"PostgreSQL does not answer: {exc!r}") from exc
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        try:
            pool = await self._connected()
            return bool(await pool.fetchval("SELECT 1") == 1)
        except (ConnectionError, *_UNREACHABLE):
            return False

    async def check(self) -> list[str]:
        """What would make an erasure fail or scan: a missing table, a subject column or foreign key without an
        index. Each is logged (the purger calls this at start) and returned."""
        pool = await self._connected()
        problems: list[str] = []
        for dataset in self._datasets.values():
            assert dataset.postgres is not None
            for table, column in _indexed_columns(dataset.postgres):
                if await pool.fetchval("SELECT to_regclass($1)", quoted(table)) is None:
                    problems.append(f"dataset {dataset.name}: the table '{table}' does not exist")
                elif not await pool.fetchval(_HAS_COLUMN, quoted(table), column):
                    problems.append(f"dataset {dataset.name}: the table '{table}' has no column '{column}'")
                elif not await pool.fetchval(_HAS_INDEX, quoted(table), column):
                    problems.append(
                        f"dataset {dataset.name}: no index on {table}({column}): each erasure would scan the table"
                    )
        for problem in problems:
            log.error("purger.postgres_not_ready", problem=problem)
        return problems

    async def erase(
        self, dataset: Dataset, subject_id: str, *, request_id: str, now: datetime, purge_after: datetime
    ) -> DatasetOutcome:
        loc = dataset.postgres
        assert loc is not None
        pool = await self._connected()
        try:
            async with pool.acquire() as conn, conn.transaction():
                if dataset.mode == "erase":
                    return await _erase(conn, dataset, loc, subject_id)
                return await self._tag(conn, dataset, loc, subject_id, request_id, now, purge_after)
        except asyncpg.UndefinedTableError as exc:  # the table, or a child table the map names
            error = f"a table of the dataset does not exist: '{loc.table}' or a child ({exc})"
            if await pool.fetchval("SELECT to_regclass($1)", quoted(loc.table)) is None:
                error = f"the table '{loc.table}' does not exist"
            return DatasetOutcome(dataset=dataset.name, store="postgres", outcome="failed", error=error)
        except asyncpg.UndefinedColumnError as exc:
            error = f"a column the data map names is not in the tables of the dataset: {exc}"
            return DatasetOutcome(dataset=dataset.name, store="postgres", outcome="failed", error=error)
        except _UNREACHABLE as exc:
            raise ConnectionError(f"PostgreSQL is away during the erasure of {dataset.name}: {exc!r}") from exc

    async def _tag(
        self,
        conn: asyncpg.Connection,
        dataset: Dataset,
        loc: PostgresLocation,
        subject_id: str,
        request_id: str,
        now: datetime,
        purge_after: datetime,
    ) -> DatasetOutcome:
        assert loc.tag_column is not None
        table, pk, tag = quoted(loc.table), quoted(loc.primary_key), quoted(loc.tag_column)
        rows = await conn.fetch(
            f"SELECT {pk} AS id, {tag} IS NOT NULL AS tagged FROM {table} WHERE {quoted(loc.subject_column)} = $1 "
            "FOR UPDATE",
            subject_id,
        )
        untagged = [r["id"] for r in rows if not r["tagged"]]
        # Rows this request tagged in an earlier, interrupted run are its own (listed in its chunks); rows tagged by
        # an earlier request of the subject are in that request's chunks.
        listed = {repr(i) for i in await self._ledger.listed(request_id, dataset.name)}
        mine = [r["id"] for r in rows if not r["tagged"] or repr(_ledger_id(r["id"])) in listed]
        # The ledger first, then the tags (as in MongoDB): every tagged row is listed at every moment.
        await self._ledger.add(
            dataset, loc.table, subject_id, request_id, sorted((_ledger_id(i) for i in mine), key=str), purge_after
        )
        if untagged:
            await conn.execute(f"UPDATE {table} SET {tag} = $2 WHERE {pk} = ANY($1) AND {tag} IS NULL", untagged, now)
        if not mine:
            return DatasetOutcome(dataset=dataset.name, store="postgres", outcome="erased")
        return DatasetOutcome(
            dataset=dataset.name,
            store="postgres",
            outcome="tagged",
            counts=DatasetCounts(records_tagged=len(mine)),
            purge_after=purge_after,
        )

    async def rows(self, dataset: Dataset) -> list[dict[str, Any]]:
        """Every row of the dataset's table and child tables, each with its ``table`` (for ``lethe backup``)."""
        assert dataset.postgres is not None
        pool = await self._connected()
        found: list[dict[str, Any]] = []
        for table in dataset.postgres.tables():
            found += [{"table": table, **_plain(dict(r))} for r in await pool.fetch(f"SELECT * FROM {quoted(table)}")]
        return found

    async def delete_ids(self, chunk: LedgerChunk) -> int:
        """The nightly job: delete the chunk's rows by primary key (their children first), in one transaction."""
        dataset = self._datasets[chunk.dataset]
        loc = dataset.postgres
        assert loc is not None
        table, pk = quoted(loc.table), quoted(loc.primary_key)
        ids = list(chunk.ids)  # a uuid key is held as text; asyncpg binds text to a uuid column
        pool = await self._connected()
        try:
            async with pool.acquire() as conn, conn.transaction():
                for statement in child_deletes(loc.cascade, f"SELECT {pk} FROM {table} WHERE {pk} = ANY($1)"):
                    await conn.execute(statement, ids)
                return _count(await conn.execute(f"DELETE FROM {table} WHERE {pk} = ANY($1)", ids))
        except _UNREACHABLE as exc:
            raise ConnectionError(f"PostgreSQL is away during the nightly purge of {chunk.chunk_id}: {exc!r}") from exc


async def _erase(conn: asyncpg.Connection, dataset: Dataset, loc: PostgresLocation, subject_id: str) -> DatasetOutcome:
    table, subject = quoted(loc.table), quoted(loc.subject_column)
    erased = 0
    for statement in child_deletes(loc.cascade, f"SELECT {quoted(loc.primary_key)} FROM {table} WHERE {subject} = $1"):
        erased += _count(await conn.execute(statement, subject_id))
    erased += _count(await conn.execute(f"DELETE FROM {table} WHERE {subject} = $1", subject_id))
    return DatasetOutcome(
        dataset=dataset.name, store="postgres", outcome="erased", counts=DatasetCounts(records_erased=erased)
    )


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row as BSON-JSON can hold it: numbers, text, booleans, times and None as they are, the rest as text."""
    return {k: v if v is None or isinstance(v, int | float | str | bool | datetime) else str(v) for k, v in row.items()}


def _indexed_columns(loc: PostgresLocation) -> list[tuple[str, str]]:
    """(table, column) that an erasure searches by: the subject column, and each child's foreign key."""

    def walk(children: Sequence[PostgresChild]) -> list[tuple[str, str]]:
        return [pair for c in children for pair in [(c.table, c.foreign_key), *walk(c.cascade)]]

    return [(loc.table, loc.subject_column), *walk(loc.cascade)]


_HAS_COLUMN = """
SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped)
"""
# An index whose first column is the one searched by (a multi-column index serves it too).
_HAS_INDEX = """
SELECT EXISTS (
    SELECT 1 FROM pg_index i
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = to_regclass($1) AND a.attname = $2
)
"""
