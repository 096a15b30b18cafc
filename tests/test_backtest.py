"""Backtests: frozen and progressive modes against brute-force recomputation,
the baseline policies on problems with known answers, reports and the CLI."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from app.cli import main
from app.evaluation.backtest import Backtest, PolicySpec, parse_policy_spec
from app.evaluation.logged_data import LoggedData
from app.evaluation.report import render_html, render_json, render_table
from app.policies.config import PoliciesConfig
from app.policies.epsilon_greedy import EpsilonGreedy
from app.policies.lin_ucb import LinUCB

ROOT = Path(__file__).resolve().parent.parent
MEANS = np.array([0.3, 0.8, 0.5])


def bernoulli_log(n: int = 4000, seed: int = 0, probs: np.ndarray | None = None) -> LoggedData:
    """A non-contextual log: arm means MEANS, logging probabilities ``probs``."""
    rng = np.random.default_rng(seed)
    p = np.array([0.5, 0.2, 0.3]) if probs is None else probs
    a = rng.choice(3, n, p=p)
    return LoggedData(
        actions=a,
        rewards=(rng.random(n) < MEANS[a]).astype(float),
        propensities=p[a],
        arm_names=("x", "y", "z"),
        timestamps=1_000_000 + np.arange(n) * 10,
    )


def contextual_log(n: int = 3000, seed: int = 1) -> LoggedData:
    rng = np.random.default_rng(seed)
    x = np.hstack([np.ones((n, 1)), rng.normal(size=(n, 2))])
    a = rng.integers(0, 2, n)
    mean = np.where(a == 0, 0.5 + 0.2 * x[:, 1], 0.5 - 0.2 * x[:, 1])
    available = np.ones((n, 2), dtype=bool)
    available[::5, 1] = False  # every fifth row: only arm 0
    a[::5] = 0
    props = np.where(available[:, 1], 0.5, 1.0)
    return LoggedData(
        actions=a,
        rewards=mean + rng.normal(0, 0.1, n),
        propensities=props,
        arm_names=("l", "r"),
        contexts=x,
        available=available,
        timestamps=np.arange(n),
    )


def test_baselines_on_a_problem_with_known_arm_means() -> None:
    data = bernoulli_log(20_000)
    specs = [
        PolicySpec.logging(),
        PolicySpec.uniform(),
        PolicySpec.best_fixed(),
        PolicySpec.fixed("x"),
    ]
    res = Backtest(specs, estimators=["ips", "snips", "dr"], n_bootstrap=200).run(data)
    by = {p.name: p for p in res.policies}
    assert set(by) == {"logging", "uniform", "best-fixed (y)", "fixed(x)"}
    # Logging is on-policy: exactly the mean reward, for every estimator.
    for e in ("ips", "snips", "dr"):
        assert by["logging"].estimates[e].value == pytest.approx(data.rewards.mean(), abs=1e-12)
    truth = {"uniform": MEANS.mean(), "best-fixed (y)": 0.8, "fixed(x)": 0.3}
    for name, v in truth.items():
        for e in ("ips", "snips", "dr"):
            est = by[name].estimates[e]
            # Within about 4 standard errors (the 95% interval is about 4 wide).
            assert abs(est.value - v) < est.high - est.low < 0.06, (name, e, est)
    # Arm shares: the fixed arm gets all of it, uniform a third each.
    assert np.allclose(by["fixed(x)"].arm_shares, [[1, 0, 0]])
    assert np.allclose(by["uniform"].arm_shares, 1 / 3)
    assert res.best("dr").name == "best-fixed (y)"


def test_frozen_mode_uses_the_policys_own_probabilities_after_training() -> None:
    data = bernoulli_log(3000)
    spec = PolicySpec.library("epsilon_greedy", seed=3, epsilon=0.3)
    bt = Backtest([spec], estimators=["ips"], n_bootstrap=0, train_fraction=0.5)
    res = bt.run(data)
    # Brute force: train a copy by hand on the first half, read its probabilities.
    ref = EpsilonGreedy(["x", "y", "z"], seed=3, epsilon=0.3)
    for i in range(1500):
        ref.update(data.arm_names[data.actions[i]], float(data.rewards[i]), propensity=0.5)
    probs = ref.probabilities(["x", "y", "z"])
    assert np.allclose(res.policies[0].arm_shares, probs)
    rest = data.take(np.arange(1500, 3000))
    w = probs[rest.actions] / rest.propensities
    assert res.policies[0].estimates["ips"].value == pytest.approx(
        float(np.mean(w * rest.rewards)), abs=1e-12
    )
    assert res.settings["train_rows"] == 1500 and res.n_events == 1500


def test_frozen_contextual_policy_with_availability_masks() -> None:
    data = contextual_log()
    assert data.contexts is not None
    model = LinUCB(["l", "r"], seed=0, context_dim=3, alpha=0.1)
    for i in range(500):
        model.update(data.arm_names[data.actions[i]], float(data.rewards[i]), data.contexts[i])
    spec = PolicySpec.library("lin_ucb", seed=0, alpha=0.1)
    res = Backtest([spec], estimators=["snips"], n_bootstrap=0, train_fraction=500 / 3000).run(data)
    rest = data.take(np.arange(500, 3000))
    assert rest.contexts is not None and rest.available is not None
    pi = np.zeros((rest.n_events, 2))
    for i in range(rest.n_events):
        allowed = [a for a, ok in zip(rest.arm_names, rest.available[i], strict=True) if ok]
        p = model.probabilities(allowed, rest.contexts[i])
        for a, v in zip(allowed, p, strict=True):
            pi[i, rest.arm_names.index(a)] = v
    w = pi[np.arange(rest.n_events), rest.actions] / rest.propensities
    snips = float((w * rest.rewards).sum() / w.sum())
    assert res.policies[0].estimates["snips"].value == pytest.approx(snips, abs=1e-12)
    # The learnt policy beats uniform (it picks l when x1 > 0, r otherwise).
    uni = Backtest([PolicySpec.uniform()], estimators=["snips"], n_bootstrap=0).run(rest)
    assert snips > uni.policies[0].estimates["snips"].value + 0.05


def test_progressive_mode_learns_only_from_rows_it_would_have_chosen() -> None:
    data = bernoulli_log(6000, probs=np.full(3, 1 / 3))
    spec = PolicySpec.library("epsilon_greedy", seed=5, epsilon=0.1)
    res = Backtest([spec, PolicySpec.uniform()], mode="progressive", n_bootstrap=0, seed=9).run(
        data
    )
    eg = res.policies[0]
    # Re-run the same loop by hand: same policy seed, same acceptance draws.
    policy = EpsilonGreedy(["x", "y", "z"], seed=5, epsilon=0.1)
    u = np.random.default_rng(9).random(data.n_events)
    kept_rewards = []
    for i in range(data.n_events):
        sel = policy.select(None, ["x", "y", "z"])
        logged = data.arm_names[data.actions[i]]
        if sel.arm == logged and u[i] < (1 / 3) / data.propensities[i]:
            policy.update(logged, float(data.rewards[i]), propensity=sel.propensity)
            kept_rewards.append(data.rewards[i])
    assert eg.accepted == len(kept_rewards)
    assert eg.estimates["replay"].value == pytest.approx(np.mean(kept_rewards), abs=1e-12)
    assert sum(s["pulls"] for s in policy.stats().values()) == eg.accepted
    # It learns: the best arm's share grows and it beats uniform.
    assert eg.arm_shares[-1, 1] > 0.8 > eg.arm_shares[0, 1]
    assert eg.estimates["replay"].value > res.policies[1].estimates["replay"].value + 0.1


def test_a_policies_yaml_policy_runs_through_its_config() -> None:
    cfg = PoliciesConfig.load(ROOT / "tests" / "fixtures" / "policies.yaml").policies["default"]
    rng = np.random.default_rng(0)
    n = 500
    a = rng.integers(0, len(cfg.arms), n)
    data = LoggedData(
        actions=a,
        rewards=rng.random(n),
        propensities=np.full(n, 1 / len(cfg.arms)),
        arm_names=tuple(cfg.arm_names),
    )
    res = Backtest([PolicySpec.from_config(cfg)], n_bootstrap=50).run(data)
    p = res.policies[0]
    assert p.name == "default (thompson_sampling)"
    assert np.allclose(p.arm_shares.sum(axis=1), 1.0)
    assert set(p.estimates) == {"replay", "ips", "snips", "dm", "dr", "sndr", "switch-dr"}


def test_policy_specs_parse_and_refuse_unknown_names() -> None:
    assert parse_policy_spec("ucb1").kind == "library"
    spec = parse_policy_spec("epsilon_greedy:epsilon=0.2,decay=linear,adaptive=true")
    assert spec.hyperparameters == {"epsilon": 0.2, "decay": "linear", "adaptive": True}
    with pytest.raises(ValueError, match=r"unknown policy 'nope'; known: logging, uniform"):
        parse_policy_spec("nope")
    with pytest.raises(ValueError, match="use name=value"):
        parse_policy_spec("ucb1:oops")
    with pytest.raises(ValueError, match="unknown arm"):
        Backtest([PolicySpec.fixed("nope")], n_bootstrap=0).run(bernoulli_log(100))
    with pytest.raises(ValueError, match="contextual"):
        Backtest([PolicySpec.library("lin_ucb")], n_bootstrap=0).run(bernoulli_log(100))


def test_reports_table_json_and_self_contained_html() -> None:
    data = bernoulli_log(2000)
    specs = [PolicySpec.logging(), PolicySpec.uniform(), PolicySpec.best_fixed()]
    res = Backtest(specs, n_bootstrap=100, n_bins=20).run(data)
    table = render_table(res)
    first = table.splitlines()[2]
    assert first.startswith("best-fixed (y)")  # ranked by the primary estimator
    doc = orjson.loads(render_json(res, {"source": "test"}))
    assert doc["source"] == "test" and doc["n_events"] == 2000
    assert len(doc["bin_ends"]) == 20 and doc["time_axis"] == "timestamp_ms"
    assert {p["name"] for p in doc["policies"]} == {"logging", "uniform", "best-fixed (y)"}
    logging = next(p for p in doc["policies"] if p["name"] == "logging")
    assert logging["cumulative_reward"][-1] == pytest.approx(data.rewards.sum(), abs=1e-5)
    page = render_html(res, "T")
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 2 + len(specs)  # values, cumulative, one arm-share chart per policy
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    # Self-contained: no scripts, stylesheets or images from elsewhere.
    assert "<script" not in page
    assert not re.search(r"(src|href)=\"https?://", page)
    assert re.findall(r"https?://[^\"']+", page) == ["http://www.w3.org/2000/svg"] * len(svgs)


# -- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def csv_log(tmp_path: Path) -> Path:
    data = contextual_log(1200)
    assert data.contexts is not None and data.available is not None
    props = data.propensities.copy()
    props[:2] = [0.0, 1.5]
    t: dict[str, object] = {
        "arm": [data.arm_names[a] for a in data.actions],
        "reward": data.rewards,
        "propensity": props,
        "ts": 1_700_000_000_000 + np.arange(data.n_events),
        "available": ["l|r" if av[1] else "l" for av in data.available],
    }
    for j in range(3):
        t[f"f{j}"] = data.contexts[:, j]
    path = tmp_path / "log.csv"
    pcsv.write_csv(pa.table(t), path)
    return path


def test_cli_backtest_writes_table_json_and_html(
    csv_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    code = main(
        [
            "backtest",
            "--file",
            str(csv_log),
            "--action",
            "arm",
            "--context",
            "f*",
            "--available",
            "available",
            "--timestamp",
            "ts",
            "--policy",
            "uniform",
            "--policy",
            "lin_ucb:alpha=0.1",
            "--policy",
            "logging",
            "--train-fraction",
            "0.2",
            "--resamples",
            "50",
            "--json",
            str(out_json),
            "--html",
            str(out_html),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "lin_ucb(alpha=0.1)" in captured.out and "uniform" in captured.out
    assert "2 dropped (nonpositive propensity 1, propensity above one 1)" in captured.err
    doc = orjson.loads(out_json.read_bytes())
    assert doc["data_quality"]["rows_kept"] == 1198
    assert doc["n_events"] == 1198 - int(1198 * 0.2)
    assert out_html.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--propensity", "prob"], "no column 'prob' for --propensity"),
        (["--policy", "magic_bandit"], "unknown policy 'magic_bandit'"),
        (["--start", "2026-01-02", "--end", "2026-01-01"], "bad time range"),
        (["--start", "yesterday-ish"], "bad time"),
        (["--estimators", "ips,vibes"], "unknown estimator(s) ['vibes']"),
        (["--policy", "fixed:nope"], "unknown arm 'nope'"),
    ],
)
def test_cli_backtest_errors_are_clear(
    csv_log: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["backtest", "--file", str(csv_log), "--action", "arm", "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("llmopt: error: ") and message in last, err


def test_the_cli_knows_every_estimator() -> None:
    from app.backtest_cli import ESTIMATOR_NAMES
    from app.evaluation.estimators import ESTIMATORS

    assert tuple(ESTIMATORS) == ESTIMATOR_NAMES


def test_cli_needs_exactly_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest"]) == 2
    assert "name one source of logged data" in capsys.readouterr().err


def test_policy_state_is_not_shared_between_runs() -> None:
    """Two runs of one Backtest give the same answer: each builds fresh policies."""
    data = bernoulli_log(1500, probs=np.full(3, 1 / 3))
    bt = Backtest([PolicySpec.library("ucb1")], mode="progressive", n_bootstrap=0)
    first, second = bt.run(data), bt.run(copy.copy(data))
    assert first.policies[0].estimates["dr"].value == second.policies[0].estimates["dr"].value


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--start", "now-1h", "--end", "now-2h"], "bad time range"),
        (["--start", "now-2h", "--end", "now-1h", "--run-id", "Bad_Id"], "run id 'Bad_Id'"),
        (["--start", "now-2h", "--end", "now-1h", "--policy-id", "nope"], "--policy-id 'nope'"),
    ],
)
def test_cli_replay_errors_are_clear(
    extra: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LLMOPT_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # never reached
    policies = str(ROOT / "tests" / "fixtures" / "policies.yaml")
    assert main(["replay", "--policies", policies, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmopt: error: ") and message in err, err
