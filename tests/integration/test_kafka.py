"""Our Kafka publisher and consumer loop against the real broker: round trip, dead letters, crash recovery."""

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared import topics
from shared.consumer import KafkaConsumerLoop, MessageProcessor
from shared.events import DeletionRequested, Event, utcnow
from shared.kafka import KafkaPublisher, ensure_topics
from shared.metrics import Metrics
from shared.settings import KafkaSettings
from tests.support import kafka_options

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]


@pytest_asyncio.fixture
async def settings(kafka_bootstrap):
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, retry_attempts=2, retry_initial_delay_s=0.01)
    await ensure_topics(settings, topics.ALL_TOPICS, partitions=topics.PARTITIONS)
    return settings


@pytest_asyncio.fixture
async def publisher(settings):
    publisher = KafkaPublisher(settings, client_id="lethe-test")
    await publisher.start()
    yield publisher
    await publisher.stop()


def requested(subject_id: str) -> DeletionRequested:
    return DeletionRequested(
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        subject_id=subject_id,
        producer="test",
        requested_by=subject_id,
        deadline_at=utcnow() + timedelta(days=30),
        backups_purged_by=utcnow() + timedelta(days=90),
    )


class Recorder:
    """A handler that records the events of the subjects a test cares about; it can be told to hang."""

    def __init__(self, subject_ids: set[str]) -> None:
        self.subject_ids = subject_ids
        self.seen: list[Event] = []
        self.hang = False
        self.arrived = asyncio.Event()

    async def __call__(self, event: Event) -> Sequence[Event]:
        if event.subject_id in self.subject_ids:
            self.seen.append(event)
            self.arrived.set()
            if self.hang:
                await asyncio.Event().wait()  # a crash mid-handling: never returns, never commits
        return []


def loop_for(settings: KafkaSettings, group: str, handler, publisher) -> KafkaConsumerLoop:
    processor = MessageProcessor(
        routes={topics.DELETION_REQUESTED: handler}, publisher=publisher, settings=settings, metrics=Metrics("test")
    )
    return KafkaConsumerLoop(settings, group_id=group, client_id=group, processor=processor)


async def run_until(loop: KafkaConsumerLoop, condition, limit_s: float = 60) -> asyncio.Task:
    await loop.start()
    task = asyncio.create_task(loop.run())
    async with asyncio.timeout(limit_s):
        while not condition():
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    return task


async def committed(settings: KafkaSettings, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**kafka_options(settings.bootstrap_servers))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def test_a_published_event_is_consumed_once_and_committed_after_it_was_handled(settings, publisher):
    subject = f"user-{uuid.uuid4().hex[:8]}"
    event = requested(subject)
    await publisher.publish(event)
    recorder = Recorder({subject})
    group = f"test-{uuid.uuid4().hex[:8]}"
    loop = loop_for(settings, group, recorder, publisher)

    task = await run_until(loop, lambda: recorder.seen)
    await asyncio.sleep(1)  # time for a wrongly repeated delivery to show up
    loop.request_stop()
    await task
    await loop.stop()

    assert recorder.seen == [event]
    positions = await committed(settings, group)
    assert sum(positions.values()) > 0
    assert all(tp.topic == topics.DELETION_REQUESTED for tp in positions)


async def test_a_poison_message_lands_on_the_dead_letter_topic_and_the_loop_keeps_flowing(settings, publisher):
    poison_key = f"poison-{uuid.uuid4().hex[:8]}".encode()
    subject = poison_key.decode()  # same key, so the good event lands behind the poison on one partition
    good = requested(subject)
    await publisher.publish_raw(topics.DELETION_REQUESTED, b'{"not": "an event"}', key=poison_key, headers=[])
    await publisher.publish(good)
    recorder = Recorder({subject})
    loop = loop_for(settings, f"test-{uuid.uuid4().hex[:8]}", recorder, publisher)

    task = await run_until(loop, lambda: recorder.seen)
    loop.request_stop()
    await task
    await loop.stop()
    assert recorder.seen == [good]

    reader = AIOKafkaConsumer(
        topics.dlq(topics.DELETION_REQUESTED),
        **kafka_options(settings.bootstrap_servers),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        dead = None
        async with asyncio.timeout(30):
            async for record in reader:
                if record.key == poison_key:
                    dead = record
                    break
    finally:
        await reader.stop()
    headers = {k: v.decode() for k, v in dead.headers}
    assert dead.value == b'{"not": "an event"}'
    assert headers["original_topic"] == topics.DELETION_REQUESTED
    assert "not a valid event" in headers["error"]
    assert headers["error_type"] == "InvalidEventError"


async def test_an_event_whose_handling_crashed_before_commit_is_consumed_again_after_restart(settings, publisher):
    subject = f"user-{uuid.uuid4().hex[:8]}"
    event = requested(subject)
    await publisher.publish(event)
    group = f"test-{uuid.uuid4().hex[:8]}"

    crashing = Recorder({subject})
    crashing.hang = True
    first = loop_for(settings, group, crashing, publisher)
    task = await run_until(first, lambda: crashing.seen)
    task.cancel()  # the process dies mid-handling: no commit
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.stop()

    recovering = Recorder({subject})
    second = loop_for(settings, group, recovering, publisher)
    task = await run_until(second, lambda: recovering.seen)
    second.request_stop()
    await task
    await second.stop()

    assert crashing.seen == [event]
    assert recovering.seen == [event]
