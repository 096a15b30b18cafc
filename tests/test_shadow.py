"""Shadow versions (app/shadow.py, the learner's shadows): a registry version
learns from a policy's live outcomes beside it, never served, and its value
is estimated off-policy as it goes; checked against the simulator's exact
expected rewards over seeds."""

from __future__ import annotations

import base64
import math
import random
from typing import Any

import pytest

from app.evaluation.simulator import TrafficSimulator
from app.learner import Learner
from app.policies import ThompsonSampling
from app.policies.config import PoliciesConfig
from app.records import Outcome, RegistryEvent
from app.shadow import OffPolicyValue
from app.versions import VersionError

T0 = 1_700_000_000_000
SEEDS = range(8)


def serving_config(arms: list[str]) -> PoliciesConfig:
    """A uniform logging policy: epsilon-greedy that always explores."""
    return PoliciesConfig.from_dict(
        {
            "policies": {
                "p": {
                    "algorithm": "epsilon_greedy",
                    "hyperparameters": {"epsilon": 1.0},
                    "arms": [{"name": a, "model": a} for a in arms],
                }
            }
        }
    )


def shadow_record(arms: list[str], policy: ThompsonSampling, number: int) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"shadow-{number}",
        kind="status",
        policy_id="p",
        created_at=T0,
        created_by="test",
        version=number,
        status="shadow",
        config={
            "algorithm": "thompson_sampling",
            "arms": [{"name": a, "model": a} for a in arms],
        },
        state={
            "algorithm": "thompson_sampling",
            "policy": base64.b64encode(policy.snapshot()).decode(),
            "updates": 0,
        },
    )


def run(seed: int, pretrain: int = 600, live: int = 2000) -> tuple[dict[str, Any], float, float]:
    """A Thompson-sampling version trained on its own choices shadows a
    uniform policy for ``live`` outcomes; returns its estimates, the exact
    value of the shadow as it learned (the mean over the outcomes of its
    expected reward under its own probabilities at that moment, from a
    replica that learns the same outcomes in the same order), and the
    serving policy's exact value."""
    sim = TrafficSimulator.default(seed=seed)
    arms = list(sim.arm_names)
    trained = ThompsonSampling(arms, seed=seed)
    for i in range(pretrain):
        req = sim.next_request(T0 + i)
        arm = trained.select().arm
        trained.update(arm, sim.expected_reward(req, arm, T0))
    replica = ThompsonSampling.restore(trained.snapshot())
    logging = random.Random(seed)
    learner = Learner(serving_config(arms))
    learner.load("p", None, T0)
    learner.shadow("p", shadow_record(arms, trained, 7), T0)
    truth = served = 0.0
    for i in range(live):
        req = sim.next_request(T0 + i)
        arm = logging.choice(arms)  # uniform, as the serving policy logs it
        reward = sim.outcome(req, arm, T0 + i)
        scalar = sim.reward_spec.scalar(
            reward.quality, reward.cost_usd, reward.latency_ms, reward.error, reward.feedback
        )
        probs = replica.probabilities(arms)
        truth += sum(p * sim.expected_reward(req, a, T0) for p, a in zip(probs, arms, strict=True))
        served += sum(sim.expected_reward(req, a, T0) for a in arms) / len(arms)
        replica.update(arm, scalar)
        outcome = Outcome(
            request_id=f"r{i}",
            tenant_id="acme",
            policy_id="p",
            policy_version=0,
            arm=arm,
            available_arms=arms,
            propensity=1 / len(arms),
            explored=True,
            reward=scalar,
            defaulted=False,
            decided_at=T0 + i,
            outcome_at=T0 + i,
        )
        assert learner.apply(outcome, 0, i) == "applied"
    return learner.shadow_values("p")[7], truth / live, served / live


def test_the_shadows_off_policy_value_covers_its_true_value() -> None:
    ips_covered = snips_covered = on_covered = 0
    errors = []
    for seed in SEEDS:
        est, truth, served = run(seed)
        assert est["outcomes"] == 2000
        ips, snips, on = est["ips"], est["snips"], est["on_policy"]
        ips_covered += ips["low"] <= truth <= ips["high"]
        snips_covered += snips["low"] <= truth <= snips["high"]
        on_covered += on["low"] <= served <= on["high"]
        errors.append(abs(snips["value"] - truth))
        assert snips["high"] - snips["low"] < ips["high"] - ips["low"]
    # Nominal 95%: at least 6 of 8 (a 95% interval misses 3 of 8 with p < 1%).
    assert ips_covered >= 6 and snips_covered >= 6 and on_covered >= 6, (
        ips_covered,
        snips_covered,
        on_covered,
    )
    assert sum(errors) / len(errors) < 0.02


def test_a_shadow_is_never_served_and_survives_a_restart() -> None:
    sim = TrafficSimulator.default(seed=3)
    arms = list(sim.arm_names)
    learner = Learner(serving_config(arms))
    learner.load("p", None, T0)
    before = learner.state("p")["policy"]
    learner.shadow("p", shadow_record(arms, ThompsonSampling(arms, seed=1), 9), T0)
    for i in range(50):
        outcome = Outcome(
            request_id=f"r{i}",
            tenant_id="acme",
            policy_id="p",
            policy_version=0,
            arm=arms[i % len(arms)],
            available_arms=arms,
            propensity=1 / len(arms),
            explored=True,
            reward=0.5,
            defaulted=False,
            decided_at=T0,
            outcome_at=T0,
        )
        learner.apply(outcome, 0, i)
    snap = learner.snapshot("p", T0)
    assert snap.algorithm == "epsilon_greedy", "the serving policy decides, not its shadow"
    assert learner.state("p")["policy"] != before
    restarted = Learner(serving_config(arms))
    restarted.load("p", learner.state("p"), T0)
    assert restarted.shadow_values("p") == learner.shadow_values("p")
    assert restarted.unshadow("p", 9) and restarted.shadow_values("p") == {}
    # A version is registered without its shadows.
    version = learner.register("p", T0, "test")
    assert version.state is not None and "shadows" not in version.state


def test_a_version_that_cannot_shadow_is_refused() -> None:
    arms = ["a", "b"]
    learner = Learner(serving_config(arms))
    learner.load("p", None, T0)
    bad = shadow_record(arms, ThompsonSampling(arms, seed=1), 4)
    bad.config = {"algorithm": "ucb1", "arms": [{"name": "a", "model": "a"}]}
    with pytest.raises(VersionError, match="cannot shadow"):
        learner.shadow("p", bad, T0)
    assert learner.shadow_values("p") == {}


def test_the_estimates_from_running_sums() -> None:
    v = OffPolicyValue()
    assert math.isnan(v.ips()[0])
    for p, r in [(1.0, 1.0), (0.0, 0.0), (0.5, 1.0), (0.5, 0.0)]:
        v.add(p, 0.5, r)  # weights 2, 0, 1, 1
    assert v.ips()[0] == pytest.approx((2 + 0 + 1 + 0) / 4)
    assert v.snips()[0] == pytest.approx(3 / 4)
    assert v.on_policy()[0] == pytest.approx(0.5)
    assert v.effective_sample_size() == pytest.approx(16 / 6)
    assert OffPolicyValue.from_dict(v.to_dict()) == v
