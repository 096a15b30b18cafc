"""The context-free bandits' own behaviour, beyond the generic contract in
test_policies.py: do they learn, are ε schedules and variance terms what the
docstrings say, does Exp3 stay finite over millions of rounds, do the
non-stationary UCBs follow a provider that degrades. Seeded and broker-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from app.policies import InvalidRewardError, Policy, PolicyError
from app.policies.discounted_ucb import DiscountedUCB
from app.policies.epsilon_greedy import EpsilonGreedy
from app.policies.exp3 import Exp3
from app.policies.gaussian_thompson import GaussianThompson
from app.policies.sliding_window_ucb import SlidingWindowUCB
from app.policies.softmax import Softmax
from app.policies.ucb1 import UCB1
from app.policies.ucb_tuned import UCBTuned
from app.policies.ucb_v import UCBV

BERNOULLI = [0.85, 0.75, 0.65, 0.6, 0.5]
NAMES = [f"arm{i}" for i in range(len(BERNOULLI))]


def play(policy: Policy, means: list[float], rounds: int, rng: np.random.Generator) -> list[int]:
    """Select, reward the choice from Bernoulli ``means``; returns the arms' positions.
    Exp3 gets the logged propensity with its reward, as the learner would pass it."""
    choices = []
    for _ in range(rounds):
        s = policy.select()
        i = policy.index_of(s.arm)
        choices.append(i)
        reward = float(rng.random() < means[i])
        if isinstance(policy, Exp3):
            policy.update(s.arm, reward, propensity=s.propensity)
        else:
            policy.update(s.arm, reward)
    return choices


# -- every algorithm learns -------------------------------------------------------------------

LEARNERS: dict[str, Callable[[int], Policy]] = {
    "epsilon_greedy": lambda seed: EpsilonGreedy(NAMES, seed=seed),
    "epsilon_greedy-exponential": lambda seed: EpsilonGreedy(
        NAMES, seed=seed, epsilon=0.5, decay="exponential", decay_rate=0.002, min_epsilon=0.01
    ),
    "epsilon_greedy-vdbe": lambda seed: EpsilonGreedy(NAMES, seed=seed, adaptive=True),
    "softmax": lambda seed: Softmax(NAMES, seed=seed),
    "ucb1": lambda seed: UCB1(NAMES, seed=seed),
    "ucb_v": lambda seed: UCBV(NAMES, seed=seed),
    "ucb_tuned": lambda seed: UCBTuned(NAMES, seed=seed),
    "discounted_ucb": lambda seed: DiscountedUCB(NAMES, seed=seed),
    "sliding_window_ucb": lambda seed: SlidingWindowUCB(NAMES, seed=seed),
    "exp3": lambda seed: Exp3(NAMES, seed=seed),
    "gaussian_thompson": lambda seed: GaussianThompson(NAMES, seed=seed, propensity_samples=200),
}


def regret(policy: Policy, seed: int, rounds: int = 5000) -> float:
    choices = play(policy, BERNOULLI, rounds, np.random.default_rng(10_000 + seed))
    best = max(BERNOULLI)
    return float(sum(best - BERNOULLI[i] for i in choices))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_regret_is_well_below_uniform_random(name: str, seed: int) -> None:
    rounds = 5000
    uniform = rounds * (max(BERNOULLI) - float(np.mean(BERNOULLI)))  # 900
    r = regret(LEARNERS[name](seed), seed, rounds)
    assert r < 0.5 * uniform, (name, seed, r, uniform)


# -- ε-greedy ---------------------------------------------------------------------------------


def trained_eg(t: int, **params: Any) -> EpsilonGreedy:
    """An ε-greedy policy after ``t`` updates, arm0 clearly best."""
    eg = EpsilonGreedy(["arm0", "arm1", "arm2"], seed=0, **params)
    for i in range(t):
        eg.update("arm1" if i % 2 else "arm0", 0.2 if i % 2 else 0.9)
    return eg


@pytest.mark.parametrize("t", [0, 1, 10, 50, 100, 250, 1000])
@pytest.mark.parametrize(
    ("decay", "expected"),
    [
        ("none", lambda t: 0.4),
        ("linear", lambda t: 0.4 + (0.05 - 0.4) * min(1.0, t / 100)),
        ("exponential", lambda t: max(0.05, 0.4 * math.exp(-0.01 * t))),
        ("logarithmic", lambda t: max(0.05, 0.4 / (1 + 0.01 * math.log(1 + t)))),
    ],
)
def test_decay_schedules_give_the_documented_epsilon(
    decay: str, expected: Callable[[int], float], t: int
) -> None:
    eg = trained_eg(t, epsilon=0.4, min_epsilon=0.05, decay=decay, decay_rate=0.01, horizon=100)
    eps = expected(t)
    assert eg.current_epsilon == pytest.approx(eps, rel=1e-12)
    if t:
        # ε/K on every arm, the rest on the greedy one.
        np.testing.assert_allclose(
            eg.probabilities(), [eps / 3 + 1 - eps, eps / 3, eps / 3], rtol=1e-12
        )
        np.testing.assert_allclose(
            eg.probabilities(["arm2", "arm0"]), [eps / 2, eps / 2 + 1 - eps], rtol=1e-12
        )


def test_linear_decay_reaches_min_epsilon_at_the_horizon() -> None:
    for t, eps in [(0, 0.3), (50, 0.2), (100, 0.1), (300, 0.1)]:
        eg = trained_eg(t, epsilon=0.3, min_epsilon=0.1, decay="linear", horizon=100)
        assert eg.current_epsilon == pytest.approx(eps)


def test_tied_greedy_arms_share_the_exploitation_mass() -> None:
    eg = EpsilonGreedy(["a", "b", "c", "d"], seed=0, epsilon=0.2)
    np.testing.assert_allclose(eg.probabilities(), [0.25] * 4)  # untried: all tied at 0
    eg.update("a", 0.7)
    eg.update("c", 0.7)
    eg.update("d", 0.1)
    np.testing.assert_allclose(eg.probabilities(), [0.05 + 0.4, 0.05, 0.05 + 0.4, 0.05])


def test_vdbe_follows_the_change_of_the_estimates() -> None:
    eg = EpsilonGreedy(["a", "b"], seed=0, epsilon=0.5, adaptive=True, sigma=0.1)
    eg.update("a", 0.8)  # mean 0 → 0.8: Δ = 0.8
    expected = 0.5 * math.tanh(0.8 / 0.2) + 0.5 * 0.5
    assert eg.current_epsilon == pytest.approx(expected)
    eg.update("a", 0.8)  # Δ = 0: ε halves (δ = 1/K = 1/2)
    assert eg.current_epsilon == pytest.approx(expected / 2)
    for _ in range(200):
        eg.update("a", 0.8)
        eg.update("b", 0.2)
    settled = eg.current_epsilon
    assert settled < 0.01
    eg.update("b", 1.0)  # a surprise: b's mean moves, exploration rises again
    assert eg.current_epsilon > settled + 0.001


def test_vdbe_excludes_a_decay_schedule() -> None:
    with pytest.raises(ValueError, match="decay"):
        EpsilonGreedy(["a"], adaptive=True, decay="linear")


# -- Softmax ----------------------------------------------------------------------------------


def test_softmax_is_stable_and_follows_the_temperature() -> None:
    sm = Softmax(["a", "b", "c"], seed=0, temperature=0.5)
    np.testing.assert_allclose(sm.probabilities(), [1 / 3] * 3)
    sm.update("a", 1000.0)  # untried arms first
    np.testing.assert_allclose(sm.probabilities(), [0, 0.5, 0.5])
    sm.update("b", 999.0)
    sm.update("c", -1e6)  # nothing overflows however far apart the means are
    w = np.exp(np.array([1.0, 0.0, -1e6 - 1000]) / 0.5)
    np.testing.assert_allclose(sm.probabilities(), w / w.sum())
    sm.set_params(temperature=0.1, decay_rate=0.5, min_temperature=0.01)
    assert sm.current_temperature == pytest.approx(max(0.01, 0.1 * math.exp(-1.5)))


# -- UCB family ----------------------------------------------------------------------------------


def feed(policy: Policy, arm: str, rewards: list[float]) -> None:
    for r in rewards:
        policy.update(arm, r)


def test_ucb_v_variance_term_matches_the_paper() -> None:
    ucb = UCBV(["s", "n"], seed=0)
    feed(ucb, "s", [0.5] * 20)  # the same mean and count, variances 0 and 1/4
    feed(ucb, "n", [0.0, 1.0] * 10)
    assert (ucb.stats()["s"]["variance"], ucb.stats()["n"]["variance"]) == (0.0, 0.25)
    e = 1.2 * math.log(40)  # E = ζ ln t
    steady, noisy = ucb.upper_bounds()
    assert steady == pytest.approx(0.5 + 3 * e / 20)
    assert noisy == pytest.approx(0.5 + math.sqrt(2 * 0.25 * e / 20) + 3 * e / 20)


def test_ucb_tuned_variance_term_matches_the_paper() -> None:
    ucb = UCBTuned(["s", "n"], seed=0)
    feed(ucb, "s", [0.5] * 500)
    feed(ucb, "n", [0.0, 1.0] * 250)
    log_t, n = math.log(1000), 500
    steady, noisy = ucb.upper_bounds()
    # V + sqrt(2 ln t / n): 0.166 for the steady arm, capped at 1/4 for the noisy one.
    assert steady == pytest.approx(0.5 + math.sqrt(log_t / n * math.sqrt(2 * log_t / n)))
    assert noisy == pytest.approx(0.5 + math.sqrt(log_t / n * 0.25))
    assert noisy > steady


def test_ucb_tuned_variance_bound_below_the_cap() -> None:
    ucb = UCBTuned(["a", "b"], seed=0)
    rewards = [0.45, 0.55] * 500  # variance 0.0025
    feed(ucb, "a", rewards)
    feed(ucb, "b", [0.5] * 1000)
    log_t, n = math.log(2000), 1000
    v = 0.0025 + math.sqrt(2 * log_t / n)
    assert v < 0.25
    assert ucb.upper_bounds(["a"])[0] == pytest.approx(0.5 + math.sqrt(log_t / n * v))


@pytest.mark.parametrize("cls", [UCBV, UCBTuned])
def test_variance_aware_ucbs_scale_with_the_reward_range(cls: type[UCBV] | type[UCBTuned]) -> None:
    rng = np.random.default_rng(0)
    rewards = {a: rng.random(30).tolist() for a in "abc"}
    unit = cls(list("abc"), seed=0)
    scaled = cls(list("abc"), seed=0, reward_range=10.0)
    for a in "abc":
        feed(unit, a, rewards[a])
        feed(scaled, a, [10 * r for r in rewards[a]])
    np.testing.assert_allclose(scaled.upper_bounds(), 10 * unit.upper_bounds())


@pytest.mark.parametrize("cls", [UCB1, UCBV, UCBTuned, DiscountedUCB, SlidingWindowUCB])
def test_deterministic_ucbs_try_every_arm_first_in_a_seeded_order(cls: type[Policy]) -> None:
    orders = set()
    for seed in range(6):
        policy = cls(NAMES, seed=seed)
        order = []
        for _ in range(len(NAMES)):
            s = policy.select()
            assert s.propensity == 1.0
            assert sorted(s.probabilities.values()) == [0.0] * (len(NAMES) - 1) + [1.0]
            order.append(s.arm)
            policy.update(s.arm, 0.5)
        assert sorted(order) == NAMES
        orders.add(tuple(order))
        again = cls(NAMES, seed=seed)
        assert again.select().arm == order[0]
    assert len(orders) > 1


@pytest.mark.parametrize("cls", [UCB1, Exp3])
@pytest.mark.parametrize("reward", [-0.01, 1.01])
def test_bounded_algorithms_refuse_rewards_outside_the_unit_interval(
    cls: type[Policy], reward: float
) -> None:
    policy = cls(["a", "b"], seed=0)
    before = policy.snapshot()
    with pytest.raises(InvalidRewardError, match=r"\[0, 1\]"):
        policy.update("a", reward)
    assert policy.snapshot() == before


@pytest.mark.parametrize(
    "cls",
    [EpsilonGreedy, Softmax, UCBV, UCBTuned, DiscountedUCB, SlidingWindowUCB, GaussianThompson],
)
def test_unbounded_algorithms_take_any_finite_reward(cls: type[Policy]) -> None:
    policy = cls(["a", "b"], seed=0)
    for r in (-250.0, 1e6, 3, -0.5):
        policy.update("a", r)
    assert policy.stats()["a"]["mean_reward"] == pytest.approx((-250 + 1e6 + 3 - 0.5) / 4)
    assert float(policy.probabilities().sum()) == pytest.approx(1.0)


def test_discounted_ucb_counts_and_sums_fade_geometrically() -> None:
    g = 0.9
    ucb = DiscountedUCB(["a", "b"], seed=0, gamma=g)
    history = [("a", 1.0), ("b", 0.2), ("a", 0.0), ("a", 1.0), ("b", 0.6)]
    for arm, r in history:
        ucb.update(arm, r)
    ages = range(len(history) - 1, -1, -1)
    for arm in "ab":
        n = sum(g**age for age, (x, _) in zip(ages, history, strict=True) if x == arm)
        s = sum(g**age * r for age, (x, r) in zip(ages, history, strict=True) if x == arm)
        assert ucb.stats()[arm]["discounted_count"] == pytest.approx(n)
        assert ucb.stats()[arm]["value"] == pytest.approx(s / n)
        total = sum(g**age for age in ages)  # ln of every arm's count: the paper's n_t(γ)
        bound = s / n + 0.4 * math.sqrt(math.log(total) / n)
        assert ucb.upper_bounds([arm])[0] == pytest.approx(bound)


def window_brute_force(
    history: list[tuple[str, float]], window: int
) -> dict[str, tuple[int, float]]:
    out: dict[str, tuple[int, float]] = {}
    for arm, r in history[-window:]:
        n, s = out.get(arm, (0, 0.0))
        out[arm] = (n + 1, s + r)
    return out


def test_sliding_window_counts_only_the_last_window() -> None:
    rng = np.random.default_rng(3)
    ucb = SlidingWindowUCB(list("abc"), seed=0, window=7)
    history: list[tuple[str, float]] = []
    for _ in range(60):
        arm, r = "abc"[int(rng.integers(3))], float(rng.random())
        ucb.update(arm, r)
        history.append((arm, r))
        expected = window_brute_force(history, 7)
        for a in "abc":
            n, s = expected.get(a, (0, 0.0))
            assert ucb.stats()[a]["window_count"] == n
            assert ucb.stats()[a]["value"] == pytest.approx(s / n if n else 0.0)
        assert ucb.stats()["a"]["pulls"] == sum(1 for x, _ in history if x == "a")


def test_sliding_window_snapshot_carries_the_ring_buffer() -> None:
    rng = np.random.default_rng(4)
    ucb = SlidingWindowUCB(list("abc"), seed=1, window=10)
    play(ucb, [0.7, 0.5, 0.2], 37, rng)
    ucb.add_arm("a2", prior_from="a")
    restored = SlidingWindowUCB.restore(ucb.snapshot())
    assert restored.snapshot() == ucb.snapshot()
    # The buffer decides what expires next: both forget the same entries.
    assert play(restored, [0.7, 0.5, 0.2, 0.6], 25, np.random.default_rng(5)) == play(
        ucb, [0.7, 0.5, 0.2, 0.6], 25, np.random.default_rng(5)
    )
    assert restored.stats() == ucb.stats()


def test_sliding_window_prior_from_fades_with_the_source() -> None:
    ucb = SlidingWindowUCB(["a", "b"], seed=0, window=6)
    for r in (1.0, 0.0, 1.0):
        ucb.update("a", r)
    ucb.update("b", 0.5)
    ucb.add_arm("a2", prior_from="a")
    assert ucb.stats()["a2"]["window_count"] == 3 and ucb.stats()["a2"]["pulls"] == 0
    assert ucb.stats()["a2"]["value"] == pytest.approx(2 / 3)
    counts = []
    for _ in range(4):
        ucb.update("b", 0.5)
        counts.append((ucb.stats()["a"]["window_count"], ucb.stats()["a2"]["window_count"]))
    # Window 6: the source's rewards (updates 0-2) expire at updates 6, 7 and 8.
    assert counts == [(3, 3), (3, 3), (2, 2), (1, 1)]
    ucb.remove_arm("a")  # the copy outlives its source, and still fades on time
    assert ucb.stats()["a2"]["window_count"] == 1
    ucb.update("a2", 1.0)
    assert ucb.stats()["a2"]["window_count"] == 1
    assert ucb.stats()["a2"]["value"] == 1.0


def test_sliding_window_remove_arm_and_resize_keep_the_window_exact() -> None:
    rng = np.random.default_rng(6)
    ucb = SlidingWindowUCB(list("abcd"), seed=0, window=12)
    history: list[tuple[str, float]] = []
    for _ in range(30):
        arm, r = "abcd"[int(rng.integers(4))], float(rng.random())
        ucb.update(arm, r)
        history.append((arm, r))
    ucb.remove_arm("b")
    ucb.set_params(window=5)  # keeps the five most recent updates
    expected = window_brute_force([h for h in history[-5:] if h[0] != "b"], 5)
    for a in "acd":
        n, s = expected.get(a, (0, 0.0))
        assert ucb.stats()[a]["window_count"] == n
        assert ucb.stats()[a]["value"] == pytest.approx(s / n if n else 0.0)
    ucb.update("c", 1.0)
    assert sum(ucb.stats()[a]["window_count"] for a in "acd") <= 5


def rounds_to_recover(policy: Policy, seed: int, window: int = 500, cap: int = 12_000) -> int:
    """5,000 rounds on ``BERNOULLI``, then the best arm drops from 0.85 to 0.55:
    the rounds until the new best (arm1, 0.75) has over 80% of the last
    ``window`` choices (``cap`` if never)."""
    rng = np.random.default_rng(20_000 + seed)
    play(policy, BERNOULLI, 5000, rng)
    means = [0.55, *BERNOULLI[1:]]
    recent: list[bool] = []
    for r in range(cap):
        recent.append(play(policy, means, 1, rng)[0] == 1)
        if len(recent) >= window and sum(recent[-window:]) > 0.8 * window:
            return r + 1
    return cap


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_non_stationary_ucbs_recover_from_drift_faster_than_ucb1(seed: int) -> None:
    # UCB1 with the same exploration constant as the others' default, so that
    # forgetting is the only difference. (With its default c = √2 it explores
    # more and recovers a little sooner: 1306, 2999, 4080 rounds.)
    stationary = rounds_to_recover(UCB1(NAMES, seed=seed, c=0.4), seed)
    discounted = rounds_to_recover(DiscountedUCB(NAMES, seed=seed), seed)
    windowed = rounds_to_recover(SlidingWindowUCB(NAMES, seed=seed), seed)
    assert max(discounted, windowed) < stationary, (discounted, windowed, stationary)
    assert max(discounted, windowed) <= 1500, (discounted, windowed)


# -- Exp3 -------------------------------------------------------------------------------------


def test_exp3_stays_finite_over_two_million_rounds() -> None:
    ex = Exp3(list("abcde"), seed=0, gamma=0.1)
    update = ex.update
    for _ in range(2_000_000):
        update("a", 1.0)
    assert ex._logw.max() == 0.0 and np.isfinite(ex._logw).all()
    p = ex.probabilities()
    assert np.isfinite(p).all() and float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(p, [0.9 + 0.02, 0.02, 0.02, 0.02, 0.02])
    np.testing.assert_allclose(ex.probabilities(["b", "c"]), [0.5, 0.5])
    assert ex.stats()["a"]["estimated_gain"] > 2_000_000  # Σ 1/p, p ≤ 0.92
    assert math.isfinite(ex.stats()["a"]["estimated_gain"])
    assert Exp3.restore(ex.snapshot()).snapshot() == ex.snapshot()


def test_exp3_weights_by_the_logged_propensity() -> None:
    ex = Exp3(["a", "b", "c"], seed=0, gamma=0.3)
    ex.update("b", 0.6, propensity=0.25)  # estimate 0.6 / 0.25 = 2.4
    assert ex.stats()["b"]["estimated_gain"] == pytest.approx(2.4)
    w = np.exp([-0.3 * 2.4 / 3, 0.0, -0.3 * 2.4 / 3])  # b leads: others shifted down
    np.testing.assert_allclose(ex.scores(), w)
    np.testing.assert_allclose(ex.probabilities(), 0.7 * w / w.sum() + 0.1)
    # Without a propensity, the arm's current probability stands in.
    p_a = float(ex.probabilities()[0])
    ex.update("a", 1.0)
    assert ex.stats()["a"]["estimated_gain"] == pytest.approx(1.0 / p_a)


@pytest.mark.parametrize("propensity", [0.0, -0.1, 1.5, math.nan, "0.5"])
def test_exp3_refuses_a_bad_propensity(propensity: Any) -> None:
    ex = Exp3(["a", "b"], seed=0)
    before = ex.snapshot()
    with pytest.raises(PolicyError, match="propensity"):
        ex.update("a", 1.0, propensity=propensity)
    assert ex.snapshot() == before


# -- Gaussian Thompson sampling -----------------------------------------------------------------


def test_gaussian_thompson_posterior_is_the_conjugate_update() -> None:
    gt = GaussianThompson(
        ["a", "b"], seed=0, prior_mean=1.0, prior_kappa=2.0, prior_alpha=3.0, prior_beta=4.0
    )
    x = np.array([2.5, -1.0, 4.0, 0.5, 3.0])
    feed(gt, "a", x.tolist())
    n, xbar = len(x), float(x.mean())
    kappa = 2.0 + n
    mean = (2.0 * 1.0 + n * xbar) / kappa
    alpha = 3.0 + n / 2
    beta = 4.0 + 0.5 * float(((x - xbar) ** 2).sum()) + 2.0 * n * (xbar - 1.0) ** 2 / (2 * kappa)
    loc, scale, df = gt.posterior()
    assert (loc[0], scale[0], df[0]) == pytest.approx(
        (mean, math.sqrt(beta / (alpha * kappa)), 2 * alpha)
    )
    assert (loc[1], scale[1], df[1]) == pytest.approx((1.0, math.sqrt(4.0 / 6.0), 6.0))
    assert gt.scores()[0] == pytest.approx(mean)


def _t_pdf(x: np.ndarray, df: float, loc: float, scale: float) -> np.ndarray:
    z = (x - loc) / scale
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(log_norm - (df + 1) / 2 * np.log1p(z * z / df)) / scale


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_thompson_propensity_matches_the_exact_win_probability(seed: int) -> None:
    samples = 20_000
    gt = GaussianThompson(["x", "y"], seed=seed, propensity_samples=samples)
    feed(gt, "x", [0.4, 0.9, 0.6, 0.2])
    feed(gt, "y", [0.5, 0.3, 0.45])
    gt.refresh()
    loc, scale, df = gt.posterior()
    # P(X > Y) = ∫ pdf_x · cdf_y, on a fine grid wide enough for both tails.
    grid = np.linspace(-20, 20, 400_001)
    dx = grid[1] - grid[0]
    fy = _t_pdf(grid, df[1], loc[1], scale[1])
    cdf_y = (np.cumsum(fy) - fy / 2) * dx
    exact = float((_t_pdf(grid, df[0], loc[0], scale[0]) * cdf_y).sum() * dx)
    estimate = float(gt.probabilities()[0])
    assert abs(estimate - exact) < 4 * 0.5 / math.sqrt(samples), (estimate, exact)


# -- hyperparameters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (EpsilonGreedy, {"epsilon": 1.5}),
        (EpsilonGreedy, {"min_epsilon": 0.5}),
        (EpsilonGreedy, {"decay": "cosine"}),
        (EpsilonGreedy, {"decay_rate": -1.0}),
        (EpsilonGreedy, {"horizon": 0}),
        (EpsilonGreedy, {"sigma": 0.0}),
        (Softmax, {"temperature": 0.0}),
        (Softmax, {"min_temperature": 1.0}),
        (Softmax, {"decay_rate": -0.1}),
        (UCB1, {"c": -1.0}),
        (UCBV, {"zeta": 0.0}),
        (UCBV, {"reward_range": 0.0}),
        (UCBTuned, {"reward_range": -1.0}),
        (DiscountedUCB, {"gamma": 0.0}),
        (DiscountedUCB, {"gamma": 1.5}),
        (SlidingWindowUCB, {"window": 0}),
        (Exp3, {"gamma": 0.0}),
        (GaussianThompson, {"prior_kappa": 0.0}),
        (GaussianThompson, {"prior_beta": -1.0}),
        (GaussianThompson, {"propensity_samples": 10}),
    ],
)
def test_bad_hyperparameters_are_named(cls: type[Policy], kwargs: dict[str, Any]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        cls(["a", "b"], seed=0, **kwargs)
    policy = cls(["a", "b"], seed=0)
    with pytest.raises(ValueError, match=name):
        policy.set_params(**kwargs)
