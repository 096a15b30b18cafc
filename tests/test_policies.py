"""The policy contract (docs/architecture.md#the-policy-contract), checked once for every policy in
the registry, then Thompson sampling's own behaviour: does it learn, are its
propensities right, does the discounted variant follow a drifting provider.

Seeded and broker-free. A policy added to ``app.policies.config.ALGORITHMS``
is picked up by the generic tests without any change here.
"""

from __future__ import annotations

import inspect
import itertools
import math
from typing import Any

import numpy as np
import orjson
import pytest

from app.policies import (
    InvalidRewardError,
    Policy,
    PolicyError,
    SnapshotError,
    ThompsonSampling,
    UnknownArmError,
)
from app.policies.config import ALGORITHMS

ARMS = ["a", "b", "c", "d", "e"]
# Bernoulli success rates the generic tests play against (spread, so that a
# trained policy has unequal, non-degenerate probabilities).
MEANS = {"a": 0.8, "b": 0.6, "c": 0.5, "d": 0.3, "e": 0.2}


def make(cls: type[Policy], seed: int, arms: list[str] = ARMS) -> Policy:
    """A policy with its ``example_params``: small settings that keep these tests fast."""
    return cls(arms, seed=seed, **cls.example_params)


def ctx(policy: Policy) -> np.ndarray | None:
    """The context the generic tests decide in: fixed, so that a contextual
    policy's probabilities are comparable between calls."""
    if not policy.contextual:
        return None
    return np.linspace(0.2, 1.0, policy.context_dim)  # type: ignore[attr-defined]


@pytest.fixture(params=sorted(ALGORITHMS), ids=str)
def algorithm(request: pytest.FixtureRequest) -> type[Policy]:
    return ALGORITHMS[request.param]


def play(policy: Policy, rounds: int, seed: int, allowed: list[str] | None = None) -> list[str]:
    """Select, then reward the choice from ``MEANS``; returns the choices."""
    rng = np.random.default_rng(seed)
    choices = []
    for _ in range(rounds):
        arm = policy.select(ctx(policy), allowed=allowed).arm
        choices.append(arm)
        policy.update(arm, float(rng.random() < MEANS.get(arm, 0.5)), ctx(policy))
    return choices


def trained(cls: type[Policy], seed: int = 0, rounds: int = 40) -> Policy:
    policy = make(cls, seed)
    play(policy, rounds, seed=1000 + seed)
    return policy


# -- the generic contract ---------------------------------------------------------------------


def test_registry_names_match_the_classes() -> None:
    assert ALGORITHMS, "no policy registered"
    for name, cls in ALGORITHMS.items():
        assert cls.algorithm == name
        assert issubclass(cls, Policy)


def test_arms_must_be_present_and_distinct(algorithm: type[Policy]) -> None:
    with pytest.raises(PolicyError, match="at least one arm"):
        algorithm([], seed=0)
    with pytest.raises(PolicyError, match="duplicate"):
        algorithm(["a", "b", "a"], seed=0)


@pytest.mark.parametrize("fresh", [True, False], ids=["prior", "trained"])
def test_probabilities_are_a_distribution_for_every_arm_subset(
    algorithm: type[Policy], fresh: bool
) -> None:
    policy = make(algorithm, 3) if fresh else trained(algorithm, seed=3)
    for size in range(1, len(ARMS) + 1):
        for subset in itertools.combinations(ARMS, size):
            p = policy.probabilities(list(subset), ctx(policy))
            assert p.shape == (size,), subset
            assert np.all(p >= 0.0) and np.all(p <= 1.0), (subset, p)
            assert float(p.sum()) == pytest.approx(1.0, abs=1e-9), (subset, p)
    assert policy.probabilities(None, ctx(policy)).shape == (len(ARMS),)
    assert float(policy.probabilities(None, ctx(policy)).sum()) == pytest.approx(1.0, abs=1e-9)


def test_select_logs_the_probability_of_its_choice(algorithm: type[Policy]) -> None:
    policy = trained(algorithm, seed=5)
    for allowed in (None, ["b", "d"], ["e", "a", "c"], ["c"]):
        names = list(allowed) if allowed is not None else ARMS
        probs = policy.probabilities(allowed, ctx(policy))
        for _ in range(30):
            s = policy.select(ctx(policy), allowed=allowed)
            assert s.arm in names
            assert s.propensity == pytest.approx(float(probs[names.index(s.arm)]), abs=1e-12)
            assert s.propensity > 0.0, "an arm the policy gave probability 0 was chosen"
            assert s.probabilities == pytest.approx(dict(zip(names, probs.tolist(), strict=True)))
            assert set(s.scores) == set(names)
    only = policy.select(ctx(policy), allowed=["c"])
    assert (only.arm, only.propensity) == ("c", 1.0)


def test_choices_follow_the_logged_probabilities(algorithm: type[Policy]) -> None:
    policy = trained(algorithm, seed=7, rounds=25)
    n = 6000
    probs = policy.probabilities(None, ctx(policy))
    counts = {arm: 0 for arm in ARMS}
    for _ in range(n):
        counts[policy.select(ctx(policy)).arm] += 1
    expected = probs * n
    observed = np.array([counts[a] for a in ARMS], dtype=float)
    assert np.all(observed[expected == 0] == 0), "an arm of probability 0 was chosen"
    live = expected > 0
    chi2 = float((((observed - expected) ** 2)[live] / expected[live]).sum())
    # 99.99th percentile of chi-square with 4 degrees of freedom is 23.5.
    assert chi2 < 23.5, (counts, probs)


def test_snapshot_restore_gives_identical_choices_and_stats(algorithm: type[Policy]) -> None:
    original = trained(algorithm, seed=11)
    data = original.snapshot()
    assert isinstance(data, bytes)
    restored = algorithm.restore(data)
    assert type(restored) is algorithm
    assert restored.arms == original.arms
    assert restored.stats() == original.stats()
    assert restored.snapshot() == data
    np.testing.assert_array_equal(
        restored.probabilities(None, ctx(restored)), original.probabilities(None, ctx(original))
    )
    assert play(restored, 40, seed=99) == play(original, 40, seed=99)
    assert restored.stats() == original.stats()
    assert restored.snapshot() == original.snapshot()


def test_same_seed_same_choices_other_seed_differs(algorithm: type[Policy]) -> None:
    first = play(make(algorithm, 21), 60, seed=5)
    again = play(make(algorithm, 21), 60, seed=5)
    other = play(make(algorithm, 22), 60, seed=5)
    assert first == again
    assert first != other


def test_unknown_arm_is_named(algorithm: type[Policy]) -> None:
    policy = trained(algorithm, seed=2)
    before = policy.snapshot()
    calls: list[Any] = [
        lambda: policy.update("gpt-5-turbo", 0.5, ctx(policy)),
        lambda: policy.select(ctx(policy), allowed=["a", "gpt-5-turbo"]),
        lambda: policy.probabilities(["gpt-5-turbo"], ctx(policy)),
        lambda: policy.scores(["b", "gpt-5-turbo"], ctx(policy)),
        lambda: policy.remove_arm("gpt-5-turbo"),
        lambda: policy.add_arm("z", prior_from="gpt-5-turbo"),
        lambda: policy.reset_arm("gpt-5-turbo"),
        lambda: policy.arm_evidence("gpt-5-turbo"),
        lambda: policy.discount_evidence("gpt-5-turbo", 0.5),
        lambda: policy.shrink_evidence("gpt-5-turbo", 0.5),
    ]
    for call in calls:
        with pytest.raises(UnknownArmError) as info:
            call()
        assert "'gpt-5-turbo'" in str(info.value)
        assert isinstance(info.value, KeyError) and isinstance(info.value, PolicyError)
    assert policy.snapshot() == before
    assert policy.arms == ARMS


@pytest.mark.parametrize("reward", [math.nan, math.inf, -math.inf, "0.5", None])
def test_non_finite_or_non_numeric_reward_is_refused(algorithm: type[Policy], reward: Any) -> None:
    policy = trained(algorithm, seed=4)
    before = policy.snapshot()
    with pytest.raises(InvalidRewardError):
        policy.update("a", reward, ctx(policy))
    assert policy.snapshot() == before


def test_allowed_set_must_be_non_empty_and_distinct(algorithm: type[Policy]) -> None:
    policy = make(algorithm, 0)
    with pytest.raises(PolicyError, match="empty"):
        policy.select(ctx(policy), allowed=[])
    # A repeated arm would split its probability between the copies and log
    # half the real propensity.
    with pytest.raises(PolicyError, match="repeat"):
        policy.select(ctx(policy), allowed=["a", "a"])
    with pytest.raises(PolicyError, match="repeat"):
        policy.probabilities(["b", "c", "b"], ctx(policy))


def _tampered(data: bytes, **changes: Any) -> bytes:
    doc = orjson.loads(data)
    doc.update(changes)
    return orjson.dumps(doc)


def test_snapshot_of_another_algorithm_fails_clearly(algorithm: type[Policy]) -> None:
    data = trained(algorithm, seed=1).snapshot()
    with pytest.raises(SnapshotError) as info:
        algorithm.restore(_tampered(data, algorithm="linucb-from-the-future"))
    assert "linucb-from-the-future" in str(info.value)
    assert algorithm.algorithm in str(info.value)
    for other in ALGORITHMS.values():
        if other is not algorithm:
            with pytest.raises(SnapshotError, match=algorithm.algorithm):
                other.restore(data)


def test_snapshot_of_another_format_fails_clearly(algorithm: type[Policy]) -> None:
    data = trained(algorithm, seed=1).snapshot()
    future = algorithm.snapshot_format + 1
    with pytest.raises(SnapshotError) as info:
        algorithm.restore(_tampered(data, format=future))
    assert "format" in str(info.value) and str(future) in str(info.value)
    with pytest.raises(SnapshotError, match="format"):
        algorithm.restore(_tampered(data, format=None))


def test_snapshot_that_is_not_json_fails_clearly(algorithm: type[Policy]) -> None:
    with pytest.raises(SnapshotError, match="JSON"):
        algorithm.restore(b"\x00\x01 not a snapshot")


def test_add_arm_at_runtime(algorithm: type[Policy]) -> None:
    policy = trained(algorithm, seed=8)
    before = policy.stats()
    policy.add_arm("f")
    assert policy.arms == [*ARMS, "f"]
    assert set(policy.stats()) == {*ARMS, "f"}
    assert policy.stats()["f"]["pulls"] == 0
    assert {a: policy.stats()[a] for a in ARMS} == before
    p = policy.probabilities(None, ctx(policy))
    assert p.shape == (6,) and float(p.sum()) == pytest.approx(1.0)
    only = policy.select(ctx(policy), allowed=["f"])
    assert (only.arm, only.propensity) == ("f", 1.0)
    policy.update("f", 1.0, ctx(policy))
    assert policy.stats()["f"]["pulls"] == 1
    with pytest.raises(PolicyError, match="already exists"):
        policy.add_arm("f")


def test_add_arm_with_prior_from_copies_what_was_learnt(algorithm: type[Policy]) -> None:
    policy = trained(algorithm, seed=9, rounds=80)
    policy.add_arm("a-clone", prior_from="a")
    policy.add_arm("e-clone", prior_from="e")
    np.testing.assert_allclose(
        policy.scores(["a-clone", "e-clone"], ctx(policy)), policy.scores(["a", "e"], ctx(policy))
    )
    assert policy.scores(["a-clone"], ctx(policy))[0] != policy.scores(["e-clone"], ctx(policy))[0]


def test_remove_arm_at_runtime(algorithm: type[Policy]) -> None:
    policy = trained(algorithm, seed=10)
    before = policy.stats()
    policy.remove_arm("b")
    assert policy.arms == ["a", "c", "d", "e"]
    assert policy.stats() == {a: s for a, s in before.items() if a != "b"}
    assert policy.probabilities(None, ctx(policy)).shape == (4,)
    assert "b" not in play(policy, 50, seed=3)
    with pytest.raises(UnknownArmError, match="'b'"):
        policy.update("b", 1.0, ctx(policy))
    for arm in ["a", "c", "d"]:
        policy.remove_arm(arm)
    assert policy.arms == ["e"]
    with pytest.raises(PolicyError, match="last arm"):
        policy.remove_arm("e")
    assert policy.select(ctx(policy)).arm == "e"
    # The survivors round-trip through a snapshot.
    assert algorithm.restore(policy.snapshot()).arms == ["e"]


def test_explain_mentions_the_chosen_arm(algorithm: type[Policy]) -> None:
    policy = trained(algorithm, seed=12)
    for allowed in (None, ["d", "e"]):
        s = policy.select(ctx(policy), allowed=allowed)
        text = policy.explain(s)
        assert repr(s.arm) in text.splitlines()[0]
        assert algorithm.algorithm in text
        for arm in s.scores:
            assert arm in text


def test_without_exploration_the_greedy_arm_is_certain(algorithm: type[Policy]) -> None:
    policy = trained(algorithm, seed=13, rounds=120)
    for allowed in (None, ["c", "d", "e"], ["e", "b"]):
        names = list(allowed) if allowed is not None else ARMS
        greedy = names[int(np.argmax(policy.scores(allowed, ctx(policy))))]
        for _ in range(5):
            s = policy.select(ctx(policy), allowed=allowed, explore=False)
            assert s.arm == greedy
            assert s.propensity == 1.0
            assert s.explored is False
            assert s.probabilities == {a: float(a == greedy) for a in names}


def test_selection_alone_does_not_learn(algorithm: type[Policy]) -> None:
    policy = trained(algorithm, seed=14)
    stats = policy.stats()
    for _ in range(50):
        policy.select(ctx(policy))
    assert policy.stats() == stats


def test_has_arm_follows_the_arms(algorithm: type[Policy]) -> None:
    policy = make(algorithm, 0)
    assert all(policy.has_arm(a) for a in ARMS)
    assert not policy.has_arm("f")
    policy.add_arm("f")
    policy.remove_arm("a")
    assert policy.has_arm("f") and not policy.has_arm("a")


def hyperparameters(cls: type[Policy]) -> dict[str, Any]:
    """Each parameter of the constructor after ``arms`` and ``seed``, with its default."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.name not in ("self", "arms", "seed")}


@pytest.mark.parametrize("example", [False, True], ids=["defaults", "example"])
def test_params_are_what_the_constructor_was_given(algorithm: type[Policy], example: bool) -> None:
    given = hyperparameters(algorithm) | (algorithm.example_params if example else {})
    policy = algorithm(ARMS, seed=0, **given)
    params = policy._params()
    assert list(params) == list(given)
    # As a snapshot keeps them (a tuple as a list); a ``None`` default leaves
    # the value to the policy (a meta-selector's default candidates).
    chosen = {name: params[name] for name, value in given.items() if value is None}
    assert params == orjson.loads(orjson.dumps(given)) | chosen
    assert algorithm(ARMS, seed=0, **params)._params() == params
    # One mechanism: the base class reads them from the constructor.
    assert [k for k in algorithm.__mro__ if "_params" in vars(k)] == [Policy]


def test_reset_forgets_all_it_learnt_and_keeps_its_configuration(algorithm: type[Policy]) -> None:
    policy = trained(algorithm, seed=15)
    policy.add_arm("f")
    policy.reset()
    fresh = make(algorithm, 15, arms=[*ARMS, "f"])
    assert policy.arms == fresh.arms
    assert policy.stats() == fresh.stats()
    assert policy.snapshot() == fresh.snapshot()
    assert play(policy, 40, seed=3) == play(fresh, 40, seed=3)


def test_reset_arm_forgets_that_arm_only(algorithm: type[Policy]) -> None:
    policy = trained(algorithm, seed=16)
    before = policy.stats()
    in_place = policy.reset_arm("b")
    after = policy.stats()
    assert {a: after[a] for a in ARMS if a != "b"} == {a: before[a] for a in ARMS if a != "b"}
    if in_place:  # what happened to the arm is still counted
        assert policy.arms == ARMS
        kept = {"pulls", "mean_reward"}
        assert {k: after["b"][k] for k in kept} == {k: before["b"][k] for k in kept}
    else:  # rebuilt: it starts afresh, at the end of the arms
        assert policy.arms == [a for a in ARMS if a != "b"] + ["b"]
        assert after["b"]["pulls"] == 0
        kept = set()
    # Otherwise the arm is as in a policy that never learnt anything.
    fresh = make(algorithm, 16)
    assert policy.arm_evidence("b") == fresh.arm_evidence("b")
    figures = {k: v for k, v in after["b"].items() if k not in kept}
    assert figures == pytest.approx({k: v for k, v in fresh.stats()["b"].items() if k not in kept})
    p = policy.probabilities(None, ctx(policy))
    assert float(p.sum()) == pytest.approx(1.0)


def test_a_lone_arm_can_be_reset(algorithm: type[Policy]) -> None:
    policy = make(algorithm, 17, arms=["a"])
    policy.update("a", 1.0, ctx(policy))
    policy.reset_arm("a")
    assert policy.arms == ["a"]
    assert policy.select(ctx(policy)).arm == "a"


@pytest.mark.parametrize("factor", [0.0, 0.25, 1.0])
def test_discount_evidence_keeps_that_factor_of_it(algorithm: type[Policy], factor: float) -> None:
    policy = trained(algorithm, seed=18)
    prior = make(algorithm, 18).arm_evidence("b")
    before = {a: policy.arm_evidence(a) for a in ARMS}
    stats, data = policy.stats(), policy.snapshot()
    if not policy.discount_evidence("b", factor):
        assert before["b"] == {}  # no evidence to discount, and nothing changed
        assert policy.snapshot() == data
        return
    expected = {k: prior[k] + factor * (v - prior[k]) for k, v in before["b"].items()}
    assert policy.arm_evidence("b") == pytest.approx(expected)
    assert {a: policy.arm_evidence(a) for a in ARMS if a != "b"} == {
        a: e for a, e in before.items() if a != "b"
    }
    assert policy.stats()["b"]["pulls"] == stats["b"]["pulls"]


def test_shrink_evidence_keeps_at_least_that_factor_of_it(algorithm: type[Policy]) -> None:
    factor = 0.25
    policy = trained(algorithm, seed=19)
    before = {a: policy.arm_evidence(a) for a in ARMS}
    stats, data = policy.stats(), policy.snapshot()
    if not policy.shrink_evidence("b", factor):
        assert before["b"] == {}  # no evidence to shrink, and nothing changed
        assert policy.snapshot() == data
        return
    after = policy.arm_evidence("b")
    assert after.keys() == before["b"].keys()
    for name, value in before["b"].items():
        assert factor * value - 1e-12 <= after[name] <= value + 1e-12, name
    assert sum(after.values()) < sum(before["b"].values())
    assert {a: policy.arm_evidence(a) for a in ARMS if a != "b"} == {
        a: e for a, e in before.items() if a != "b"
    }
    kept = ("pulls", "mean_reward")
    assert {k: policy.stats()["b"][k] for k in kept} == {k: stats["b"][k] for k in kept}


# -- Thompson sampling ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prior_alpha": 0.0},
        {"prior_beta": -1.0},
        {"discount": 0.0},
        {"discount": 1.01},
        {"propensity_samples": 99},
    ],
)
def test_ts_refuses_bad_hyperparameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ThompsonSampling(["a", "b"], seed=0, **kwargs)


@pytest.mark.parametrize("reward", [-0.01, 1.5])
def test_ts_needs_rewards_in_unit_interval(reward: float) -> None:
    ts = ThompsonSampling(["a", "b"], seed=0)
    with pytest.raises(InvalidRewardError, match=r"\[0, 1\]"):
        ts.update("a", reward)
    assert ts.stats()["a"]["pulls"] == 0


def test_ts_fractional_rewards_update_the_beta_posterior() -> None:
    ts = ThompsonSampling(["a", "b"], seed=0, prior_alpha=2.0, prior_beta=3.0)
    ts.update("a", 0.25)
    ts.update("a", 1.0)
    s = ts.stats()
    assert s["a"]["alpha"] == pytest.approx(2.0 + 1.25)
    assert s["a"]["beta"] == pytest.approx(3.0 + 0.75)
    assert s["a"]["pulls"] == 2 and s["a"]["mean_reward"] == pytest.approx(0.625)
    assert (s["b"]["alpha"], s["b"]["beta"], s["b"]["pulls"]) == (2.0, 3.0, 0.0)


def test_ts_discount_pulls_every_arm_back_to_the_prior() -> None:
    ts = ThompsonSampling(["a", "b"], seed=0, discount=0.5)
    ts.update("b", 1.0)  # b: alpha 2
    ts.update("a", 1.0)  # b decays to 1 + 0.5; a: alpha 2
    s = ts.stats()
    assert s["b"]["alpha"] == pytest.approx(1.5)
    assert s["a"]["alpha"] == pytest.approx(2.0)
    assert s["a"]["beta"] == s["b"]["beta"] == pytest.approx(1.0)


def test_ts_prior_from_copies_the_posterior() -> None:
    ts = ThompsonSampling(["a", "b"], seed=0)
    for r in (1.0, 1.0, 0.0, 0.5):
        ts.update("a", r)
    ts.add_arm("a2", prior_from="a")
    ts.add_arm("fresh")
    s = ts.stats()
    assert (s["a2"]["alpha"], s["a2"]["beta"]) == (s["a"]["alpha"], s["a"]["beta"])
    assert (s["fresh"]["alpha"], s["fresh"]["beta"]) == (1.0, 1.0)
    assert s["a2"]["pulls"] == 0


def test_ts_never_chooses_an_arm_of_probability_zero() -> None:
    ts = ThompsonSampling(["bad", "good"], seed=0, propensity_samples=1000)
    for _ in range(300):
        ts.update("bad", 0.0)
        ts.update("good", 1.0)
    assert ts.probabilities().tolist() == [0.0, 1.0]

    class Zero:  # the generator's smallest draw
        def random(self) -> float:
            return 0.0

    ts._rng = Zero()  # type: ignore[assignment]
    s = ts.select()
    assert (s.arm, s.propensity) == ("good", 1.0)


def _beta_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    return np.exp(log_norm + (a - 1) * np.log(x) + (b - 1) * np.log1p(-x))


def exact_win_probability(a1: float, b1: float, a2: float, b2: float, n: int = 200_000) -> float:
    """P(X1 > X2) for X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2): the integral of
    pdf1 · cdf2 over [0, 1], by the midpoint rule."""
    x = (np.arange(n) + 0.5) / n
    f2 = _beta_pdf(x, a2, b2)
    cdf2 = (np.cumsum(f2) - f2 / 2) / n
    return float((_beta_pdf(x, a1, b1) * cdf2).sum() / n)


@pytest.mark.parametrize(
    ("params", "exact"),
    [((1, 1, 1, 1), 0.5), ((2, 1, 1, 1), 2 / 3), ((1, 1, 2, 1), 1 / 3), ((3, 1, 1, 2), 0.9)],
)
def test_quadrature_matches_closed_forms(params: tuple[int, ...], exact: float) -> None:
    # e.g. Beta(3,1) vs Beta(1,2): ∫ 3x² (2x - x²) dx = 3 (1/2 - 1/5) = 0.9.
    assert exact_win_probability(*params) == pytest.approx(exact, abs=1e-6)


@pytest.mark.parametrize(
    "posteriors",
    [(3, 5, 4, 4), (10, 4, 7, 3), (2, 2, 1, 1), (20, 30, 25, 28), (6, 2, 2, 6)],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ts_propensity_estimate_matches_the_exact_win_probability(
    posteriors: tuple[int, int, int, int], seed: int
) -> None:
    a1, b1, a2, b2 = posteriors
    samples = 20_000
    ts = ThompsonSampling(["x", "y"], seed=seed, propensity_samples=samples)
    for arm, a, b in (("x", a1, b1), ("y", a2, b2)):
        for _ in range(a - 1):
            ts.update(arm, 1.0)
        for _ in range(b - 1):
            ts.update(arm, 0.0)
    s = ts.stats()
    assert (s["x"]["alpha"], s["x"]["beta"], s["y"]["alpha"], s["y"]["beta"]) == posteriors
    ts.refresh()  # the estimate of the current posterior, not of the last refresh's
    exact = exact_win_probability(a1, b1, a2, b2)
    estimate = float(ts.probabilities()[0])
    assert abs(estimate - exact) < 4 * 0.5 / math.sqrt(samples), (estimate, exact)


def _feed_bernoulli(ts: ThompsonSampling, rounds: int, seed: int) -> list[list[float]]:
    """Play ``rounds`` of two Bernoulli arms; the probabilities before each."""
    rng = np.random.default_rng(seed)
    seen = []
    for _ in range(rounds):
        seen.append(ts.probabilities().tolist())
        arm = ts.select().arm
        ts.update(arm, float(rng.random() < (0.6 if arm == "x" else 0.5)))
    return seen


@pytest.mark.parametrize("fraction", [0.05, 0.2])
def test_ts_decides_on_a_posterior_at_most_a_fraction_of_its_evidence_old(
    fraction: float,
) -> None:
    """Lazily refreshed win probabilities are exactly those an eager policy
    (``refresh_fraction=0``) had a few rewards earlier, never more than
    ``fraction`` of the evidence behind."""
    rounds = 1500
    lazy = ThompsonSampling(["x", "y"], seed=3, propensity_samples=2000, refresh_fraction=fraction)
    # The eager twin replays the lazy one's choices, so both see the same rewards.
    eager = ThompsonSampling(["x", "y"], seed=3, propensity_samples=2000, refresh_fraction=0.0)
    rng = np.random.default_rng(9)
    eager_history: list[list[float]] = []
    distinct: set[tuple[float, ...]] = set()
    for i in range(rounds):
        eager_history.append(eager.probabilities().tolist())
        probs = lazy.probabilities().tolist()
        matches = [j for j in range(i + 1) if eager_history[j] == probs]
        assert matches and i - max(matches) <= max(1, int(fraction * i)), (i, matches[-3:])
        distinct.add(tuple(probs))
        arm = lazy.select().arm
        reward = float(rng.random() < (0.55 if arm == "x" else 0.5))
        lazy.update(arm, reward)
        eager.update(arm, reward)
    assert lazy.stats() == eager.stats()
    # One refresh per reward for the first 1/fraction rewards, then one each
    # time the evidence grows by the fraction: ~log(rounds)/log(1 + fraction).
    assert len(distinct) <= 1 / fraction + np.log(rounds) / np.log1p(fraction) + 2, len(distinct)


def test_ts_refresh_state_survives_a_snapshot() -> None:
    ts = ThompsonSampling(["x", "y"], seed=5, propensity_samples=500)
    _feed_bernoulli(ts, 437, seed=1)
    twin = ThompsonSampling.restore(ts.snapshot())
    assert _feed_bernoulli(ts, 300, seed=2) == _feed_bernoulli(twin, 300, seed=2)  # type: ignore[arg-type]


def test_ts_any_change_but_a_reward_refreshes_at_once() -> None:
    ts = ThompsonSampling(["x", "y"], seed=5, propensity_samples=2000)
    for _ in range(400):
        ts.update("x", 1.0)
        ts.update("y", 1.0)
    ts.update("y", 0.0)  # 1 reward of 800: not yet a refresh
    assert 0.4 < ts.probabilities()[0] < 0.6
    ts.reset_arm("x")
    assert ts.probabilities()[0] < 0.01  # Beta(1, 1) against Beta(401, 2)
    ts.add_arm("z", prior_from="y")
    assert len(ts.probabilities()) == 3


BERNOULLI = [0.85, 0.75, 0.65, 0.6, 0.5]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ts_learns_the_best_bernoulli_arm(seed: int) -> None:
    names = [f"arm{i}" for i in range(len(BERNOULLI))]
    means = dict(zip(names, BERNOULLI, strict=True))
    ts = ThompsonSampling(names, seed=seed, propensity_samples=1000)
    rng = np.random.default_rng(10_000 + seed)
    rounds, best = 3000, max(BERNOULLI)
    regret, choices = 0.0, []
    for _ in range(rounds):
        arm = ts.select().arm
        choices.append(arm)
        regret += best - means[arm]
        ts.update(arm, float(rng.random() < means[arm]))
    uniform_regret = rounds * (best - float(np.mean(BERNOULLI)))
    assert regret < 0.25 * uniform_regret, (regret, uniform_regret)
    share = choices[-1000:].count("arm0") / 1000
    assert share > 0.70, share


def rounds_to_recover(discount: float, seed: int, window: int = 200, cap: int = 3000) -> int:
    """Play 1,000 rounds where A (0.9) beats B (0.5), then drop A to 0.1 and
    count the rounds until B's share of the last ``window`` choices exceeds
    80% (``cap`` if it never does)."""
    ts = ThompsonSampling(["A", "B"], seed=seed, discount=discount, propensity_samples=1000)
    rng = np.random.default_rng(500 + seed)
    means = {"A": 0.9, "B": 0.5}
    for _ in range(1000):
        arm = ts.select().arm
        ts.update(arm, float(rng.random() < means[arm]))
    means = {"A": 0.1, "B": 0.5}
    picked_b: list[bool] = []
    for r in range(cap):
        arm = ts.select().arm
        ts.update(arm, float(rng.random() < means[arm]))
        picked_b.append(arm == "B")
        if len(picked_b) >= window and sum(picked_b[-window:]) > 0.8 * window:
            return r + 1
    return cap


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_discounted_ts_recovers_from_drift_faster(seed: int) -> None:
    discounted = rounds_to_recover(0.99, seed)
    stationary = rounds_to_recover(1.0, seed)
    assert discounted <= 500, discounted
    assert stationary > 2 * discounted, (discounted, stationary)
