"""What the purger service decides for each event it consumes (no I/O here).

The routes below are consumed for real; their decisions are built in issue #4.
"""

from collections.abc import Mapping

from shared import topics
from shared.consumer import Handler
from shared.wiring import not_yet_handled

CONSUMES: tuple[str, ...] = (
    topics.DELETION_REQUESTED,
    topics.RETENTION_RULES_CHANGED,
    topics.LEGAL_HOLD_RELEASED,
)


def routes() -> Mapping[str, Handler]:
    """The registry of what purger reacts to: topic -> handler."""
    pending = not_yet_handled("#4")
    return {topic: pending for topic in CONSUMES}
