"""What the keyvault service decides for each event it consumes (no I/O here).

The routes below are consumed for real; their decisions are built in issue #5.
"""

from collections.abc import Mapping

from shared import topics
from shared.consumer import Handler
from shared.wiring import not_yet_handled

CONSUMES: tuple[str, ...] = (topics.DELETION_PURGED,)


def routes() -> Mapping[str, Handler]:
    """The registry of what keyvault reacts to: topic -> handler."""
    pending = not_yet_handled("#5")
    return {topic: pending for topic in CONSUMES}
