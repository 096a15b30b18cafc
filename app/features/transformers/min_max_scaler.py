"""Min–max scaling to [0, 1], fixed bounds or fitted online."""

from __future__ import annotations

import math
from typing import Any


class MinMaxScaler:
    """(x − min) / (max − min), clipped to [0, 1] when ``clip``.

    ``learn_one`` tracks the observed range (``min_``, ``max_``); ``frozen()``
    fixes a scaler at it.

    >>> s = MinMaxScaler(0.0, 200.0)
    >>> s.transform(50.0), s.transform(400.0), s.inverse(0.25)
    (0.25, 1.0, 50.0)
    >>> f = MinMaxScaler()
    >>> for x in (3.0, 7.0, 5.0):
    ...     f.learn_one(x)
    >>> f.frozen().transform(6.0)
    0.75
    """

    def __init__(self, min: float = 0.0, max: float = 1.0, clip: bool = True) -> None:
        if not max > min:
            raise ValueError(f"max ({max}) must be greater than min ({min})")
        self.min = min
        self.max = max
        self.clip = clip
        self._lo = math.inf
        self._hi = -math.inf

    def learn_one(self, x: float) -> None:
        self._lo = x if x < self._lo else self._lo
        self._hi = x if x > self._hi else self._hi

    @property
    def min_(self) -> float:
        return self._lo

    @property
    def max_(self) -> float:
        return self._hi

    def frozen(self) -> MinMaxScaler:
        if not self._hi > self._lo:
            raise ValueError("need at least two distinct values to fix a range")
        return MinMaxScaler(self._lo, self._hi, self.clip)

    def transform(self, x: float) -> float:
        y = (x - self.min) / (self.max - self.min)
        if self.clip:
            return 0.0 if y < 0.0 else 1.0 if y > 1.0 else y
        return y

    def inverse(self, y: float) -> float:
        """Exact inside [min, max]; a clipped value maps back to a bound."""
        return self.min + y * (self.max - self.min)

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> MinMaxScaler:
        return cls(float(c.get("min", 0.0)), float(c.get("max", 1.0)), bool(c.get("clip", True)))
