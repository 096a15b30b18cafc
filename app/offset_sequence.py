"""Telling when a stream skipped records.

Offsets of a partition that is neither compacted nor transactional are
consecutive, so an agent that sees offset 602 right after 600 has missed
601. Faust can do that: a record handed to a stream while the flow is being
suspended (a rebalance, recovery ending) is marked read without reaching the
agent, and the offset commit can then pass it. For the learner that is a lost
policy update. The agent notices the gap here, skips what comes after it and
seeks back to the missing offset, so the records come again in order.

Pure: the agents pass (topic, partition) keys, offsets and times in.
"""

from __future__ import annotations

from collections.abc import Hashable

RESEEK_MS = 5_000


class OffsetSequence:
    """The next offset expected on each partition since it was assigned.

    >>> s = OffsetSequence()
    >>> s.check("p", 600, 0), s.check("p", 601, 0), s.check("p", 600, 0)
    ('first', 'next', 'behind')
    >>> s.check("p", 603, 10), s.seek_to("p", 10), s.seek_to("p", 20)
    ('gap', 602, None)
    >>> s.check("p", 604, 30), s.check("p", 602, 40), s.check("p", 603, 40)
    ('gap', 'next', 'next')
    """

    def __init__(self, reseek_ms: int = RESEEK_MS) -> None:
        self.reseek_ms = reseek_ms
        self._next: dict[Hashable, int] = {}
        self._sought: dict[Hashable, int] = {}  # when a seek back was last asked for

    def check(self, tp: Hashable, offset: int, now: int) -> str:
        """``first`` (nothing expected yet), ``next`` (the expected record:
        process it), ``behind`` (already seen: a redelivery) or ``gap``
        (records before this one were skipped: do not process it)."""
        expected = self._next.get(tp)
        if expected is None or offset == expected:
            self._next[tp] = offset + 1
            self._sought.pop(tp, None)
            return "first" if expected is None else "next"
        if offset < expected:
            return "behind"
        return "gap"

    def seek_to(self, tp: Hashable, now: int) -> int | None:
        """The offset to seek back to after a gap, or None while a seek asked
        for less than ``reseek_ms`` ago may still bring it."""
        last = self._sought.get(tp)
        if last is not None and now - last < self.reseek_ms:
            return None
        self._sought[tp] = now
        return self._next[tp]

    def forget(self) -> None:
        """After a (re)assignment: positions start afresh."""
        self._next.clear()
        self._sought.clear()
