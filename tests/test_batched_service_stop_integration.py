"""A batched service that is told to stop mid-batch finishes the batch and
settles its commit before it closes the handler (whose stores the batch
writes to): a store closed under a batch lost its state writes while the
batch's other sends succeeded, and the commit passed over them
(app/stream/batched_service.py). On the test broker."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import TopicPartition

from app.settings import Settings
from app.stream.batched_service import Batch, BatchedService
from tests.conftest import Broker
from tests.kafka_io import committed, create_topic, produce

pytestmark = pytest.mark.integration
RECORDS = 200


class SlowWrites:
    """Each batch 'writes its state' after a pause; a write made once the
    handler is stopped (its store closed) is lost."""

    def __init__(self) -> None:
        self.in_batch = asyncio.Event()
        self.closed = False
        self.written: list[int] = []
        self.lost: list[int] = []

    async def start(self, service: BatchedService) -> None:
        pass

    async def background(self, service: BatchedService) -> None:
        pass

    async def handle(self, service: BatchedService, batch: Batch) -> list[asyncio.Future[Any]]:
        seen = [int(m.value) for msgs in batch.values() for m in msgs]
        self.in_batch.set()
        await asyncio.sleep(0.5)  # the batch's sends and writes take a while
        (self.lost if self.closed else self.written).extend(seen)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return [done]

    async def stop(self) -> None:
        self.closed = True


async def _run(bootstrap: str) -> None:
    topic = f"stop-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic)
    await produce(bootstrap, topic, ((None, b"%d" % i) for i in range(RECORDS)))
    handler = SlowWrites()
    settings = Settings(kafka_bootstrap=bootstrap, app_id=f"stop-{uuid.uuid4().hex[:6]}")
    service = BatchedService(
        settings,
        "stopping",
        source=topic,
        source_role="requests",
        dead_letter_topic=f"{topic}-dead",
        handler=handler,
        fetch_wait_ms=5,
        batch_max=20,
    )
    await service.start()
    await asyncio.wait_for(handler.in_batch.wait(), 60)
    await service.stop()  # while the first batch is in hand
    assert handler.lost == [], "a batch wrote after its handler was stopped"
    assert handler.written, "the batch in hand was finished"
    offset = await committed(bootstrap, f"{settings.app_id}-stopping", TopicPartition(topic, 0))
    # Committed: exactly what was written (a batch fetched while stopping is not).
    assert offset == len(handler.written) == max(handler.written) + 1


def test_a_stop_waits_for_the_batch_in_hand(broker: Broker) -> None:
    asyncio.run(_run(broker.bootstrap))
