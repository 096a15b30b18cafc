"""DriftHold: which drift events wait for the outcomes they were detected on.

The detector and the learner read the outcomes each at its own pace. A
drift event names the outcomes offset just after the outcome that
triggered it (``outcome_offset``), on the outcomes partition of its own
number (the drift topic is co-partitioned with the outcomes). The learner
applies it only once it has processed that partition's outcomes up to that
offset, so an adaptation never acts on a state that still lacks the
outcomes the drift was seen in, however far the detector runs ahead.

A held drift waits at most ``max_hold_s``: an offset the learner cannot
reach (a log of another cluster, an offset past the partition's end) is
applied once the bound has passed. ``max_hold_s`` 0 holds nothing. An
event without ``outcome_offset`` (written before events carried one) is
applied at once. One drift is held per partition: the learner reads a
partition's drifts in order, so the later ones wait behind the first.

The caller owns the consumer: :meth:`admit` answers ``hold`` and the caller
stops reading that drift partition from the held record on;
:meth:`released` names the partitions whose hold is over, to read again.

>>> hold = DriftHold(max_hold_s=30.0)
>>> hold.reached(0, 10)
>>> hold.admit(0, drift_offset=3, outcome_offset=12, now=0.0)
'hold'
>>> hold.released(now=1.0)
[]
>>> hold.reached(0, 12)
>>> hold.released(now=2.0)
[(0, False)]
>>> hold.admit(0, drift_offset=3, outcome_offset=12, now=2.0)
'apply'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Held:
    drift_offset: int
    outcome_offset: int
    since: float


class DriftHold:
    """``max_hold_s``: how long a drift waits, at most, for its outcomes
    (in the caller's monotonic seconds)."""

    def __init__(self, max_hold_s: float) -> None:
        self.max_hold_s = max_hold_s
        self._done: dict[int, int] = {}  # partition → next outcomes offset to process
        self._held: dict[int, _Held] = {}
        self._past_bound: dict[int, int] = {}  # partition → last drift offset let through

    def reached(self, partition: int, next_offset: int) -> None:
        """The learner has processed ``partition``'s outcomes below ``next_offset``."""
        self._done[partition] = next_offset

    def done(self, partition: int) -> int | None:
        """The next outcomes offset of ``partition`` to process, if known."""
        return self._done.get(partition)

    def admit(
        self, partition: int, drift_offset: int, outcome_offset: int | None, now: float
    ) -> str:
        """``apply`` the drift at ``drift_offset`` now, or ``hold`` it: the
        outcomes below ``outcome_offset`` are not all processed yet."""
        if (
            outcome_offset is None
            or self.max_hold_s <= 0
            or drift_offset <= self._past_bound.get(partition, -1)
            or outcome_offset <= self._done.get(partition, 0)
        ):
            return "apply"
        held = self._held.get(partition)
        if held is None or held.drift_offset != drift_offset:
            self._held[partition] = _Held(drift_offset, outcome_offset, now)
        return "hold"

    def held(self) -> list[int]:
        """The partitions with a drift on hold."""
        return list(self._held)

    def released(self, now: float) -> list[tuple[int, bool]]:
        """The holds that are over, as (partition, whether past the bound):
        the outcomes were processed far enough, or the bound has passed (that
        drift is then applied whatever the position)."""
        out = []
        for p, h in list(self._held.items()):
            if h.outcome_offset <= self._done.get(p, 0):
                out.append((p, False))
            elif now - h.since >= self.max_hold_s:
                self._past_bound[p] = max(h.drift_offset, self._past_bound.get(p, -1))
                out.append((p, True))
            else:
                continue
            del self._held[p]
        return out

    def forget(self) -> list[int]:
        """Start afresh (partitions assigned or revoked, a new cluster: the
        positions are no longer known); the partitions that were held."""
        held = list(self._held)
        self._done.clear()
        self._held.clear()
        self._past_bound.clear()
        return held
