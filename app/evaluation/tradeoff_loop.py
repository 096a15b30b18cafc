"""Trade-off decisions on the simulator: the true objectives and Pareto
front of each task type, and a closed loop — decider, simulated rewards,
learner, snapshots — that learns them (docs/tradeoffs.md).

Pure: the real :class:`~app.decider.Decider` and :class:`~app.learner.Learner`
without a broker, the simulator's ground truth to judge them by. Used by
``scripts/bench-tradeoffs`` and ``tests/test_tradeoff_learning.py``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from app.decider import Decider
from app.evaluation.closed_loop import simulated_outcome
from app.evaluation.simulator import TrafficSimulator
from app.learner import Learner
from app.policies.config import PoliciesConfig
from app.policies.tradeoff import PRESETS, Tradeoff, oriented, pareto_front, scales_of, utilities

JSON = dict
TRUTH_SAMPLE = 20_000  # requests whose expected objectives make the truth


def true_objectives(
    sim: TrafficSimulator, now_ms: int, requests: int = TRUTH_SAMPLE, seed: int = 1
) -> dict[str, dict[str, np.ndarray]]:
    """Per task type and arm, the true mean (quality, cost, latency) of an
    outcome: the simulator's expected components averaged over a sample of its
    traffic (a failed call has quality 0 and costs nothing, as the learner
    counts it)."""
    sampler = TrafficSimulator(sim.config, list(sim.arms.values()), sim.reward_spec, seed, 0)
    sums: dict[str, dict[str, np.ndarray]] = {}
    counts: Counter[str] = Counter()
    for _ in range(requests):
        req = sampler.next_request(now_ms)
        counts[req.task_type] += 1
        per_arm = sums.setdefault(req.task_type, {})
        for arm in sim.arm_names:
            c = sim.expected_components(req, arm, now_ms)
            ok = 1.0 - c["error_rate"]
            v = np.array([ok * c["quality"], ok * c["cost_usd"], c["latency_ms"]])
            per_arm[arm] = per_arm.get(arm, 0.0) + v
    return {t: {a: v / counts[t] for a, v in per_arm.items()} for t, per_arm in sums.items()}


def loop_config(config: PoliciesConfig, algorithm: str = "thompson_sampling") -> PoliciesConfig:
    """One policy with the arms and reward of ``config``'s default policy,
    learning with ``algorithm``: what a closed loop runs, whatever the file's
    default policy learns with."""
    pc = config.policies[config.default_policy]
    r = pc.reward
    reward = {
        "weights": {
            "quality": r.quality_weight,
            "cost": r.cost_weight,
            "latency": r.latency_weight,
            "feedback": r.feedback_weight,
        },
        "cost_scale_usd": r.cost_scale_usd,
        "latency_scale_ms": r.latency_scale_ms,
    }
    arms = [{"name": a.name, "model": a.model, "parameters": dict(a.parameters)} for a in pc.arms]
    policy = {"algorithm": algorithm, "arms": arms, "reward": reward, "seed": pc.seed}
    return PoliciesConfig.from_dict({"policies": {"tradeoffs": policy}})


@dataclass
class LoopResult:
    """What a closed-loop run leaves: the decider holding the last snapshot,
    and the arms chosen per (preset, task type) in the run's second half."""

    decider: Decider
    policy_id: str
    chosen: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    decisions: int = 0


def run_loop(
    config: PoliciesConfig,
    sim: TrafficSimulator,
    requests: int,
    presets: Sequence[str] = tuple(PRESETS),
    batch: int = 200,
    seed: int = 0,
) -> LoopResult:
    """Decide ``requests`` simulated requests in batches, each request for
    one of ``presets`` in turn, reward them from the simulator, learn every
    outcome and hand the decider a snapshot after each batch."""
    pid = config.default_policy
    decider = Decider(config, seed=seed)
    learner = Learner(config)
    learner.load(pid, None, 0)
    spec = config.policies[pid].reward
    result = LoopResult(decider, pid)
    now = sim.start_ms
    offset = 0
    for start in range(0, requests, batch):
        reqs = []
        for i in range(start, min(start + batch, requests)):
            now += 10
            req = sim.next_request(now, policy_id=pid)
            reqs.append(dataclasses.replace(req, tradeoff=presets[i % len(presets)]))
        docs = decider.decide(reqs, now)
        for i, (req, doc) in enumerate(zip(reqs, docs, strict=True)):
            if not isinstance(doc, dict):
                raise RuntimeError(f"no decision for a simulated request: {doc}")
            reward = sim.outcome(req, doc["arm"], now)
            outcome = simulated_outcome(req, doc, reward, spec, now)
            learner.apply(outcome, 0, offset)
            offset += 1
            if start + i >= requests // 2:
                key = (str(req.tradeoff), req.task_type)
                result.chosen.setdefault(key, Counter())[doc["arm"]] += 1
        result.decisions += len(reqs)
        decider.apply_snapshot(learner.snapshot(pid, now))
    return result


def greedy_arm(
    decider: Decider, policy_id: str, task_type: str, preset: str, arms: Sequence[str]
) -> str:
    """The arm a preset's trade-off picks when not exploring: the highest
    utility at the posterior means."""
    choice = decider.tradeoff_choice(policy_id, task_type, Tradeoff.parse(preset), list(arms))
    return max(arms, key=lambda a: choice[a][1])


def true_front(truth: dict[str, np.ndarray], cost_scale: float, latency_scale: float) -> list[str]:
    """The arms on the true Pareto front of one task type."""
    arms = list(truth)
    points = oriented(np.array([truth[a] for a in arms]), scales_of(cost_scale, latency_scale))
    return [arms[i] for i in pareto_front(points)]


def true_best(
    truth: dict[str, np.ndarray], preset: str, cost_scale: float, latency_scale: float
) -> str:
    """The arm of the highest true utility for a preset."""
    arms = list(truth)
    u = utilities(
        np.array([truth[a] for a in arms]), PRESETS[preset], scales_of(cost_scale, latency_scale)
    )
    return arms[int(np.argmax(u))]
