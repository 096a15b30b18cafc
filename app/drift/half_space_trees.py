"""river's Half-Space Trees behind this package's anomaly interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from river import anomaly

from app.drift.anomaly_detector import AnomalyDetector


class HalfSpaceTrees(AnomalyDetector):
    """river's ``anomaly.HalfSpaceTrees`` (Tan et al., 2011), scoring points
    over ``features`` in [0, 1] (1 = most anomalous).

    Half-space trees split each feature's range in half at random; ``limits``
    give each feature's expected (low, high) range — values are clipped to
    it, so pass transformed signals with known ranges (log latency, log cost,
    quality). The trees learn in windows of ``window_size`` points, so the
    first ``warmup`` (at least one window) only learn. Scores are not
    probabilities: deep trees score ordinary points high too. The defaults
    (shallow trees, long windows, threshold 0.95) keep ordinary points of
    three features under ~0.9 (tests/test_anomaly.py).

    >>> import random
    >>> rng = random.Random(4)
    >>> hst = HalfSpaceTrees(["x"], limits={"x": (0.0, 1.0)}, threshold=0.8,
    ...                      window_size=100, warmup=300, seed=4)
    >>> scores = [hst.update({"x": rng.uniform(0.4, 0.6)}) for _ in range(600)]
    >>> hst.update({"x": 0.99}), hst.score > 0.8
    (True, True)
    """

    def __init__(
        self,
        features: Sequence[str] = ("latency", "cost", "quality"),
        limits: Mapping[str, tuple[float, float]] | None = None,
        threshold: float = 0.95,
        n_trees: int = 25,
        height: int = 6,
        window_size: int = 500,
        warmup: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be in (0, 1)")
        if warmup < window_size:
            raise ValueError("warmup must be at least one window_size")
        self.features = tuple(features)
        self.limits = dict(limits or {})
        self.threshold = threshold
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.warmup = warmup
        self.seed = seed
        self._model = anomaly.HalfSpaceTrees(
            n_trees=n_trees,
            height=height,
            window_size=window_size,
            limits={f: (float(v[0]), float(v[1])) for f, v in self.limits.items()},
            seed=seed,
        )

    def _point(self, x: Mapping[str, float]) -> dict[str, float] | None:
        out = {}
        for f in self.features:
            v = x.get(f)
            if not isinstance(v, int | float) or v != v:
                return None
            lo, hi = self.limits.get(f, (0.0, 1.0))
            out[f] = min(hi, max(lo, float(v)))
        return out

    def score_one(self, x: Mapping[str, float]) -> float:
        p = self._point(x)
        return 0.0 if p is None else float(self._model.score_one(p))

    def learn_one(self, x: Mapping[str, float]) -> None:
        p = self._point(x)
        if p is None:
            self._seen -= 1
            return
        self._model.learn_one(p)
