"""Z-score anomaly detector over a rolling window."""

from __future__ import annotations

import math
from typing import Any

from river import stats, utils

from app.drift.anomaly_detector import AnomalyDetector


class ZScore(AnomalyDetector):
    """``|x - mean| / std`` against the last ``window`` values (river's rolling
    mean and variance). Good for roughly normal signals — pass log latency or
    log cost rather than the raw, skewed values.

    >>> import random
    >>> rng = random.Random(0)
    >>> z = ZScore(threshold=4.0, window=500, warmup=50)
    >>> flagged = [i for i in range(1000) if z.update(rng.gauss(10, 1) if i != 700 else 20.0)]
    >>> flagged
    [700]
    """

    def __init__(
        self, threshold: float = 4.0, window: int = 1000, warmup: int = 100, min_std: float = 1e-9
    ) -> None:
        super().__init__()
        if threshold <= 0 or window < 2 or warmup < 2:
            raise ValueError("threshold must be positive, window and warmup at least 2")
        self.threshold = threshold
        self.window = window
        self.warmup = warmup
        self.min_std = min_std
        self._mean: Any = utils.Rolling(stats.Mean, window_size=window)
        self._var: Any = utils.Rolling(stats.Var, window_size=window)

    def score_one(self, x: float) -> float:
        std = max(self.min_std, math.sqrt(max(0.0, self._var.get())))
        return abs(float(x) - self._mean.get()) / std

    def learn_one(self, x: float) -> None:
        self._mean.update(float(x))
        self._var.update(float(x))
