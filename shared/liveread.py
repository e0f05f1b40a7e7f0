"""The filter every live reader of a ``tag_then_purge`` dataset adds, so that tagged records count as gone.

The purger tags a subject's records (``deletion.tagged_at``, ``deletion.purge_after``) and the nightly job
deletes them later; in between, products must not show or use them.
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
