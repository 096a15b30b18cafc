"""The guardrails around a policy's selection (app/policies/guardrails.py):
each acts as documented, logs exact propensities, and is deterministic.
Seeded and broker-free."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.policies import EpsilonGreedy, LinUCB, Policy, ThompsonSampling, UnknownArmError
from app.policies.guardrails import (
    ArmEstimates,
    ExplorationBudget,
    GuardrailError,
    Guardrails,
    reconcile_arms,
)

ARMS = ["a", "b", "c", "d"]
MEANS = {"a": 0.8, "b": 0.6, "c": 0.4, "d": 0.2}


def trained_ts(seed: int = 0, rounds: int = 30) -> ThompsonSampling:
    """Thompson sampling with every arm tried ``rounds`` times: uncertain
    enough to explore, with ``a`` the greedy arm."""
    ts = ThompsonSampling(ARMS, seed=seed, propensity_samples=2000)
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for arm in ARMS:
            ts.update(arm, float(rng.random() < MEANS[arm]))
    return ts


def always_exploring(seed: int = 0) -> EpsilonGreedy:
    """ε = 1 over means that make ``a`` greedy: it explores 3 times in 4."""
    eg = EpsilonGreedy(ARMS, seed=seed, epsilon=1.0)
    for arm in ARMS:
        eg.update(arm, MEANS[arm])
    return eg


def choose(g: Guardrails, policy: Policy, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "context": None,
        "allowed": None,
        "request_meta": {},
        "tenant": "t",
        "priority": 5,
        "now_ms": 0,
    }
    args.update(kw)
    return g.choose(policy, **args)


# -- configuration -----------------------------------------------------------------------------


def test_from_config_reads_the_guardrails_mapping() -> None:
    g = Guardrails.from_config(
        {
            "max_explore_priority": 8,
            "exploration_budget": {"fraction": 0.1, "window_seconds": 3600},
            "min_pulls": 5,
            "strict_constraints": True,
            "prior_from": {"new": "old"},
        },
        seed=3,
    )
    assert g.max_explore_priority == 8
    assert g.budget is not None
    assert (g.budget.fraction, g.budget.window_seconds, g.budget.buckets) == (0.1, 3600.0, 60)
    assert (g.min_pulls, g.strict_constraints, g.prior_from) == (5, True, {"new": "old"})
    assert g.per_request
    none = Guardrails.from_config(None)
    assert (none.max_explore_priority, none.budget, none.min_pulls) == (11, None, 0)
    assert not none.per_request


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"max_explore_prio": 8}, "unknown guardrail"),
        ({"max_explore_priority": -1}, "max_explore_priority"),
        ({"min_pulls": 1.5}, "min_pulls"),
        ({"exploration_budget": {"fraction": 0.1}}, "window_seconds"),
        ({"exploration_budget": {"fraction": 1.5, "window_seconds": 60}}, "fraction"),
        ({"exploration_budget": {"fraction": 0.1, "window_seconds": 0}}, "window_seconds"),
        ({"exploration_budget": {"fraction": 0.1, "window_seconds": 9, "x": 1}}, "unknown key"),
        ({"strict_constraints": "yes"}, "strict_constraints"),
        ({"prior_from": {"a": "a"}}, "itself"),
        ({"prior_from": ["a"]}, "prior_from"),
    ],
)
def test_bad_guardrails_are_refused_by_name(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(GuardrailError, match=match):
        Guardrails.from_config(doc)


# -- priority ----------------------------------------------------------------------------------


def test_priority_at_or_above_the_limit_gets_the_greedy_arm() -> None:
    ts = trained_ts(rounds=3)
    g = Guardrails.from_config({"max_explore_priority": 8}, seed=0)
    greedy = ARMS[int(np.argmax(ts.scores()))]
    for priority in (8, 9, 10):
        for _ in range(20):
            s = choose(g, ts, priority=priority)
            assert (s.arm, s.propensity, s.explored) == (greedy, 1.0, False)
            assert s.guardrail == "priority" and "priority" in s.reason
    below = [choose(g, ts, priority=7) for _ in range(200)]
    assert all(s.guardrail is None for s in below)
    assert any(s.explored for s in below)
    probs = dict(zip(ARMS, ts.probabilities().tolist(), strict=True))
    assert all(s.propensity == pytest.approx(probs[s.arm]) for s in below)


# -- exploration budget ------------------------------------------------------------------------


def test_budget_caps_each_tenants_explored_share() -> None:
    eg = always_exploring()
    g = Guardrails.from_config(
        {"exploration_budget": {"fraction": 0.1, "window_seconds": 3600}}, seed=0
    )
    explored = 0
    gated = 0
    for i in range(500):
        s = choose(g, eg, tenant="acme", now_ms=i * 100)
        explored += s.explored
        assert explored <= 0.1 * (i + 1) + 1e-9, i
        if s.guardrail == "exploration_budget":
            gated += 1
            assert (s.arm, s.propensity, s.explored) == ("a", 1.0, False)
            assert "acme" in s.reason
        else:
            assert s.propensity == pytest.approx(0.25)
    assert explored >= 40  # the budget is used, not just refused
    assert gated > 300
    assert g.budget is not None and g.budget.usage("acme", 500 * 100) == (500, explored)
    # Another tenant has its own budget: fresh, it is refused its first 9 explorations.
    other = [choose(g, eg, tenant="globex", now_ms=50_000) for _ in range(10)]
    assert [s.guardrail for s in other[:9]] == ["exploration_budget"] * 9
    assert other[9].guardrail is None


def test_budget_window_rolls() -> None:
    b = ExplorationBudget(fraction=0.5, window_seconds=10, buckets=10)  # 1 s buckets
    for _ in range(4):
        b.record("t", now_ms=0, explored=True)
    for _ in range(4):
        b.record("t", now_ms=5_000, explored=False)
    assert b.usage("t", 9_999) == (8, 4)
    assert not b.may_explore("t", 9_999)  # 5 <= 0.5 * 9 fails
    # At 10.0 s the window is buckets 1..10: the four at 0 s have left it.
    assert b.usage("t", 10_000) == (4, 0)
    assert b.may_explore("t", 10_000)
    assert b.usage("t", 15_000) == (0, 0)
    assert b.usage("nobody", 15_000) == (0, 0)


def test_budget_forgets_the_least_recently_seen_tenant() -> None:
    b = ExplorationBudget(fraction=0.5, window_seconds=10, max_tenants=2)
    b.record("x", 0, True)
    b.record("y", 0, True)
    b.record("x", 1, False)  # x is now the most recent
    b.record("z", 2, False)
    assert b.usage("y", 3) == (0, 0)
    assert b.usage("x", 3) == (2, 1)


def test_zero_budget_never_explores() -> None:
    eg = always_exploring()
    g = Guardrails.from_config({"exploration_budget": {"fraction": 0, "window_seconds": 60}})
    picks = {choose(g, eg, now_ms=i).arm for i in range(100)}
    assert picks == {"a"}


# -- cost and latency constraints --------------------------------------------------------------


def estimates_guardrails(strict: bool = False) -> Guardrails:
    g = Guardrails.from_config({"strict_constraints": strict}, seed=0)
    for cost, latency, arm in [(0.03, 500.0, "a"), (0.01, 3000.0, "b"), (0.002, 900.0, "c")]:
        for jitter in (0.9, 1.1):  # means are the figures above
            g.observe(arm, {"cost_usd": cost * jitter, "latency_ms": latency * jitter})
    return g  # "d" has no data


def test_constraints_filter_the_allowed_arms_by_the_estimates() -> None:
    g = estimates_guardrails()
    ts = trained_ts()
    s = choose(g, ts, request_meta={"max_cost_usd": 0.015})
    assert s.allowed == ["b", "c", "d"]  # d is unknown: allowed
    assert s.guardrail == "constraints" and "'a'" in s.reason
    assert s.arm in s.allowed
    assert s.propensity == pytest.approx(float(ts.probabilities(s.allowed)[s.allowed.index(s.arm)]))
    s = choose(g, ts, request_meta={"max_cost_usd": 0.015, "max_latency_ms": 1000})
    assert s.allowed == ["c", "d"]
    s = choose(g, ts, request_meta={"max_latency_ms": 10_000})  # everything fits: no action
    assert (s.allowed, s.guardrail) == (ARMS, None)
    strict = estimates_guardrails(strict=True)
    assert choose(strict, ts, request_meta={"max_cost_usd": 0.015}).allowed == ["b", "c"]


@pytest.mark.parametrize(
    ("meta", "arm"),
    [
        ({"max_cost_usd": 0.001}, "c"),  # lowest cost
        ({"max_latency_ms": 100}, "a"),  # lowest latency
        # c: max(0.002 / 0.001, 900 / 400) = 2.25; a: max(30, 1.25); b: max(10, 7.5)
        ({"max_cost_usd": 0.001, "max_latency_ms": 400}, "c"),
        # a: max(0.03 / 0.025, 500 / 450) = 1.2; c: max(0.08, 2) = 2; b: max(0.4, 6.67)
        ({"max_cost_usd": 0.025, "max_latency_ms": 450}, "a"),
    ],
)
def test_nothing_left_falls_back_to_the_least_overshooting_arm(
    meta: dict[str, float], arm: str
) -> None:
    g = estimates_guardrails(strict=True)  # strict: the unknown d is filtered out too
    s = choose(g, trained_ts(), request_meta=meta)
    assert (s.arm, s.propensity, s.explored, s.flagged) == (arm, 1.0, False, True)
    assert s.guardrail == "constraints_fallback" and s.allowed == [arm]
    assert "overshoots least" in s.reason


def test_fallback_ranks_unknown_arms_last_then_by_allowed_order() -> None:
    g = Guardrails.from_config({"strict_constraints": True})
    s = choose(g, trained_ts(), allowed=["d", "b"], request_meta={"max_cost_usd": 0.01})
    assert (s.arm, s.flagged) == ("d", True)


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "0.01", True])
def test_bad_limits_are_refused(bad: Any) -> None:
    with pytest.raises(GuardrailError, match="max_cost_usd"):
        choose(Guardrails(), trained_ts(), request_meta={"max_cost_usd": bad})


def test_arm_estimates_are_running_means_and_round_trip() -> None:
    est = ArmEstimates()
    for c in (0.01, 0.02, 0.06):
        est.observe("a", {"cost_usd": c, "error": True})
    est.observe("a", {"latency_ms": 1200})
    est.observe("b", {"cost_usd": float("nan"), "latency_ms": -3})  # skipped
    assert est.mean("a", "cost_usd") == pytest.approx(0.03)
    assert (est.count("a", "cost_usd"), est.count("a", "latency_ms")) == (3, 1)
    assert est.mean("b", "cost_usd") is None and est.count("b", "latency_ms") == 0
    again = ArmEstimates.from_dict(est.to_dict())
    assert again.to_dict() == est.to_dict()
    stats = {"a": {"pulls": 4.0, **est.arm_stats()["a"]}}
    assert ArmEstimates.from_arm_stats(stats).to_dict() == est.to_dict()
    est.forget("a")
    assert est.mean("a", "cost_usd") is None


# -- warm-up -----------------------------------------------------------------------------------


def test_warm_up_tries_under_pulled_arms_first_with_exact_propensities() -> None:
    min_pulls = 3
    ts = ThompsonSampling(ARMS, seed=0, propensity_samples=1000)
    ts.update("a", 1.0)
    ts.update("a", 1.0)
    ts.update("a", 1.0)
    g = Guardrails.from_config({"min_pulls": min_pulls}, seed=1)
    rng = np.random.default_rng(2)
    for _ in range(min_pulls * 3):  # b, c, d need 3 pulls each
        pulls = {arm: s["pulls"] for arm, s in ts.stats().items()}
        under = [a for a in ARMS if pulls[a] < min_pulls]
        s = choose(g, ts)
        assert s.guardrail == "warm_up"
        assert s.arm in under
        assert s.propensity == 1.0 / len(under)
        assert s.selection.probabilities == {a: (1.0 / len(under)) * (a in under) for a in ARMS}
        ts.update(s.arm, float(rng.random() < MEANS[s.arm]))
    assert all(s["pulls"] == min_pulls for s in ts.stats().values())
    assert choose(g, ts).guardrail is None


def test_warm_up_draws_are_uniform() -> None:
    ts = ThompsonSampling(ARMS, seed=0, propensity_samples=1000)
    g = Guardrails.from_config({"min_pulls": 1}, seed=5)
    n = 8000
    counts = {a: 0 for a in ARMS}
    for _ in range(n):
        counts[choose(g, ts).arm] += 1
    observed = np.array(list(counts.values()), dtype=float)
    chi2 = float(((observed - n / 4) ** 2 / (n / 4)).sum())
    assert chi2 < 21.1, counts  # 99.99th percentile, 3 degrees of freedom


def test_warm_up_yields_to_priority_and_budget_and_constraints() -> None:
    ts = ThompsonSampling(ARMS, seed=0, propensity_samples=1000)
    ts.update("b", 1.0)
    g = Guardrails.from_config(
        {
            "max_explore_priority": 8,
            "min_pulls": 1,
            "exploration_budget": {"fraction": 0.5, "window_seconds": 60},
        },
        seed=0,
    )
    s = choose(g, ts, priority=9)
    assert (s.arm, s.guardrail) == ("b", "priority")
    s = choose(g, ts, tenant="new")  # first request of a tenant: no budget yet
    assert (s.arm, s.guardrail, s.propensity) == ("b", "exploration_budget", 1.0)
    g.observe("c", {"cost_usd": 1.0})
    s = choose(g, ts, allowed=["a", "c"], tenant="x", request_meta={"max_cost_usd": 0.5})
    s2 = choose(g, ts, allowed=["a", "c"], tenant="x", request_meta={"max_cost_usd": 0.5})
    assert (s2.arm, s2.allowed, s2.acted, s2.propensity) == (
        "a",
        ["a"],
        ["constraints", "warm_up"],
        1.0,
    )
    assert s.acted == ["constraints", "exploration_budget"]


def test_same_seed_same_choices() -> None:
    def run(seed: int) -> list[str]:
        ts = ThompsonSampling(ARMS, seed=seed, propensity_samples=1000)
        g = Guardrails.from_config(
            {"min_pulls": 2, "exploration_budget": {"fraction": 0.5, "window_seconds": 5}},
            seed=seed,
        )
        rng = np.random.default_rng(0)
        out = []
        for i in range(80):
            s = choose(g, ts, now_ms=i * 100, tenant=f"t{i % 3}")
            out.append(s.arm)
            ts.update(s.arm, float(rng.random() < MEANS[s.arm]))
        return out

    assert run(4) == run(4)
    assert run(4) != run(5)


def test_contextual_policy_and_unknown_arms() -> None:
    lin = LinUCB(ARMS, seed=0, context_dim=2)
    g = Guardrails.from_config({"max_explore_priority": 8, "min_pulls": 1}, seed=0)
    s = choose(g, lin, context=[0.5, 1.0])
    assert s.guardrail == "warm_up" and s.propensity == 0.25
    s = choose(g, lin, context=[0.5, 1.0], priority=10)
    assert s.propensity == 1.0 and set(s.selection.scores) == set(ARMS)
    with pytest.raises(UnknownArmError, match="'zz'"):
        choose(g, lin, context=[0.5, 1.0], allowed=["a", "zz"])


# -- prior transfer ----------------------------------------------------------------------------


def test_reconcile_copies_the_similar_arms_state_into_the_new_arm() -> None:
    ts = trained_ts(rounds=60)
    report = reconcile_arms(ts, ["b", "c", "a-v2", "fresh"], {"a-v2": "a", "fresh": "nope"})
    assert report == {
        "added": ["a-v2", "fresh"],
        "copied": {"a-v2": "a"},
        "missing_prior": ["fresh"],
        "removed": ["a", "d"],
    }
    assert ts.arms == ["b", "c", "a-v2", "fresh"]
    stats = ts.stats()
    assert stats["a-v2"]["pulls"] == 0  # the copy is a prior, not observations
    assert (stats["fresh"]["alpha"], stats["fresh"]["beta"]) == (1.0, 1.0)
    # The new version is as good as the old one was: the policy's favourite at once.
    assert ts.select(explore=False).arm == "a-v2"


def test_reconcile_prior_transfer_gives_the_new_arm_the_sources_scores() -> None:
    before = trained_ts(rounds=60)
    source_alpha = before.stats()["a"]["alpha"]
    reconcile_arms(before, [*ARMS, "a-v2"], {"a-v2": "a"})
    assert before.stats()["a-v2"]["alpha"] == source_alpha
    assert float(before.scores(["a-v2"])[0]) == float(before.scores(["a"])[0])
    # Chains: a new arm may copy another new arm, added first.
    chained = trained_ts(rounds=10)
    r = reconcile_arms(chained, ["a", "x2", "x1"], {"x2": "x1", "x1": "b"})
    assert r["added"] == ["x1", "x2"] and r["copied"] == {"x1": "b", "x2": "x1"}
    np.testing.assert_allclose(chained.scores(["x2"]), chained.scores(["x1"]))
    # A cycle cannot be resolved: one arm starts afresh and the other copies it.
    cyc = trained_ts(rounds=5)
    r = reconcile_arms(cyc, [*ARMS, "p", "q"], {"p": "q", "q": "p"})
    assert r["missing_prior"] == ["p"] and r["copied"] == {"q": "p"}
