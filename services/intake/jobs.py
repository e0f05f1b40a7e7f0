"""intake's background jobs: the outbox relay (publishes what the stores hold for Kafka) and the deadline watch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog

from services.intake import handlers
from services.intake.ports import Outbox, RequestStore
from shared.events import DeletionRequested, InvalidEventError, decode_any
from shared.kafka import Publisher

log = structlog.get_logger(__name__)


class OutboxRelay:
    """Publishes the events stored in documents' outboxes, then clears them; ``wake`` is set after each write.
    With a cooling-off period, each round first hands over the requests whose period has ended (their
    deletion.requested); without one, nothing is held and the round does not look."""

    def __init__(
        self, outbox: Outbox, requests: RequestStore, clock: Callable[[], datetime], *, holds: bool = False
    ) -> None:
        self._outbox, self._requests, self._clock = outbox, requests, clock
        self._holds = holds  # a cooling-off period is configured: requests may be held
        self.wake = asyncio.Event()

    def kick(self) -> None:
        self.wake.set()

    async def drain(self, publisher: Publisher) -> int:
        """One round. If Kafka or MongoDB is away, the events stay in their outboxes for a later round."""
        sent = 0
        if self._holds and (moved := await self._requests.hand_over_due(self._clock())):
            log.info("outbox.cooling_off_ended", requests=moved)
        for entry in await self._outbox.pending():
            for raw in entry.raw:
                try:
                    event = decode_any(raw)
                except InvalidEventError:
                    log.error("outbox.undecodable_event", collection=entry.collection, doc_id=entry.doc_id)
                    continue
                if isinstance(event, DeletionRequested):
                    # A crash between the claim and the request's insert is repaired here, before anyone is told.
                    await self._requests.ensure(handlers.from_requested(event))
                await publisher.publish(event)
                sent += 1
                log.info("outbox.published", type=event.type, event_id=str(event.event_id))
            await self._outbox.clear(entry)
        return sent


async def warn_overdue(
    requests: RequestStore, publisher: Publisher, *, clock: Callable[[], datetime], fraction: float
) -> None:
    """One round of the deadline watch: deletion.overdue for open requests near (``fraction`` of the time) and past
    their deadline, each recorded at once so that the next round does not send it again."""
    for notice in await handlers.open_requests_due(requests, now=clock(), warn_fraction=fraction):
        await publisher.publish(notice)
        await handlers.track(notice, requests, now=clock())
        log.warning(
            "request.overdue", request_id=notice.request_id, past_deadline=notice.past_deadline, about=notice.about
        )
