"""What the console's health page asks of Kafka: lethe's consumer lag and what waits on the dead-letter topics."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared import topics
from shared.settings import KafkaSettings


async def consumer_lag(kafka: KafkaSettings) -> tuple[list[dict[str, Any]], dict[str, int], str | None]:
    """Lag per (group, topic) of lethe's consumer groups, and the messages on each dead-letter topic."""
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=5000)
    consumer = AIOKafkaConsumer(**kafka.client_options(), request_timeout_ms=5000)
    try:
        async with asyncio.timeout(10):
            await admin.start()
            await consumer.start()
            prefix = kafka.group_prefix + "-"
            groups = sorted(g[0] for g in await admin.list_consumer_groups() if str(g[0]).startswith(prefix))
            lag: dict[tuple[str, str], int] = {}
            for group in groups:
                committed = await admin.list_consumer_group_offsets(group)
                ends = await consumer.end_offsets(list(committed)) if committed else {}
                for tp, meta in committed.items():
                    lag[(group, tp.topic)] = lag.get((group, tp.topic), 0) + max(0, ends[tp] - meta.offset)
            dlq_parts = [
                TopicPartition(topics.dlq(t), n) for t in topics.EVENT_TOPICS for n in range(topics.PARTITIONS)
            ]
            firsts = await consumer.beginning_offsets(dlq_parts)
            lasts = await consumer.end_offsets(dlq_parts)
            dead: dict[str, int] = {}
            for tp in dlq_parts:
                dead[tp.topic] = dead.get(tp.topic, 0) + lasts[tp] - firsts[tp]
        rows = [{"group": g, "topic": t, "lag": n} for (g, t), n in sorted(lag.items())]
        return rows, dead, None
    except Exception as exc:  # the page shows Kafka's trouble instead of failing
        return [], {}, f"Kafka could not be asked: {exc!r}"
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await admin.close()
