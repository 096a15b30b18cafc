"""The policy snapshots topic read from its start: the newest version
published for each policy, for the learner to tell when a recovered state
went backwards."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from app.partition_ends import fetched_end_offsets

READ_TIMEOUT_S = 60.0


async def published_versions(runtime: Any, topic: str) -> dict[str, int]:
    """{policy id: highest snapshot version} over the whole topic."""
    s = runtime.settings
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.bootstrap,
        client_id=f"{s.app_id}-snapshot-versions",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        ends = await fetched_end_offsets(s.bootstrap, tps)
        consumer.assign(tps)
        for tp in tps:  # from 0: the embedded broker's EARLIEST lookup is unreliable
            consumer.seek(tp, 0)
        versions: dict[str, int] = {}
        left = {tp for tp in tps if ends[(tp.topic, tp.partition)] > 0}
        deadline = time.monotonic() + READ_TIMEOUT_S
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end in {READ_TIMEOUT_S} s")
            batch = await consumer.getmany(*left, timeout_ms=500)
            for tp, msgs in batch.items():
                for m in msgs:
                    _note(versions, m.value)
                    if m.offset + 1 >= ends[(tp.topic, tp.partition)]:
                        left.discard(tp)
        return versions
    finally:
        await consumer.stop()


def _note(versions: dict[str, int], raw: bytes | None) -> None:
    try:
        doc = orjson.loads(raw or b"")
        pid, version = doc["policy_id"], doc["version"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return  # not a snapshot: the deciders skip it too
    if isinstance(pid, str) and type(version) is int:
        versions[pid] = max(versions.get(pid, 0), version)
