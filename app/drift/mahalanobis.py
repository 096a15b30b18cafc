"""Multivariate anomaly detector: Mahalanobis distance from a running mean."""

from __future__ import annotations

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

    The mean and covariance are updated in numpy (Welford, with weights);
    the inverse is refreshed every ``refresh`` points and regularised by
    ``ridge`` times the mean variance, so correlated signals — latency and
    cost both grow with output length — do not make it singular. river's
    ``covariance.EmpiricalCovariance`` keeps the matrix as a dict of pairs
    and offers no inverse, hence numpy here.

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
        self._mean = np.zeros(d)
        self._scatter = np.zeros((d, d))
        self._inverse: np.ndarray = np.eye(d)
        self._since = refresh

    def _vector(self, x: Mapping[str, float]) -> np.ndarray | None:
        try:
            v = np.array([float(x[f]) for f in self.features])
        except (KeyError, TypeError, ValueError):
            return None
        return v if np.isfinite(v).all() else None

    def score_one(self, x: Mapping[str, float]) -> float:
        v = self._vector(x)
        if v is None or self._weight <= 1.0:
            return 0.0
        if self._since >= self.refresh:
            cov = self._scatter / self._weight
            reg = self.ridge * max(float(np.trace(cov)) / len(self.features), 1e-12)
            self._inverse = np.linalg.pinv(cov + reg * np.eye(len(self.features)))
            self._since = 0
        diff = v - self._mean
        return float(diff @ self._inverse @ diff)

    def learn_one(self, x: Mapping[str, float]) -> None:
        v = self._vector(x)
        if v is None:
            self._seen -= 1  # ``update`` counts it; an unusable point is not learnt
            return
        if self.forget:
            self._weight *= 1.0 - self.forget
            self._scatter *= 1.0 - self.forget
        self._weight += 1.0
        delta = v - self._mean
        self._mean += delta / self._weight
        self._scatter += np.outer(delta, v - self._mean)
        self._since += 1
