"""What the notifier service decides for each event it consumes (no I/O here).

The routes below are consumed for real; their decisions are built in issue #6.
"""

from collections.abc import Mapping

from shared import topics
from shared.consumer import Handler
from shared.wiring import not_yet_handled

CONSUMES: tuple[str, ...] = (topics.DELETION_KEYS_DESTROYED, topics.DELETION_OVERDUE)


def routes() -> Mapping[str, Handler]:
    """The registry of what notifier reacts to: topic -> handler."""
    pending = not_yet_handled("#6")
    return {topic: pending for topic in CONSUMES}
