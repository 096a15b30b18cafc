"""Transformers: fit / transform / inverse against hand computation and numpy."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import numpy as np
import pytest

from app.features.transformers import (
    FeatureHasher,
    LogTransform,
    MinMaxScaler,
    OneHotEncoder,
    StandardScaler,
)


def test_online_standard_scaler_matches_numpy_and_inverts() -> None:
    rng = random.Random(0)
    xs = [rng.gauss(40, 7) for _ in range(10_000)]
    s = StandardScaler()
    for x in xs:
        s.learn_one(x)
    assert s.mean_ == pytest.approx(np.mean(xs), rel=1e-12)
    assert s.std_ == pytest.approx(np.std(xs), rel=1e-9)
    f = s.frozen()
    ys = [f.transform(x) for x in xs]
    assert np.mean(ys) == pytest.approx(0, abs=1e-9) and np.std(ys) == pytest.approx(1, rel=1e-9)
    assert all(f.inverse(f.transform(x)) == pytest.approx(x, rel=1e-12) for x in xs[:100])
    with pytest.raises(ValueError):
        StandardScaler(std=0)


def test_min_max_fits_the_range_clips_and_inverts_inside_it() -> None:
    s = MinMaxScaler()
    for x in (4.0, -2.0, 10.0, 3.0):
        s.learn_one(x)
    f = s.frozen()
    assert (f.min, f.max) == (-2.0, 10.0)
    assert f.transform(4.0) == 0.5 and f.inverse(0.5) == 4.0
    assert f.transform(20.0) == 1.0 and f.transform(-5.0) == 0.0
    assert MinMaxScaler(0, 10, clip=False).transform(20.0) == 2.0


def test_log_transform_is_log1p_scaled_and_inverts() -> None:
    t = LogTransform(scale_max=1000)
    assert t.transform(0) == 0.0 and t.transform(1000) == pytest.approx(1.0)
    assert t.transform(10) == pytest.approx(math.log(11) / math.log(1001))
    assert t.inverse(t.transform(123.0)) == pytest.approx(123.0)
    assert LogTransform().transform(math.e - 1) == pytest.approx(1.0)


def test_one_hot_has_a_fixed_layout_and_an_other_column() -> None:
    e = OneHotEncoder(["a", "b", "c"])
    assert e.transform("b") == [0.0, 1.0, 0.0, 0.0]
    assert e.transform("zzz") == [0.0, 0.0, 0.0, 1.0]
    assert e.inverse(e.transform("c")) == "c" and e.inverse(e.transform("zzz")) is None
    assert OneHotEncoder(["a"], handle_unknown="ignore").transform("q") == [0.0]
    with pytest.raises(ValueError):
        OneHotEncoder(["a", "a"])


def test_hasher_is_deterministic_across_processes_and_spreads_values() -> None:
    h = FeatureHasher(buckets=16, signed=True)
    values = [f"user-{i}" for i in range(2_000)]
    here = [h.index(v) for v in values[:20]]
    code = (
        "from app.features.transformers import FeatureHasher;"
        "h = FeatureHasher(buckets=16, signed=True);"
        "print([h.index(f'user-{i}') for i in range(20)])"
    )
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout.strip()
    assert str(here) == there
    counts = np.bincount([h.index(v)[0] for v in values], minlength=16)
    assert counts.min() > 2_000 / 16 * 0.7  # roughly uniform
    signs = [h.index(v)[1] for v in values]
    assert 0.4 < signs.count(-1.0) / len(signs) < 0.6
    assert sum(abs(x) for x in h.transform("user-1")) == 1.0
