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
    """``query`` restricted to records that are not tagged for deletion."""
    return {"$and": [query, LIVE]} if query else dict(LIVE)
