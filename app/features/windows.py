"""Event-time windows over one entity's observations: tumbling and hopping,
a grace period for late events, expiry.

Observations are kept in *panes* of ``pane_ms`` (the greatest common divisor
of every window's size and hop); a window is the merge of the panes it
covers. An event therefore updates one pane whatever the number of
overlapping hopping windows, and a pane is what a table stores.

Lateness: the watermark is the largest event time seen. An event is accepted
when its time is at least ``watermark − grace_ms``, else it is dropped and
counted. A window ``[start, end)`` is *final* once ``end + grace_ms ≤
watermark``: no later event can change it. Online values are those of the
latest final window, so what was served at time T is exactly what a
point-in-time lookup at T returns later (no training/serving skew).

Expiry: panes that end more than ``retention_ms`` before the watermark are
dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from app.features.aggregate import WindowAggregate

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Window:
    """A window definition: ``hop_ms`` equal to ``size_ms`` (the default) is
    a tumbling window. Windows start at multiples of ``hop_ms`` (epoch-aligned).

    >>> Window("5m", 300_000, 60_000).tumbling, Window("1m", 60_000).tumbling
    (False, True)
    """

    name: str
    size_ms: int
    hop_ms: int = 0

    def __post_init__(self) -> None:
        if self.hop_ms == 0:
            object.__setattr__(self, "hop_ms", self.size_ms)
        if self.size_ms <= 0 or self.hop_ms <= 0 or self.size_ms % self.hop_ms:
            raise ValueError(
                f"window {self.name!r}: size ({self.size_ms} ms) must be a positive "
                f"multiple of hop ({self.hop_ms} ms)"
            )

    @property
    def tumbling(self) -> bool:
        return self.hop_ms == self.size_ms

    def latest_end(self, at_or_before: int) -> int:
        """The latest window end ≤ ``at_or_before``."""
        return (at_or_before - self.size_ms) // self.hop_ms * self.hop_ms + self.size_ms


DEFAULT_WINDOWS = (Window("1m", 60_000), Window("5m", 300_000, 60_000))


class WindowedAggregates:
    """One entity's panes and watermark.

    >>> w = WindowedAggregates((Window("10s", 10_000),), grace_ms=1_000)
    >>> for t in (1_000, 4_000, 10_500):
    ...     _ = w.add({"k": "r", "t": t, "input_tokens": 10})
    >>> w.add({"k": "r", "t": 9_800, "input_tokens": 10}) is not None  # late, within grace
    True
    >>> w.add({"k": "r", "t": 9_000, "input_tokens": 10}) is None      # too late: dropped
    True
    >>> _ = w.add({"k": "r", "t": 11_000, "input_tokens": 10})         # [0, 10 s) is now final
    >>> start, end, m = w.online(w.windows[0])
    >>> (start, end, m["request_count"], w.late)
    (0, 10000, 3.0, 1)
    """

    def __init__(
        self,
        windows: tuple[Window, ...] = DEFAULT_WINDOWS,
        grace_ms: int = 5_000,
        retention_ms: int = 3_600_000,
    ) -> None:
        if grace_ms < 0:
            raise ValueError("grace_ms must be ≥ 0")
        longest = max(w.size_ms for w in windows)
        if retention_ms < longest + grace_ms:
            raise ValueError("retention_ms must cover the longest window plus the grace period")
        self.windows = windows
        self.grace_ms = grace_ms
        self.retention_ms = retention_ms
        self.pane_ms = math.gcd(*(x for w in windows for x in (w.size_ms, w.hop_ms)))
        self._panes: dict[int, WindowAggregate] = {}
        self._watermark = -(2**62)
        self._late = 0
        self._duplicates = 0
        self._cache: dict[str, tuple[int, tuple[int, int, JSON]]] = {}

    @property
    def watermark(self) -> int:
        return self._watermark

    @property
    def duplicates(self) -> int:
        """Redelivered observations recognised and skipped."""
        return self._duplicates

    @property
    def late(self) -> int:
        """Events dropped as later than the grace period."""
        return self._late

    def add(self, obs: JSON, pos: int = -1) -> int | None:
        """Apply one observation; returns the start of the pane it changed,
        or ``None`` when it came too late (dropped) or, given its source
        position ``pos``, was already applied (redelivered after a crash)."""
        t = obs["t"]
        if t < self._watermark - self.grace_ms:
            self._late += 1
            return None
        start = t - t % self.pane_ms
        pane = self._panes.get(start)
        if pos >= 0 and pane is not None and pos <= pane.pos:
            self._duplicates += 1
            return None
        if t > self._watermark:
            self._watermark = t
        if pane is None:
            pane = self._panes[start] = WindowAggregate()
        pane.add(obs)
        pane.pos = max(pane.pos, pos)
        return start

    def expire(self, now: int | None = None) -> list[int]:
        """Drop panes that end more than the retention before ``now`` (an
        event time; default this entity's watermark); returns their starts."""
        cutoff = max(self._watermark, now if now is not None else self._watermark)
        cutoff -= self.retention_ms
        old = [s for s in self._panes if s + self.pane_ms <= cutoff]
        for s in old:
            del self._panes[s]
        return old

    def window(self, w: Window, end: int) -> WindowAggregate:
        """The merged aggregate of ``[end − size, end)``."""
        agg = WindowAggregate()
        for s in range(end - w.size_ms, end, self.pane_ms):
            pane = self._panes.get(s)
            if pane is not None:
                agg.merge(pane)
        return agg

    def latest_final_end(self, w: Window, as_of: int) -> int:
        return w.latest_end(as_of - self.grace_ms)

    def online(self, w: Window, as_of: int | None = None) -> tuple[int, int, JSON]:
        """(start, end, metrics) of the latest window final at ``as_of``
        (default: the watermark). Final windows never change, so they are cached."""
        at = self._watermark if as_of is None else as_of
        end = self.latest_final_end(w, at)
        cached = self._cache.get(w.name)
        if cached is not None and cached[0] == end and at <= self._watermark:
            return cached[1]
        value = (end - w.size_ms, end, self.window(w, end).metrics(w.size_ms / 1000))
        if at <= self._watermark:
            self._cache[w.name] = (end, value)
        return value

    def history(self, w: Window, start: int, end: int) -> list[JSON]:
        """Every final window of ``w`` whose end lies in ``[start, end]``, oldest
        first, with ``available_at`` (end + grace: when it became final)."""
        last = min(w.latest_end(end), self.latest_final_end(w, self._watermark))
        first = w.latest_end(start - 1) + w.hop_ms
        rows = []
        for e in range(first, last + 1, w.hop_ms):
            rows.append(
                {
                    "window": w.name,
                    "window_start": e - w.size_ms,
                    "window_end": e,
                    "available_at": e + self.grace_ms,
                    **self.window(w, e).metrics(w.size_ms / 1000),
                }
            )
        return rows

    # -- persistence: one table entry per pane --------------------------------
    def pane_list(self, start: int) -> list[Any]:
        return self._panes[start].to_list()

    def load_pane(self, start: int, data: list[Any]) -> None:
        """Restore a stored pane (after a restart); the watermark becomes the
        latest event time of any pane, as it was."""
        pane = WindowAggregate.from_list(data)
        self._panes[start] = pane
        self._watermark = max(self._watermark, pane.max_t)
        self._cache.clear()

    def forget_positions(self) -> None:
        for pane in self._panes.values():
            pane.pos = -1

    def drop_pane(self, start: int) -> bool:
        """Forget a pane (deleted by its owner); whether it was held."""
        self._cache.clear()
        return self._panes.pop(start, None) is not None

    def pane_starts(self) -> list[int]:
        return sorted(self._panes)
