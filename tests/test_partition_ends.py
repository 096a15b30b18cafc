"""Partition ends as a fetch reports them (app/stream/partition_ends.py): right
where the embedded broker's ListOffsets is short of the end."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from app.stream.partition_ends import PartitionEnds, fetched_end_offsets
from tests.conftest import Broker


async def _produce_one_batch(bootstrap: str, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=200)
    await producer.start()
    try:
        futures = [await producer.send(topic, b"x%d" % i, partition=0) for i in range(n)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _scenario(bootstrap: str) -> None:
    topic = "ends-" + uuid.uuid4().hex[:8]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 2, 1)])
    await admin.close()
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    await _produce_one_batch(bootstrap, topic, 10)
    assert await fetched_end_offsets(bootstrap, tps) == {(topic, 0): 10, (topic, 1): 0}
    # A lower-bound hint (what the embedded broker's ListOffsets says) is fine.
    hinted = await fetched_end_offsets(bootstrap, tps, {tps[0]: 1})
    assert hinted[(topic, 0)] == 10
    ends = PartitionEnds(bootstrap)
    await ends.start()
    try:
        assert (await ends.refresh(tps))[(topic, 0)] == 10
        await _produce_one_batch(bootstrap, topic, 7)
        # The embedded broker may answer a fetch made right after the write's
        # acknowledgement without it (the join allows for this: it resolves
        # nothing until a settle time after a wait): an end is ever either
        # the old one or the new batch's last offset + 1, never in between.
        seen = [await ends.refresh(tps)]
        for _ in range(50):
            if seen[-1][(topic, 0)] == 17:
                break
            await asyncio.sleep(0.1)
            seen.append(await ends.refresh(tps))
        assert {s[(topic, 0)] for s in seen} <= {10, 17} and seen[-1][(topic, 0)] == 17, seen
        assert all(s[(topic, 1)] == 0 for s in seen)
        assert (await ends.refresh(tps))[(topic, 0)] == 17  # nothing new: same end
    finally:
        await ends.stop()


def test_fetched_ends_count_every_record_of_the_last_batch(broker: Broker) -> None:
    asyncio.run(_scenario(broker.bootstrap))
