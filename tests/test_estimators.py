"""Off-policy estimators: hand-computed references, the bootstrap, the reward
model, and calibration on the simulator (whose true policy values are known)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from app.evaluation.backtest import Backtest, PolicySpec
from app.evaluation.estimators import (
    IPS,
    SNIPS,
    DirectMethod,
    DoublyRobust,
    Estimate,
    Replay,
    RidgeRewardModel,
    SelfNormalizedDoublyRobust,
    SwitchDoublyRobust,
    Terms,
    bootstrap_interval,
    bootstrap_intervals,
    check_action_dist,
    effective_sample_size,
    make_estimator,
)
from app.evaluation.logged_data import LoggedData, LoggedDataError
from app.evaluation.simulator import TrafficSimulator
from app.features.request_vector import RequestVectorizer

# -- a small fixture, computed by hand -----------------------------------------------------

ACTIONS = [0, 2, 1, 0, 2, 1]
REWARDS = [1.0, 0.3, 0.0, 0.6, 0.9, 0.2]
PROPS = [0.5, 0.25, 0.2, 0.4, 0.5, 0.1]
PI = [
    [0.7, 0.2, 0.1],
    [0.1, 0.1, 0.8],
    [0.3, 0.6, 0.1],
    [1.0, 0.0, 0.0],
    [0.2, 0.3, 0.5],
    [0.0, 0.9, 0.1],
]
QHAT = [
    [0.8, 0.1, 0.4],
    [0.5, 0.2, 0.35],
    [0.4, 0.1, 0.6],
    [0.7, 0.3, 0.2],
    [0.1, 0.5, 0.8],
    [0.3, 0.25, 0.9],
]


def fixture() -> LoggedData:
    return LoggedData(
        actions=np.array(ACTIONS),
        rewards=np.array(REWARDS),
        propensities=np.array(PROPS),
        arm_names=("a", "b", "c"),
    )


def hand_weights(clip: float | None = None) -> list[float]:
    out = []
    for i in range(len(ACTIONS)):
        w = PI[i][ACTIONS[i]] / PROPS[i]
        if clip is not None and w > clip:
            w = clip
        out.append(w)
    return out


def hand_dm_terms() -> list[float]:
    terms = []
    for i in range(len(ACTIONS)):
        s = 0.0
        for a in range(3):
            s += PI[i][a] * QHAT[i][a]
        terms.append(s)
    return terms


def test_ips_snips_dm_dr_sndr_switch_equal_hand_computed_values() -> None:
    d, pi, q = fixture(), np.array(PI), np.array(QHAT)
    n = len(ACTIONS)
    w = hand_weights()
    ips = 0.0
    for i in range(n):
        ips += w[i] * REWARDS[i]
    ips /= n
    snips_num = snips_den = 0.0
    for i in range(n):
        snips_num += w[i] * REWARDS[i]
        snips_den += w[i]
    dm_terms = hand_dm_terms()
    dm = sum(dm_terms) / n
    dr = 0.0
    for i in range(n):
        dr += dm_terms[i] + w[i] * (REWARDS[i] - QHAT[i][ACTIONS[i]])
    dr /= n
    corr_num = 0.0
    for i in range(n):
        corr_num += w[i] * (REWARDS[i] - QHAT[i][ACTIONS[i]])
    sndr = dm + corr_num / snips_den
    tau = 2.5
    switch = 0.0
    for i in range(n):
        switch += dm_terms[i]
        if w[i] <= tau:
            switch += w[i] * (REWARDS[i] - QHAT[i][ACTIONS[i]])
    switch /= n

    assert abs(IPS().estimate(d, pi) - ips) < 1e-9
    assert abs(SNIPS().estimate(d, pi) - snips_num / snips_den) < 1e-9
    assert abs(DirectMethod().estimate(d, pi, q) - dm) < 1e-9
    assert abs(DoublyRobust().estimate(d, pi, q) - dr) < 1e-9
    assert abs(SelfNormalizedDoublyRobust().estimate(d, pi, q) - sndr) < 1e-9
    assert abs(SwitchDoublyRobust(tau=tau).estimate(d, pi, q) - switch) < 1e-9
    # The weights here are 1.4, 3.2, 3.0, 2.5, 1.0, 9.0: tau=2.5 switches three rows off.
    assert sum(1 for x in w if x > tau) == 3


def test_clipping_caps_the_weights_by_hand() -> None:
    d, pi, q = fixture(), np.array(PI), np.array(QHAT)
    n, clip = len(ACTIONS), 2.0
    w = hand_weights(clip)
    assert max(w) == clip
    ips = sum(w[i] * REWARDS[i] for i in range(n)) / n
    snips = sum(w[i] * REWARDS[i] for i in range(n)) / sum(w)
    dr = sum(hand_dm_terms()[i] + w[i] * (REWARDS[i] - QHAT[i][ACTIONS[i]]) for i in range(n)) / n
    assert abs(IPS(clip=clip).estimate(d, pi) - ips) < 1e-9
    assert abs(SNIPS(clip=clip).estimate(d, pi) - snips) < 1e-9
    assert abs(DoublyRobust(clip=clip).estimate(d, pi, q) - dr) < 1e-9
    # Unclipped, the 9.0 weight makes IPS larger.
    assert IPS().estimate(d, pi) > IPS(clip=clip).estimate(d, pi)


def test_effective_sample_size_by_hand() -> None:
    w = hand_weights()
    expected = sum(w) ** 2 / sum(x * x for x in w)
    est = IPS().interval(fixture(), np.array(PI), n_bootstrap=10)
    assert abs(est.ess - expected) < 1e-9
    assert 1.0 <= est.ess <= len(w)
    assert effective_sample_size(np.ones(7)) == 7.0


def test_logging_policy_evaluated_on_itself_gives_the_mean_reward() -> None:
    d = fixture()
    pi = np.zeros((6, 3))
    for i, (a, p) in enumerate(zip(ACTIONS, PROPS, strict=True)):
        pi[i, a] = p
        others = [b for b in range(3) if b != a]
        pi[i, others] = (1 - p) / 2
    assert abs(IPS().estimate(d, pi) - sum(REWARDS) / 6) < 1e-12
    assert abs(SNIPS().estimate(d, pi) - sum(REWARDS) / 6) < 1e-12


def test_bad_inputs_are_refused_with_reasons() -> None:
    d = fixture()
    with pytest.raises(ValueError, match="shape"):
        IPS().estimate(d, np.ones((6, 2)) / 2)
    with pytest.raises(ValueError, match="sum to 1"):
        IPS().estimate(d, np.full((6, 3), 0.5))
    with pytest.raises(ValueError, match="reward_hat"):
        DoublyRobust().estimate(d, np.array(PI))
    masked = LoggedData(
        actions=d.actions,
        rewards=d.rewards,
        propensities=d.propensities,
        arm_names=d.arm_names,
        available=np.array([[True, True, False]] * 6),
    )
    with pytest.raises(ValueError, match="not available"):
        check_action_dist(masked, np.array(PI))
    broken = LoggedData(
        actions=d.actions,
        rewards=d.rewards,
        propensities=np.array([0.5, np.nan, 0.0, 1.5, 0.5, 0.5]),
        arm_names=d.arm_names,
    )
    with pytest.raises(LoggedDataError, match=r"3 of 6 propensities.*1 missing"):
        IPS().estimate(broken, np.array(PI))
    with pytest.raises(ValueError, match="unknown estimator"):
        make_estimator("magic")


def test_vectorised_bootstrap_equals_a_loop_over_the_same_draws() -> None:
    rng = np.random.default_rng(3)
    n, b = 50, 40
    num, den, mean = rng.random(n), rng.random(n) + 0.5, rng.random(n)
    terms = Terms(mean=mean, num=num, den=den)
    low, high = bootstrap_interval(terms, n_bootstrap=b, alpha=0.1, seed=11)
    draws = np.random.default_rng(11).integers(0, n, size=(b, n))  # one chunk: same draws
    values = []
    for row in draws:
        s_mean = s_num = s_den = 0.0
        for j in row:
            s_mean += mean[j]
            s_num += num[j]
            s_den += den[j]
        values.append(s_mean / n + s_num / s_den)
    values.sort()
    ref_low, ref_high = np.quantile(values, [0.05, 0.95])
    assert abs(low - ref_low) < 1e-9 and abs(high - ref_high) < 1e-9
    # Constant terms: a zero-width interval at the constant.
    assert bootstrap_interval(Terms(mean=np.full(30, 0.25)), 50) == (0.25, 0.25)


def test_ridge_reward_model_matches_a_brute_force_fit() -> None:
    rng = np.random.default_rng(5)
    n, d, k, alpha = 300, 3, 2, 0.7
    x = rng.normal(size=(n, d))
    a = rng.integers(0, k, n)
    r = x @ np.array([0.2, -0.1, 0.4]) + a * 0.3 + rng.normal(0, 0.1, n)
    data = LoggedData(
        actions=a, rewards=r, propensities=np.full(n, 0.5), arm_names=("a", "b"), contexts=x
    )
    model = RidgeRewardModel(alpha=alpha).fit(data)
    pred = model.predict(data)
    for arm in range(k):
        xa = np.hstack([np.ones(((a == arm).sum(), 1)), x[a == arm]])
        penalty = alpha * np.eye(d + 1)
        penalty[0, 0] = 0.0
        coef = np.linalg.solve(xa.T @ xa + penalty, xa.T @ r[a == arm])
        brute = np.hstack([np.ones((n, 1)), x]) @ coef
        assert np.allclose(pred[:, arm], brute, atol=1e-9)
    # Cross-fitting predicts each row with a model that never saw it: a
    # model fitted on one row's fold's complement agrees.
    cf = RidgeRewardModel(alpha=alpha, n_folds=2, seed=1).fit_predict(data)
    folds = np.random.default_rng(1).integers(0, 2, n)
    other = RidgeRewardModel(alpha=alpha).fit(data.take(folds != 0)).predict(data)
    assert np.allclose(cf[folds == 0], other[folds == 0], atol=1e-9)


def test_repeated_cross_fitting_averages_brute_force_complement_fits() -> None:
    """The per-fold Gram shortcut equals refitting on each fold's complement,
    averaged over the repeated splits (same seed, same fold draws)."""
    rng = np.random.default_rng(8)
    n, k = 400, 3
    x = rng.normal(size=(n, 2))
    a = rng.integers(0, k, n)
    a[:5] = 0  # arm 2 logged only in the last rows: some folds never see it
    data = LoggedData(
        actions=a,
        rewards=x[:, 0] * (a + 1) + rng.normal(0, 0.1, n),
        propensities=np.full(n, 1 / k),
        arm_names=("a", "b", "c"),
        contexts=x,
    )
    fast = RidgeRewardModel(alpha=0.5, n_folds=5, repeats=3, seed=2).fit_predict(data)
    draws = np.random.default_rng(2)
    brute = np.zeros((n, k))
    for _ in range(3):
        folds = draws.integers(0, 5, n)
        for f in range(5):
            model = RidgeRewardModel(alpha=0.5).fit(data.take(folds != f))
            brute[folds == f] += model.predict(data.take(folds == f))
    assert np.allclose(fast, brute / 3, atol=1e-9)


def test_replay_keeps_rows_in_proportion_to_the_target_policy() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    p = np.array([0.6, 0.3, 0.1])
    a = rng.choice(3, n, p=p)
    means = np.array([0.2, 0.5, 0.9])
    r = (rng.random(n) < means[a]).astype(float)
    data = LoggedData(actions=a, rewards=r, propensities=p[a], arm_names=("x", "y", "z"))
    target = np.array([0.2, 0.2, 0.6])
    pi = np.tile(target, (n, 1))
    kept = Replay(seed=1).accepted(data, pi)
    shares = np.bincount(a[kept], minlength=3) / kept.sum()
    assert np.allclose(shares, target, atol=0.03)  # the kept rows look like π's traffic
    # Kept with probability w_i / max w: 1/6 of the rows here (max w = 0.6 / 0.1).
    assert abs(kept.mean() - 1 / 6) < 0.01
    truth = float(target @ means)
    est = Replay(seed=1).interval(data, pi, n_bootstrap=300)
    assert est.low <= truth <= est.high


# -- calibration on the simulator ------------------------------------------------------------

N_ARMS = 6


def _tables(n_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """Logging and target policies that depend on the task type (the context)."""
    rng = np.random.default_rng(2024)
    logging = 0.7 * rng.dirichlet(np.ones(N_ARMS), n_tasks) + 0.3 / N_ARMS
    target = np.full((n_tasks, N_ARMS), 0.05 / (N_ARMS - 1))
    target[np.arange(n_tasks), rng.integers(0, N_ARMS, n_tasks)] = 0.95
    return logging, target


def _simulate(seed: int, n: int) -> tuple[LoggedData, np.ndarray]:
    sim = TrafficSimulator.default(seed=seed, start_ms=1_700_000_000_000)
    vec = RequestVectorizer()
    tasks = list(sim.config.task_names)
    logging, target = _tables(len(tasks))
    rng = np.random.default_rng(seed)
    now = sim.start_ms
    acts, rewards, props, ctx, ti = [], [], [], [], []
    for _ in range(n):
        now = sim.next_arrival_ms(now)
        req = sim.next_request(now)
        t = tasks.index(req.task_type)
        a = int(rng.choice(N_ARMS, p=logging[t]))
        out = sim.outcome(req, sim.arm_names[a], now)
        acts.append(a)
        props.append(logging[t, a])
        rewards.append(sim.reward_spec.scalar(out.quality, out.cost_usd, out.latency_ms, out.error))
        ctx.append(vec.row(req))
        ti.append(t)
    data = LoggedData(
        actions=np.array(acts),
        rewards=np.array(rewards),
        propensities=np.array(props),
        arm_names=sim.arm_names,
        contexts=np.array(ctx),
    )
    return data, target[np.array(ti)]


@pytest.fixture(scope="module")
def true_value() -> float:
    """V(π) = E_x Σ_a π(a|x) μ(x, a) over the traffic mix, from the
    simulator's exact expected rewards on a large independent request sample."""
    sim = TrafficSimulator.default(seed=10_000, start_ms=1_700_000_000_000)
    tasks = list(sim.config.task_names)
    _, target = _tables(len(tasks))
    total, n = 0.0, 20_000
    for _ in range(n):
        req = sim.next_request(sim.start_ms)
        mu = sim.expected_rewards(req, list(sim.arm_names), sim.start_ms)
        pi = target[tasks.index(req.task_type)]
        total += sum(pi[j] * mu[a] for j, a in enumerate(sim.arm_names))
    return total / n


def calibration(true_value: float, seeds: int = 100, n: int = 3000) -> dict[str, Any]:
    """Coverage of the nominal 95% intervals over ``seeds`` simulated logs,
    and the point estimates, for ips, snips, dr (reward model as Backtest
    builds it) and the target-propensity path (the policy given only by its
    probabilities of the logged actions, through Backtest)."""
    names = ("ips", "snips", "dr", "target ips", "target snips")
    covered = dict.fromkeys(names, 0)
    estimates: dict[str, list[float]] = {k: [] for k in (*names, "logged")}
    model = Backtest([PolicySpec.uniform()]).reward_model
    for seed in range(seeds):
        data, pi = _simulate(seed, n)
        q = RidgeRewardModel(
            alpha=model.alpha, n_folds=model.n_folds, repeats=model.repeats, seed=seed
        ).fit_predict(data)
        full = {"ips": IPS(), "snips": SNIPS(), "dr": DoublyRobust()}
        terms = [est.terms(data, pi, q) for est in full.values()]
        bounds = bootstrap_intervals(terms, n_bootstrap=200, seed=seed)
        got = {
            name: Estimate(name, t.value(), low, high)
            for name, t, (low, high) in zip(full, terms, bounds, strict=True)
        }
        factual = replace(data, targets={"pi": pi[np.arange(n), data.actions]})
        res = Backtest(
            [PolicySpec.from_target("pi")], estimators=["ips", "snips"], n_bootstrap=200, seed=seed
        ).run(factual)
        got["target ips"] = res.policies[0].estimates["ips"]
        got["target snips"] = res.policies[0].estimates["snips"]
        for name, e in got.items():
            covered[name] += e.low <= true_value <= e.high
            estimates[name].append(e.value)
        estimates["logged"].append(float(data.rewards.mean()))
    return {"coverage": {k: v / seeds for k, v in covered.items()}, "estimates": estimates}


def test_95_percent_intervals_cover_the_true_value_in_at_least_90_percent_of_runs(
    true_value: float,
) -> None:
    seeds = 100
    result = calibration(true_value, seeds)
    coverage, estimates = result["coverage"], result["estimates"]
    for name in ("ips", "snips", "dr", "target ips", "target snips"):
        assert coverage[name] >= 0.90, coverage
    # IPS is unbiased: its mean over the runs is within 3 standard errors of the truth.
    ips = np.array(estimates["ips"])
    assert abs(ips.mean() - true_value) < 3 * ips.std(ddof=1) / math.sqrt(seeds)
    # The target-propensity path is the same estimator on less input.
    assert np.allclose(estimates["target ips"], estimates["ips"], atol=1e-12)
    # The policy under test differs from the logging one: the logged mean
    # reward is off by far more than the estimators are.
    logged_error = abs(np.mean(estimates["logged"]) - true_value)
    assert logged_error > 0.01
    assert abs(np.mean(estimates["dr"]) - true_value) < logged_error / 3
