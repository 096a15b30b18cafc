"""How far the join's stream has read (app/stream/stream_progress.py)."""

from __future__ import annotations

from typing import Any

from app.join import Progress
from app.stream.stream_progress import StreamProgress


class FakeConsumer:
    def __init__(self, positions: dict[tuple[str, int], int]) -> None:
        self.positions = positions

    async def position(self, tp: Any) -> int:
        key = (tp.topic, tp.partition)
        if key not in self.positions:
            raise KeyError("not assigned")
        return self.positions[key]


def test_processed_offsets_only_move_forward() -> None:
    p = StreamProgress()
    p.saw("d", 0, 5)
    p.saw("d", 0, 3)  # a redelivery
    p.ends[("d", 0)] = 9
    assert p.view("d", "r", 0) == Progress(decisions_end=9, decisions_done=6)
    p.reset()
    assert p.view("d", "r", 0) == Progress(decisions_end=9)


async def test_an_idle_partition_counts_as_read_after_two_ticks_at_its_end() -> None:
    p = StreamProgress()
    p.ends[("r", 1)] = 4
    consumer = FakeConsumer({("r", 1): 4})
    await p.observe_idle(consumer, "r", 1, busy=set())
    assert p.view("d", "r", 1).rewards_done is None  # once is not enough
    await p.observe_idle(consumer, "r", 1, busy={("r", 1)})  # fetched, not processed yet
    await p.observe_idle(consumer, "r", 1, busy=set())
    assert p.view("d", "r", 1).rewards_done is None
    await p.observe_idle(consumer, "r", 1, busy=set())
    assert p.view("d", "r", 1).rewards_done == 4
    p.ends[("r", 2)] = 3
    await p.observe_idle(FakeConsumer({}), "r", 2, busy=set())  # not assigned: not read
    await p.observe_idle(FakeConsumer({}), "r", 2, busy=set())
    assert p.view("d", "r", 2) == Progress(rewards_end=3)
