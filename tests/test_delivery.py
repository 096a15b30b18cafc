"""Records the broker refuses are sent again until it takes them
(app/stream/delivery.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import UnknownError
from prometheus_client import REGISTRY

from app.stream import delivery
from app.stream.delivery import deliver


class Broker:
    """Acknowledges a record after refusing it ``refusals[value]`` times."""

    def __init__(self, refusals: dict[bytes, int]) -> None:
        self.refusals = dict(refusals)
        self.taken: list[bytes] = []
        self.attempts = 0

    async def send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        self.attempts += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.refusals.get(value, 0) > 0:
            self.refusals[value] -= 1
            fut.set_exception(UnknownError())
        else:
            self.taken.append(value)
            fut.set_result(None)
        return fut


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "FIRST_PAUSE_S", 0.0)


def retried() -> float:
    return REGISTRY.get_sample_value("llmopt_sends_retried_total", {"agent": "test"}) or 0.0


async def test_every_record_is_taken_once_after_refusals() -> None:
    broker = Broker({b"b": 2, b"d": 1})
    before = retried()
    records = [("t", b"k", v) for v in (b"a", b"b", b"c", b"d")]
    await deliver(broker.send, records, "test")
    assert sorted(broker.taken) == [b"a", b"b", b"c", b"d"]
    assert broker.attempts == 4 + 2 + 1  # all, then b and d, then b
    assert retried() - before == 3


async def test_returns_only_once_the_broker_took_everything() -> None:
    broker = Broker({b"x": 5})
    task = asyncio.create_task(deliver(broker.send, [("t", None, b"x")], "test"))
    await task
    assert broker.taken == [b"x"] and broker.attempts == 6


async def test_nothing_to_send_sends_nothing() -> None:
    broker = Broker({})
    await deliver(broker.send, [], "test")
    assert broker.attempts == 0
