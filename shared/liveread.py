"""The filter every live reader of a ``tag_then_purge`` dataset adds, so that tagged records count as gone.

The purger tags a subject's records and the nightly job deletes them later; in between, products must not show or
use them.

- MongoDB: the purger sets ``deletion.tagged_at`` and ``deletion.purge_after``; readers add :func:`live`.
- PostgreSQL: the purger sets the dataset's ``tag_column`` (a ``timestamptz``, named in the data map) to the
  moment it tagged the row; readers add ``AND <tag_column> IS NULL`` (:func:`live_sql`), in every query and view
  over the table. Child tables (``cascade``) are not tagged: they are read through their parent, so a join with
  the parent's filter hides them too. The nightly job deletes the rows and their children by primary key.
"""

from __future__ import annotations

from typing import Any

TAGGED_AT = "deletion.tagged_at"
PURGE_AFTER = "deletion.purge_after"
LIVE: dict[str, Any] = {TAGGED_AT: {"$exists": False}}


def live(query: dict[str, Any]) -> dict[str, Any]:
    """``query`` restricted to records that are not tagged for deletion.

    Merged into one document when ``query`` does not name the tag itself: the same filter, and one a planner serves
    from the query's indexes (SecantusDB scans the whole collection for any top-level ``$and``)."""
    if TAGGED_AT not in query:
        return {**query, **LIVE}
    return {"$and": [query, LIVE]}


def live_sql(tag_column: str) -> str:
    """The SQL condition that keeps a PostgreSQL reader to untagged rows (``tag_column`` from the data map)."""
    return '"' + tag_column.replace('"', '""') + '" IS NULL'
