"""How far a Faust agent has read the partitions it joins over
(:class:`StreamProgress`), for :class:`app.join.Progress`: the join resolves
an entry only once the stream has read far enough."""

from __future__ import annotations

from typing import Any

from faust.types import TP

from app.join import Progress


class StreamProgress:
    """Which offsets of each decisions/rewards partition the agent has
    processed (``done``: the next offset to process), and where those
    partitions end (``ends``, fetched every tick). A partition with no event
    since assignment counts as read up to the consumer's position once that
    position has stood at the partition's end for two ticks in a row (so
    nothing fetched is still waiting to be processed)."""

    def __init__(self) -> None:
        self.done: dict[tuple[str, int], int] = {}
        self.ends: dict[tuple[str, int], int] = {}
        self._idle: dict[tuple[str, int], int] = {}

    def saw(self, topic: str, partition: int, offset: int) -> None:
        tp = (topic, partition)
        if offset + 1 > self.done.get(tp, -1):
            self.done[tp] = offset + 1
        self._idle.pop(tp, None)

    def reset(self) -> None:
        self.done.clear()
        self._idle.clear()

    async def observe_idle(
        self, consumer: Any, topic: str, partition: int, busy: set[tuple[str, int]]
    ) -> None:
        """``busy``: partitions with messages handed to the stream and not
        yet processed (the consumer's position is past them)."""
        tp = (topic, partition)
        end = self.ends.get(tp)
        if tp in self.done or end is None:
            return
        try:
            position = await consumer.position(TP(topic, partition))
        except Exception:  # not assigned (any more)
            return
        if position is None or position < end or tp in busy:
            self._idle.pop(tp, None)
        elif self._idle.get(tp) == position:
            self.done[tp] = position
        else:
            self._idle[tp] = position

    def view(self, decisions: str, rewards: str, partition: int) -> Progress:
        d, r = (decisions, partition), (rewards, partition)
        return Progress(
            decisions_end=self.ends.get(d),
            decisions_done=self.done.get(d),
            rewards_end=self.ends.get(r),
            rewards_done=self.done.get(r),
        )
