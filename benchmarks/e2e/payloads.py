"""Requests from the simulator, and writing them to a topic at full speed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from app.kafka_security import kafka_security


def make_requests(n: int, seed: int, now_ms: int | None = None) -> list[dict[str, Any]]:
    """``n`` realistic requests from the default simulator scenario, as dicts."""
    from app.evaluation.simulator import TrafficSimulator

    sim = TrafficSimulator.default(seed=seed)
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    return [sim.next_request(now).to_dict() for _ in range(n)]


async def produce_all(bootstrap: str, topic: str, docs: list[dict[str, Any]]) -> float:
    """Write ``docs`` keyed by tenant id (as app.traffic does); return seconds taken."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        acks=1,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        **kafka_security(),
    )
    await producer.start()
    started = time.monotonic()
    try:
        dumps = orjson.dumps
        futures = [await producer.send(topic, dumps(d), key=d["tenant_id"].encode()) for d in docs]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started
