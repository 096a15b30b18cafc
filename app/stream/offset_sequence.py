"""Telling when a stream skipped records.

Offsets of a partition that is neither compacted nor transactional are
consecutive, so an agent that sees offset 602 right after 600 has missed
601. Faust can do that: a record handed to a stream while the flow is being
suspended (a rebalance, recovery ending) is marked read without reaching the
agent, and the offset commit, which takes the first run of consecutive acked
offsets, can then pass it, also at the head of a partition just assigned. For
the learner that is a lost policy update, for the join a lost decision or
reward. The agents therefore expect, after an assignment, the offset their
group committed, and read what a gap skipped straight from the partition
before going on (seeking Faust's consumer back does not work: records it
has buffered past the gap move its read position on, and it drops the ones
fetched again).

Pure: the agents pass (topic, partition) keys and offsets in.
"""

from __future__ import annotations

from collections.abc import Hashable


class OffsetSequence:
    """The next offset expected on each partition since it was assigned.

    >>> s = OffsetSequence()
    >>> s.check("p", 600), s.check("p", 601), s.check("p", 600)
    ('first', 'next', 'behind')
    >>> s.check("p", 604), s.expected("p")
    ('gap', 602)
    >>> s.advance("p", 604); s.check("p", 605)
    'next'
    """

    def __init__(self) -> None:
        self._next: dict[Hashable, int] = {}

    def check(self, tp: Hashable, offset: int) -> str:
        """``first`` (nothing expected yet), ``next`` (the expected record),
        ``behind`` (already seen: a redelivery) or ``gap`` (the records from
        :meth:`expected` up to this one were skipped; read them, then
        :meth:`advance`)."""
        expected = self._next.get(tp)
        if expected is None or offset == expected:
            self._next[tp] = offset + 1
            return "first" if expected is None else "next"
        return "behind" if offset < expected else "gap"

    def expected(self, tp: Hashable) -> int:
        return self._next[tp]

    def advance(self, tp: Hashable, offset: int) -> None:
        """``offset`` and everything before it have been handled."""
        self._next[tp] = max(offset + 1, self._next.get(tp, 0))

    def expect(self, tp: Hashable, offset: int) -> None:
        """The first offset to come on ``tp`` (where its group's commit
        stands): a first record beyond it means records were skipped."""
        self._next[tp] = offset

    def forget(self) -> None:
        """After a (re)assignment: positions start afresh."""
        self._next.clear()
