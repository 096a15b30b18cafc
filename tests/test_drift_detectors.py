"""Drift detectors (CUSUM, input drift), the per-(policy, arm, signal) monitor
and its YAML config, checked against hand computations and seeded streams."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from river import drift
from river.base import DriftDetector
from scipy import stats

from app.drift import CUSUM, DriftConfig, DriftConfigError, DriftMonitor, InputDrift, psi
from app.drift.monitor import signal_values
from app.features.request_vector import FEATURE_NAMES
from app.records import Outcome

ROOT = Path(__file__).resolve().parents[1]

# The degradations of scripts/bench-drift (benchmarks/drift.py), on the monitor's scale.
Sampler = Callable[[random.Random, bool], float]
SCENARIOS: dict[str, Sampler] = {
    "reward": lambda rng, after: float(rng.random() < (0.6 if after else 0.8)),
    "latency": lambda rng, after: rng.gauss(math.log(800), 0.5) + (math.log(2) if after else 0),
    "cost": lambda rng, after: rng.gauss(math.log(0.004), 0.7) + (math.log(1.5) if after else 0),
    "error": lambda rng, after: float(rng.random() < (0.05 if after else 0.01)),
}


def run_trials(
    make: Callable[[], DriftDetector], sample: Sampler, trials: int, stable: int, horizon: int
) -> tuple[float, int, float]:
    """(share detected within the horizon, false alarms, median delay) over seeded trials."""
    delays, false_alarms = [], 0
    for trial in range(trials):
        rng = random.Random(1000 + trial)
        det = make()
        for _ in range(stable):
            det.update(sample(rng, False))
            false_alarms += det.drift_detected
        for i in range(horizon):
            det.update(sample(rng, True))
            if det.drift_detected:
                delays.append(i + 1)
                break
    return len(delays) / trials, false_alarms, float(np.median(delays)) if delays else math.inf


def outcome(
    i: int, arm: str = "a", policy: str = "p", defaulted: bool = False, **c: object
) -> Outcome:
    reward = c.pop("reward", 0.5)
    return Outcome(
        request_id=f"r{i}", tenant_id="t", policy_id=policy, policy_version=1, arm=arm,
        available_arms=[arm], propensity=1.0, explored=False, reward=float(reward),  # type: ignore[arg-type]
        defaulted=defaulted, decided_at=i, outcome_at=i, components=dict(c),
    )  # fmt: skip


# --- CUSUM ------------------------------------------------------------------------------------


def test_cusum_is_a_river_drift_detector() -> None:
    assert isinstance(CUSUM(), DriftDetector)
    assert CUSUM().drift_detected is False


def test_cusum_sums_match_a_hand_computation() -> None:
    # Fixed reference N(0, 2), k = 0.5, h = 3: z = x / 2.
    c = CUSUM(mean=0.0, std=2.0, k=0.5, h=3.0)
    pos = neg = 0.0
    for x in [1.0, 3.0, -1.0, 4.0, 2.0]:
        c.update(x)
        z = x / 2.0
        pos, neg = max(0.0, pos + z - 0.5), max(0.0, neg - z - 0.5)
        assert c.statistic == pytest.approx(max(pos, neg))
    # pos after the five values: 0, 1, 0, 1.5, 2.0
    assert pos == pytest.approx(2.0) and not c.drift_detected
    c.update(4.0)  # 2.0 + 2 - 0.5 = 3.5 > 3
    assert c.drift_detected and c.direction == "up"
    assert c.run_length == 3  # the sum last stood at zero after the third value
    c.update(0.0)  # a new value after a drift starts afresh
    assert not c.drift_detected and c.statistic == 0.0


def test_cusum_reference_is_the_running_mean_and_std_before_each_value() -> None:
    rng = random.Random(5)
    xs = [rng.gauss(3.0, 0.5) for _ in range(400)]
    c = CUSUM(warmup=50, k=0.5, h=1e9)
    for i, x in enumerate(xs):
        c.update(x)
        if i >= 50:
            ref = c.reference
            assert ref is not None
            # the reference used for value i is the mean/std of values 0..i-1
            assert ref[0] == pytest.approx(float(np.mean(xs[:i])))
            assert ref[1] == pytest.approx(float(np.std(xs[:i], ddof=1)))


def test_cusum_modes_and_arguments() -> None:
    up = CUSUM(mean=0, std=1, k=0.0, h=2.0, mode="up")
    for _ in range(5):
        up.update(-3.0)
    assert not up.drift_detected
    down = CUSUM(mean=0, std=1, k=0.0, h=2.0, mode="down")
    down.update(-3.0)
    assert down.drift_detected and down.direction == "down"
    with pytest.raises(ValueError, match="mode"):
        CUSUM(mode="sideways")
    with pytest.raises(ValueError):
        CUSUM(h=0)
    nan = CUSUM(mean=0, std=1, h=0.1)
    nan.update(math.nan)
    assert not nan.drift_detected


@pytest.mark.parametrize("signal", list(SCENARIOS))
def test_configured_detectors_catch_the_seeded_degradations(signal: str) -> None:
    """The benchmark's streams at a smaller scale: every seeded degradation is
    detected, with no false alarm in 40,000 stable values, and CUSUM is at
    least as fast as ADWIN where it is configured (scripts/bench-drift runs 500 trials)."""
    config = DriftConfig.load(ROOT / "config" / "drift.yaml")
    spec = config.signals[signal]
    registry = {"cusum": CUSUM, "adwin": drift.ADWIN}
    detected, false_alarms, delay = run_trials(
        lambda: spec.build(registry), SCENARIOS[signal], trials=20, stable=2000, horizon=4000
    )
    assert detected == 1.0
    assert false_alarms == 0
    if spec.name == "cusum":
        _, _, adwin_delay = run_trials(
            drift.ADWIN, SCENARIOS[signal], trials=20, stable=2000, horizon=4000
        )
        assert delay <= adwin_delay


# --- input drift ----------------------------------------------------------------------------


def test_psi_matches_a_hand_computation() -> None:
    ref = np.array([0.0] * 50 + [1.0] * 50)  # two bins: 0 and 1, 50% each
    cur = np.array([0.0] * 20 + [1.0] * 80)
    expected = (0.2 - 0.5) * math.log(0.2 / 0.5) + (0.8 - 0.5) * math.log(0.8 / 0.5)
    assert psi(ref, cur, bins=10) == pytest.approx(expected)
    assert psi(ref, ref.copy()) == pytest.approx(0.0)


def test_input_drift_reports_psi_and_ks_per_window_and_rebases() -> None:
    rng = np.random.default_rng(3)
    det = InputDrift(["a", "b"], reference_size=400, window_size=400, psi_threshold=0.2)
    ref = np.column_stack([rng.normal(0, 1, 400), rng.normal(5, 1, 400)])
    assert all(det.update(list(row)) == [] for row in ref)
    assert det.has_reference
    shifted = np.column_stack([rng.normal(0, 1, 400), rng.normal(6, 1, 400)])
    reports = [det.update(list(row)) for row in shifted]
    assert all(r == [] for r in reports[:-1])
    by = {r.feature: r for r in reports[-1]}
    ks = stats.ks_2samp(ref[:, 1], shifted[:, 1])
    assert by["b"].ks_statistic == pytest.approx(ks.statistic)
    assert by["b"].psi == pytest.approx(psi(ref[:, 1], shifted[:, 1]))
    assert by["b"].drifted and not by["a"].drifted
    # rebased: the same shifted law again is no drift
    again = np.column_stack([rng.normal(0, 1, 400), rng.normal(6, 1, 400)])
    last = [det.update(list(row)) for row in again][-1]
    assert not any(r.drifted for r in last)


def test_input_drift_watches_only_named_features() -> None:
    det = InputDrift(["x", "hour"], reference_size=10, window_size=10, watch=["x"])
    for i in range(19):
        det.update([1.0, float(i)])
    assert [r.feature for r in det.update([1.0, 0.0])] == ["x"]
    with pytest.raises(ValueError, match="unknown"):
        InputDrift(["x"], watch=["y"])
    with pytest.raises(ValueError, match="expected 1"):
        InputDrift(["x"], reference_size=10, window_size=10).update([1.0, 2.0])


# --- the monitor ----------------------------------------------------------------------------


def test_signal_values_transform_and_skip() -> None:
    v = signal_values(outcome(0, reward=0.7, latency_ms=2000.0, cost_usd=0.01, quality=0.9,
                              error=False))  # fmt: skip
    assert v == pytest.approx(
        {
            "reward": 0.7,
            "error": 0.0,
            "latency": math.log(2000),
            "cost": math.log(0.01),
            "quality": 0.9,
        }
    )
    failed = signal_values(outcome(0, reward=0.0, latency_ms=50.0, cost_usd=0.0, error=True))
    assert failed == pytest.approx({"reward": 0.0, "error": 1.0, "latency": math.log(50.0)})
    assert signal_values(outcome(0, defaulted=True, latency_ms=5.0)) == {}
    odd = signal_values(outcome(0, latency_ms="slow", cost_usd=-1, quality=True))
    assert set(odd) == {"reward", "error"}


def test_monitor_keeps_one_stream_per_policy_arm_and_signal() -> None:
    cfg = DriftConfig.from_dict({"signals": {"reward": {"detector": "cusum", "warmup": 100}},
                                 "anomaly": {"detectors": {}}})  # fmt: skip
    mon = DriftMonitor(cfg, clock=lambda: 42, ids=iter(f"e{i}" for i in range(99)).__next__)
    rng = random.Random(9)
    events = []
    for i in range(3000):
        # arm b of policy p degrades at 1500; arm a and policy q's arm b stay healthy
        for pol, arm in (("p", "a"), ("p", "b"), ("q", "b")):
            bad = pol == "p" and arm == "b" and i >= 1500
            r = float(rng.random() < (0.4 if bad else 0.8))
            lat = rng.lognormvariate(math.log(900 if bad else 300), 0.3)
            events += mon.observe(outcome(i, arm, pol, reward=r, latency_ms=lat, error=False))
    drifts = [(e.policy_id, e.arm, e.signal, e.direction) for e in events if e.kind == "drift"]
    assert sorted(set(drifts)) == [("p", "b", "latency", "up"), ("p", "b", "reward", "down")]
    assert len(drifts) == 2  # one lasting change, one event each
    rew = next(e for e in events if e.signal == "reward")
    assert 1500 < rew.observed_at < 1700 and rew.created_at == 42 and rew.detector == "cusum"
    assert rew.mean_before == pytest.approx(0.8, abs=0.05)
    assert rew.mean_after == pytest.approx(0.4, abs=0.2)
    slow = next(e for e in events if e.signal == "latency")
    assert slow.mean_before == pytest.approx(300, rel=0.1)  # geometric means, in ms
    assert slow.mean_after is not None and slow.mean_after > 500


def test_monitor_bounds_arms_and_can_be_switched_off() -> None:
    cfg = DriftConfig.from_dict({"limits": {"max_arms_per_policy": 2}})
    mon = DriftMonitor(cfg)
    for i, arm in enumerate(["a", "b", "c", "a"]):
        mon.observe(outcome(i, arm, reward=0.5, error=False))
    assert {k[1] for k in mon._streams} == {"a", "b"}
    off = DriftMonitor(DriftConfig.from_dict({"enabled": False}))
    assert off.observe(outcome(0)) == [] and not off._streams


def test_monitor_reports_input_drift_per_feature() -> None:
    cfg = DriftConfig.from_dict(
        {"input_drift": {"reference_size": 300, "window_size": 300, "watch": ["priority"]}}
    )
    mon = DriftMonitor(cfg)
    rng = random.Random(4)
    events = []
    for i in range(900):
        x = [0.0] * len(FEATURE_NAMES)
        x[FEATURE_NAMES.index("priority")] = rng.randint(0, 5 if i < 600 else 10) / 10
        o = outcome(i, reward=0.5)
        o.features = x
        events += mon.observe(o)
    inputs = [e for e in events if e.kind == "input_drift"]
    assert [(e.signal, e.detector, e.observed_at) for e in inputs] == [("priority", "psi_ks", 899)]
    assert inputs[0].score is not None and inputs[0].score > 0.25


# --- config ---------------------------------------------------------------------------------


def test_the_shipped_config_loads() -> None:
    cfg = DriftConfig.load(ROOT / "config" / "drift.yaml")
    assert set(cfg.signals) == {"reward", "latency", "cost", "error"}
    assert cfg.alert_rules and cfg.adaptation.action in ("reset", "discount", "explore", "none")


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"signals": {"mood": {"detector": "adwin"}}}, "unknown signal"),
        ({"signals": {"reward": {"detector": "magic"}}}, "unknown detector"),
        ({"signals": {"reward": {"detector": "cusum", "k": -1}}}, "bad parameters"),
        ({"signals": {"reward": {"detector": "adwin", "speed": 1}}}, "bad parameters"),
        ({"anomaly": {"detectors": {"latency": {"detector": "mahalanobis"}}}}, "unknown detector"),
        ({"adaptation": {"default": {"action": "panic"}}}, "action"),
        ({"adaptation": {"default": {"factor": 2}}}, "factor"),
        ({"alerts": {"rules": [{"name": "x"}]}}, "required"),
        (
            {
                "alerts": {
                    "rules": [
                        {
                            "name": "x",
                            "metric": "vibes",
                            "comparison": ">",
                            "threshold": 1,
                            "window_seconds": 1,
                        }
                    ]
                }
            },
            "metric",
        ),
        (
            {
                "alerts": {
                    "rules": [
                        {
                            "name": "x",
                            "metric": "error_rate",
                            "comparison": "!=",
                            "threshold": 1,
                            "window_seconds": 1,
                        }
                    ]
                }
            },
            "comparison",
        ),
        ({"surprise": 1}, "unknown key"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_config_is_refused_with_a_reason(doc: object, match: str) -> None:
    with pytest.raises(DriftConfigError, match=match):
        DriftConfig.from_dict(doc)


def test_a_misspelt_key_names_its_path_and_the_nearest_key() -> None:
    with pytest.raises(DriftConfigError) as info:
        DriftConfig.from_dict({"limits": {"max_arm_per_policy": 8}}, source="drift.yaml")
    assert str(info.value).startswith(
        "drift.yaml: limits.max_arm_per_policy: unknown key 'max_arm_per_policy' "
        "(did you mean 'max_arms_per_policy'?)"
    ), info.value
