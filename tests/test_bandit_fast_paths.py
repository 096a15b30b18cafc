"""What the context-free bandits' fast paths must keep: a selection's
cached scores and probabilities are the policy's own, uniforms drawn a block
at a time leave the generator where one draw per selection would, a
selection's dictionaries are built on demand and belong to it alone, and
Thompson sampling's integrated win probabilities are right and are the ones
its choices follow."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import orjson
import pytest
from scipy.stats import chisquare

from app.policies import EpsilonGreedy, Exp3, Selection, ThompsonSampling
from app.policies._beta_wins import beta_win_probabilities
from app.policies.base import drawn_selection
from app.policies.registry import algorithms

ARMS = ["a", "b", "c", "d", "e"]
MEANS = [0.8, 0.65, 0.5, 0.45, 0.2]
CONFIGS = [
    (name, cls.example_params)
    for name, cls in algorithms().items()
    if not cls.contextual and name != "meta_selector"
] + [("thompson_sampling", {})]  # its default: integrated win probabilities


@pytest.mark.parametrize(("name", "params"), CONFIGS)
def test_every_selection_carries_the_policys_current_scores_and_probabilities(
    name: str, params: dict[str, Any]
) -> None:
    policy = algorithms()[name](ARMS, seed=3, **params)
    env = random.Random(7)
    for t in range(600):
        allowed = ["e", "a", "c"] if t % 5 == 0 else None
        sel = policy.select(allowed=allowed)
        names = allowed or ARMS
        assert sel.probabilities == dict(
            zip(names, policy.probabilities(allowed).tolist(), strict=True)
        )
        assert sel.scores == dict(zip(names, policy.scores(allowed).tolist(), strict=True))
        assert sel.propensity == sel.probabilities[sel.arm]
        reward = 1.0 if env.random() < MEANS[ARMS.index(sel.arm)] else 0.0
        policy.update(sel.arm, reward, propensity=sel.propensity)


@pytest.mark.parametrize("selections", [0, 1, 63, 64, 65, 200])
def test_a_snapshot_holds_the_generator_one_draw_per_selection_on(selections: int) -> None:
    policy = EpsilonGreedy(ARMS, seed=11, epsilon=0.5)
    for _ in range(selections):
        policy.select()
    reference = np.random.default_rng(11)
    for _ in range(selections):
        reference.random()
    restored = EpsilonGreedy.restore(policy.snapshot())
    assert restored._rng.bit_generator.state == reference.bit_generator.state
    # The original and its restored copy go on drawing the same arms.
    assert [policy.select().arm for _ in range(100)] == [restored.select().arm for _ in range(100)]


def test_a_selection_builds_its_dictionaries_on_demand_and_owns_them() -> None:
    names, scores, probs = ("a", "b"), [0.3, 0.7], [0.25, 0.75]
    first = drawn_selection("b", 0.75, False, names, scores, probs)
    second = drawn_selection("b", 0.75, False, names, scores, probs)
    eager = Selection("b", 0.75, {"a": 0.3, "b": 0.7}, False, {"a": 0.25, "b": 0.75})
    assert first == eager and repr(first) == repr(eager)
    first.scores["a"] = 9.0
    first.probabilities = {"b": 1.0}
    assert second.scores == {"a": 0.3, "b": 0.7} and second.probabilities == {"a": 0.25, "b": 0.75}
    assert first != second
    assert Selection("a", 1.0, {}, False).probabilities == {}


def test_exp3_restored_with_its_leader_below_zero_weighs_from_the_leader() -> None:
    ex = Exp3(["a", "b", "c"], seed=0, gamma=0.3)
    ex.update("b", 0.6, propensity=0.25)
    doc = orjson.loads(ex.snapshot())
    doc["state"]["logw"] = [w - 1.0 for w in doc["state"]["logw"]]  # every arm one lower
    shifted = Exp3.restore(orjson.dumps(doc))
    np.testing.assert_allclose(shifted.probabilities(), ex.probabilities(), rtol=1e-12)
    sel = shifted.select()
    assert sel.probabilities == dict(
        zip(["a", "b", "c"], shifted.probabilities().tolist(), strict=True)
    )


# -- Thompson sampling's integrated win probabilities ---------------------------------------


@pytest.mark.parametrize(
    ("alpha", "beta", "exact"),
    [
        ((1, 1), (1, 1), 0.5),
        ((2, 1), (1, 1), 2 / 3),
        ((1, 2), (1, 1), 1 / 3),
        ((3, 1), (1, 2), 0.9),  # ∫ 3x² (2x - x²) dx = 3 (1/2 - 1/5)
    ],
)
def test_beta_win_probabilities_match_closed_forms(
    alpha: tuple[float, float], beta: tuple[float, float], exact: float
) -> None:
    p = beta_win_probabilities(np.array(alpha, dtype=float), np.array(beta, dtype=float))
    assert p[0] == pytest.approx(exact, abs=1e-9) and p.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("alpha", "beta"),
    [
        ([1.0, 2.0, 1.0, 3.0, 1.0], [1.0, 1.0, 2.0, 1.0, 4.0]),  # near the prior
        ([850.0, 75.0, 65.0, 60.0, 50.0], [150.0, 25.0, 35.0, 40.0, 50.0]),
        ([85_000.0, 75.0, 650.0, 6.0, 5.0], [15_000.0, 25.0, 350.0, 4.0, 5.0]),  # narrow and wide
        ([40.5, 41.0, 12.25], [10.5, 10.0, 3.5]),  # fractional rewards, close arms
    ],
)
def test_beta_win_probabilities_match_monte_carlo(alpha: list[float], beta: list[float]) -> None:
    samples = 400_000
    draws = np.random.default_rng(0).beta(alpha, beta, size=(samples, len(alpha)))
    estimate = np.bincount(draws.argmax(axis=1), minlength=len(alpha)) / samples
    exact = beta_win_probabilities(np.array(alpha), np.array(beta))
    np.testing.assert_allclose(exact, estimate, atol=4 * 0.5 / math.sqrt(samples))


def test_thompson_sampling_computes_its_win_probabilities_by_default() -> None:
    ts = ThompsonSampling(["x", "y"], seed=0)
    assert ts.propensity_samples == 0
    for _ in range(2):  # Beta(3, 1) against Beta(1, 2), as after these rewards
        ts.update("x", 1.0)
    ts.update("y", 0.0)
    ts.refresh()
    assert float(ts.probabilities()[0]) == pytest.approx(0.9, abs=1e-9)


def test_thompson_sampling_choices_follow_their_integrated_propensities() -> None:
    ts = ThompsonSampling(ARMS, seed=4)
    env = random.Random(1)
    for _ in range(300):
        sel = ts.select()
        ts.update(sel.arm, 1.0 if env.random() < MEANS[ARMS.index(sel.arm)] else 0.0)
    ts.refresh()
    probs = ts.probabilities()
    counts = dict.fromkeys(ARMS, 0)
    rounds = 20_000
    for _ in range(rounds):  # no update: every draw is from the same probabilities
        sel = ts.select()
        assert sel.propensity == probs[ARMS.index(sel.arm)]
        counts[sel.arm] += 1
    observed = np.array([counts[a] for a in ARMS])
    expected = probs * rounds
    support = expected > 0
    assert observed[~support].sum() == 0  # an arm of probability 0 is never drawn
    assert chisquare(observed[support], expected[support]).pvalue > 1e-4


def test_thompson_sampling_refuses_too_few_draws_but_takes_zero() -> None:
    ThompsonSampling(["a", "b"], propensity_samples=0)
    with pytest.raises(ValueError, match="propensity_samples"):
        ThompsonSampling(["a", "b"], propensity_samples=50)
