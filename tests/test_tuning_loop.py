"""The parameter tuner in the loop (no broker): the decider serves the tuned
call parameters with the pair's exact propensity, the simulator answers for
those parameters, the outcome carries them, and the learner tells the
optimiser — so the served temperature of creative writing rises towards the
simulator's optimum as it does when the policy is driven directly."""

from __future__ import annotations

from typing import Any

from app.decider import Decider
from app.evaluation.simulator import TrafficSimulator
from app.learner import Learner
from app.policies.config import PoliciesConfig
from app.records import Outcome, Request

T0 = 1_700_000_000_000
START = {"temperature": 0.3, "top_p": 1.0, "max_tokens": 1024}


def config(**extra: Any) -> PoliciesConfig:
    return PoliciesConfig.from_dict(
        {
            "policies": {
                "t": {
                    **extra,
                    "algorithm": "parameter_tuner",
                    "seed": 3,
                    "snapshot": {"every_updates": 20},
                    "arms": [{"name": "llama-70b", "model": "llama-3.1-70b", "parameters": START}],
                }
            }
        }
    )


def creative(sim: TrafficSimulator, now: int) -> Request:
    while True:
        req = sim.next_request(now, policy_id="t")
        if req.task_type == "creative":
            return req


def outcome(d: dict[str, Any], req: Request, sim: TrafficSimulator, now: int) -> Outcome:
    reward = sim.outcome(req, d["arm"], now, d["parameters"])
    components = {
        k: v
        for k in ("quality", "cost_usd", "latency_ms", "error")
        if (v := getattr(reward, k)) is not None
    }
    return Outcome(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        policy_id="t",
        policy_version=d["policy_version"],
        arm=d["arm"],
        available_arms=d["available_arms"],
        propensity=d["propensity"],
        explored=d["explored"],
        reward=sim.reward_spec.scalar(
            reward.quality, reward.cost_usd, reward.latency_ms, reward.error
        ),
        defaulted=False,
        decided_at=now,
        outcome_at=now,
        components=components,
        features=d["features"],
        parameters=d["parameters"],
    )


def test_the_loop_serves_tuned_parameters_and_learns_from_them() -> None:
    sim = TrafficSimulator.default(seed=3)
    cfg = config()
    decider, learner = Decider(cfg, seed=3), Learner(cfg)
    learner.load("t", None, T0)
    served: list[dict[str, Any]] = []
    for i in range(900):
        now = T0 + i
        req = creative(sim, now)
        [d] = decider.decide([req], now)
        assert isinstance(d, dict)
        served.append(d["parameters"])
        assert 0 < d["propensity"] <= 1
        assert learner.apply(outcome(d, req, sim, now), 0, i) == "applied"
        for key in learner.due_snapshots(now):
            decider.apply_snapshot(learner.snapshot(key, now))
    temperatures = {round(p["temperature"], 6) for p in served}
    assert len(temperatures) > 5, "settings under evaluation are served"
    assert all(0.0 <= p["temperature"] <= 1.5 for p in served)
    # Creative writing gains from temperature in the simulator: the setting
    # the loop serves at the end is better than the configured one.
    late = served[-100:]
    req = creative(sim, T0)
    tuned = sum(sim.expected_reward(req, "llama-70b", T0, p) for p in late) / len(late)
    start = sim.expected_reward(req, "llama-70b", T0, START)
    assert tuned > start + 0.005, (tuned, start)
    assert sum(p["temperature"] for p in late) / len(late) > START["temperature"] + 0.3


def test_a_learner_that_plans_later_learns_the_same_state() -> None:
    """A worker's learner leaves a tuner's plans (GP fits) to be computed off
    its event loop and taken before the next update: the states match a
    learner that plans within the update, outcome by outcome."""
    sim = TrafficSimulator.default(seed=4)
    cfg = config(hyperparameters={"evaluation_size": 2, "batch_size": 2, "initial_points": 2})
    decider = Decider(cfg, seed=4)
    now_learner, later = Learner(cfg), Learner(cfg, plan_later=True)
    for learner in (now_learner, later):
        learner.load("t", None, T0)
    plans = 0
    for i in range(300):
        now = T0 + i
        req = creative(sim, now)
        [d] = decider.decide([req], now)
        assert isinstance(d, dict)
        o = outcome(d, req, sim, now)
        assert now_learner.apply(o, 0, i) == later.apply(o, 0, i) == "applied"
        assert now_learner.due_plans("t") is None
        compute = later.due_plans("t")
        if compute is not None:
            plans += 1
            compute()()
        assert later.state("t") == now_learner.state("t")
        for key in now_learner.due_snapshots(now):
            decider.apply_snapshot(now_learner.snapshot(key, now))
    assert plans >= 5, "the evaluations made GP plans (after the initial points)"
