"""The sufficient statistics of one metric of one variant."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


class Moments:
    """Count, mean and sum of squared deviations of a stream of values.

    Everything the comparisons need (a mean and a variance per variant) comes
    from these three numbers, so a worker can fold in a batch of outcomes as
    one ``(count, sum, sum of squares)`` triple, and two partial states merge
    exactly (Chan et al., 1979). The state is kept as (n, mean, M2) rather
    than raw sums: sums of squares of latencies over millions of outcomes
    lose the variance to cancellation, the centred form does not.

    ``bounds`` (low, high), when given, is the range every value must lie in
    (a [0, 1] quality score): a batch outside it is refused, and the variance
    is capped at the largest a variable in that range can have.

    Examples
    --------
    >>> m = Moments()
    >>> m.update([0.5, 0.7, 0.9])
    >>> m.add_sums(2, 1.0, 0.5)  # two more values, 0.5 and 0.5
    >>> m.n, round(m.mean, 4), round(m.variance, 4)
    (5, 0.62, 0.032)
    >>> Moments.from_dict(m.to_dict()) == m
    True
    """

    __slots__ = ("_m2", "_mean", "_n", "bounds")

    def __init__(self, bounds: tuple[float, float] | None = None) -> None:
        if bounds is not None and not (math.isfinite(bounds[0]) and bounds[0] < bounds[1]):
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}")
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0

    @property
    def n(self) -> int:
        return self._n

    @property
    def mean(self) -> float:
        return self._mean if self._n else math.nan

    @property
    def variance(self) -> float:
        """The unbiased sample variance (nan below two values)."""
        if self._n < 2:
            return math.nan
        var = self._m2 / (self._n - 1)
        if self.bounds is not None:
            var = min(var, (self.bounds[1] - self.bounds[0]) ** 2 / 4)
        return var

    def update(self, values: Iterable[float]) -> None:
        """Fold in a batch of values."""
        xs = [float(v) for v in values]
        if not xs:
            return
        n = len(xs)
        mean = math.fsum(xs) / n
        m2 = math.fsum((x - mean) ** 2 for x in xs)
        self._check(min(xs), max(xs))
        self._merge(n, mean, m2)

    def add_sums(self, count: int, total: float, total_sq: float) -> None:
        """Fold in a batch given by its count, sum and sum of squares."""
        if count < 0 or not (math.isfinite(total) and math.isfinite(total_sq)):
            raise ValueError(f"bad batch: count={count}, sum={total}, sum of squares={total_sq}")
        if count == 0:
            return
        mean = total / count
        if self.bounds is not None:
            self._check(mean, mean)
        # Within one batch the cancellation is bounded by the batch's size.
        m2 = max(total_sq - total * mean, 0.0)
        self._merge(int(count), mean, m2)

    def merge(self, other: Moments) -> None:
        """Fold in another variant's or partition's statistics."""
        if other._n:
            self._merge(other._n, other._mean, other._m2)

    def _check(self, low: float, high: float) -> None:
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError("values must be finite")
        if self.bounds is not None and (low < self.bounds[0] or high > self.bounds[1]):
            raise ValueError(f"values outside the bounds {self.bounds}: [{low}, {high}]")

    def _merge(self, n: int, mean: float, m2: float) -> None:
        total = self._n + n
        delta = mean - self._mean
        self._mean += delta * n / total
        self._m2 += m2 + delta * delta * self._n * n / total
        self._n = total

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self._n,
            "mean": self._mean,
            "m2": self._m2,
            "bounds": None if self.bounds is None else list(self.bounds),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Moments:
        bounds = d.get("bounds")
        m = cls(None if bounds is None else (bounds[0], bounds[1]))
        n, mean, m2 = int(d["n"]), float(d["mean"]), float(d["m2"])
        if n < 0 or m2 < 0 or not (math.isfinite(mean) and math.isfinite(m2)):
            raise ValueError(f"bad moments: {d!r}")
        m._n, m._mean, m._m2 = n, mean, m2
        return m

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Moments):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Moments(n={self._n}, mean={self.mean:.6g}, variance={self.variance:.6g})"
