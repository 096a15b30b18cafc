"""MetaSelector: a bandit over candidate policies (the generic contract is
checked in tests/test_policies.py). Seeded and broker-free."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest

from app.policies import ContextError, InvalidRewardError, PoliciesConfig
from app.policies.meta_selector import MetaSelector

ARMS = ["a", "b", "c"]
MEANS = {"a": 0.85, "b": 0.5, "c": 0.2}
GOOD = {"algorithm": "thompson_sampling", "hyperparameters": {"propensity_samples": 1000}}
BAD = {"algorithm": "epsilon_greedy", "hyperparameters": {"epsilon": 1.0}}  # always explores


def play(ms: MetaSelector, rounds: int, seed: int) -> list[float]:
    """Bernoulli rounds; returns the good candidate's routing probability
    before each decision."""
    rng = np.random.default_rng(seed)
    routed = []
    for _ in range(rounds):
        routed.append(ms.candidate_weights()["0:thompson_sampling"])
        s = ms.select()
        ms.update(s.arm, float(rng.random() < MEANS[s.arm]), propensity=s.propensity)
    return routed


@pytest.mark.parametrize("meta", ["exp3", "thompson"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_routes_most_traffic_to_the_better_candidate(meta: str, seed: int) -> None:
    ms = MetaSelector(ARMS, seed=seed, candidates=[GOOD, BAD], meta=meta, propensity_samples=1000)
    routed = play(ms, 5000, seed=100 + seed)
    # The expected share of decisions routed to Thompson sampling.
    assert float(np.mean(routed)) > 0.8, np.mean(routed)
    assert float(np.mean(routed[-2000:])) > 0.9
    est = ms.candidate_stats()
    good, bad = est["0:thompson_sampling"], est["1:epsilon_greedy"]
    if meta == "exp3":
        # Importance-weighted estimates of each candidate's value (bounded
        # weights: q >= γ/N); ε = 1 explores uniformly, worth the arms' average.
        assert good["estimated_reward"] == pytest.approx(MEANS["a"], abs=0.05)
        assert bad["estimated_reward"] == pytest.approx(np.mean(list(MEANS.values())), abs=0.1)
    else:
        assert good["posterior_mean"] > bad["posterior_mean"]
    assert ms.select(explore=False).arm == "a"


@pytest.mark.parametrize("meta", ["exp3", "thompson"])
def test_logged_propensity_is_the_empirical_choice_frequency(meta: str) -> None:
    ms = MetaSelector(
        ARMS,
        seed=4,
        meta=meta,
        propensity_samples=1000,
        candidates=[GOOD, {"algorithm": "epsilon_greedy", "hyperparameters": {"epsilon": 0.5}}],
    )
    play(ms, 30, seed=9)
    for allowed in (None, ["c", "b"]):
        names = allowed or ARMS
        probs = ms.probabilities(allowed)
        # The exact mixture Σ_c q_c · P_c(arm).
        q = list(ms.candidate_weights().values())
        mixture = sum(
            qc * c.probabilities(allowed) for qc, c in zip(q, ms.candidate_policies, strict=True)
        )
        np.testing.assert_allclose(probs, mixture, rtol=1e-12)
        assert probs.min() > 0.05 and probs.max() < 0.95, probs  # a non-degenerate state
        n = 20_000
        counts = dict.fromkeys(names, 0)
        for _ in range(n):
            s = ms.select(allowed=allowed)
            assert s.propensity == probs[names.index(s.arm)]
            counts[s.arm] += 1
        observed = np.array([counts[a] for a in names], dtype=float)
        chi2 = float(((observed - n * probs) ** 2 / (n * probs)).sum())
        # 99.99th percentiles of chi-square: 15.1 (1 degree of freedom), 18.4 (2).
        assert chi2 < (18.4 if len(names) == 3 else 15.1), (counts, probs)


def test_exp3_credits_each_candidate_with_its_importance_weighted_reward() -> None:
    ms = MetaSelector(ARMS, seed=0, candidates=[GOOD, BAD], gamma=0.2)
    play(ms, 20, seed=1)
    q = np.array(list(ms.candidate_weights().values()))
    pc = np.array([c.probabilities()[0] for c in ms.candidate_policies])
    mix = float(q @ pc)
    logw = np.array(ms._logw)
    ms.update("a", 1.0, propensity=0.4)
    expected = logw + 0.2 / 2 * (1.0 * pc / mix)
    np.testing.assert_allclose(ms._logw, expected - expected.max(), rtol=1e-12)
    # Every candidate learnt the outcome, with the logged propensity.
    assert [c.stats()["a"]["pulls"] for c in ms.candidate_policies] == [
        ms.stats()["a"]["pulls"]
    ] * 2


def test_thompson_meta_splits_the_credit_by_responsibility() -> None:
    ms = MetaSelector(ARMS, seed=0, candidates=[GOOD, BAD], meta="thompson")
    play(ms, 20, seed=1)
    q = np.array(list(ms.candidate_weights().values()))
    pc = np.array([c.probabilities()[2] for c in ms.candidate_policies])
    rho = q * pc / float(q @ pc)
    assert float(rho.sum()) == pytest.approx(1.0)
    alpha, beta = np.array(ms._alpha), np.array(ms._beta)
    ms.update("c", 0.25)
    np.testing.assert_allclose(ms._alpha, alpha + 0.25 * rho)
    np.testing.assert_allclose(ms._beta, beta + 0.75 * rho)


def test_snapshot_holds_every_candidates_snapshot() -> None:
    ms = MetaSelector(ARMS, seed=7, candidates=[GOOD, BAD], meta="thompson")
    play(ms, 50, seed=3)
    doc = orjson.loads(ms.snapshot())
    inner = doc["state"]["candidates"]
    assert [c["algorithm"] for c in inner] == ["thompson_sampling", "epsilon_greedy"]
    for c, policy in zip(inner, ms.candidate_policies, strict=True):
        assert orjson.dumps(c) == policy.snapshot()
    restored = MetaSelector.restore(ms.snapshot())
    assert isinstance(restored, MetaSelector)
    assert restored.candidate_weights() == ms.candidate_weights()
    assert play(restored, 30, seed=5) == play(ms, 30, seed=5)
    assert restored.snapshot() == ms.snapshot()


def test_contextual_when_a_candidate_is() -> None:
    lin = {"algorithm": "lin_ucb", "hyperparameters": {"alpha": 0.5}}
    ms = MetaSelector(ARMS, seed=0, candidates=[lin, GOOD], context_dim=2)
    assert ms.contextual and ms.candidate_policies[0].context_dim == 2  # type: ignore[attr-defined]
    assert not MetaSelector(ARMS, seed=0, candidates=[GOOD]).contextual
    assert MetaSelector.contextual_for({"candidates": [GOOD, lin]})
    assert not MetaSelector.contextual_for({"candidates": [GOOD]})
    assert not MetaSelector.contextual_for({})  # the default candidates
    # context_dim may come from the candidate instead.
    with_dim = {"algorithm": "lin_ucb", "hyperparameters": {"context_dim": 3}}
    assert MetaSelector(ARMS, seed=0, candidates=[with_dim]).context_dim == 3
    with pytest.raises(ContextError):
        ms.select()
    rng = np.random.default_rng(0)
    for _ in range(300):
        first = rng.random() < 0.5
        x = np.array([1.0, 0.0]) if first else np.array([0.0, 1.0])
        s = ms.select(x)
        assert s.propensity == float(ms.probabilities(None, x)[ARMS.index(s.arm)])
        best = "a" if first else "c"  # a context-dependent best arm
        ms.update(s.arm, float(s.arm == best), x)
    assert ms.select([1.0, 0.0], explore=False).arm == "a"
    assert ms.select([0.0, 1.0], explore=False).arm == "c"
    assert ms.candidate_weights()["0:lin_ucb"] > 0.5


def test_set_params_keeps_what_unchanged_candidates_learnt() -> None:
    ms = MetaSelector(ARMS, seed=0, candidates=[GOOD, BAD])
    play(ms, 200, seed=2)
    ts_stats = ms.candidate_policies[0].stats()
    weights = ms.candidate_weights()
    ms.set_params(
        candidates=[
            {"algorithm": "thompson_sampling", "hyperparameters": {"propensity_samples": 500}},
            {"algorithm": "ucb1"},
        ]
    )
    ts, ucb = ms.candidate_policies
    assert ts.stats() == ts_stats and ts.propensity_samples == 500  # type: ignore[attr-defined]
    assert ucb.algorithm == "ucb1" and all(s["pulls"] == 0 for s in ucb.stats().values())
    assert ms._logw[0] == 0.0 and ms._logw[1] == 0.0  # the newcomer starts level with the leader
    assert ms.candidate_weights() != weights
    restored = MetaSelector.restore(ms.snapshot())
    assert isinstance(restored, MetaSelector)
    assert restored.candidate_weights() == ms.candidate_weights()


def test_config_can_name_it() -> None:
    cfg = PoliciesConfig.from_dict(
        {
            "policies": {
                "p": {
                    "algorithm": "meta_selector",
                    "hyperparameters": {"candidates": [GOOD, BAD], "gamma": 0.2},
                    "arms": [{"name": a, "model": a} for a in ARMS],
                }
            }
        }
    )
    policy = cfg.policies["p"].build()
    assert isinstance(policy, MetaSelector) and policy.gamma == 0.2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"candidates": []}, "at least one"),
        ({"candidates": [{"algorithm": "nope"}]}, "unknown algorithm"),
        ({"candidates": [{"hyperparameters": {}}]}, "algorithm name"),
        ({"candidates": [{"algorithm": "ucb1", "params": {}}]}, "unknown key"),
        ({"candidates": [{"algorithm": "meta_selector"}]}, "meta_selector"),
        ({"candidates": [GOOD], "meta": "ucb"}, "meta"),
        ({"candidates": [GOOD], "gamma": 0.0}, "gamma"),
        ({"candidates": [GOOD], "propensity_samples": 10}, "propensity_samples"),
        ({"candidates": [{"algorithm": "lin_ucb"}]}, "context_dim"),
        (
            {"candidates": [{"algorithm": "lin_ucb", "hyperparameters": {"context_dim": 3}}]}
            | {"context_dim": 2},
            "context_dim",
        ),
        ({"candidates": [{"algorithm": "ucb1", "hyperparameters": {"c": -1}}]}, "c must"),
    ],
)
def test_bad_hyperparameters_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MetaSelector(ARMS, seed=0, **kwargs)


def test_default_candidates_hedge_against_drift() -> None:
    ms = MetaSelector(ARMS, seed=0)
    assert [p.discount for p in ms.candidate_policies] == [1.0, 0.99]  # type: ignore[attr-defined]


def test_rewards_must_be_in_the_unit_interval() -> None:
    ms = MetaSelector(ARMS, seed=0, candidates=[GOOD, BAD])
    before = ms.snapshot()
    with pytest.raises(InvalidRewardError, match=r"\[0, 1\]"):
        ms.update("a", 1.5)
    assert ms.snapshot() == before


def test_explain_lists_the_candidates() -> None:
    ms = MetaSelector(ARMS, seed=0, candidates=[GOOD, BAD])
    play(ms, 20, seed=0)
    text = ms.explain(ms.select())
    assert "0:thompson_sampling" in text and "1:epsilon_greedy" in text
    assert all(math.isfinite(v["weight"]) for v in ms.candidate_stats().values())
