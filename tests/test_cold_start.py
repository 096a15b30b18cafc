"""Cold start (docs/warm-start.md#cold-start): a new task type decides from
the most similar known task types' state, pooled and shrunk to a prior, with
exact propensities through the learner and the decider, and learns faster
than from a fresh prior on the simulator. Seeded and broker-free."""

from __future__ import annotations

import base64
import statistics
from typing import Any

import numpy as np
import pytest

from app.decider import Decider
from app.evaluation.simulator import TrafficSimulator
from app.features.request_vector import FEATURE_NAMES, RequestVectorizer
from app.learner import Learner
from app.policies.base import InvalidRewardError
from app.policies.cold_start import nearest, pooled, shrunk
from app.policies.config import PoliciesConfig, PolicyConfigError
from app.policies.per_task_type import PerTaskType
from app.policies.thompson_sampling import ThompsonSampling
from app.policies.ucb1 import UCB1
from app.records import Outcome, Request

ARMS = ["a", "b", "c"]
T0 = 1_700_000_000_000


def row(task: str, size: float = 0.5, priority: float = 0.5) -> np.ndarray:
    x = np.zeros(len(FEATURE_NAMES))
    x[0], x[1], x[2] = 1.0, size, priority
    x[FEATURE_NAMES.index(f"task_{task}")] = 1.0
    return x


def teach(policy: PerTaskType, task: str, means: dict[str, float], n: int, size: float) -> None:
    """``n`` rounds of every arm at its mean reward, for ``task``."""
    for _ in range(n):
        for arm, r in means.items():
            policy.update(arm, r, row(task, size))


QA = {"a": 0.9, "b": 0.5, "c": 0.1}
CODE = {"a": 0.1, "b": 0.5, "c": 0.9}


# -- similarity and shrinkage -------------------------------------------------------------------
def test_nearest_ranks_by_distance_then_name() -> None:
    means = {"qa": [0.4, 0.5], "code": [0.9, 0.5], "chat": [0.5, 0.5], "creative": [0.6, 0.5]}
    assert nearest([0.5, 0.5], means, 3) == ["chat", "creative", "qa"]  # creative == qa: by name
    assert nearest([1.0, 0.5], means, 1) == ["code"]
    assert nearest([0.5, 0.5], {}, 2) == []


def test_shrinking_keeps_each_arms_estimate_at_the_prior_strength() -> None:
    ts = ThompsonSampling(ARMS, seed=0)
    for _ in range(400):
        ts.update("a", 0.8)
    for _ in range(5):
        ts.update("b", 0.3)
    before = ts.stats()
    after = shrunk(ts, 20.0).stats()
    # a: 400 pulls → about 20 pulls' weight (the prior's 2 pseudo-counts scale with it)
    assert after["a"]["alpha"] + after["a"]["beta"] == pytest.approx(0.05 * 402)
    assert after["a"]["posterior_mean"] == pytest.approx(before["a"]["posterior_mean"])
    # b: fewer pulls than the prior strength: as it was
    assert after["b"] == before["b"]


def test_shrinking_a_count_based_policy_scales_its_counts() -> None:
    ucb = UCB1(ARMS, seed=0)
    for _ in range(100):
        ucb.update("a", 1.0)
    shrunk(ucb, 10.0)
    assert ucb.arm_evidence("a") == {"n": pytest.approx(10.0)}
    assert ucb.stats()["a"]["value"] == 1.0  # the estimate kept


def test_pooling_adds_the_neighbours_evidence() -> None:
    fresh = ThompsonSampling(ARMS, seed=0)
    one, two = ThompsonSampling(ARMS, seed=0), ThompsonSampling(ARMS, seed=0)
    for _ in range(30):
        one.update("a", 1.0)
        two.update("a", 0.0)
    both = pooled(fresh, [one, two]).stats()["a"]
    assert (both["alpha"], both["beta"]) == (31.0, 31.0)
    # A policy whose states do not merge takes the nearest neighbour's.
    assert pooled(fresh, [one]).stats()["a"]["alpha"] == 31.0


# -- the policy ------------------------------------------------------------------------------
def trained(**params: Any) -> PerTaskType:
    policy = PerTaskType(ARMS, seed=3, neighbours=1, prior_strength=10.0, **params)
    teach(policy, "qa", QA, 200, size=0.3)
    teach(policy, "code", CODE, 200, size=0.9)
    return policy


def test_a_new_task_type_decides_from_its_nearest_known_one() -> None:
    policy = trained()
    assert policy.neighbours_of("chat", row("chat", 0.35)) == ["qa"]
    assert policy.neighbours_of("chat", row("chat", 0.8)) == ["code"]
    assert policy.select(row("chat", 0.35), explore=False).arm == "a"
    assert policy.select(row("chat", 0.8), explore=False).arm == "c"
    fresh = PerTaskType(ARMS, seed=3)
    # The transferred prior is confident, a fresh one is not.
    assert max(policy.probabilities(None, row("chat", 0.35))) > 0.9
    assert max(fresh.probabilities(None, row("chat", 0.35))) < 0.5


def test_the_prior_is_shrunk_so_the_new_task_types_outcomes_take_over() -> None:
    policy = trained(settle_outcomes=1)
    for _ in range(40):  # chat looks like qa but rewards like code
        teach(policy, "chat", CODE, 1, size=0.3)
    assert policy.origins()["chat"] == ["qa"]
    assert policy.select(row("chat", 0.3), explore=False).arm == "c"
    # qa and code kept their own states.
    assert policy.select(row("qa", 0.3), explore=False).arm == "a"


def test_a_settling_task_type_is_matched_on_the_mean_of_its_outcomes() -> None:
    policy = trained(settle_outcomes=4)
    # One odd-sized first request, then the task type's usual size.
    for size in (0.85, 0.3, 0.3, 0.3):
        policy.update("b", 0.5, row("chat", size))
    assert policy.origins()["chat"] == ["qa"]  # mean 0.44: nearer qa's 0.3 than code's 0.9
    assert policy.segment_stats()["chat"]["b"]["pulls"] > 4  # the prior's pulls and its four


def test_declared_mapping_and_none() -> None:
    declared = trained(similar={"chat": "code"})
    assert declared.neighbours_of("chat", row("chat", 0.3)) == ["code"]
    assert declared.neighbours_of("creative", row("creative", 0.3)) == []
    assert declared.select(row("chat", 0.3), explore=False).arm == "c"
    assert trained(similar="none").neighbours_of("chat", row("chat", 0.3)) == []


def test_propensities_are_the_probabilities_of_the_prior_decided_from() -> None:
    policy = trained(settle_outcomes=3)
    policy.update("b", 0.5, row("chat", 0.35))  # settling: the prior and this outcome
    x = row("chat", 0.35)
    probs = dict(zip(ARMS, policy.probabilities(None, x).tolist(), strict=True))
    counts: dict[str, int] = {}
    for _ in range(3000):
        s = policy.select(x)
        assert s.propensity == pytest.approx(probs[s.arm])
        counts[s.arm] = counts.get(s.arm, 0) + 1
    for arm, p in probs.items():
        assert counts.get(arm, 0) / 3000 == pytest.approx(p, abs=0.03)


def test_snapshot_restore_mid_settling_decides_and_learns_the_same() -> None:
    policy = trained(settle_outcomes=5)
    for _ in range(2):
        policy.update("a", 0.7, row("chat", 0.4))
    twin = PerTaskType.restore(policy.snapshot())
    for i in range(10):
        x = row("chat", 0.4)
        s, t = policy.select(x), twin.select(x)
        assert (s.arm, s.propensity) == (t.arm, t.propensity)
        policy.update(s.arm, 0.1 * i, x)
        twin.update(t.arm, 0.1 * i, x)
    assert policy.snapshot() == twin.snapshot()


def test_a_refused_reward_changes_nothing() -> None:
    policy = trained(settle_outcomes=3)
    before = policy.snapshot()
    for task in ("qa", "chat"):
        with pytest.raises(InvalidRewardError):
            policy.update("a", 1.5, row(task, 0.3))  # Thompson sampling needs [0, 1]
    assert policy.snapshot() == before


def test_the_wrapped_algorithm_keeps_its_hyperparameters_live() -> None:
    policy = trained()
    policy.set_params(
        policy={"algorithm": "thompson_sampling", "hyperparameters": {"discount": 0.9}}
    )
    assert policy.segment_stats().keys() == {"qa", "code"}  # kept
    policy.set_params(policy={"algorithm": "ucb1"})
    assert policy.segment_stats() == {}  # another algorithm starts afresh


# -- the config key ------------------------------------------------------------------------------
def policies(cold_start: Any, algorithm: str = "thompson_sampling", **extra: Any) -> PoliciesConfig:
    return PoliciesConfig.from_dict(
        {
            "default_policy": "p",
            "policies": {
                "p": {
                    "algorithm": algorithm,
                    "arms": [{"name": a, "model": f"m-{a}"} for a in ARMS],
                    "cold_start": cold_start,
                    **extra,
                }
            },
        }
    )


def test_cold_start_wraps_the_configured_algorithm() -> None:
    pc = policies({"similar": {"chat": ["qa", "code"]}, "prior_strength": 30}).policies["p"]
    assert pc.algorithm == "per_task_type" and pc.contextual
    assert pc.hyperparameters["policy"] == {"algorithm": "thompson_sampling", "hyperparameters": {}}
    assert pc.source["algorithm"] == "thompson_sampling"  # as written
    policy = pc.build()
    assert isinstance(policy, PerTaskType) and policy.prior_strength == 30.0
    assert pc.restore(policy.snapshot()).snapshot() == policy.snapshot()
    lin = policies({}, algorithm="lin_ucb").policies["p"].build()
    assert lin.policy["hyperparameters"]["context_dim"] == RequestVectorizer.dim  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("cold_start", "extra", "message"),
    [
        ({"similar": "nearest"}, {}, "cold_start.similar: unknown similar 'nearest'"),
        ({"similar": {"chatt": "qa"}}, {}, "unknown task type 'chatt'"),
        ({"similar": {"chat": []}}, {}, "expected a task type or a list"),
        ({"neighbors": 2}, {}, "cold_start.neighbors: unknown key"),
        ({"prior_strength": 0}, {}, "cold_start.prior_strength: must be in (0, inf]"),
        ({}, {"learning": "sharded"}, "per_task_type cannot"),
        ([], {}, "cold_start: expected a mapping"),
    ],
)
def test_bad_cold_start_names_the_key(cold_start: Any, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        policies(cold_start, **extra)


# -- through the learner and the decider ------------------------------------------------------
def test_the_decider_decides_a_new_task_type_from_the_learners_snapshot() -> None:
    """Outcomes of qa and code through the learner (each once, however
    often delivered); a decider holding its snapshot decides chat requests
    from the prior transferred from qa, with the probabilities of the policy
    the snapshot holds."""
    cfg = policies({"neighbours": 1, "prior_strength": 10})
    learner = Learner(cfg)
    learner.load("p", None, T0)
    vectorizer = RequestVectorizer()
    offset = 0
    for task, tokens, means in (("qa", 300, QA), ("code", 20_000, CODE)):
        for i in range(150):
            for arm, r in means.items():
                req = Request(
                    request_id=f"{task}-{i}-{arm}",
                    tenant_id="t",
                    task_type=task,
                    created_at=T0,
                    input_tokens=tokens,
                )
                outcome = Outcome(
                    request_id=req.request_id,
                    tenant_id="t",
                    policy_id="p",
                    policy_version=0,
                    arm=arm,
                    available_arms=ARMS,
                    propensity=1 / 3,
                    explored=False,
                    reward=r,
                    defaulted=False,
                    decided_at=T0,
                    outcome_at=T0,
                    task_type=task,
                    features=vectorizer.row(req),
                )
                assert learner.apply(outcome, 0, offset) == "applied"
                assert learner.apply(outcome, 0, offset) == "redelivered"
                offset += 1
    snap = learner.snapshot("p", T0)
    decider = Decider(cfg, seed=5)
    assert decider.apply_snapshot(snap)
    held = cfg.policies["p"].restore(base64.b64decode(snap.state))
    chats = [
        Request(
            request_id=f"chat-{i}", tenant_id="t", task_type="chat", created_at=T0, input_tokens=400
        )
        for i in range(400)
    ]
    decisions = decider.decide(chats, T0)
    arms = []
    for d in decisions:
        assert isinstance(d, dict)
        probs = held.probabilities(d["available_arms"], np.asarray(d["features"]))
        assert d["propensity"] == pytest.approx(float(probs[d["available_arms"].index(d["arm"])]))
        arms.append(d["arm"])
    assert arms.count("a") > 0.8 * len(arms)  # qa's best arm, from the first chat request


# -- learning on the simulator ------------------------------------------------------------------
def regret_on_new_task(similar: str, seed: int, known: int = 3000, new: int = 400) -> float:
    sim = TrafficSimulator.default(seed=seed, start_ms=0, drift=False)
    arms = [{"name": a.name, "model": a.model} for a in sim.arms.values()]
    pc = PoliciesConfig.from_dict(
        {
            "policies": {
                "p": {
                    "algorithm": "thompson_sampling",
                    "arms": arms,
                    "seed": seed,
                    "cold_start": {"similar": similar},
                }
            }
        }
    ).policies["p"]
    policy, vectorizer = pc.build(), RequestVectorizer()
    regret, seen_known, seen_new, now = 0.0, 0, 0, 0
    while seen_new < new:
        now += 50
        req = sim.next_request(now)
        if req.task_type == "chat" and seen_known < known:
            continue
        x = vectorizer.row(req)
        s = policy.select(x)
        expected = sim.expected_rewards(req, None, now)
        if req.task_type == "chat":
            regret += max(expected.values()) - expected[s.arm]
            seen_new += 1
        else:
            seen_known += 1
        r = sim.outcome(req, s.arm, now)
        reward = sim.reward_spec.scalar(
            quality=r.quality, cost_usd=r.cost_usd, latency_ms=r.latency_ms, error=r.error
        )
        policy.update(s.arm, reward, x, propensity=s.propensity)
    return regret


def test_a_transferred_prior_beats_a_fresh_one_on_a_new_task_type() -> None:
    seeds = [1, 2, 3, 4, 5]
    transferred = [regret_on_new_task("auto", s) for s in seeds]
    fresh = [regret_on_new_task("none", s) for s in seeds]
    assert statistics.median(transferred) < 0.7 * statistics.median(fresh), (transferred, fresh)
    assert sum(t < f for t, f in zip(transferred, fresh, strict=True)) >= 4
