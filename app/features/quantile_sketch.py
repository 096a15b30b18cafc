"""A mergeable streaming quantile sketch with a relative-error guarantee.

Written here rather than taken from river: ``river.stats.Quantile`` (P²)
keeps five markers with no error bound and cannot be merged, and windows are
built by merging panes (a hopping window is the merge of the panes it
covers), so the sketch must merge exactly. The log-bucket design is
DDSketch's (Masson et al., VLDB 2019); its state is a flat list of integers,
cheap to store in a table and to encode as JSON.
"""

from __future__ import annotations

import math

_MIN_POSITIVE = 1e-9  # values at or below this count as zero


class QuantileSketch:
    """Quantiles of non-negative values within ``relative_accuracy``.

    For q in [0, 1], ``quantile(q)`` is within ``relative_accuracy`` (relative)
    of the exact value at rank ``floor(q · (n − 1))`` of the sorted values.

    >>> s = QuantileSketch(relative_accuracy=0.01)
    >>> for x in range(1, 1001):
    ...     s.add(float(x))
    >>> abs(s.quantile(0.95) - 950) <= 0.01 * 950, s.count
    (True, 1000)
    """

    __slots__ = ("_bins", "_gamma", "_log_gamma", "_zeros", "count", "relative_accuracy")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError("relative_accuracy must be in (0, 1)")
        self.relative_accuracy = relative_accuracy
        self._gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._log_gamma = math.log(self._gamma)
        self._bins: dict[int, int] = {}
        self._zeros = 0
        self.count = 0

    def add(self, x: float) -> None:
        if x < 0 or x != x:
            raise ValueError(f"values must be non-negative numbers, got {x}")
        self.count += 1
        if x <= _MIN_POSITIVE:
            self._zeros += 1
            return
        k = math.ceil(math.log(x) / self._log_gamma)
        self._bins[k] = self._bins.get(k, 0) + 1

    def merge(self, other: QuantileSketch) -> None:
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("cannot merge sketches of different accuracy")
        self.count += other.count
        self._zeros += other._zeros
        bins = self._bins
        for k, c in other._bins.items():
            bins[k] = bins.get(k, 0) + c

    def quantile(self, q: float) -> float | None:
        """``None`` when empty."""
        if not 0 <= q <= 1:
            raise ValueError("q must be in [0, 1]")
        if self.count == 0:
            return None
        rank = math.floor(q * (self.count - 1))
        seen = self._zeros
        if seen > rank:
            return 0.0
        for k in sorted(self._bins):
            seen += self._bins[k]
            if seen > rank:
                return 2.0 * self._gamma**k / (self._gamma + 1.0)
        raise AssertionError("unreachable: counts add up to count")  # pragma: no cover

    def to_list(self) -> list[int]:
        """[zeros, k1, c1, k2, c2, ...]: JSON-friendly (integer keys)."""
        out = [self._zeros]
        for k, c in self._bins.items():
            out += (k, c)
        return out

    @classmethod
    def from_list(cls, data: list[int], relative_accuracy: float = 0.01) -> QuantileSketch:
        s = cls(relative_accuracy)
        s._zeros = data[0]
        s._bins = dict(zip(data[1::2], data[2::2], strict=True))
        s.count = s._zeros + sum(s._bins.values())
        return s
