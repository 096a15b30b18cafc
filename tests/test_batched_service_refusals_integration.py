"""A send the broker refuses stops the batched service's commits; it goes
back to the committed offsets and does the batches since again, so every
record is handled and committed (app/stream/batched_service.py). On the
test broker, with a handler whose sends fail once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import UnknownError

from app.settings import Settings
from app.stream.batched_service import Batch, BatchedService
from tests.conftest import Broker
from tests.kafka_io import committed, create_topic, produce

pytestmark = pytest.mark.integration
RECORDS = 600


class RefusedOnce:
    """Hands back a failed send for the batch that holds record ``refuse_at``
    the first time it is handled."""

    def __init__(self, refuse_at: int) -> None:
        self.refuse_at = refuse_at
        self.refused = False
        self.handled: list[int] = []

    async def start(self, service: BatchedService) -> None:
        pass

    async def background(self, service: BatchedService) -> None:
        pass

    async def handle(self, service: BatchedService, batch: Batch) -> list[asyncio.Future[Any]]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        seen = [int(m.value) for msgs in batch.values() for m in msgs]
        self.handled += seen
        if not self.refused and self.refuse_at in seen:
            self.refused = True
            fut.set_exception(UnknownError())
        else:
            fut.set_result(None)
        return [fut]

    async def stop(self) -> None:
        pass


async def _run(bootstrap: str) -> None:
    topic = f"refusals-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic)
    await produce(bootstrap, topic, ((None, b"%d" % i) for i in range(RECORDS)))
    handler = RefusedOnce(refuse_at=RECORDS // 2)
    settings = Settings(kafka_bootstrap=bootstrap, app_id=f"refusals-{uuid.uuid4().hex[:6]}")
    service = BatchedService(
        settings,
        "refusals",
        source=topic,
        source_role="requests",
        dead_letter_topic=f"{topic}-dead",
        handler=handler,
        fetch_wait_ms=5,
        batch_max=50,  # several batches, some after the refused one, in flight
    )
    await service.start()
    group = f"{settings.app_id}-refusals"
    tp = TopicPartition(topic, 0)
    try:
        for _ in range(300):
            if await committed(bootstrap, group, tp) == RECORDS:
                break
            await asyncio.sleep(0.1)
    finally:
        await service.stop()
    assert handler.refused
    assert await committed(bootstrap, group, tp) == RECORDS
    assert sorted(set(handler.handled)) == list(range(RECORDS)), "every record handled"
    again = len(handler.handled) - RECORDS
    assert again > 0, "the refused batch was done again"
    assert handler.handled.count(RECORDS // 2) == 2


def test_refused_sends_are_redone_from_the_committed_offsets(broker: Broker) -> None:
    asyncio.run(_run(broker.bootstrap))
