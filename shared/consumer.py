"""The consumer loop every service shares: decode, validate, dispatch, commit; retries and the dead-letter topic.

A message is committed only after its handler returned and the handler's resulting events are in Kafka, so a
crash at any point means the message is consumed again (handlers are idempotent). A message that can never
succeed goes to ``<topic>.dlq`` with the reason in its headers; it is never swallowed. A topic that someone outside
lethe writes may also tell its sender why (a :class:`Route` with a rejection hook).
"""

from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import EndpointConnectionError
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from shared.events import Event, InvalidEventError, decode_event
from shared.kafka import Publisher
from shared.metrics import Metrics
from shared.scrub import scrub
from shared.settings import KafkaSettings
from shared.topics import dlq

log = structlog.get_logger(__name__)

Handler = Callable[[Event], Awaitable[Sequence[Event]]]
"""A handler takes a validated event and returns the events it decided to emit (publishing is the loop's job)."""


class PermanentError(Exception):
    """Raised by a handler for an event that can never succeed; the event is dead-lettered with this reason."""


# Failures of the servers behind a handler: worth waiting out, however long, rather than dead-lettering.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    AutoReconnect,
    ServerSelectionTimeoutError,
    EndpointConnectionError,
    BotoConnectionError,
)


@dataclass(frozen=True)
class Message:
    """The parts of a Kafka record the loop needs; independent of the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class DeadLetter:
    """A message on its way to the dead-letter topic: why (scrubbed of addresses), and the error that sent it."""

    message: Message
    reason: str
    error: Exception  # InvalidEventError when it did not decode; else what the handler raised last


RejectionHook = Callable[[DeadLetter], Sequence[Event]]
"""Decides, with no I/O, what to tell a message's sender when it is dead-lettered: the events to publish first."""


@dataclass(frozen=True)
class Route:
    """A handler, and a rejection hook for the messages of its topic that are dead-lettered.

    Dead-letter topics are the operators' to read. A topic that senders outside lethe write (``deletion.intents``)
    routes through a ``Route`` so that they hear of a message that was refused too: whenever one of its messages is
    dead-lettered (it does not decode, the handler raised :class:`PermanentError`, or it failed every attempt), the
    hook's events are published before the message goes to ``<topic>.dlq``. A crash in between publishes them again
    when the message is re-consumed, so the hook should give them ids derived from the message. A hook that raises
    is logged and skipped: the dead-letter itself must happen.
    """

    handle: Handler
    on_reject: RejectionHook

    async def __call__(self, event: Event) -> Sequence[Event]:
        return await self.handle(event)


BatchHandler = Callable[[Sequence[Event]], Awaitable[Sequence[Event]]]


@dataclass(frozen=True)
class BatchRoute:
    """A handler of every event one poll brought from the topics that share it (each partition's events in their
    order): one store write for many.

    The loop calls ``handle_many`` once with the batch's valid events (those that do not decode are dead-lettered
    first, as always). If that call fails in any way, nothing of the batch is committed and each event goes
    through the one-at-a-time path instead (``handle_many([event])``, with its retries and dead-lettering), so a
    poison event or an outage costs the batch's speed, never its guarantees. ``handle_many`` must therefore be
    idempotent for any prefix of the batch it may have applied before failing, like every handler.
    """

    handle_many: BatchHandler

    async def __call__(self, event: Event) -> Sequence[Event]:
        return await self.handle_many([event])


@dataclass
class MessageProcessor:
    """Takes one message from raw bytes to a durable result: handled and its events published, or dead-lettered."""

    routes: Mapping[str, Handler]
    publisher: Publisher
    settings: KafkaSettings
    metrics: Metrics
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS

    async def process(self, message: Message) -> str:
        """Returns ``ok`` or ``dead_lettered``. Raises only when asked to stop (cancellation)."""
        bound = log.bind(topic=message.topic, partition=message.partition, offset=message.offset)
        try:
            event = decode_event(message.topic, message.value)
        except InvalidEventError as exc:
            reason = scrub(str(exc))  # a validation error quotes the payload, which may hold an address
            await self._dead_letter(message, reason=reason, error_type="InvalidEventError", error=exc)
            bound.warning("event.dead_lettered", reason=reason)
            return "dead_lettered"
        bound = bound.bind(request_id=event.request_id, subject_id=event.subject_id, event_id=str(event.event_id))
        handler = self.routes.get(message.topic)
        if handler is None:
            reason = f"no handler for topic {message.topic!r}"
            await self._dead_letter(message, reason=reason, error_type="NoHandlerError")
            return "dead_lettered"
        with self.metrics.handle_seconds.labels(message.topic).time():
            outcome = await self._handle_with_retries(handler, event, message, bound)
        self.metrics.consumed.labels(message.topic, outcome).inc()
        return outcome

    async def process_batch(self, messages: Sequence[Message]) -> None:
        """Messages of topics that share one :class:`BatchRoute` (each partition's in order), through it in one
        call; else (or when that call fails) one at a time through :meth:`process`."""
        route = self.routes.get(messages[0].topic) if messages else None
        if not isinstance(route, BatchRoute) or len(messages) == 1:
            for message in messages:
                await self.process(message)
            return
        valid: list[tuple[Message, Event]] = []
        for message in messages:
            try:
                valid.append((message, decode_event(message.topic, message.value)))
            except InvalidEventError:
                await self.process(message)  # dead-letters it, with the reason and the metrics
        if not valid:
            return
        topics_ = sorted({m.topic for m, _ in valid})
        try:
            with self.metrics.handle_seconds.labels(topics_[0]).time():
                results = await route.handle_many([event for _, event in valid])
                for result in results:
                    await self.publisher.publish(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("batch.failed", topics=topics_, events=len(valid), error=scrub(repr(exc)))
            for message, _ in valid:
                await self.process(message)
            return
        for message, _ in valid:
            self.metrics.consumed.labels(message.topic, "ok").inc()
        log.debug("batch.handled", topics=topics_, events=len(valid), emitted=[r.type for r in results])

    async def _handle_with_retries(self, handler: Handler, event: Event, message: Message, bound: Any) -> str:
        attempt = 0
        while True:
            attempt += 1
            try:
                results = await handler(event)
                for result in results:
                    await self.publisher.publish(result)
                bound.debug("event.handled", emitted=[r.type for r in results])
                return "ok"
            except PermanentError as exc:
                reason = scrub(str(exc))
                await self._dead_letter(message, reason=reason, error_type=type(exc).__name__, error=exc)
                bound.warning("event.dead_lettered", reason=reason, error_type=type(exc).__name__)
                return "dead_lettered"
            except self.transient as exc:
                # The server behind the handler is down: wait it out, however long, so nothing is lost.
                self.metrics.retries.labels(message.topic).inc()
                delay = self._backoff(attempt)
                bound.warning("event.retrying", attempt=attempt, delay_s=round(delay, 2), error=scrub(repr(exc)))
                await self.sleep(delay)
            except Exception as exc:
                # Unexpected errors get a bounded number of tries, then the dead-letter topic.
                if attempt >= self.settings.retry_attempts:
                    reason = scrub(f"failed {attempt} times, last with {exc!r}")
                    await self._dead_letter(message, reason=reason, error_type=type(exc).__name__, error=exc)
                    # No exc_info: the rendered exception would carry its raw text (an SMTP reply names the address).
                    bound.error(
                        "event.dead_lettered",
                        reason=reason,
                        error_type=type(exc).__name__,
                        traceback=scrub("".join(traceback.format_exception(exc))),
                    )
                    return "dead_lettered"
                self.metrics.retries.labels(message.topic).inc()
                delay = self._backoff(attempt)
                bound.warning("event.retrying", attempt=attempt, delay_s=round(delay, 2), error=scrub(repr(exc)))
                await self.sleep(delay)

    def _rejections(self, route: Route, dead: DeadLetter) -> Sequence[Event]:
        try:
            return route.on_reject(dead)
        except Exception as exc:
            log.error(
                "event.rejection_hook_failed",
                topic=dead.message.topic,
                offset=dead.message.offset,
                error=scrub(repr(exc)),
            )
            return ()

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, capped."""
        ceiling = min(self.settings.retry_max_delay_s, self.settings.retry_initial_delay_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _dead_letter(
        self, message: Message, *, reason: str, error_type: str, error: Exception | None = None
    ) -> None:
        route = self.routes.get(message.topic)
        if isinstance(route, Route) and error is not None:
            notices = self._rejections(route, DeadLetter(message, reason, error))
            for notice in notices:
                await self.publisher.publish(notice)
            if notices:
                log.info(
                    "event.sender_told",
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    told=[f"{n.type}:{n.event_id}" for n in notices],
                )
        headers = [
            ("error", scrub(reason)[:4000].encode()),
            ("error_type", error_type.encode()),
            ("original_topic", message.topic.encode()),
            ("original_partition", str(message.partition).encode()),
            ("original_offset", str(message.offset).encode()),
        ]
        await self.publisher.publish_raw(dlq(message.topic), message.value, key=message.key, headers=headers)


class KafkaConsumerLoop:
    """Runs a :class:`MessageProcessor` over a consumer group with manual commits."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str,
        client_id: str,
        processor: MessageProcessor,
        partitions_at_once: int = 1,
    ) -> None:
        self._processor = processor
        self._gate = asyncio.Semaphore(partitions_at_once)
        self._consumer = AIOKafkaConsumer(
            *processor.routes,
            **settings.client_options(),
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.start_from,
            isolation_level="read_committed",
        )
        self._stopping = asyncio.Event()
        self._joined = False

    @property
    def ready(self) -> bool:
        """Joined its group (with partitions assigned, or none left over when there are more consumers)."""
        return self._joined and not self._stopping.is_set()

    async def start(self) -> None:
        await self._consumer.start()

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until asked to stop; finishes the messages in hand, commits what is done, then returns.

        The partitions of a batch are handled concurrently, each in order: events of one subject share a key, hence
        a partition, so they stay ordered, while a slow store call for one subject no longer holds up the others.
        """
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            if not self._joined and self._consumer.assignment():
                # Resolve every assigned partition's position now, so "ready" means "will see what comes next".
                for tp in self._consumer.assignment():
                    await self._consumer.position(tp)
                self._joined = True
            # The partitions whose topics share one BatchRoute are handled as one batch (each partition's messages
            # in order), the others each on their own.
            shared: dict[int, dict[TopicPartition, Sequence[Any]]] = {}
            alone: dict[TopicPartition, Sequence[Any]] = {}
            for tp, messages in batches.items():
                route = self._processor.routes.get(tp.topic)
                if isinstance(route, BatchRoute):
                    shared.setdefault(id(route), {})[tp] = messages
                else:
                    alone[tp] = messages
            await asyncio.gather(
                *(self._drain(tp, messages) for tp, messages in alone.items()),
                *(self._drain_together(group) for group in shared.values()),
            )

    async def _drain(self, tp: TopicPartition, messages: Sequence[Any]) -> None:
        """Handle one partition's messages in order, then commit past the last one handled."""
        done = None
        async with self._gate:
            for record in messages:
                if self._stopping.is_set() or tp not in self._consumer.assignment():
                    break  # a rebalance took the partition away: its new owner reads on from the last commit
                message = Message(record.topic, record.partition, record.offset, record.key, record.value)
                await self._processor.process(message)
                done = record.offset + 1
        if done is not None:
            await self._commit(tp, done)

    async def _drain_together(self, group: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """Handle the messages of several partitions as one batch (each partition's in order), then commit each."""
        async with self._gate:
            if self._stopping.is_set():
                return
            mine = {tp: records for tp, records in group.items() if tp in self._consumer.assignment()}
            batch = [Message(r.topic, r.partition, r.offset, r.key, r.value) for rs in mine.values() for r in rs]
            if not batch:
                return
            await self._processor.process_batch(batch)
        for tp, records in mine.items():
            await self._commit(tp, records[-1].offset + 1)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            await self._consumer.commit({tp: offset})
        except (CommitFailedError, IllegalStateError) as exc:
            # The partition moved to another member during a rebalance (while the batch was handled, or before the
            # commit): it re-consumes from the last committed offset, and handlers are idempotent.
            log.warning("commit.failed", topic=tp.topic, partition=tp.partition, error=str(exc))

    async def stop(self) -> None:
        self._stopping.set()
        await self._consumer.stop()
