"""The consumer loop's decisions, with an in-memory publisher: dispatch, retries, the dead-letter topic and the
rejection hook that tells a sender why."""

import asyncio
import json
from collections.abc import Sequence
from datetime import timedelta

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from structlog.testing import capture_logs

from shared import topics
from shared.consumer import (
    BatchRoute,
    DeadLetter,
    KafkaConsumerLoop,
    Message,
    MessageProcessor,
    PermanentError,
    Route,
)
from shared.events import (
    DatasetOutcome,
    DeletionOverdue,
    DeletionPurged,
    DeletionRequested,
    Event,
    InvalidEventError,
    utcnow,
)
from shared.fakes import InMemoryPublisher
from shared.metrics import Metrics
from shared.settings import KafkaSettings

pytestmark = pytest.mark.asyncio


def requested() -> DeletionRequested:
    return DeletionRequested(
        request_id="req-1",
        subject_id="user-1",
        producer="intake",
        requested_by="user-1",
        deadline_at=utcnow() + timedelta(days=30),
        backups_purged_by=utcnow() + timedelta(days=90),
    )


def message(value: bytes | None, topic: str = topics.DELETION_REQUESTED, offset: int = 7) -> Message:
    return Message(topic=topic, partition=3, offset=offset, key=b"user-1", value=value)


class Sleeps:
    """Records backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def processor(handler, publisher: InMemoryPublisher, sleeps: Sleeps, attempts: int = 3) -> MessageProcessor:
    return MessageProcessor(
        routes={topics.DELETION_REQUESTED: handler},
        publisher=publisher,
        settings=KafkaSettings(retry_attempts=attempts),
        metrics=Metrics(service="test"),
        sleep=sleeps,
    )


def purged_from(event: Event) -> DeletionPurged:
    assert isinstance(event, DeletionRequested)
    return DeletionPurged(
        request_id=event.request_id,
        subject_id=event.subject_id,
        producer="purger",
        outcomes=(DatasetOutcome(dataset="profiles", store="mongo", outcome="erased"),),
    )


async def test_a_valid_event_is_handled_and_its_results_are_published():
    publisher, sleeps = InMemoryPublisher(), Sleeps()

    async def handler(event: Event) -> Sequence[Event]:
        return [purged_from(event)]

    outcome = await processor(handler, publisher, sleeps).process(message(requested().to_bytes()))

    assert outcome == "ok"
    assert [e.type for e in publisher.events] == [topics.DELETION_PURGED]
    assert publisher.raw == []


@pytest.mark.parametrize("value", [None, b"{not json", b'{"type": "deletion.purged"}'])
async def test_a_poison_message_goes_to_the_dead_letter_topic_with_the_reason(value):
    publisher, sleeps = InMemoryPublisher(), Sleeps()
    calls: list[Event] = []

    async def handler(event: Event) -> Sequence[Event]:
        calls.append(event)
        return []

    outcome = await processor(handler, publisher, sleeps).process(message(value))

    assert outcome == "dead_lettered"
    assert calls == []
    [dead] = publisher.on("deletion.requested.dlq")
    assert dead.value == value
    assert dead.key == b"user-1"
    assert dead.header("error")
    assert dead.header("original_topic") == "deletion.requested"
    assert dead.header("original_partition") == "3"
    assert dead.header("original_offset") == "7"


async def test_a_permanent_error_is_dead_lettered_at_once_with_its_message():
    publisher, sleeps = InMemoryPublisher(), Sleeps()

    async def handler(event: Event) -> Sequence[Event]:
        raise PermanentError("dataset 'nope' is not in the data map")

    outcome = await processor(handler, publisher, sleeps).process(message(requested().to_bytes()))

    assert outcome == "dead_lettered"
    assert sleeps.delays == []
    [dead] = publisher.on("deletion.requested.dlq")
    assert dead.header("error") == "dataset 'nope' is not in the data map"
    assert dead.header("error_type") == "PermanentError"


async def test_a_transient_failure_is_retried_with_growing_backoff_until_it_succeeds():
    publisher, sleeps = InMemoryPublisher(), Sleeps()
    failures = 5  # more than retry_attempts: a server outage is waited out, never dead-lettered

    async def handler(event: Event) -> Sequence[Event]:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("mongo is down")
        return [purged_from(event)]

    outcome = await processor(handler, publisher, sleeps, attempts=3).process(message(requested().to_bytes()))

    assert outcome == "ok"
    assert len(sleeps.delays) == 5
    assert sleeps.delays[-1] > sleeps.delays[0]
    assert len(publisher.events) == 1
    assert publisher.raw == []


async def test_an_unexpected_error_is_dead_lettered_after_the_configured_attempts():
    publisher, sleeps = InMemoryPublisher(), Sleeps()
    calls = 0

    async def handler(event: Event) -> Sequence[Event]:
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    outcome = await processor(handler, publisher, sleeps, attempts=3).process(message(requested().to_bytes()))

    assert outcome == "dead_lettered"
    assert calls == 3
    [dead] = publisher.on("deletion.requested.dlq")
    assert "failed 3 times" in dead.header("error")
    assert dead.header("error_type") == "KeyError"


async def test_a_topic_without_a_handler_is_dead_lettered():
    publisher, sleeps = InMemoryPublisher(), Sleeps()
    purged = purged_from(requested())

    async def handler(event: Event) -> Sequence[Event]:
        return []

    outcome = await processor(handler, publisher, sleeps).process(
        message(purged.to_bytes(), topic=topics.DELETION_PURGED)
    )

    assert outcome == "dead_lettered"
    assert publisher.on("deletion.purged.dlq")


ADDRESS = "ada.lovelace@example.test"


def leaks(logs: list[dict], publisher: InMemoryPublisher) -> list[str]:
    """Every log entry and dead-letter header that still names the address."""
    found = [repr(entry) for entry in logs if ADDRESS in repr(entry)]
    return found + [f"{name}={value!r}" for m in publisher.raw for name, value in m.headers if b"example.test" in value]


async def test_an_error_naming_an_address_is_dead_lettered_and_logged_without_it():
    publisher, sleeps = InMemoryPublisher(), Sleeps()

    async def handler(event: Event) -> Sequence[Event]:
        raise RuntimeError(f"SMTP 550 5.1.1 <{ADDRESS}>: Recipient address rejected")

    with capture_logs() as logs:
        outcome = await processor(handler, publisher, sleeps, attempts=2).process(message(requested().to_bytes()))

    assert outcome == "dead_lettered"
    [dead] = publisher.on("deletion.requested.dlq")
    assert "<address>" in dead.header("error")
    assert dead.header("error_type") == "RuntimeError"
    assert leaks(logs, publisher) == []
    [final] = [e for e in logs if e["event"] == "event.dead_lettered"]
    assert final["error_type"] == "RuntimeError"
    assert "exc_info" not in final
    assert [e["event"] for e in logs].count("event.retrying") == 1


async def test_a_permanent_error_and_a_transient_one_naming_an_address_leave_it_nowhere():
    publisher, sleeps = InMemoryPublisher(), Sleeps()
    failures = [ConnectionError(f"relay for {ADDRESS} is down"), PermanentError(f"{ADDRESS} cannot be mailed")]

    async def handler(event: Event) -> Sequence[Event]:
        raise failures.pop(0)

    with capture_logs() as logs:
        outcome = await processor(handler, publisher, sleeps).process(message(requested().to_bytes()))

    assert outcome == "dead_lettered"
    assert [e["event"] for e in logs] == ["event.retrying", "event.dead_lettered"]
    assert publisher.on("deletion.requested.dlq")[0].header("error") == "<address> cannot be mailed"
    assert leaks(logs, publisher) == []


async def test_a_poison_message_quoting_an_address_is_dead_lettered_without_it():
    publisher, sleeps = InMemoryPublisher(), Sleeps()
    poison = json.dumps({"type": "deletion.requested", "subject_id": ADDRESS}).encode()

    async def handler(event: Event) -> Sequence[Event]:
        return []

    with capture_logs() as logs:
        outcome = await processor(handler, publisher, sleeps).process(message(poison))

    assert outcome == "dead_lettered"
    assert leaks(logs, publisher) == []


class RevokedConsumer:
    """What aiokafka's consumer does once a rebalance has taken a partition away from this member."""

    def assignment(self) -> set:
        return set()

    async def commit(self, offsets: dict) -> None:
        raise IllegalStateError(f"Partition {next(iter(offsets))} is not assigned")


async def test_a_commit_for_a_partition_a_rebalance_took_away_does_not_kill_the_consumer():
    loop = KafkaConsumerLoop(
        KafkaSettings(security_protocol="PLAINTEXT"),
        group_id="g",
        client_id="c",
        processor=processor(None, InMemoryPublisher(), Sleeps()),
    )
    loop._consumer = RevokedConsumer()  # type: ignore[assignment]
    await loop._commit(TopicPartition(topics.DELETION_REQUESTED, 0), 5)  # logged; the new owner re-reads


class OneBatchConsumer:
    """A consumer that hands out one batch over two partitions, then stops the loop; records commits."""

    def __init__(self, batch: dict, stop) -> None:
        self._batch, self._stop, self._assigned = batch, stop, set(batch)
        self.committed: list[dict] = []

    def assignment(self) -> set:
        return self._assigned

    async def position(self, tp: TopicPartition) -> int:
        return 0

    async def getmany(self, **_: object) -> dict:
        batch, self._batch = self._batch, {}
        if not batch:
            self._stop()
        return batch

    async def commit(self, offsets: dict) -> None:
        self.committed.append(offsets)


class Record:
    def __init__(self, partition: int, offset: int, subject: str) -> None:
        self.topic, self.partition, self.offset, self.key = topics.DELETION_REQUESTED, partition, offset, b"k"
        self.value = requested().model_copy(update={"subject_id": subject, "request_id": subject}).to_bytes()


async def loop_over_two_partitions(partitions_at_once: int) -> tuple[list[str], list[dict]]:
    """Partition 0 holds a slow subject then another; partition 1 a fast one. Returns the order handled."""
    handled: list[str] = []

    async def handler(event: Event) -> Sequence[Event]:
        if event.subject_id == "slow":
            await asyncio.sleep(0.2)
        handled.append(event.subject_id)
        return []

    consumer = await run_one_poll(handler, partitions_at_once, "slow", "after-slow", "fast")
    return handled, consumer.committed


async def run_one_poll(handler, partitions_at_once: int, first: str, second: str, third: str) -> OneBatchConsumer:
    """One poll: ``first`` and ``second`` in partition 0 (offsets 10, 11), ``third`` in partition 1 (offset 4)."""
    tp0, tp1 = TopicPartition(topics.DELETION_REQUESTED, 0), TopicPartition(topics.DELETION_REQUESTED, 1)
    loop = KafkaConsumerLoop(
        KafkaSettings(security_protocol="PLAINTEXT"),
        group_id="g",
        client_id="c",
        processor=processor(handler, InMemoryPublisher(), Sleeps()),
        partitions_at_once=partitions_at_once,
    )
    consumer = OneBatchConsumer(
        {tp0: [Record(0, 10, first), Record(0, 11, second)], tp1: [Record(1, 4, third)]}, loop.request_stop
    )
    loop._consumer = consumer  # type: ignore[assignment]
    await loop.run()
    return consumer


async def test_partitions_are_handled_concurrently_each_in_order_and_each_committed_past_its_last():
    handled, committed = await loop_over_two_partitions(partitions_at_once=2)
    assert handled == ["fast", "slow", "after-slow"]  # the fast partition did not wait behind the slow one
    assert {tp.partition: offset for c in committed for tp, offset in c.items()} == {0: 12, 1: 5}


async def test_one_partition_at_a_time_keeps_the_batch_sequential():
    handled, committed = await loop_over_two_partitions(partitions_at_once=1)
    assert handled == ["slow", "after-slow", "fast"]
    assert len(committed) == 2


async def test_the_partitions_of_a_poll_that_share_a_batch_route_are_handled_in_one_call_and_each_committed():
    calls: list[list[str]] = []

    async def handle_many(events: Sequence[Event]) -> Sequence[Event]:
        calls.append([e.subject_id or "" for e in events])
        return []

    consumer = await run_one_poll(BatchRoute(handle_many), 1, "a", "b", "c")
    assert calls == [["a", "b", "c"]]  # one call for the poll, each partition's events in order
    assert {tp.partition: offset for c in consumer.committed for tp, offset in c.items()} == {0: 12, 1: 5}


class Timeline(InMemoryPublisher):
    """An in-memory publisher that also records the order of everything published, events and raw alike."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    async def publish(self, event: Event) -> None:
        self.order.append(event.type)
        await super().publish(event)

    async def publish_raw(self, topic, value, *, key, headers) -> None:
        self.order.append(topic)
        await super().publish_raw(topic, value, key=key, headers=headers)


def telling(seen: list[DeadLetter]):
    """A rejection hook that answers each dead-lettered message with an overdue notice naming its offset."""

    def hook(dead: DeadLetter) -> Sequence[Event]:
        seen.append(dead)
        return [
            DeletionOverdue(
                request_id=f"offset-{dead.message.offset}",
                subject_id="user-1",
                producer="test",
                deadline_at=utcnow(),
                status=dead.reason[:50],
                past_deadline=False,
            )
        ]

    return hook


async def test_a_route_tells_the_sender_of_an_undecodable_message_before_it_is_dead_lettered():
    publisher, sleeps, seen = Timeline(), Sleeps(), []
    calls: list[Event] = []

    async def handler(event: Event) -> Sequence[Event]:
        calls.append(event)
        return []

    route = Route(handler, on_reject=telling(seen))
    with capture_logs() as logs:
        outcome = await processor(route, publisher, sleeps).process(message(b"{not json"))

    assert outcome == "dead_lettered" and calls == []
    assert publisher.order == [topics.DELETION_OVERDUE, "deletion.requested.dlq"]
    [told] = [e for e in logs if e["event"] == "event.sender_told"]
    assert told["told"] == [f"deletion.overdue:{publisher.events[0].event_id}"] and told["offset"] == 7
    [dead] = seen
    assert isinstance(dead.error, InvalidEventError)
    assert dead.message.value == b"{not json" and dead.message.offset == 7
    assert dead.reason == publisher.on("deletion.requested.dlq")[0].header("error")


async def test_a_route_tells_the_sender_of_a_permanent_error_and_of_a_message_that_failed_every_attempt():
    publisher, sleeps, seen = Timeline(), Sleeps(), []
    failures = [PermanentError(f"{ADDRESS} may not ask"), KeyError("bug"), KeyError("bug")]

    async def handler(event: Event) -> Sequence[Event]:
        raise failures.pop(0)

    route = Route(handler, on_reject=telling(seen))
    first = await processor(route, publisher, sleeps, attempts=2).process(message(requested().to_bytes()))
    second = await processor(route, publisher, sleeps, attempts=2).process(message(requested().to_bytes(), offset=8))

    assert (first, second) == ("dead_lettered", "dead_lettered")
    assert [type(d.error) for d in seen] == [PermanentError, KeyError]
    assert seen[0].reason == "<address> may not ask"  # the sender hears the scrubbed reason, as the dead-letter says
    assert "failed 2 times" in seen[1].reason
    assert publisher.order == [topics.DELETION_OVERDUE, "deletion.requested.dlq"] * 2
    assert [e.request_id for e in publisher.events] == ["offset-7", "offset-8"]


async def test_a_route_tells_nothing_about_a_message_that_was_handled():
    publisher, sleeps, seen = Timeline(), Sleeps(), []

    async def handler(event: Event) -> Sequence[Event]:
        return [purged_from(event)]

    outcome = await processor(Route(handler, on_reject=telling(seen)), publisher, sleeps).process(
        message(requested().to_bytes())
    )

    assert outcome == "ok" and seen == []
    assert publisher.order == [topics.DELETION_PURGED]


async def test_a_rejection_hook_that_fails_is_logged_and_the_message_is_still_dead_lettered():
    publisher, sleeps = Timeline(), Sleeps()

    async def handler(event: Event) -> Sequence[Event]:
        return []

    def broken(dead: DeadLetter) -> Sequence[Event]:
        raise ValueError(f"cannot answer {ADDRESS}")

    with capture_logs() as logs:
        outcome = await processor(Route(handler, on_reject=broken), publisher, sleeps).process(message(None))

    assert outcome == "dead_lettered"
    assert publisher.order == ["deletion.requested.dlq"]
    assert "event.rejection_hook_failed" in [e["event"] for e in logs]
    assert leaks(logs, publisher) == []


def requested_for(n: int) -> DeletionRequested:
    return requested().model_copy(update={"request_id": f"req-{n}", "subject_id": f"user-{n}"})


async def test_a_batch_route_gets_the_valid_events_of_a_poll_in_one_call_and_poison_is_dead_lettered():
    calls: list[list[str]] = []

    async def handle_many(events: Sequence[Event]) -> Sequence[Event]:
        calls.append([e.request_id or "" for e in events])
        return [purged_from(e) for e in events]

    publisher, sleeps = InMemoryPublisher(), Sleeps()
    batch = [message(requested_for(1).to_bytes(), offset=1), message(b"{oops", offset=2)]
    batch += [message(requested_for(n).to_bytes(), offset=n) for n in (3, 4)]
    await processor(BatchRoute(handle_many), publisher, sleeps).process_batch(batch)
    assert calls == [["req-1", "req-3", "req-4"]]
    assert [e.request_id for e in publisher.events] == ["req-1", "req-3", "req-4"]
    assert [m.topic for m in publisher.raw] == [topics.dlq(topics.DELETION_REQUESTED)]


async def test_a_failed_batch_is_handled_again_one_event_at_a_time_so_only_the_poison_is_dead_lettered():
    calls: list[list[str]] = []

    async def handle_many(events: Sequence[Event]) -> Sequence[Event]:
        calls.append([e.request_id or "" for e in events])
        if any(e.request_id == "req-2" for e in events):
            raise PermanentError("req-2 can never be handled")
        return [purged_from(e) for e in events]

    publisher, sleeps = InMemoryPublisher(), Sleeps()
    batch = [message(requested_for(n).to_bytes(), offset=n) for n in (1, 2, 3)]
    await processor(BatchRoute(handle_many), publisher, sleeps).process_batch(batch)
    assert calls == [["req-1", "req-2", "req-3"], ["req-1"], ["req-2"], ["req-3"]]
    assert [e.request_id for e in publisher.events] == ["req-1", "req-3"]
    assert len(publisher.raw) == 1 and publisher.raw[0].topic == topics.dlq(topics.DELETION_REQUESTED)
