"""How far join_rewards (a service of the all-roles worker) has got through
the decisions: its consumer group's committed offsets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from app.kafka_security import kafka_security
from benchmarks.e2e.processor import Processor


def join_group(app_id: str) -> str:
    """join_rewards' consumer group in the worker of ``app_id``."""
    from app.stream.batched_service import group_id

    return group_id(app_id, "join_rewards")


async def group_committed(bootstrap: str, group: str, topic: str) -> int:
    """Sum of ``group``'s committed offsets on ``topic``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        client_id="llmopt-bench-lag",
        **kafka_security(),
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        total = 0
        for p in sorted(parts):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


async def measure_join(
    proc: Processor, bootstrap: str, topic: str, produced: int, window: float
) -> dict[str, Any]:
    """How fast join_rewards (a service in the same worker) works through
    the decisions: its committed offsets over ``window`` seconds."""
    t0, c0 = time.monotonic(), await group_committed(bootstrap, join_group(proc.app_id), topic)
    c1, t1 = c0, t0
    while time.monotonic() - t0 < window and c1 < produced:
        await asyncio.sleep(1.0)
        c1, t1 = await group_committed(bootstrap, join_group(proc.app_id), topic), time.monotonic()
    rate = (c1 - c0) / (t1 - t0) if t1 > t0 and c1 > c0 else 0.0
    return {
        "joined_at_start": c0,
        "joined_at_end": c1,
        "window_s": round(t1 - t0, 1),
        "rate_per_s": round(rate, 1),
        "backlog_at_end": max(0, produced - c1),
    }
