"""Standard scaling, (x − mean) / std, with an online (Welford) fit."""

from __future__ import annotations

import math
from typing import Any


class StandardScaler:
    """Scales to zero mean and unit variance.

    ``mean`` and ``std`` are the hyperparameters: fixed values from a feature
    spec, so that every worker encodes alike. ``learn_one`` fits them online
    from data (Welford's update, numerically stable); the fitted values are
    ``mean_`` and ``std_``, and ``frozen()`` returns a scaler fixed at them.

    >>> s = StandardScaler()
    >>> for x in (1.0, 2.0, 3.0, 4.0):
    ...     s.learn_one(x)
    >>> round(s.mean_, 6), round(s.std_, 6)
    (2.5, 1.118034)
    >>> f = s.frozen()
    >>> round(f.transform(4.0), 6), round(f.inverse(f.transform(4.0)), 6)
    (1.341641, 4.0)
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        self.mean = mean
        self.std = std
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0

    def learn_one(self, x: float) -> None:
        self._n += 1
        delta = x - self._mean
        self._mean += delta / self._n
        self._m2 += delta * (x - self._mean)

    @property
    def mean_(self) -> float:
        return self._mean

    @property
    def std_(self) -> float:
        """Population standard deviation of what was learnt (0 before two values)."""
        return math.sqrt(self._m2 / self._n) if self._n > 1 else 0.0

    def frozen(self) -> StandardScaler:
        """A scaler fixed at the fitted mean and std (std 1 if there was no spread)."""
        return StandardScaler(self.mean_, self.std_ or 1.0)

    def transform(self, x: float) -> float:
        return (x - self.mean) / self.std

    def inverse(self, y: float) -> float:
        return y * self.std + self.mean

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> StandardScaler:
        return cls(float(c.get("mean", 0.0)), float(c.get("std", 1.0)))
