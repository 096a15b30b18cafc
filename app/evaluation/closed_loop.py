"""`llmopt run`'s loop without a broker, on simulated time: requests from the
simulator, decided in batches by the :class:`~app.decider.Decider`, answered
with the simulator's rewards, learned by the :class:`~app.learner.Learner`,
whose snapshots go back to the decider as they fall due.

It gives in seconds what a run with the broker gives in minutes: the true
regret of a policy's choices per task type over time
(:class:`~app.evaluation.task_regret.TaskRegret`). Rewards arrive at once
and nothing is lost, so it measures the policy's learning, not the stream's.

>>> from app.policies.config import PoliciesConfig
>>> from app.evaluation.simulator import TrafficSimulator
>>> cfg = PoliciesConfig.from_dict({"policies": {"p": {"algorithm": "thompson_sampling",
...     "arms": [{"name": "claude-haiku", "model": "claude-3-5-haiku"},
...              {"name": "gpt-4o-mini", "model": "gpt-4o-mini"}]}}})
>>> sim = TrafficSimulator.default(seed=1, start_ms=0)
>>> sim = TrafficSimulator(sim.config, cfg.policies["p"].arms, sim.reward_spec, seed=1, start_ms=0)
>>> run = run_loop(cfg, sim, duration_seconds=10, rate_per_second=50)
>>> run.decisions, sorted(run.tracker.totals()) == sorted(sim.config.task_names)
(500, True)
>>> 0.0 <= run.regret_per_decision(since_seconds=5) < 0.2
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.decider import Decider
from app.evaluation.simulator import TrafficSimulator
from app.evaluation.task_regret import TaskRegret
from app.learner import Learner
from app.policies.config import PoliciesConfig
from app.records import REWARD_COMPONENTS, InvalidEvent, Outcome, Request, Reward
from app.rewards import RewardSpec

__all__ = ["LoopRun", "run_loop"]


@dataclass
class LoopRun:
    """The choices of one run: per decision its time (ms since the start),
    task type and true regret, and the per-task tracker."""

    tracker: TaskRegret
    at_ms: list[int] = field(default_factory=list)
    task_types: list[str] = field(default_factory=list)
    regrets: list[float] = field(default_factory=list)

    @property
    def decisions(self) -> int:
        return len(self.regrets)

    def regret_per_decision(self, since_seconds: float = 0.0) -> float:
        """Mean true regret of the decisions from ``since_seconds`` on."""
        since = since_seconds * 1000
        picked = [r for t, r in zip(self.at_ms, self.regrets, strict=True) if t >= since]
        return sum(picked) / len(picked) if picked else 0.0


def run_loop(
    config: PoliciesConfig,
    sim: TrafficSimulator,
    duration_seconds: float,
    rate_per_second: float,
    policy_id: str | None = None,
    seed: int = 0,
    batch_ms: int = 20,
) -> LoopRun:
    """Drive ``policy_id`` (default: the config's default policy) with
    ``rate_per_second`` simulated requests for ``duration_seconds`` of
    simulated time from ``sim.start_ms``, deciding every ``batch_ms``."""
    pid = policy_id or config.default_policy
    if pid is None or pid not in config.policies:
        raise ValueError(f"no policy {pid!r} in the config")
    spec = config.policies[pid].reward
    decider, learner = Decider(config, seed=seed), Learner(config)
    learner.load(pid, None, sim.start_ms)
    run = LoopRun(TaskRegret(sim.config.task_names))
    owed, offset = 0.0, 0
    for tick in range(batch_ms, round(duration_seconds * 1000) + 1, batch_ms):
        now = sim.start_ms + tick
        owed += rate_per_second * batch_ms / 1000
        requests = [sim.next_request(now, policy_id=pid) for _ in range(int(owed))]
        owed -= len(requests)
        for req, d in zip(requests, decider.decide(requests, now), strict=True):
            if isinstance(d, InvalidEvent):
                raise ValueError(f"the decider refused a request: {d}")
            params = d.get("parameters")
            regret = sim.record_choice(req, d["arm"], now, params)
            run.at_ms.append(tick)
            run.task_types.append(req.task_type)
            run.regrets.append(regret)
            run.tracker.record(req.task_type, d["arm"], regret, tick)
            outcome = simulated_outcome(req, d, sim.outcome(req, d["arm"], now, params), spec, now)
            learner.apply(outcome, 0, offset)
            offset += 1
        for key in learner.due_snapshots(now):
            decider.apply_snapshot(learner.snapshot(key, now))
    return run


def simulated_outcome(
    req: Request, decision: Mapping[str, Any], reward: Reward, spec: RewardSpec, now: int
) -> Outcome:
    """The outcome the join would make of ``decision`` and its simulated
    ``reward``, at once (no wait)."""
    components = {k: v for k in REWARD_COMPONENTS if (v := getattr(reward, k)) is not None}
    return Outcome(
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        policy_id=decision["policy_id"],
        policy_version=decision["policy_version"],
        arm=decision["arm"],
        available_arms=decision["available_arms"],
        propensity=decision["propensity"],
        explored=decision["explored"],
        reward=spec.scalar(reward.quality, reward.cost_usd, reward.latency_ms, reward.error),
        defaulted=False,
        decided_at=now,
        outcome_at=now,
        components=components,
        features=decision.get("features"),
        parameters=decision.get("parameters"),
        task_type=req.task_type,
    )
