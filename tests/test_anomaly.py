"""Anomaly detectors against brute-force computations over the same window,
and their false-positive rates on seeded normal data."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from app.drift import IQR, MAD, AnomalyDetector, HalfSpaceTrees, Mahalanobis, ZScore


def feed(det: AnomalyDetector, xs: list) -> list[float]:
    out = []
    for x in xs:
        det.update(x)
        out.append(det.score)
    return out


def test_zscore_is_the_z_of_the_previous_window() -> None:
    rng = random.Random(1)
    xs = [rng.gauss(5, 2) for _ in range(300)]
    w = 50
    scores = feed(ZScore(window=w, warmup=w), xs)
    for i in range(w, len(xs)):
        ref = np.array(xs[i - w : i])
        z = abs(xs[i] - ref.mean()) / ref.std(ddof=1)
        assert scores[i] == pytest.approx(z, rel=1e-9)
    assert scores[:w] == [0.0] * w  # warm-up: no reference yet


def test_iqr_scores_distance_outside_the_quartiles() -> None:
    rng = random.Random(2)
    xs = [rng.uniform(0, 10) for _ in range(400)]
    w = 100
    scores = feed(IQR(window=w, warmup=w), xs)
    for i in range(w, len(xs)):
        ref = np.array(xs[i - w : i])
        q1, q3 = np.quantile(ref, [0.25, 0.75])  # river's rolling quantile interpolates alike
        iqr = q3 - q1
        expected = (xs[i] - q3) / iqr if xs[i] > q3 else (q1 - xs[i]) / iqr if xs[i] < q1 else 0.0
        assert scores[i] == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_mad_is_the_robust_z_of_the_window() -> None:
    rng = random.Random(3)
    xs = [rng.gauss(0, 1) for _ in range(300)]
    w = 60
    scores = feed(MAD(window=w, warmup=w, refresh=1), xs)
    for i in range(w, len(xs)):
        ref = np.array(xs[i - w : i])
        med = np.median(ref)
        mad = 1.4826 * np.median(np.abs(ref - med))
        assert scores[i] == pytest.approx(abs(xs[i] - med) / mad, rel=1e-9)


def test_mad_ignores_the_outliers_a_zscore_absorbs() -> None:
    """10% of huge values inflate the standard deviation but not the MAD."""
    rng = random.Random(4)
    xs = [1000.0 if i % 10 == 0 else rng.gauss(0, 1) for i in range(1000)] + [8.0]
    z, mad = ZScore(window=500, warmup=100), MAD(window=500, warmup=100)
    assert not feed(z, xs)[-1] > z.threshold
    assert feed(mad, xs)[-1] > mad.threshold


def test_mahalanobis_matches_numpy_on_the_points_before() -> None:
    rng = np.random.default_rng(5)
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]])
    pts = rng.multivariate_normal([1, 2, 3], cov, size=400)
    names = ("latency", "cost", "quality")
    det = Mahalanobis(names, warmup=100, refresh=1, ridge=0.0)
    scores = feed(det, [dict(zip(names, p, strict=True)) for p in pts])
    for i in (100, 250, 399):
        ref = pts[:i]
        diff = pts[i] - ref.mean(axis=0)
        inv = np.linalg.inv(np.cov(ref, rowvar=False, ddof=0))
        assert scores[i] == pytest.approx(float(diff @ inv @ diff), rel=1e-6)


def test_mahalanobis_skips_points_with_missing_features() -> None:
    det = Mahalanobis(("a", "b"), warmup=3)
    for p in ({"a": 1.0, "b": 2.0}, {"a": 1.0}, {"a": math.nan, "b": 0.0}, {"a": 2.0, "b": 1.0}):
        det.update(p)
    assert det._weight == 2 and not det.ready


@pytest.mark.parametrize(
    "make",
    [
        lambda: ZScore(threshold=5.0),
        lambda: IQR(threshold=3.0),
        lambda: MAD(threshold=6.0),
    ],
    ids=["zscore", "iqr", "mad"],
)
def test_univariate_false_positives_on_normal_data_are_rare(make: Any) -> None:
    rng = random.Random(6)
    det = make()
    flagged = sum(det.update(rng.gauss(0, 1)) for _ in range(20_000))
    # N(0,1): P(|z|>5) ≈ 6e-7, beyond Q3 + 3 IQR ≈ 2e-6, robust z > 6 ≈ 2e-9
    assert flagged <= 2
    assert det.update(50.0)  # and a gross outlier is flagged


def test_multivariate_detectors_flag_a_point_off_the_correlation() -> None:
    rng = random.Random(7)
    names = ("latency", "cost", "quality")

    def point() -> dict[str, float]:
        z = rng.gauss(0, 1)
        return {"latency": 7 + 0.3 * z, "cost": -5 + 0.3 * z + rng.gauss(0, 0.05),
                "quality": rng.betavariate(8, 2)}  # fmt: skip

    odd = {"latency": 7.6, "cost": -5.6, "quality": 0.8}  # each 2 sd out, in opposite ways
    maha = Mahalanobis(names, warmup=200)
    hst = HalfSpaceTrees(names, limits={"latency": (5, 9), "cost": (-7, -3), "quality": (0, 1)})
    for det in (maha, hst):
        flagged = sum(det.update(point()) for _ in range(3000))
        assert flagged <= 3, type(det).__name__
    assert maha.update(odd) and maha.score > 100
    assert hst.update({"latency": 8.9, "cost": -3.1, "quality": 0.01})


def test_anomaly_detector_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        ZScore(threshold=0)
    with pytest.raises(ValueError):
        IQR(window=2)
    with pytest.raises(ValueError):
        Mahalanobis(("a", "a"))
    with pytest.raises(ValueError):
        HalfSpaceTrees(threshold=1.5)
