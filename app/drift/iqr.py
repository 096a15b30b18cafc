"""Interquartile-range (Tukey fence) anomaly detector over a rolling window."""

from __future__ import annotations

from river import stats

from app.drift.anomaly_detector import AnomalyDetector


class IQR(AnomalyDetector):
    """Distance outside the quartiles in units of the interquartile range,
    over the last ``window`` values (river's rolling quantiles): the score is
    ``(x - Q3) / IQR`` above the box, ``(Q1 - x) / IQR`` below it, 0 inside,
    so ``threshold=1.5`` is Tukey's fence and 3 his "far out".

    >>> import random
    >>> rng = random.Random(1)
    >>> d = IQR(threshold=3.0, window=400, warmup=100)
    >>> [i for i in range(800) if d.update(rng.uniform(0, 1) if i != 500 else 5.0)]
    [500]
    """

    def __init__(
        self, threshold: float = 3.0, window: int = 1000, warmup: int = 100, min_iqr: float = 1e-9
    ) -> None:
        super().__init__()
        if threshold <= 0 or window < 4 or warmup < 4:
            raise ValueError("threshold must be positive, window and warmup at least 4")
        self.threshold = threshold
        self.window = window
        self.warmup = warmup
        self.min_iqr = min_iqr
        self._q1 = stats.RollingQuantile(0.25, window_size=window)
        self._q3 = stats.RollingQuantile(0.75, window_size=window)

    def score_one(self, x: float) -> float:
        q1, q3 = self._q1.get(), self._q3.get()
        if q1 is None or q3 is None:
            return 0.0
        iqr = max(self.min_iqr, q3 - q1)
        x = float(x)
        if x > q3:
            return (x - q3) / iqr
        if x < q1:
            return (q1 - x) / iqr
        return 0.0

    def learn_one(self, x: float) -> None:
        self._q1.update(float(x))
        self._q3.update(float(x))
