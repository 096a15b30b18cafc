"""How policies adapt to a drift: every algorithm through the generic paths,
the evidence arithmetic by hand, the learner's adaptation events, and the
closed loop in process (a degraded best arm loses its traffic sooner)."""

from __future__ import annotations

import base64
import random
from collections import deque
from typing import Any

import numpy as np
import pytest

from app.decider import Decider
from app.drift import AdaptationSpec, DriftConfig, DriftMonitor, adapt
from app.learner import Learner
from app.policies import UCB1, EpsilonGreedy, Exp3, GaussianThompson, LinUCB, ThompsonSampling
from app.policies.base import Policy, UnknownArmError
from app.policies.config import ALGORITHMS, PoliciesConfig
from app.records import DriftEvent, Outcome

ARMS = ["a", "b", "c"]


def ctx(policy: Policy) -> np.ndarray | None:
    if not policy.contextual:
        return None
    return np.linspace(0.2, 1.0, policy.context_dim)  # type: ignore[attr-defined]


def trained(cls: type[Policy], seed: int = 0, rounds: int = 60) -> Policy:
    p = cls(ARMS, seed=seed, **cls.example_params)
    rng = random.Random(seed)
    for i in range(rounds):
        arm = ARMS[i % 3]
        p.update(arm, float(rng.random() < {"a": 0.9, "b": 0.5, "c": 0.2}[arm]), ctx(p),
                 propensity=1 / 3)  # fmt: skip
    return p


@pytest.mark.parametrize("action", ["reset", "discount", "explore"])
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_policy_adapts_and_keeps_its_contract(name: str, action: str) -> None:
    cls = ALGORITHMS[name]
    p = trained(cls)
    done = adapt(p, "a", action, 0.3)
    assert done.applied in {"reset_arm", "rebuild_arm", "discount_evidence", "shrink_evidence"}
    assert sorted(p.arms) == ARMS
    probs = p.probabilities(ARMS, ctx(p))
    assert probs.sum() == pytest.approx(1.0) and (probs >= 0).all()
    restored = cls.restore(p.snapshot())
    assert np.allclose(restored.scores(ARMS, ctx(p)), p.scores(ARMS, ctx(p)))
    p.update("a", 0.5, ctx(p), propensity=0.5)  # and it keeps learning


# Context-free policies whose arm scores depend on that arm alone (Exp3's weights are
# relative to the other arms, a meta-selector's mix its candidates').
ARM_LOCAL = sorted(
    n for n, c in ALGORITHMS.items() if not c.contextual and n not in ("exp3", "meta_selector")
)


@pytest.mark.parametrize("name", ARM_LOCAL)
def test_a_reset_arm_scores_like_a_fresh_one(name: str) -> None:
    cls = ALGORITHMS[name]
    p = trained(cls)
    assert p.scores(["a"])[0] != pytest.approx(
        cls(ARMS, seed=0, **cls.example_params).scores(["a"])[0]
    )
    adapt(p, "a", "reset")
    fresh = cls(ARMS, seed=0, **cls.example_params)
    assert p.scores(["a"])[0] == pytest.approx(fresh.scores(["a"])[0])


def test_thompson_sampling_evidence_by_hand() -> None:
    ts = ThompsonSampling(ARMS, seed=0, prior_alpha=2.0, prior_beta=1.0, propensity_samples=500)
    for r in [1.0] * 30 + [0.0] * 10:
        ts.update("a", r)
    assert (ts._alpha[0], ts._beta[0]) == (32.0, 11.0)
    adapt(ts, "a", "discount", 0.25)  # prior + 0.25 (value - prior)
    assert (ts._alpha[0], ts._beta[0]) == (2 + 0.25 * 30, 1 + 0.25 * 10)
    a, b = ts._alpha[0], ts._beta[0]
    adapt(ts, "a", "explore", 0.5)  # same mean, half the weight
    assert ts._alpha[0] + ts._beta[0] == pytest.approx((a + b) / 2)
    assert ts._alpha[0] / (ts._alpha[0] + ts._beta[0]) == pytest.approx(a / (a + b))
    adapt(ts, "a", "explore", 0.0)  # never less weight than the prior's
    assert ts._alpha[0] + ts._beta[0] == pytest.approx(3.0)
    assert ts._frozen["_alpha"][0] == ts._alpha[0]  # the decision posterior follows
    adapt(ts, "a", "reset")
    assert (ts._alpha[0], ts._beta[0]) == (2.0, 1.0)
    assert ts.stats()["a"]["pulls"] == 40  # what happened is still counted
    assert (ts._alpha[1], ts._beta[1]) == (2.0, 1.0)  # other arms untouched


def test_count_based_policies_shrink_counts_and_keep_means() -> None:
    ucb = UCB1(ARMS, seed=0)
    for r in (1.0, 0.0, 1.0, 1.0):
        ucb.update("b", r)
    before = ucb.upper_bounds(["b"])[0]
    adapt(ucb, "b", "discount", 0.5)
    assert ucb._n[1] == 2.0 and ucb._mean[1] == 0.75
    assert ucb.upper_bounds(["b"])[0] > before  # less evidence, wider bound
    gt = GaussianThompson(ARMS, seed=0, **GaussianThompson.example_params)
    for r in (0.2, 0.4, 0.6):
        gt.update("c", r)
    m2 = gt._m2[2]
    adapt(gt, "c", "explore", 0.1)
    assert gt._n[2] == pytest.approx(0.3) and gt._m2[2] == pytest.approx(0.1 * m2)
    assert gt._mean[2] == pytest.approx(0.4)


def test_epsilon_greedy_explore_rewinds_its_decay() -> None:
    eg = EpsilonGreedy(ARMS, seed=0, epsilon=0.5, decay="exponential", decay_rate=0.01)
    for _ in range(400):
        eg.update("a", 1.0)
    low = eg.current_epsilon
    adapt(eg, "a", "explore", 0.25)
    assert eg._t == 100 and eg.current_epsilon == pytest.approx(0.5 * np.exp(-1.0))
    assert eg.current_epsilon > low


def test_exp3_and_contextual_policies_fall_back_to_a_rebuild() -> None:
    for p in (trained(Exp3), trained(LinUCB)):
        done = adapt(p, "a", "discount", 0.5)
        assert done.applied == "rebuild_arm" and "no per-arm evidence" in done.detail
        assert p.arms[-1] == "a"  # rebuilt arms move to the end


def test_a_lone_arm_can_be_reset_and_bad_input_is_refused() -> None:
    p = UCB1(["only"], seed=0)
    p.update("only", 1.0)
    assert adapt(p, "only", "reset").applied == "rebuild_arm"
    assert p.arms == ["only"] and p._n[0] == 0
    with pytest.raises(UnknownArmError):
        adapt(p, "nope", "reset")
    with pytest.raises(ValueError, match="factor"):
        adapt(p, "only", "discount", 1.5)
    with pytest.raises(ValueError, match="unknown action"):
        adapt(p, "only", "panic")


# --- the learner -----------------------------------------------------------------------------

POLICIES = PoliciesConfig.from_dict(
    {"policies": {"p": {"algorithm": "thompson_sampling",
                        "hyperparameters": {"propensity_samples": 1000},
                        "snapshot": {"every_updates": 50, "every_ms": 10_000},
                        "arms": [{"name": a, "model": a} for a in ARMS]}}}
)  # fmt: skip


def outcome(i: int, arm: str, reward: float) -> Outcome:
    return Outcome(
        request_id=f"r{i}", tenant_id="t", policy_id="p", policy_version=0, arm=arm,
        available_arms=ARMS, propensity=0.5, explored=False, reward=reward, defaulted=False,
        decided_at=i, outcome_at=i, components={"error": False},
    )  # fmt: skip


def drift(arm: str = "a", signal: str = "reward", kind: str = "drift") -> DriftEvent:
    return DriftEvent(event_id="d1", kind=kind, policy_id="p", signal=signal, detector="cusum",
                      observed_at=5, created_at=6, arm=arm, direction="down")  # fmt: skip


def test_learner_adapts_once_bumps_the_version_and_publishes_at_once() -> None:
    learner = Learner(POLICIES)
    learner.load("p", None, 0)
    for i in range(10):
        learner.apply(outcome(i, "a", 1.0), 0, i)
    learner.snapshot("p", 0)
    assert learner.due_snapshots(1) == []
    spec = AdaptationSpec("reset", signals=("reward",))
    event = learner.adapt(drift(), spec, partition=2, offset=7, now=99)
    assert event is not None
    assert (event.kind, event.arm, event.action, event.applied) == ("adaptation", "a", "reset",
                                                                    "reset_arm")  # fmt: skip
    assert event.cause_id == "d1" and event.policy_version == 11 and event.created_at == 99
    assert event.factor is None
    DriftEvent.from_dict(event.to_dict())
    assert learner.due_snapshots(100) == ["p"]
    snap = learner.snapshot("p", 100)
    assert snap.version == 11 and snap.arm_stats["a"]["alpha"] == 1.0
    # redelivered: nothing more; the offset survives a restart through the state
    assert learner.adapt(drift(), spec, partition=2, offset=7, now=100) is None
    again = Learner(POLICIES)
    again.load("p", learner.state("p"), 0)
    assert again.adapt(drift(), spec, partition=2, offset=7, now=100) is None
    assert again.adapt(drift(), spec, partition=2, offset=8, now=100) is not None
    restored = ThompsonSampling.restore(base64.b64decode(snap.state))
    assert isinstance(restored, ThompsonSampling) and restored._alpha[0] == 1.0


@pytest.mark.parametrize(
    ("event", "spec"),
    [
        (drift(kind="anomaly"), AdaptationSpec()),
        (drift(kind="adaptation"), AdaptationSpec()),
        (drift(signal="latency"), AdaptationSpec(signals=("reward",))),
        (drift(arm="gone"), AdaptationSpec()),
        (drift(), AdaptationSpec(action="none")),
    ],
    ids=["anomaly", "adaptation", "signal not acted on", "unknown arm", "action none"],
)
def test_learner_passes_over_what_it_should_not_act_on(event: DriftEvent,
                                                       spec: AdaptationSpec) -> None:  # fmt: skip
    learner = Learner(POLICIES)
    learner.load("p", None, 0)
    before = learner.state("p")["policy"]
    assert learner.adapt(event, spec, 0, 0, 1) is None
    assert learner.state("p")["policy"] == before


# --- the closed loop, in process --------------------------------------------------------------


def share_falls_after(with_loop: bool, seed: int = 3) -> int:
    """Outcomes after arm a drops from 0.85 to 0.45 until its share of the
    last 300 decisions is under 20%."""
    decider, learner = Decider(POLICIES, seed=seed), Learner(POLICIES)
    learner.load("p", None, 0)
    monitor = DriftMonitor(DriftConfig.from_dict({"anomaly": {"detectors": {}}}))
    spec = DriftConfig.from_dict({}).adaptation_for("p")
    rng = random.Random(seed)
    means = {"a": 0.85, "b": 0.7, "c": 0.5}
    recent: deque[bool] = deque(maxlen=300)
    from app.records import Request

    for i in range(40_000):
        if i == 8000:
            means["a"] = 0.45
        req = Request(request_id=f"r{i}", tenant_id="t", task_type="qa", created_at=i)
        doc: Any = decider.decide([req], i)[0]
        o = outcome(i, doc["arm"], float(rng.random() < means[doc["arm"]]))
        learner.apply(o, 0, i)
        if with_loop:
            for e in monitor.observe(o):
                learner.adapt(e, spec, 0, i, i)
        for due in learner.due_snapshots(i):
            decider.apply_snapshot(learner.snapshot(due, i))
        recent.append(doc["arm"] == "a")
        if i > 8000 and sum(recent) < 0.2 * len(recent):
            return i - 8000
    return 10**9


def test_the_drift_loop_moves_traffic_off_a_degraded_arm_sooner() -> None:
    without, with_loop = share_falls_after(False), share_falls_after(True)
    assert with_loop < 1500  # detection (~100-200 outcomes of a) + relearning + the window
    assert with_loop * 3 < without
