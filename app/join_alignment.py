"""Which rewards partitions the join holds back so that it reads a
partition's decisions and rewards roughly in time order (as Kafka Streams
aligns the inputs of a join by timestamp).

A reward is sent after its decision. When the join has read a partition's
rewards further in time than its decisions (a fetch brings several times
more of the small rewards than of the decisions), the rewards it reads have
decisions it has not read yet: each is held as an orphan (a table write), then
waits for the decisions to be read past its mark, then is joined (another
write), where in time order it would have joined at once. So while a
partition's rewards are more than ``ahead_ms`` ahead of its decisions and its
decisions are not read to their end, its rewards partition is paused.
Pure: the agent passes timestamps and how far it has read.

>>> a = RewardsAlignment(ahead_ms=1_000)
>>> a.saw("decisions", 0, 10_000); a.saw("rewards", 0, 12_500)
>>> a.changes([0], lambda p: True)
([0], [])
>>> a.saw("decisions", 0, 12_000)
>>> a.changes([0], lambda p: True)
([], [0])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class RewardsAlignment:
    def __init__(self, ahead_ms: int = 1_000) -> None:
        self.ahead_ms = ahead_ms
        self.newest: dict[tuple[str, int], int] = {}  # (kind, partition) → newest timestamp
        self.paused: set[int] = set()

    def saw(self, kind: str, partition: int, timestamp_ms: int) -> None:
        """``kind``: "decisions" or "rewards"; a record's timestamp."""
        key = (kind, partition)
        if timestamp_ms > self.newest.get(key, -1):
            self.newest[key] = timestamp_ms

    def ahead(self, partition: int) -> bool:
        d = self.newest.get(("decisions", partition))
        r = self.newest.get(("rewards", partition))
        return d is not None and r is not None and r - d > self.ahead_ms

    def changes(
        self, partitions: Iterable[int], decisions_behind: Callable[[int], bool]
    ) -> tuple[list[int], list[int]]:
        """(rewards partitions to pause, to resume) among ``partitions``;
        ``decisions_behind(p)``: the join has not read p's decisions to their
        end (a partition whose decisions are all read is never held back)."""
        pause, resume = [], []
        for p in partitions:
            hold = self.ahead(p) and decisions_behind(p)
            if hold and p not in self.paused:
                self.paused.add(p)
                pause.append(p)
            elif not hold and p in self.paused:
                self.paused.discard(p)
                resume.append(p)
        return pause, resume

    def reset(self) -> list[int]:
        """Forget everything (a new assignment); the partitions that were paused."""
        paused = sorted(self.paused)
        self.newest.clear()
        self.paused.clear()
        return paused
