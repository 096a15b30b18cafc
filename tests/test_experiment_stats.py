"""Experiment statistics against known truth: the confidence sequence covers
the true difference at every look, A/A experiments looked at after every
batch are wrongly decided at most α of the time, a known effect is found
with the planned power, and the state, the split and the plan behave."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from app import cli
from app.experiment_cli import add_commands
from app.experiments import (
    REWARD,
    Comparison,
    Experiment,
    Metric,
    Moments,
    TrafficSplit,
    bucket,
    half_width,
    mixture_p_value,
    mixture_rho,
    plan,
    width_multiplier,
)

ALPHA = 0.05
Draw = Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]


def beta(mean: float, concentration: float = 12.0) -> Draw:
    def draw(rng: np.random.Generator, e: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.beta(mean * concentration, (1 - mean) * concentration, size=(e, m))
        return x.sum(axis=1), (x * x).sum(axis=1)

    return draw


def bernoulli(p: float) -> Draw:
    def draw(rng: np.random.Generator, e: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        s = rng.binomial(m, p, size=e).astype(float)
        return s, s

    return draw


def lognormal(median: float, sigma: float) -> Draw:
    def draw(rng: np.random.Generator, e: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.lognormal(math.log(median), sigma, size=(e, m))
        return x.sum(axis=1), (x * x).sum(axis=1)

    return draw


def run(
    control: Draw,
    treatment: Draw,
    experiments: int,
    looks: int,
    per_look: tuple[int, int],
    seed: int,
    truth: float | None = None,
    **kwargs: float | bool,
) -> dict[str, np.ndarray]:
    """``experiments`` Comparisons fed batch by batch, looked at after each
    batch: their final decisions and gates, whether the interval ever missed
    ``truth``, and whether a Welch t-test peeked at the same looks rejected."""
    rng = np.random.default_rng(seed)
    comps = [Comparison(**kwargs) for _ in range(experiments)]  # type: ignore[arg-type]
    missed = np.zeros(experiments, dtype=bool)
    peeked = np.zeros(experiments, dtype=bool)
    at = np.full(experiments, -1)
    for look in range(looks):
        sa, ssa = control(rng, experiments, per_look[0])
        sb, ssb = treatment(rng, experiments, per_look[1])
        for i, c in enumerate(comps):
            c.add_sums("control", per_look[0], float(sa[i]), float(ssa[i]))
            c.add_sums("treatment", per_look[1], float(sb[i]), float(ssb[i]))
            r = c.check()
            if truth is not None and not math.isnan(r.low) and not r.low <= truth <= r.high:
                missed[i] = True
            if at[i] < 0 and r.decision != "inconclusive":
                at[i] = look
            a, b = c.control, c.treatment
            if a.n >= 2 and b.n >= 2:
                p = stats.ttest_ind_from_stats(
                    b.mean, math.sqrt(b.variance), b.n, a.mean, math.sqrt(a.variance), a.n, False
                ).pvalue
                peeked[i] |= bool(p < ALPHA)
    return {
        "decision": np.array([c.decision for c in comps]),
        "gate": np.array([c.gate for c in comps]),
        "missed": missed,
        "peeked": peeked,
        "decided_at": at,
    }


def upper(rate: float, n: int, z: float = 2.0) -> float:
    """``rate`` plus ``z`` Monte-Carlo standard errors over ``n`` runs."""
    return rate + z * math.sqrt(rate * (1 - rate) / n)


# -- moments ------------------------------------------------------------------------------


def test_moments_from_sums_values_and_merges_agree() -> None:
    rng = np.random.default_rng(0)
    xs = rng.lognormal(6.7, 0.5, size=1000)
    by_values, by_sums, merged = Moments(), Moments(), Moments()
    for chunk in np.split(xs, 10):
        by_values.update(chunk.tolist())
        by_sums.add_sums(len(chunk), float(chunk.sum()), float((chunk * chunk).sum()))
        part = Moments()
        part.update(chunk.tolist())
        merged.merge(part)
    for m in (by_values, by_sums, merged):
        assert m.n == 1000
        assert m.mean == pytest.approx(xs.mean(), rel=1e-12)
        assert m.variance == pytest.approx(xs.var(ddof=1), rel=1e-9)
    assert Moments.from_dict(json.loads(json.dumps(by_sums.to_dict()))) == by_sums


def test_moments_keep_the_variance_of_large_offset_values() -> None:
    # Raw sums of squares of 1e9 + noise lose everything to cancellation.
    rng = np.random.default_rng(1)
    xs = 1e9 + rng.normal(0, 1, size=10_000)
    m = Moments()
    for chunk in np.split(xs, 100):
        m.update(chunk.tolist())
    assert m.variance == pytest.approx(xs.var(ddof=1), rel=1e-6)


def test_moments_refuse_values_out_of_bounds_and_non_finite() -> None:
    m = Moments((0.0, 1.0))
    with pytest.raises(ValueError, match="outside the bounds"):
        m.update([0.5, 1.5])
    with pytest.raises(ValueError, match="finite"):
        m.update([math.nan])
    with pytest.raises(ValueError, match="outside the bounds"):
        m.add_sums(2, 3.0, 5.0)
    with pytest.raises(ValueError, match="bad batch"):
        m.add_sums(-1, 0.0, 0.0)
    assert m.n == 0


# -- the confidence sequence ----------------------------------------------------------------


def test_vectorised_boundary_equals_the_scalar_one() -> None:
    rho = mixture_rho(ALPHA, 5_000)
    n = np.array([10.0, 100.0, 5_000.0, 1e6])
    var = np.array([0.5, 0.1, 0.01, 1e-4])
    hw = half_width(var, n, ALPHA, rho)
    for i in range(len(n)):
        assert hw[i] == pytest.approx(half_width(float(var[i]), float(n[i]), ALPHA, rho))
    # The p-value is α exactly on the boundary: the test and the interval agree.
    z = width_multiplier(n, ALPHA, rho)
    assert np.allclose(mixture_p_value(z, n, rho), ALPHA)
    # Wider than the fixed-horizon 1.96 everywhere; the price of looking at will.
    assert (z > stats.norm.ppf(1 - ALPHA / 2)).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confidence_sequence_covers_the_truth_at_every_look(seed: int) -> None:
    # True difference +0.05 on quality scores; 600 experiments, 60 looks each.
    res = run(beta(0.70), beta(0.75), 600, 60, (50, 50), seed, truth=0.05, tuning_n=2_000)
    assert res["missed"].mean() <= upper(ALPHA, 600)


@pytest.mark.parametrize(
    ("draw", "seed"),
    [(beta(0.7), 0), (bernoulli(0.1), 1), (lognormal(800.0, 0.5), 2), (beta(0.7), 3)],
    ids=["quality", "success", "latency", "quality-seed3"],
)
def test_false_positive_rate_under_continuous_peeking(draw: Draw, seed: int) -> None:
    res = run(draw, draw, 600, 60, (50, 50), seed, tuning_n=2_000)
    fpr = (res["decision"] != "inconclusive").mean()
    assert fpr <= upper(ALPHA, 600)
    # The same looks with a fixed-horizon t-test: the problem this solves.
    assert res["peeked"].mean() > 2 * ALPHA


def test_unequal_split_keeps_the_false_positive_rate() -> None:
    # A rollout stage: 10% to the treatment.
    res = run(beta(0.7), beta(0.7), 500, 60, (90, 10), 4, tuning_n=2_000)
    assert (res["decision"] != "inconclusive").mean() <= upper(ALPHA, 500)


@pytest.mark.parametrize("seed", [0, 1])
def test_power_on_a_known_effect_matches_the_plan(seed: int) -> None:
    # 2 points of mean quality, as the simulator's quality law has it.
    sd = math.sqrt(0.7 * 0.3 / 13)
    p = plan(0.70, 0.02, sd=sd)
    looks = math.ceil(p.sequential_n_per_variant / 50)
    res = run(beta(0.70), beta(0.72), 400, looks, (50, 50), seed, tuning_n=p.tuning_n)
    power = (res["decision"] == "better").mean()
    assert power >= 0.8 - 2 * math.sqrt(0.16 / 400)
    assert (res["decision"] == "worse").mean() <= 0.01
    # It usually decides well before the planned upper estimate.
    decided = res["decided_at"][res["decided_at"] >= 0]
    assert np.median((decided + 1) * 50) < p.sequential_n_per_variant


def test_guardrail_direction_and_relative_margin() -> None:
    rng = np.random.default_rng(5)

    def latency(c: Comparison, treat_median: float) -> Comparison:
        for _ in range(40):
            c.add_values("control", rng.lognormal(math.log(800), 0.5, 200).tolist())
            c.add_values("treatment", rng.lognormal(math.log(treat_median), 0.5, 200).tolist())
            c.check()
        return c

    faster = latency(Comparison(higher_is_better=False, tuning_n=8_000), 700)
    slower = latency(Comparison(higher_is_better=False, tuning_n=8_000), 900)
    assert (faster.decision, slower.decision) == ("better", "worse")
    # 3% slower passes a 10% relative margin; 25% slower fails it.
    a_bit = latency(Comparison(higher_is_better=False, margin=0.1, relative_margin=True), 824)
    much = latency(Comparison(higher_is_better=False, margin=0.1, relative_margin=True), 1000)
    assert (a_bit.gate, much.gate) == ("pass", "fail")
    assert a_bit.check().margin == pytest.approx(0.1 * a_bit.control.mean)


def test_non_inferiority_gate_error_at_the_margin() -> None:
    # Truly worse by exactly the margin: passing the gate is the error, ≤ α.
    res = run(beta(0.70), beta(0.68), 400, 60, (50, 50), 6, margin=0.02, tuning_n=2_000)
    assert (res["gate"] == "pass").mean() <= upper(ALPHA, 400)
    # Truly equal: it passes a 2-point margin almost always within 6,000 units.
    ok = run(beta(0.70), beta(0.70), 200, 60, (50, 50), 7, margin=0.02, tuning_n=2_000)
    assert (ok["gate"] == "pass").mean() >= 0.9
    assert (ok["gate"] == "fail").mean() <= upper(ALPHA, 200)


def test_nothing_is_decided_before_min_samples() -> None:
    c = Comparison(min_samples=100)
    c.add_values("control", [0.0] * 99)
    c.add_values("treatment", [1.0] * 99)
    r = c.check()
    assert (r.decision, r.gate) == ("inconclusive", "pending")
    assert math.isnan(r.low)
    c.add_values("control", [0.0])
    c.add_values("treatment", [1.0])
    assert c.check().decision == "better"


def test_decisions_are_sticky_and_the_p_value_a_running_minimum() -> None:
    c = Comparison(min_samples=10, tuning_n=200)
    c.add_values("control", [0.0, 1.0] * 50)
    c.add_values("treatment", [1.0] * 100)
    first = c.check()
    assert first.decision == "better" and first.p_value < ALPHA
    c.add_values("treatment", [0.0] * 5_000)  # now far worse on average
    later = c.check()
    assert later.decision == "better" and c.decided_n == 200
    assert later.p_value <= first.p_value


# -- several variants -------------------------------------------------------------------------


def test_bonferroni_keeps_the_family_wise_rate_over_four_variants() -> None:
    rng = np.random.default_rng(8)
    experiments, fp = 300, 0
    for _ in range(experiments):
        exp = Experiment(["A", "B", "C", "D"], tuning_n=2_000)
        assert exp.comparison_alpha == pytest.approx(ALPHA / 3)
        for _look in range(40):
            for v in exp.variants:
                x = rng.beta(8.4, 3.6, 50)
                exp.add_sums(v, "reward", 50, float(x.sum()), float((x * x).sum()))
            exp.check()
        fp += any(exp.decision(v) != "inconclusive" for v in exp.treatments)
    assert fp / experiments <= upper(ALPHA, experiments)


def test_experiment_gate_needs_every_metric_and_fails_on_any() -> None:
    rng = np.random.default_rng(9)
    metrics = [REWARD, Metric("cost_usd", higher_is_better=False, margin=0.0005)]
    exp = Experiment(["champion", "good", "costly"], metrics, tuning_n=10_000)
    q = {"champion": 0.70, "good": 0.74, "costly": 0.74}
    cost = {"champion": 0.004, "good": 0.004, "costly": 0.006}
    for _ in range(50):
        for v in exp.variants:
            exp.add_values(
                v,
                {
                    "reward": rng.beta(q[v] * 12, (1 - q[v]) * 12, 100).tolist(),
                    "cost_usd": rng.normal(cost[v], 0.001, 100).tolist(),
                },
            )
        exp.check()
    assert exp.decision("good") == exp.decision("costly") == "better"
    assert (exp.gate("good"), exp.gate("costly")) == ("pass", "fail")
    summary = exp.summary()
    assert summary["costly"]["metrics"]["cost_usd"]["decision"] == "worse"
    json.dumps(summary)


def test_experiment_refuses_bad_definitions() -> None:
    with pytest.raises(ValueError, match="two or more"):
        Experiment(["A"])
    with pytest.raises(ValueError, match="two or more"):
        Experiment(["A", "A"])
    with pytest.raises(ValueError, match="distinct metrics"):
        Experiment(["A", "B"], [REWARD, REWARD])
    with pytest.raises(ValueError, match="unknown variant"):
        Experiment(["A", "B"]).add_values("C", {"reward": [1.0]})


# -- state ----------------------------------------------------------------------------------


def test_state_round_trips_through_json_mid_experiment() -> None:
    rng = np.random.default_rng(10)
    metrics = [
        REWARD,
        Metric("latency_ms", higher_is_better=False, margin=0.1, relative_margin=True),
    ]
    live = Experiment(["A", "B", "C"], metrics, tuning_n=4_000)
    restored: Experiment | None = None
    for look in range(30):
        batch = {
            v: {
                "reward": rng.beta(8.4 + i, 3.6, 40).tolist(),
                "latency_ms": rng.lognormal(6.7, 0.5, 40).tolist(),
            }
            for i, v in enumerate(live.variants)
        }
        for target in (live, restored):
            if target is not None:
                for v, values in batch.items():
                    target.add_values(v, values)
                target.check()
        if look == 12:  # stored in a table or a topic, read back by another worker
            restored = Experiment.from_dict(json.loads(json.dumps(live.to_dict())))
    assert restored is not None
    assert restored.to_dict() == live.to_dict()
    assert restored.summary() == live.summary()
    c = Comparison(margin=0.01)
    c.add_values("control", [0.1, 0.2, 0.3])
    assert Comparison.from_dict(json.loads(json.dumps(c.to_dict()))).to_dict() == c.to_dict()


# -- assignment ------------------------------------------------------------------------------


def test_split_is_the_same_in_another_process() -> None:
    keys = [f"tenant-{i}" for i in range(50)]
    here = [bucket(k, "exp-a") for k in keys]
    code = (
        "import json,sys; from app.experiments import bucket; "
        "print(json.dumps([bucket(f'tenant-{i}', 'exp-a') for i in range(50)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        cwd=str(Path(__file__).resolve().parents[1]),
    ).stdout
    assert json.loads(out) == here


def test_raising_a_share_keeps_the_treated_keys() -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    treated: set[str] = set()
    for share in (0.05, 0.10, 0.25, 0.50, 1.0):
        split = TrafficSplit("rollout-1", "champion", {"challenger": share})
        now = {k for k, v in zip(keys, split.assign_many(keys), strict=True) if v == "challenger"}
        assert treated <= now
        assert len(now) / len(keys) == pytest.approx(share, abs=0.01)
        treated = now
    # Another experiment's split is independent of this one.
    other = TrafficSplit("rollout-2", "champion", {"challenger": 0.5})
    first = TrafficSplit("rollout-1", "champion", {"challenger": 0.5})
    both = sum(other.assign(k) == first.assign(k) == "challenger" for k in keys)
    assert both / len(keys) == pytest.approx(0.25, abs=0.015)


def test_split_shares_over_several_variants() -> None:
    split = TrafficSplit("ab-3", "A", {"B": 0.2, "C": 0.3})
    got = split.assign_many(f"k{i}" for i in range(20_000))
    for v, share in (("A", 0.5), ("B", 0.2), ("C", 0.3)):
        assert got.count(v) / len(got) == pytest.approx(share, abs=0.015)
    assert (
        TrafficSplit.from_dict(json.loads(json.dumps(split.to_dict()))).assign_many(
            f"k{i}" for i in range(100)
        )
        == got[:100]
    )
    with pytest.raises(ValueError, match="add up"):
        TrafficSplit("x", "A", {"B": 0.6, "C": 0.6})
    with pytest.raises(ValueError, match="rest"):
        TrafficSplit("x", "A", {"A": 0.5})
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        TrafficSplit("x", "A", {"B": -0.1})


# -- the plan ----------------------------------------------------------------------------------


def test_plan_matches_textbook_sample_sizes() -> None:
    # Two-sided t-test, α 0.05, power 0.8: d = 0.5 → 64 per group, d = 0.2 → 394
    # (Cohen's tables; statsmodels' TTestIndPower: 63.77 and 393.41).
    assert plan(0.0, 0.5, sd=1.0).fixed_n_per_variant == 64
    assert plan(0.0, 0.2, sd=1.0).fixed_n_per_variant == 394
    # A rate: 10% → 12% needs ~3,840 per variant (normal approximation 3,839).
    assert plan(0.10, 0.02).fixed_n_per_variant == pytest.approx(3_840, abs=5)


def test_plan_grows_with_variants_power_and_smaller_effects() -> None:
    base = plan(0.7, 0.02)
    assert plan(0.7, 0.02, variants=4).fixed_n_per_variant > base.fixed_n_per_variant
    assert plan(0.7, 0.02, variants=4).comparison_alpha == pytest.approx(0.05 / 3)
    assert plan(0.7, 0.02, power=0.9).fixed_n_per_variant > base.fixed_n_per_variant
    assert plan(0.7, 0.01).fixed_n_per_variant > 3 * base.fixed_n_per_variant
    # Either sign: the same size for the same spread; a rate nearer 0.5 spreads more.
    assert plan(0.7, -0.02, sd=0.3) == plan(0.7, 0.02, sd=0.3).__class__(
        **(plan(0.7, 0.02, sd=0.3).__dict__ | {"mde": -0.02})
    )
    assert plan(0.7, -0.02).fixed_n_per_variant > base.fixed_n_per_variant
    assert (
        base.fixed_n_per_variant
        < base.sequential_median_n_per_variant
        < base.sequential_n_per_variant
        < 3 * base.fixed_n_per_variant
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mde": 0.0}, "must not be 0"),
        ({"alpha": 1.5}, "alpha"),
        ({"power": 0.0}, "power"),
        ({"variants": 1}, "variants"),
        ({"baseline_mean": 1.2}, "strictly between 0 and 1"),
        ({"sd": -1.0}, "standard deviation"),
        ({"mde": math.inf}, "finite"),
    ],
)
def test_plan_refuses_bad_input(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float] = {"baseline_mean": 0.7, "mde": 0.02} | kwargs
    with pytest.raises(ValueError, match=message):
        plan(**args)  # type: ignore[arg-type]


# -- llmopt experiment plan ------------------------------------------------------------------


@pytest.fixture
def llmopt(monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """``llmopt`` with the experiment commands registered (as app/cli.py does)."""
    build = cli._parser

    def parser() -> argparse.ArgumentParser:
        p = build()
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        if "experiment" not in sub.choices:
            add_commands(sub)
        return p

    monkeypatch.setattr(cli, "_parser", parser)
    return lambda *argv: cli.main(list(argv))


def test_cli_plan_prints_the_sample_sizes(
    llmopt: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert llmopt("experiment", "plan", "--baseline", "0.7", "--mde", "0.02") == 0
    out = capsys.readouterr().out
    assert "fixed-horizon t-test" in out and "8,078" in out
    argv = "experiment plan --baseline 800 --mde -0.05 --relative --sd 400 --variants 3 --json"
    assert llmopt(*argv.split()) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mde"] == pytest.approx(-40.0) and doc["variants"] == 3
    assert doc["fixed_n_per_variant"] == plan(800, -40, sd=400, variants=3).fixed_n_per_variant


@pytest.mark.parametrize(
    "argv",
    [
        ["--baseline", "0.7", "--mde", "0.02", "--alpha", "1.5"],
        ["--baseline", "1.2", "--mde", "0.02"],
        ["--baseline", "0.7", "--mde", "0"],
        ["--baseline", "0.7", "--mde", "0.02", "--variants", "1"],
        ["--baseline", "0.7", "--mde", "abc"],
        ["--mde", "0.02"],
    ],
)
def test_cli_plan_bad_input_is_one_line_and_exit_2(
    llmopt: Callable[..., int], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert llmopt("experiment", "plan", *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llmopt: error: ")
