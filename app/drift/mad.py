"""Median-absolute-deviation anomaly detector over a rolling window."""

from __future__ import annotations

import numpy as np

from app.drift.anomaly_detector import AnomalyDetector

_NORMAL_CONSISTENCY = 1.4826  # MAD × this estimates σ for normal data


class MAD(AnomalyDetector):
    """Robust z-score ``|x - median| / (1.4826 · MAD)`` over the last
    ``window`` values: unlike the mean and standard deviation, the median and
    MAD are not dragged by the outliers themselves.

    river has no rolling MAD (it needs the median of deviations from a moving
    median), so the window is kept here, in a numpy ring (copying a deque of
    a thousand values into an array was most of a recomputation), and the
    median and MAD recomputed every ``refresh`` values — a few µs per value
    amortised.

    >>> import random
    >>> rng = random.Random(2)
    >>> d = MAD(threshold=6.0, window=500, warmup=100, refresh=10)
    >>> [i for i in range(1000) if d.update(rng.gauss(0, 1) if i % 400 != 399 else 15.0)]
    [399, 799]
    """

    def __init__(
        self,
        threshold: float = 6.0,
        window: int = 1000,
        warmup: int = 100,
        refresh: int = 25,
        min_mad: float = 1e-9,
    ) -> None:
        super().__init__()
        if threshold <= 0 or window < 3 or warmup < 3 or refresh < 1:
            raise ValueError("threshold must be positive, window and warmup at least 3")
        self.threshold = threshold
        self.window = window
        self.warmup = warmup
        self.refresh = refresh
        self.min_mad = min_mad
        self._values = np.empty(window)  # a ring: order does not matter to a median
        self._count = 0  # values in the ring
        self._next = 0  # where the next value goes
        self._since = refresh  # values learnt since the last recomputation
        self._median = 0.0
        self._scale = 1.0

    def _recompute(self) -> None:
        arr = self._values[: self._count]
        self._median = float(np.median(arr))
        mad = float(np.median(np.abs(arr - self._median)))
        self._scale = max(self.min_mad, _NORMAL_CONSISTENCY * mad)
        self._since = 0

    def score_one(self, x: float) -> float:
        if self._since >= self.refresh and self._count:
            self._recompute()
        return abs(float(x) - self._median) / self._scale

    def learn_one(self, x: float) -> None:
        self._values[self._next] = float(x)
        self._next = (self._next + 1) % self.window
        self._count = min(self._count + 1, self.window)
        self._since += 1
