"""Contextual policies learning on seeded synthetic workloads: do they beat
context-free choices, do their estimates converge, are their propensities
right, and are bad contexts refused clearly. The generic contract is checked
for them in test_policies.py.

Workload B: a 10-value context (a bias term, then 9 values ~ N(0, 1)) and 4
arms whose expected reward is linear in it, ``θ_kᵀx``, observed with N(0, 0.1)
noise. Regret is measured against the best arm for each context.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import orjson
import pytest
import torch

from app.policies.base import ContextError, Policy, PolicyError, SnapshotError
from app.policies.hybrid_lin_ucb import HybridLinUCB
from app.policies.lin_ucb import LinUCB
from app.policies.linear_thompson import LinearThompson
from app.policies.neural_arm_value import NeuralArmValue
from app.policies.river_epsilon_greedy import RiverEpsilonGreedy

ARMS = ["a", "b", "c", "d"]
DIM = 10
ROUNDS = 5000
SEEDS = [0, 1, 2]
SHARED = 2  # shared features prepended for HybridLinUCB


@dataclass(frozen=True)
class Workload:
    contexts: np.ndarray  # (rounds, dim)
    means: np.ndarray  # (rounds, arms): expected reward of each arm
    noise: np.ndarray  # (rounds,)
    theta: np.ndarray  # (arms, DIM)
    beta: np.ndarray  # (shared,)

    def best_single_arm_regret(self) -> float:
        return float((self.means.max(axis=1)[:, None] - self.means).sum(axis=0).min())

    def uniform_regret(self) -> float:
        return float((self.means.max(axis=1) - self.means.mean(axis=1)).sum())


def workload_b(seed: int, rounds: int = ROUNDS, shared: int = 0) -> Workload:
    """Workload B; with ``shared`` > 0, that many N(0, 1) features come first
    and add ``zᵀβ`` to every arm's reward (an effect common to all arms)."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(len(ARMS), DIM)) / math.sqrt(DIM)
    beta = rng.normal(size=shared)
    z = rng.normal(size=(rounds, shared))
    x = np.concatenate([np.ones((rounds, 1)), rng.normal(size=(rounds, DIM - 1))], axis=1)
    means = x @ theta.T + (z @ beta)[:, None]
    noise = rng.normal(scale=0.1, size=rounds)
    return Workload(np.concatenate([z, x], axis=1), means, noise, theta, beta)


def play(policy: Policy, work: Workload) -> float:
    """Select and learn on every round; returns the cumulative regret."""
    index = {arm: i for i, arm in enumerate(policy.arms)}
    regret = 0.0
    for t, x in enumerate(work.contexts):
        k = index[policy.select(x).arm]
        policy.update(policy.arms[k], float(work.means[t, k] + work.noise[t]), x)
        regret += float(work.means[t].max() - work.means[t, k])
    return regret


FACTORIES: dict[str, Callable[[int], Policy]] = {
    "lin_ucb": lambda seed: LinUCB(ARMS, seed=seed, context_dim=DIM, alpha=0.3),
    "hybrid_lin_ucb": lambda seed: HybridLinUCB(
        ARMS, seed=seed, context_dim=SHARED + DIM, shared_dim=SHARED, alpha=0.3
    ),
    "linear_thompson": lambda seed: LinearThompson(
        ARMS, seed=seed, context_dim=DIM, v=0.1, propensity_samples=1000
    ),
    "river_epsilon_greedy": lambda seed: RiverEpsilonGreedy(
        ARMS, seed=seed, context_dim=DIM, epsilon=0.05
    ),
    "neural_arm_value": lambda seed: NeuralArmValue(ARMS, seed=seed, context_dim=DIM, epsilon=0.05),
}


@cache
def trained(name: str, seed: int) -> tuple[Policy, Workload, float]:
    """A policy played through workload B (shared with the tests below)."""
    work = workload_b(100 + seed, shared=SHARED if name == "hybrid_lin_ucb" else 0)
    policy = FACTORIES[name](seed)
    return policy, work, play(policy, work)


# Ratio of the policy's regret to the best single arm's, which every context-free
# policy at best matches. Measured: ≤ 0.015 for the linear ones, ≤ 0.20 for
# river's ε-greedy (ε = 0.05 alone costs about 0.05 of the uniform regret) and
# ≤ 0.46 for the network (it needs more data to find a linear reward than a
# linear model does).
BOUNDS = {
    "lin_ucb": 0.03,
    "hybrid_lin_ucb": 0.03,
    "linear_thompson": 0.03,
    "river_epsilon_greedy": 0.3,
    "neural_arm_value": 0.6,
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_regret_is_far_below_the_context_free_choices(name: str, seed: int) -> None:
    _, work, regret = trained(name, seed)
    best_arm, uniform = work.best_single_arm_regret(), work.uniform_regret()
    assert best_arm < uniform
    assert regret < BOUNDS[name] * best_arm, (regret, best_arm, uniform)


@pytest.mark.parametrize("seed", SEEDS)
def test_lin_ucb_estimates_converge_to_the_true_coefficients(seed: int) -> None:
    policy, work, _ = trained("lin_ucb", seed)
    assert isinstance(policy, LinUCB)
    for k, theta in enumerate(policy.coefficients().values()):
        assert np.abs(theta - work.theta[k]).max() < 0.1, (k, theta, work.theta[k])


def test_lin_ucb_incremental_inverse_matches_a_direct_ridge_solve() -> None:
    rng = np.random.default_rng(5)
    policy = LinUCB(["a"], seed=0, context_dim=6, ridge=2.0)
    xs = rng.normal(size=(3000, 6))
    ys = xs @ rng.normal(size=6) + rng.normal(scale=0.5, size=3000)
    for x, y in zip(xs, ys, strict=True):
        policy.update("a", float(y), x)
    a = 2.0 * np.eye(6) + xs.T @ xs
    np.testing.assert_allclose(policy._ainv[0], np.linalg.inv(a), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(policy.coefficients()["a"], np.linalg.solve(a, xs.T @ ys), 1e-9)
    assert np.array_equal(policy._ainv[0], policy._ainv[0].T)  # kept exactly symmetric


def test_lin_ucb_update_reuses_the_select_projection_only_for_the_same_context() -> None:
    rng = np.random.default_rng(2)
    cached = LinUCB(ARMS, seed=0, context_dim=5)
    plain = LinUCB(ARMS, seed=0, context_dim=5)
    for _ in range(200):
        x = rng.normal(size=5)
        arm = cached.select(x).arm
        if rng.random() < 0.3:
            x *= 2.0  # the caller changed the array between select and update
        cached.update(arm, float(x.sum()), x)
        plain.update(arm, float(x.sum()), x.tolist())  # never cached: a list
    np.testing.assert_allclose(cached._model, plain._model, rtol=1e-12, atol=1e-15)


def test_lin_ucb_scores_are_the_upper_confidence_bound() -> None:
    policy, _, _ = trained("lin_ucb", 0)
    x = np.linspace(-1.0, 1.0, DIM)
    for k, arm in enumerate(ARMS):
        ainv, theta = policy._ainv[k], policy._theta[k]  # type: ignore[attr-defined]
        ucb = theta @ x + 0.3 * math.sqrt(x @ ainv @ x)
        assert policy.scores([arm], x)[0] == pytest.approx(ucb, rel=1e-12)
    # A list, an int array and a float32 array take the checked path: same scores.
    fast = policy.scores(None, x)
    np.testing.assert_array_equal(policy.scores(None, x.tolist()), fast)
    ints = np.arange(DIM)
    np.testing.assert_array_equal(policy.scores(None, ints), policy.scores(None, ints * 1.0))


def test_lin_ucb_ties_share_the_probability_and_the_seed_breaks_them() -> None:
    policy = LinUCB(ARMS, seed=0, context_dim=3)
    x = np.array([1.0, 0.5, -0.5])
    assert policy.probabilities(None, x).tolist() == [0.25] * 4
    s = policy.select(x)
    assert s.propensity == 0.25 and s.probabilities == dict.fromkeys(ARMS, 0.25)
    first = [LinUCB(ARMS, seed=seed, context_dim=3).select(x).arm for seed in range(40)]
    assert set(first) == set(ARMS)
    policy.update("c", 1.0, x)
    assert policy.probabilities(None, x).tolist() == [0.0, 0.0, 1.0, 0.0]
    assert policy.select(x).propensity == 1.0


def test_lin_ucb_select_batch_decides_like_select() -> None:
    policy, work, _ = trained("lin_ucb", 1)
    assert isinstance(policy, LinUCB)
    contexts = work.contexts[:300]
    for allowed in (None, ["d", "b"]):
        names = allowed or ARMS
        choice, propensity, scores = policy.select_batch(contexts, allowed)
        assert choice.shape == propensity.shape == (300,)
        assert scores.shape == (300, len(names))
        for i, x in enumerate(contexts):
            s = policy.select(x, allowed=allowed)
            assert names[choice[i]] == s.arm
            assert propensity[i] == s.propensity == 1.0
            np.testing.assert_allclose(scores[i], list(s.scores.values()), rtol=1e-12)


def test_lin_ucb_select_batch_breaks_ties_uniformly() -> None:
    policy = LinUCB(ARMS, seed=3, context_dim=3)
    contexts = np.tile([1.0, 0.2, 0.3], (4000, 1))
    choice, propensity, _ = policy.select_batch(contexts, ["a", "b", "c"])
    assert np.all(propensity == pytest.approx(1 / 3))
    counts = np.bincount(choice, minlength=3)
    assert np.all(np.abs(counts - 4000 / 3) < 4 * math.sqrt(4000 * 2 / 9)), counts


@pytest.mark.parametrize("seed", SEEDS)
def test_linear_thompson_converges_and_its_propensities_match_its_choices(seed: int) -> None:
    policy, work, _ = trained("linear_thompson", seed)
    assert isinstance(policy, LinearThompson)
    for k, theta in enumerate(policy.coefficients().values()):
        assert np.abs(theta - work.theta[k]).max() < 0.1
    # A context between two arms, where the choice is really random.
    x = near_tie(policy, work)
    probs = policy.probabilities(None, x)
    assert np.sort(probs)[-2] > 0.2, probs
    n = 5000
    counts = np.zeros(len(ARMS))
    for _ in range(n):
        counts[ARMS.index(policy.select(x).arm)] += 1
    live = probs > 0
    assert np.all(counts[~live] == 0)
    chi2 = float(((counts[live] - n * probs[live]) ** 2 / (n * probs[live])).sum())
    assert chi2 < 23.5, (counts / n, probs)  # 99.99th percentile, ≤ 4 degrees of freedom


def near_tie(policy: LinearThompson, work: Workload) -> np.ndarray:
    """A workload context whose two best posterior means are closest."""
    means = work.contexts[:500] @ np.array(list(policy.coefficients().values())).T
    top = np.sort(means, axis=1)
    return work.contexts[int(np.argmin(top[:, -1] - top[:, -2]))]


def test_linear_thompson_propensity_is_the_thompson_sampling_win_probability() -> None:
    """Against plain Thompson sampling: draw θ̃_k ~ N(θ_k, v²A_k⁻¹) in full
    and count which arm's θ̃_kᵀx is largest."""
    policy = LinearThompson(ARMS, seed=4, context_dim=4, v=1.0, propensity_samples=40_000)
    rng = np.random.default_rng(4)
    truth = rng.normal(size=(4, 4)) * 0.3
    for _ in range(5):
        x = rng.normal(size=4)
        for k, arm in enumerate(ARMS):
            policy.update(arm, float(truth[k] @ x + rng.normal()), x)
    x = np.array([1.0, 0.3, -0.2, 0.1])
    estimate = policy.probabilities(None, x)
    n = 200_000
    sampled = np.stack(
        [
            rng.multivariate_normal(policy._theta[k], policy._ainv[k], size=n) @ x
            for k in range(len(ARMS))
        ],
        axis=1,
    )
    frequency = np.bincount(sampled.argmax(axis=1), minlength=len(ARMS)) / n
    assert np.all(estimate > 0.01) and estimate.max() < 0.9, estimate  # a non-trivial case
    np.testing.assert_allclose(estimate, frequency, atol=4 * 0.5 / math.sqrt(40_000))


def test_linear_thompson_caches_per_context_and_only_while_the_state_stands() -> None:
    policy = LinearThompson(ARMS, seed=0, context_dim=3, propensity_samples=500)
    x, y = np.array([1.0, 0.5, 0.1]), np.array([1.0, -0.5, 0.1])
    px = policy.probabilities(None, x)
    assert policy.probabilities(None, x) is px
    assert policy.probabilities(None, y) is not px
    assert policy.probabilities(["a", "b"], x).shape == (2,)
    policy.update("a", 1.0, x)
    after = policy.probabilities(None, x)
    assert after is not px and after[0] > px[0]
    # The estimate depends on the state, not on how often it was asked for.
    twin = LinearThompson(ARMS, seed=0, context_dim=3, propensity_samples=500)
    twin.update("a", 1.0, x)
    np.testing.assert_array_equal(twin.probabilities(None, x), after)


@pytest.mark.parametrize("seed", SEEDS)
def test_hybrid_lin_ucb_learns_the_shared_effect(seed: int) -> None:
    policy, work, _ = trained("hybrid_lin_ucb", seed)
    assert isinstance(policy, HybridLinUCB)
    assert np.abs(policy.shared_coefficients() - work.beta).max() < 0.05
    for k, theta in enumerate(policy.coefficients().values()):
        assert np.abs(theta - work.theta[k]).max() < 0.1
    # An arm added now predicts the shared part of the reward from the start.
    fresh = HybridLinUCB.restore(policy.snapshot())
    assert isinstance(fresh, HybridLinUCB)
    fresh.add_arm("new")
    fresh.set_params(alpha=0.0)
    z = np.array([1.5, -1.0])
    context = np.concatenate([z, np.zeros(DIM)])
    assert fresh.scores(["new"], context)[0] == pytest.approx(z @ work.beta, abs=0.1)
    assert fresh.scores(["new"], context)[0] == pytest.approx(z @ policy.shared_coefficients())


def xor_rewards(x: np.ndarray) -> np.ndarray:
    """Arm 0 pays when the two features agree in sign, arm 1 when they differ:
    no linear function of the context tells them apart."""
    agree = float(x[1] * x[2] > 0)
    return np.array([agree, 1.0 - agree])


def test_neural_arm_value_learns_a_non_linear_reward_that_lin_ucb_cannot() -> None:
    rng = np.random.default_rng(7)
    contexts = np.concatenate([np.ones((3000, 1)), rng.normal(size=(3000, 2))], axis=1)
    noise = rng.normal(scale=0.1, size=3000)
    late: dict[str, float] = {}
    for policy in (
        NeuralArmValue(["same", "differ"], seed=0, context_dim=3, hidden=16, epsilon=0.05),
        LinUCB(["same", "differ"], seed=0, context_dim=3, alpha=0.3),
    ):
        regret = []
        for t, x in enumerate(contexts):
            means = xor_rewards(x)
            k = policy.arms.index(policy.select(x).arm)
            policy.update(policy.arms[k], float(means[k] + noise[t]), x)
            regret.append(means.max() - means[k])
        late[policy.algorithm] = float(np.mean(regret[-1000:]))
    # LinUCB is near a coin flip (0.5); the network is mostly right.
    assert late["lin_ucb"] > 0.3, late
    assert late["neural_arm_value"] < 0.15, late


def test_neural_arm_value_leaves_the_global_torch_generator_alone() -> None:
    before = torch.random.get_rng_state()
    policy = NeuralArmValue(ARMS, seed=0, context_dim=3)
    for _ in range(20):
        x = np.array([1.0, 0.5, -0.5])
        policy.update(policy.select(x).arm, 1.0, x)
    policy.add_arm("e")
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("exploration", ["epsilon", "softmax"])
def test_neural_arm_value_probabilities_follow_the_exploration_rule(exploration: str) -> None:
    policy = NeuralArmValue(
        ARMS, seed=1, context_dim=3, exploration=exploration, epsilon=0.2, temperature=0.5
    )
    x = np.array([1.0, 0.2, -0.3])
    for arm, r in zip(ARMS, [0.9, 0.1, 0.5, 0.3], strict=True):
        for _ in range(30):
            policy.update(arm, r, x)
    values, p = policy.scores(None, x), policy.probabilities(None, x)
    if exploration == "softmax":
        e = np.exp(values / 0.5)
        np.testing.assert_allclose(p, e / e.sum(), rtol=1e-12)
    else:
        assert p.tolist() == pytest.approx([0.05 + 0.8 * (i == values.argmax()) for i in range(4)])


def test_river_snapshot_refuses_pickles_of_anything_but_river_models() -> None:
    policy = RiverEpsilonGreedy(["a", "b"], seed=0, context_dim=2)
    policy.update("a", 1.0, [1.0, 2.0])
    doc = orjson.loads(policy.snapshot())
    import base64
    import pickle

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("pwned",))

    doc["state"]["models"][1] = base64.b64encode(pickle.dumps(Evil())).decode()
    with pytest.raises(SnapshotError, match=r"builtins\.print"):
        RiverEpsilonGreedy.restore(orjson.dumps(doc))
    doc["state"]["models"][1] = base64.b64encode(b"not a pickle").decode()
    with pytest.raises(SnapshotError, match="unreadable"):
        RiverEpsilonGreedy.restore(orjson.dumps(doc))


@pytest.mark.parametrize("model", ["bayesian_linear_regression", "hoeffding_tree"])
def test_river_other_models_round_trip(model: str) -> None:
    policy = RiverEpsilonGreedy(["a", "b"], seed=0, context_dim=2, model=model)
    rng = np.random.default_rng(0)
    for _ in range(300):
        x = rng.normal(size=2)
        policy.update("a", float(x[0] > 0), x)
        policy.update("b", float(x[0] <= 0), x)
    restored = RiverEpsilonGreedy.restore(policy.snapshot())
    assert restored.snapshot() == policy.snapshot()
    x = np.array([1.0, 0.0])
    np.testing.assert_array_equal(restored.scores(None, x), policy.scores(None, x))
    assert policy.select(x, explore=False).arm == "a"


# -- bad contexts ------------------------------------------------------------------------------

ALL = [LinUCB, HybridLinUCB, LinearThompson, RiverEpsilonGreedy, NeuralArmValue]


def small(cls: type[Policy]) -> Policy:
    return cls(ARMS, seed=0, **cls.example_params)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.algorithm)
def test_a_context_of_the_wrong_shape_is_refused_naming_both_shapes(cls: type[Policy]) -> None:
    policy = small(cls)
    good = np.linspace(0.2, 1.0, 3)
    policy.update("a", 1.0, good)
    before = policy.snapshot()
    calls: list[Callable[[Any], Any]] = [
        lambda c: policy.select(c),
        lambda c: policy.select(c, allowed=["a", "b"]),
        lambda c: policy.scores(None, c),
        lambda c: policy.probabilities(None, c),
        lambda c: policy.update("a", 1.0, c),
    ]
    for bad, shape in ((np.zeros(4), "(4,)"), (np.zeros((1, 3)), "(1, 3)"), ([1.0, 2.0], "(2,)")):
        for call in calls:
            with pytest.raises(ContextError) as info:
                call(bad)
            assert "length 3" in str(info.value) and shape in str(info.value)
            assert cls.algorithm in str(info.value)
    for call in calls:
        with pytest.raises(ContextError, match="length 3"):
            call(None)
        for value in (math.nan, math.inf, -math.inf):
            with pytest.raises(ContextError, match="finite"):
                call(np.array([0.5, value, 1.0]))
    assert policy.snapshot() == before
    assert isinstance(ContextError("x"), PolicyError)


def test_lin_ucb_select_batch_refuses_bad_contexts() -> None:
    policy = small(LinUCB)
    assert isinstance(policy, LinUCB)
    with pytest.raises(ContextError, match=r"\(B, 3\).*\(5, 4\)"):
        policy.select_batch(np.zeros((5, 4)))
    with pytest.raises(ContextError, match=r"\(B, 3\).*\(3,\)"):
        policy.select_batch(np.zeros(3))
    with pytest.raises(ContextError, match="finite"):
        policy.select_batch(np.array([[1.0, math.nan, 0.0]]))


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.algorithm)
def test_context_dim_is_checked_and_fixed_for_a_live_policy(cls: type[Policy]) -> None:
    assert cls(ARMS, seed=0).context_dim == 8  # type: ignore[attr-defined]
    build: Callable[..., Policy] = cls
    for bad in (0, 2.5, "3"):
        with pytest.raises(ValueError, match="context_dim"):
            build(ARMS, seed=0, context_dim=bad)
    policy = small(cls)
    with pytest.raises(PolicyError, match="cannot change"):
        policy.set_params(context_dim=5)
    assert policy.context_dim == 3  # type: ignore[attr-defined]
    policy.select(np.ones(3))
