"""Small aiokafka helpers for the integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.stream.kafka_io import assign_from_start, partitions_of


async def produce(
    bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]
) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    n = 0
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key)
            n += 1
        await producer.flush()
    finally:
        await producer.stop()
    return n


async def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    """The offset ``group`` has committed on ``tp``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


class TopicReader:
    """Reads a whole topic from offset 0, all partitions, without a group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.messages: list[Any] = []

    async def __aenter__(self) -> TopicReader:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 << 20,
        )
        await self.consumer.start()
        tps = partitions_of(self.consumer, self.topic)
        assert tps, f"topic {self.topic} does not exist"
        assign_from_start(self.consumer, tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> list[Any]:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms)
        new = [m for msgs in batch.values() for m in msgs]
        self.messages.extend(new)
        return new

    async def until(
        self, done: Callable[[list[Any]], bool], timeout: float, what: str = "condition"
    ) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what} "
                    f"on {self.topic} ({len(self.messages)} messages read)"
                )
            await self.poll()
        return self.messages

    async def settle(self, quiet_seconds: float = 2.0) -> list[Any]:
        """Read until nothing new arrives for ``quiet_seconds``."""
        last = time.monotonic()
        while time.monotonic() - last < quiet_seconds:
            if await self.poll():
                last = time.monotonic()
            await asyncio.sleep(0)
        return self.messages


async def round_trip(
    bootstrap: str, topics: Any, sim: Any, n: int, timeout_s: float = 60
) -> list[Any]:
    """n simulated requests → their n decisions (returned) → n rewards
    (``topics``: a TopicCatalog; ``sim``: a TrafficSimulator)."""
    from app.records import Decision, now_ms

    reqs = {r.request_id: r for r in (sim.next_request(now_ms()) for _ in range(n))}
    await produce(
        bootstrap,
        topics.name("requests"),
        ((r.tenant_id.encode(), r.dumps()) for r in reqs.values()),
    )
    keys = {k.encode() for k in reqs}
    async with TopicReader(bootstrap, topics.name("decisions")) as reader:
        await reader.until(
            lambda ms: len({m.key for m in ms} & keys) >= n, timeout_s, f"{n} decisions"
        )
    got = {x.request_id: x for x in map(Decision.loads, (m.value for m in reader.messages))}
    decided = [x for rid, x in got.items() if rid in reqs]
    sent = [sim.outcome(reqs[x.request_id], x.arm, now_ms()) for x in decided]
    await produce(
        bootstrap, topics.name("rewards"), ((r.request_id.encode(), r.dumps()) for r in sent)
    )
    return decided
