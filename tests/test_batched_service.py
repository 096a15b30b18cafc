"""The batched service's sends (app/stream/batched_service.py): one record
batch per partition, Kafka's default partitioner, a full batch sent and a
new one begun."""

from __future__ import annotations

import asyncio
from typing import Any

from app.settings import Settings
from app.stream.batched_service import Batch, BatchedService
from app.stream.partitioning import partitions_for


class FakeBatch:
    def __init__(self, room: int) -> None:
        self.room = room
        self.records: list[tuple[bytes, bytes, int]] = []

    def append(self, key: bytes, value: bytes, timestamp: int) -> object | None:
        if len(self.records) >= self.room:
            return None
        self.records.append((key, value, timestamp))
        return object()


class FakeProducer:
    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[tuple[str, int, list[Any]]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.room)

    async def send_batch(self, batch: FakeBatch, topic: str, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, batch.records))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class NoHandler:
    async def start(self, service: BatchedService) -> None:
        pass

    async def background(self, service: BatchedService) -> None:
        pass

    async def handle(self, service: BatchedService, batch: Batch) -> list[asyncio.Future[Any]]:
        return []

    async def stop(self) -> None:
        pass


async def test_sends_one_batch_per_partition_and_splits_full_ones() -> None:
    service = BatchedService(
        Settings(kafka_bootstrap="k:9092"),
        "demo",
        source="in",
        source_role="requests",
        dead_letter_topic="dead",
        handler=NoHandler(),
        fetch_wait_ms=2,
        batch_max=100,
    )
    producer = FakeProducer(room=3)
    service.producer = producer
    assert await service.partition_count("out") == 4
    keys = [f"request-{i}".encode() for i in range(20)]
    values = [b"v%d" % i for i in range(20)]
    futures = await service.send_batches("out", keys, values, ts=123)
    assert len(futures) == len(producer.sent)
    want: dict[int, list[Any]] = {}
    for key, value, p in zip(keys, values, partitions_for(keys, 4), strict=True):
        want.setdefault(p, []).append((key, value, 123))
    got: dict[int, list[Any]] = {}
    for topic, p, records in producer.sent:
        assert topic == "out" and 0 < len(records) <= 3
        got.setdefault(p, []).extend(records)
    assert got == want  # every record, on its key's partition, in order
