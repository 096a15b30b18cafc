"""Multivariate anomaly detector: Mahalanobis distance from a running mean."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from app.drift.anomaly_detector import AnomalyDetector


class Mahalanobis(AnomalyDetector):
    """Squared Mahalanobis distance ``(x - μ)ᵀ Σ⁻¹ (x - μ)`` of a point over
    ``features`` from the mean ``μ`` and covariance ``Σ`` of the points seen
    so far, with exponential forgetting (``forget`` per point; 0 keeps every
    point). Under normality the score is χ² with ``len(features)`` degrees of
    freedom: the default threshold 27.9 is its 99.9999th percentile for three
    features (one false alarm per million normal points). Missing features
    make the point unscorable (score 0) and unlearnt.

    The mean and covariance are updated per point (Welford, with weights)
    in plain Python: a handful of features, one point per outcome, and numpy
    on three-element arrays cost more than the arithmetic (6.3 against
    14.5 µs an update, same scores). The inverse is refreshed with numpy
    every ``refresh`` points and regularised by ``ridge`` times the mean
    variance, so correlated signals — latency and cost both grow with output
    length — do not make it singular. river's
    ``covariance.EmpiricalCovariance`` keeps the matrix as a dict of pairs
    and offers no inverse.

    >>> import random
    >>> rng = random.Random(3)
    >>> det = Mahalanobis(["latency", "cost"], warmup=200)
    >>> def point(i):
    ...     z = rng.gauss(0, 1)
    ...     if i == 900:  # each coordinate ordinary, together impossible
    ...         return {"latency": 2.0, "cost": -2.0}
    ...     return {"latency": z + rng.gauss(0, 0.1), "cost": z + rng.gauss(0, 0.1)}
    >>> [i for i in range(1000) if det.update(point(i))]
    [900]
    """

    def __init__(
        self,
        features: Sequence[str] = ("latency", "cost", "quality"),
        threshold: float = 27.9,
        warmup: int = 200,
        forget: float = 0.0,
        refresh: int = 25,
        ridge: float = 1e-6,
    ) -> None:
        super().__init__()
        if len(features) < 1 or len(set(features)) != len(features):
            raise ValueError("features must be distinct names")
        if threshold <= 0 or warmup < len(features) + 1 or not 0.0 <= forget < 1.0:
            raise ValueError("need threshold > 0, warmup > len(features), 0 <= forget < 1")
        self.features = tuple(features)
        self.threshold = threshold
        self.warmup = warmup
        self.forget = forget
        self.refresh = refresh
        self.ridge = ridge
        d = len(self.features)
        self._weight = 0.0
        self._mean = [0.0] * d
        self._scatter = [[0.0] * d for _ in range(d)]
        self._inverse = np.eye(d).tolist()
        self._since = refresh

    def _vector(self, x: Mapping[str, float]) -> list[float] | None:
        try:
            v = [float(x[f]) for f in self.features]
        except (KeyError, TypeError, ValueError):
            return None
        return v if all(map(math.isfinite, v)) else None

    def update(self, x: Mapping[str, float]) -> bool:
        # score_one then learn_one, the point read once.
        v = self._vector(x)
        self._score = self._distance(v) if v is not None and self.ready else 0.0
        if v is not None:
            self._learn(v)
            self._seen += 1
        return self._score > self.threshold

    def score_one(self, x: Mapping[str, float]) -> float:
        v = self._vector(x)
        return 0.0 if v is None else self._distance(v)

    def learn_one(self, x: Mapping[str, float]) -> None:
        v = self._vector(x)
        if v is None:
            self._seen -= 1  # ``update`` counts it; an unusable point is not learnt
            return
        self._learn(v)

    def _distance(self, v: list[float]) -> float:
        if self._weight <= 1.0:
            return 0.0
        if self._since >= self.refresh:
            d = len(self.features)
            cov = np.array(self._scatter) / self._weight
            reg = self.ridge * max(float(np.trace(cov)) / d, 1e-12)
            self._inverse = np.linalg.pinv(cov + reg * np.eye(d)).tolist()
            self._since = 0
        mean = self._mean
        diff = [v[i] - mean[i] for i in range(len(v))]
        q = 0.0
        for i, row in enumerate(self._inverse):
            t = 0.0
            for j, dj in enumerate(diff):
                t += row[j] * dj
            q += diff[i] * t
        return q

    def _learn(self, v: list[float]) -> None:
        if self.forget:
            keep = 1.0 - self.forget
            self._weight *= keep
            self._scatter = [[s * keep for s in row] for row in self._scatter]
        self._weight += 1.0
        w, mean = self._weight, self._mean
        d = len(v)
        delta = [v[i] - mean[i] for i in range(d)]
        for i in range(d):
            mean[i] += delta[i] / w
        after = [v[i] - mean[i] for i in range(d)]
        for i, row in enumerate(self._scatter):
            di = delta[i]
            for j in range(d):
                row[j] += di * after[j]
        self._since += 1
