"""Trade-off decisions: presets and weights, the Pareto front and its
hypervolume against hand-computed cases, and the decider choosing for a
request's trade-off from the objectives a snapshot carries."""

from __future__ import annotations

import base64
import itertools

import numpy as np
import pytest

from app.decider import Decider
from app.join import _outcome_doc
from app.learner import Learner
from app.policies.config import PoliciesConfig
from app.policies.guardrails import ArmEstimates
from app.policies.tradeoff import (
    PRESETS,
    Tradeoff,
    TradeoffError,
    confident_front,
    hypervolume,
    learned_front,
    moments_add,
    moments_merge,
    pareto_front,
    scales_of,
    win_probabilities,
)
from app.records import InvalidEvent, Outcome, PolicySnapshot, Request

SCALES = scales_of(0.02, 8000.0)
# (quality, cost_usd, latency_ms) of three arms in the task type "qa": a
# strong, dear and slow arm; a cheap, fast and weak one; one in between.
TABLE = {
    "strong": (0.95, 0.015, 4000.0),
    "cheap": (0.55, 0.0005, 800.0),
    "middle": (0.80, 0.004, 1500.0),
}


# -- presets and weights -------------------------------------------------------------------------


def test_presets_are_normalised_weights() -> None:
    for name, weights in PRESETS.items():
        t = Tradeoff.parse(name)
        assert t.preset == name and t.weights == weights
        assert sum(weights) == pytest.approx(1.0)
    assert Tradeoff.parse("balanced").record() == {
        "preset": "balanced",
        "weights": {"quality": 0.5, "cost": 0.25, "latency": 0.25},
    }


def test_explicit_weights_are_normalised_and_missing_ones_are_zero() -> None:
    t = Tradeoff.parse({"quality": 3, "cost": 1})
    assert t.preset is None and t.weights == (0.75, 0.25, 0.0)
    assert t.record() == {"weights": {"quality": 0.75, "cost": 0.25, "latency": 0.0}}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("fastest", "unknown trade-off preset 'fastest'"),
        ({}, "must not all be zero"),
        ({"quality": 0, "cost": 0.0}, "must not all be zero"),
        ({"quality": -1}, "'quality' must be a number"),
        ({"quality": float("nan")}, "'quality' must be a number"),
        ({"cost": True}, "'cost' must be a number"),
        ({"speed": 1}, "unknown trade-off weight(s) ['speed']"),
        (["balanced"], "a preset name or"),
    ],
)
def test_invalid_tradeoffs_are_rejected_with_the_reason(value: object, says: str) -> None:
    with pytest.raises(TradeoffError) as err:
        Tradeoff.parse(value)
    assert says in str(err.value)


# -- moments, front, hypervolume ---------------------------------------------------------------


def test_moments_merge_like_one_pass_over_all_values() -> None:
    rng = np.random.default_rng(0)
    xs = rng.gamma(2.0, 3.0, 101)
    whole = [0.0, 0.0, 0.0]
    parts = [[0.0, 0.0, 0.0] for _ in range(3)]
    for i, x in enumerate(xs):
        moments_add(whole, float(x))
        moments_add(parts[i % 3], float(x))
    merged = moments_merge(moments_merge(parts[0], parts[1]), parts[2])
    assert merged == pytest.approx(whole)
    assert whole[1] == pytest.approx(xs.mean()) and whole[2] == pytest.approx(
        ((xs - xs.mean()) ** 2).sum()
    )


def test_pareto_front_of_a_hand_made_set() -> None:
    pts = np.array(
        [
            [3.0, 1.0, 1.0],  # on: best first objective
            [1.0, 3.0, 1.0],  # on
            [1.0, 1.0, 3.0],  # on
            [1.0, 1.0, 1.0],  # dominated by each of the above
            [3.0, 1.0, 0.5],  # dominated by the first (equal, then worse)
            [2.0, 2.0, 2.0],  # on
        ]
    )
    assert pareto_front(pts) == [0, 1, 2, 5]


def test_hypervolume_against_hand_computed_volumes() -> None:
    ref = [0.0, 0.0, 0.0]
    assert hypervolume(np.array([[2.0, 3.0, 4.0]]), ref) == pytest.approx(24.0)
    # Two boxes 2×1×1 and 1×2×1 overlap in 1×1×1: 2 + 2 − 1.
    assert hypervolume(np.array([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0]]), ref) == pytest.approx(3.0)
    # Three unit-overlapping boxes: inclusion–exclusion 3·2 − 3·1 + 1.
    three = np.array([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 1.0, 2.0]])
    assert hypervolume(three, ref) == pytest.approx(4.0)
    # A dominated point adds nothing; a point not beyond the reference neither.
    more = np.vstack([three, [[0.5, 0.5, 0.5], [5.0, 5.0, -1.0]]])
    assert hypervolume(more, ref) == pytest.approx(4.0)
    # Boxes of 1.5×0.5×0.5 from (0.5, 0.5, 0.5), overlapping in 0.5³: 3·0.375 − 3·0.125 + 0.125.
    assert hypervolume(three, [0.5, 0.5, 0.5]) == pytest.approx(0.875)
    assert hypervolume(three, [1.0, 1.0, 1.0]) == 0.0  # nothing strictly beyond it


def test_hypervolume_matches_a_grid_count_on_random_points() -> None:
    rng = np.random.default_rng(7)
    pts = rng.integers(1, 6, size=(6, 3)).astype(float)
    grid = itertools.product(*(np.arange(5) + 0.5 for _ in range(3)))
    count = sum(any(np.all(p > np.array(c)) for p in pts) for c in grid)
    assert hypervolume(pts, [0.0, 0.0, 0.0]) == pytest.approx(count)


def test_an_arm_is_off_the_front_only_when_dominated_with_confidence() -> None:
    means = np.array([TABLE["strong"], TABLE["cheap"], TABLE["middle"], (0.75, 0.005, 1700.0)])
    sure = np.full((4, 3), 1e-9)
    assert confident_front(means, sure, SCALES) == [0, 1, 2]  # the fourth: worse than "middle"
    unsure = np.tile([0.05, 0.001, 200.0], (4, 1))
    assert confident_front(means, unsure, SCALES) == [0, 1, 2, 3]


def test_win_probabilities_follow_the_weights_and_the_uncertainty() -> None:
    means = np.array([TABLE["strong"], TABLE["cheap"], TABLE["middle"]])
    sure = np.full((3, 3), 1e-9)
    quality = win_probabilities(means, sure, PRESETS["quality_first"], SCALES, [1])
    cost = win_probabilities(means, sure, PRESETS["cost_first"], SCALES, [1])
    assert quality == [1.0, 0.0, 0.0] and cost == [0.0, 1.0, 0.0]
    wide = np.tile([0.3, 0.01, 3000.0], (3, 1))
    probs = win_probabilities(means, wide, PRESETS["balanced"], SCALES, [1])
    assert sum(probs) == pytest.approx(1.0) and min(probs) > 0.05  # uncertain: explores
    assert probs == win_probabilities(means, wide, PRESETS["balanced"], SCALES, [1])


# -- estimates, the learner, the join ----------------------------------------------------------


def estimates_of(table: dict[str, tuple[float, float, float]], task: str = "qa") -> ArmEstimates:
    """Ten outcomes of each arm around its table values (± 1%)."""
    est = ArmEstimates()
    for arm, (q, c, lat) in table.items():
        for f in (0.99, 1.01) * 5:
            est.observe(arm, {"quality": q * f, "cost_usd": c * f, "latency_ms": lat * f}, task)
    return est


def test_estimates_pool_over_shards_and_travel_in_arm_stats() -> None:
    a, b = estimates_of(TABLE), estimates_of({"strong": (0.5, 0.02, 9000.0)}, "code")
    pooled = ArmEstimates.pooled([a, b])
    assert pooled.task_types() == ["code", "qa"]
    assert pooled.objectives("qa") == a.objectives("qa")
    back = ArmEstimates.from_arm_stats(pooled.arm_stats())
    assert back.to_dict() == pooled.to_dict()
    every = pooled.objectives_pooled()["strong"]["quality"]
    assert every[0] == 20 and every[1] == pytest.approx((0.95 + 0.5) / 2)
    assert pooled.objectives("translation") == {}  # an unknown type counts as "other"
    pooled.forget("strong")
    assert "strong" not in pooled.objectives("qa")


def config(**policy: object) -> PoliciesConfig:
    arms = [{"name": a, "model": a} for a in TABLE]
    return PoliciesConfig.from_dict(
        {"policies": {"p": {"algorithm": "thompson_sampling", "arms": arms, **policy}}}
    )


def test_the_learner_ships_objectives_and_the_join_copies_the_task_type() -> None:
    cfg = config()
    learner = Learner(cfg)
    learner.load("p", None, 0)
    decision = Decider(cfg, seed=0).decide([request("r0", task_type="code")], 1)[0]
    assert isinstance(decision, dict) and decision["task_type"] == "code"
    components = {"quality": 0.9, "cost_usd": 0.01, "latency_ms": 900.0}
    doc = _outcome_doc(decision, 0.8, components, False, 5)
    assert doc["task_type"] == "code"
    assert learner.apply(Outcome.from_dict(doc), 0, 0) == "applied"
    snap = learner.snapshot("p", 10)
    arm = decision["arm"]
    assert snap.arm_stats[arm]["objectives"]["code"]["quality"] == [1.0, 0.9, 0.0]
    state = learner.state("p")
    assert ArmEstimates.from_dict(state["estimates"]).objectives("code")[arm]["cost_usd"][1] == 0.01


# -- the decider ---------------------------------------------------------------------------------


def request(rid: str, task_type: str = "qa", **fields: object) -> Request:
    return Request(request_id=rid, tenant_id="t", task_type=task_type, created_at=0, **fields)  # type: ignore[arg-type]


def decider_with(table: dict[str, tuple[float, float, float]], **policy: object) -> Decider:
    cfg = config(**policy)
    d = Decider(cfg, seed=0)
    prior = cfg.policies["p"].build()
    snap = PolicySnapshot(
        policy_id="p",
        version=1,
        algorithm="thompson_sampling",
        state=base64.b64encode(prior.snapshot()).decode(),
        updates=30,
        arm_stats={
            a: {**s, **estimates_of(table).arm_stats().get(a, {})} for a, s in prior.stats().items()
        },
        created_at=0,
    )
    assert d.apply_snapshot(snap)
    return d


@pytest.mark.parametrize(
    ("preset", "arm"),
    [("quality_first", "strong"), ("balanced", "middle"), ("cost_first", "cheap")],
)
def test_each_preset_picks_its_arm_on_a_known_table(preset: str, arm: str) -> None:
    d = decider_with(TABLE)
    docs = d.decide([request(f"r{i}", tradeoff=preset) for i in range(200)], 1)
    assert all(isinstance(doc, dict) for doc in docs)
    chosen = {doc["arm"] for doc in docs if isinstance(doc, dict)}
    assert chosen == {arm}  # ten outcomes within 1%: no doubt left
    doc = docs[0]
    assert isinstance(doc, dict)
    assert doc["tradeoff"] == {
        "preset": preset,
        "weights": dict(zip(("quality", "cost", "latency"), PRESETS[preset], strict=True)),
    }
    assert doc["propensity"] == 1.0 and doc["explored"] is False
    assert max(doc["scores"], key=doc["scores"].get) == arm


def test_an_uncertain_choice_logs_the_probability_it_was_drawn_with() -> None:
    table = {a: (0.7, 0.005, 2000.0) for a in TABLE}  # alike: every arm may win
    d = decider_with(table)
    docs = [
        doc
        for doc in d.decide([request(f"r{i}", tradeoff="balanced") for i in range(3000)], 1)
        if isinstance(doc, dict)
    ]
    choice = d.tradeoff_choice("p", "qa", Tradeoff.parse("balanced"))
    for doc in docs:
        assert doc["propensity"] == choice[doc["arm"]][0]
    shares = {a: sum(doc["arm"] == a for doc in docs) / len(docs) for a in TABLE}
    for a, (p, _) in choice.items():
        assert shares[a] == pytest.approx(p, abs=0.04)
    assert len({doc["arm"] for doc in docs}) == 3


def test_hard_caps_filter_the_arms_before_the_tradeoff() -> None:
    d = decider_with(TABLE)
    capped = request("r", tradeoff="quality_first", metadata={"max_cost_usd": 0.01})
    doc = d.decide([capped], 1)[0]
    assert isinstance(doc, dict)
    assert doc["arm"] == "middle" and "strong" not in doc["available_arms"]
    slow = request("s", tradeoff="quality_first", metadata={"max_latency_ms": 100})
    doc = d.decide([slow], 1)[0]
    assert isinstance(doc, dict)
    assert doc["fallback"] is True and doc["fallback_reason"] == "constraints"
    assert doc["arm"] == "cheap" and doc["tradeoff"]["preset"] == "quality_first"


def test_high_priority_gets_the_greedy_arm_of_its_tradeoff() -> None:
    d = decider_with(
        {a: (0.7, 0.005, 2000.0) for a in TABLE}, guardrails={"max_explore_priority": 8}
    )
    docs = d.decide([request(f"r{i}", tradeoff="balanced", priority=9) for i in range(50)], 1)
    assert {doc["propensity"] for doc in docs if isinstance(doc, dict)} == {1.0}
    assert len({doc["arm"] for doc in docs if isinstance(doc, dict)}) == 1


def test_an_invalid_tradeoff_is_an_invalid_value_with_its_reason() -> None:
    d = decider_with(TABLE)
    bad, zero, ok = d.decide(
        [
            request("a", tradeoff="fastest"),
            request("b", tradeoff={"quality": 0}),
            request("c", tradeoff={"cost": 1}),
        ],
        1,
    )
    assert isinstance(bad, InvalidEvent) and bad.code == "invalid_value"
    assert "unknown trade-off preset 'fastest'" in bad.detail
    assert isinstance(zero, InvalidEvent) and "must not all be zero" in zero.detail
    assert isinstance(ok, dict) and ok["arm"] == "cheap"


def test_without_a_tradeoff_the_policy_decides_as_before() -> None:
    d, same = decider_with(TABLE), decider_with(TABLE)
    plain = [request(f"r{i}") for i in range(100)]
    docs = d.decide(plain, 1)
    assert all(isinstance(doc, dict) and "tradeoff" not in doc for doc in docs)
    assert docs == same.decide(plain, 1)
    assert {doc["arm"] for doc in docs if isinstance(doc, dict)} == set(TABLE)  # the policy's prior


def test_the_front_per_task_type() -> None:
    table = {**TABLE, "worse": (0.75, 0.006, 2000.0)}
    cfg_arms = list(table)
    est = estimates_of(table)
    rows = learned_front(cfg_arms, est.objectives("qa"), SCALES)
    assert [(r.arm, r.on_front, r.outcomes) for r in rows] == [
        ("strong", True, 10),
        ("cheap", True, 10),
        ("middle", True, 10),
        ("worse", False, 10),
    ]
    d = decider_with(TABLE)
    front = d.front("p")
    assert list(front) == ["qa"] and [r.arm for r in front["qa"] if r.on_front] == list(TABLE)
    assert front["qa"][0].means[0] == pytest.approx(0.95)
