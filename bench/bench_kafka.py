"""Benchmark of lethe's Kafka plumbing against the real broker: publish rate, and consume-loop rate.

Run with `make bench` (the stack must be up, or it is started). Prints events per second.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta

from shared import topics
from shared.consumer import KafkaConsumerLoop, MessageProcessor
from shared.events import DeletionRequested, Event, utcnow
from shared.kafka import KafkaPublisher, ensure_topics
from shared.logging import configure_logging
from shared.metrics import Metrics
from shared.settings import KafkaSettings, LogSettings


def make_event(i: int, run: str) -> DeletionRequested:
    return DeletionRequested(
        request_id=f"bench-{run}-{i}",
        subject_id=f"bench-{run}-user-{i}",
        producer="bench",
        requested_by="bench",
        deadline_at=utcnow() + timedelta(days=30),
        backups_purged_by=utcnow() + timedelta(days=90),
    )


async def bench(n: int, concurrency: int) -> None:
    settings = KafkaSettings()
    await ensure_topics(settings, topics.ALL_TOPICS, partitions=topics.PARTITIONS)
    run = uuid.uuid4().hex[:8]
    events = [make_event(i, run) for i in range(n)]
    publisher = KafkaPublisher(settings, client_id="bench")
    await publisher.start()
    try:
        # One at a time: what a request handler waiting for durability pays per event.
        sample = events[: min(n, 500)]
        started = time.perf_counter()
        for event in sample:
            await publisher.publish(event)
        sequential = time.perf_counter() - started

        # Many in flight at once (acks=all, idempotent): the producer batches them.
        started = time.perf_counter()
        semaphore = asyncio.Semaphore(concurrency)

        async def one(event: Event) -> None:
            async with semaphore:
                await publisher.publish(event)

        await asyncio.gather(*(one(e) for e in events))
        concurrent = time.perf_counter() - started

        wanted = {e.request_id for e in events}
        seen: set[str | None] = set()
        done = asyncio.Event()

        async def handler(event: Event) -> Sequence[Event]:
            if event.request_id in wanted:
                seen.add(event.request_id)
                if len(seen) == len(wanted):
                    done.set()
            return ()

        metrics = Metrics("bench")
        processor = MessageProcessor(
            routes={topics.DELETION_REQUESTED: handler}, publisher=publisher, settings=settings, metrics=metrics
        )
        group = f"bench-{run}"
        loop = KafkaConsumerLoop(settings, group_id=group, client_id=group, processor=processor)
        await loop.start()
        started = time.perf_counter()
        task = asyncio.create_task(loop.run())
        await asyncio.wait_for(done.wait(), 300)
        consumed = time.perf_counter() - started
        loop.request_stop()
        await task
        await loop.stop()
    finally:
        await publisher.stop()

    print(
        f"publish, one at a time (acks=all): {len(sample) / sequential:8.0f} events/s "
        f"({sequential / len(sample) * 1000:.2f} ms each, {len(sample)} events)"
    )
    print(f"publish, {concurrency} in flight:            {n / concurrent:8.0f} events/s ({n} events)")
    total = sum(s.value for s in metrics.consumed.collect()[0].samples if s.name.endswith("_total"))
    print(
        f"consume loop (decode, validate, dispatch, commit per batch): {total / consumed:8.0f} events/s "
        f"({total:.0f} events read by a new group, {n} of them this run's, in {consumed:.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=5000, help="events to publish and consume")
    parser.add_argument("--concurrency", type=int, default=500, help="publishes in flight at once")
    args = parser.parse_args()
    # Errors only: a new group also re-reads (and dead-letters again) the poison messages the tests left.
    configure_logging(LogSettings(level="ERROR", format="console"), service="bench")
    asyncio.run(bench(args.n, args.concurrency))


if __name__ == "__main__":
    main()
