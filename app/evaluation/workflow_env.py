"""Multi-step LLM workflows on the traffic simulator's ground truth."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from app.evaluation.environment import Environment
from app.evaluation.simulator import MAX_INPUT_TOKENS, TrafficSimulator
from app.records import Request

ACCEPT = "accept"


class LLMWorkflowEnv(Environment):
    """One episode is one request, served by up to ``max_steps`` model calls.

    **Actions** are the simulator's arms (call that model + parameters for the
    request) and ``"accept"`` (stop and keep the answer held). So an agent can
    try a cheap model, look at the quality it got, and escalate to a strong
    one or retry with other parameters — or accept.

    **State** (``state_dim = n_tasks + 7`` floats):

    ====================  ===================================================
    ``0 .. n_tasks-1``    task type, one-hot (the simulator's task names)
    ``n_tasks``           ``log(input_tokens) / log(200_000)`` (in [0, 1])
    ``+1``                ``priority / 10``
    ``+2``                attempts made so far ``/ max_steps``
    ``+3``                quality of the answer held (0 when none yet)
    ``+4``                1 if the last attempt errored, else 0
    ``+5``                cumulative cost ``/ reward_spec.cost_scale_usd``
    ``+6``                cumulative latency ``/ reward_spec.latency_scale_ms``
    ====================  ===================================================

    **Dynamics.** A call samples :meth:`TrafficSimulator.outcome` for the
    request at the episode's clock (the request's arrival plus the latency
    spent so far). A successful call replaces the answer held; a failed one
    (``error``) costs nothing, takes its latency and keeps the previous answer
    (if any). The episode ends at ``accept`` or after the ``max_steps``-th
    call (which accepts the answer held).

    **Reward.** 0 on every step but the last; at the end, with the reward
    spec's weights ``wq, wc, wl`` (feedback is not simulated) and
    ``W = wq + wc + wl``::

        R = (wq * q + wc * max(0, 1 - C / cost_scale_usd)
                    + wl * max(0, 1 - L / latency_scale_ms)) / W

    where ``q`` is the quality of the accepted answer and ``C``, ``L`` are the
    cost and the latency summed over *all* calls of the episode; with no
    successful call (every call failed, or ``accept`` before any) the reward is
    ``reward_spec.error_reward`` (0 by default). For "call arm ``a``, then
    accept" this is exactly ``reward_spec.scalar(...)`` of that one outcome,
    so the fixed strategies score as the bandit problem does.

    Deterministic given ``seed``: ``reset(seed)`` rebuilds the simulator's
    streams from the seed; resets without a seed continue them.

    >>> env = LLMWorkflowEnv(seed=3)
    >>> env.actions[-1], env.state_dim
    ('accept', 12)
    >>> s = env.reset(seed=3)
    >>> s.shape
    (12,)
    >>> s, r, done, info = env.step("claude-haiku")
    >>> done, r, info["attempts"]
    (False, 0.0, 1)
    >>> s, r, done, info = env.step("accept")
    >>> done, 0.0 < r <= 1.0
    (True, True)
    >>> env.best_fixed_policy_value(50, seed=0) > env.random_policy_value(50, seed=0)
    True
    """

    def __init__(
        self, simulator: TrafficSimulator | None = None, max_steps: int = 3, seed: int = 0
    ) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        sim = simulator or TrafficSimulator.default(seed=seed, start_ms=0)
        spec = sim.reward_spec
        self._weights = (spec.quality_weight, spec.cost_weight, spec.latency_weight)
        if sum(self._weights) <= 0.0:
            raise ValueError("the reward spec weighs none of quality, cost and latency")
        self.simulator = sim
        self.max_steps = max_steps
        self.seed = seed
        self.actions = [*sim.arm_names, ACCEPT]
        self.tasks = list(sim.config.task_names)
        self.state_dim = len(self.tasks) + 7
        self._accept = len(self.actions) - 1
        self._sim = sim
        self._now_ms = sim.start_ms
        self._request: Request | None = None
        self._done = True
        self._attempts = 0
        self._quality: float | None = None
        self._errored = False
        self._cost = 0.0
        self._latency = 0.0

    # -- episodes ---------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            s = self.simulator
            self._sim = TrafficSimulator(
                s.config, list(s.arms.values()), s.reward_spec, seed, start_ms=s.start_ms
            )
            self._now_ms = s.start_ms
        self._now_ms = self._sim.next_arrival_ms(self._now_ms)
        self._request = self._sim.next_request(self._now_ms)
        self._done = False
        self._attempts = 0
        self._quality = None
        self._errored = False
        self._cost = 0.0
        self._latency = 0.0
        return self._state()

    def step(self, action: int | str) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        if self._done or self._request is None:
            raise RuntimeError("the episode is over: call reset()")
        a = self.action_index(action)
        info: dict[str, Any] = {"action": self.actions[a]}
        if a != self._accept:
            sent = self._now_ms + round(self._latency)
            out = self._sim.outcome(self._request, self.actions[a], sent)
            self._attempts += 1
            self._errored = bool(out.error)
            self._latency += out.latency_ms or 0.0
            self._cost += out.cost_usd or 0.0
            if not out.error:
                self._quality = out.quality
            info |= {
                "quality": out.quality,
                "cost_usd": out.cost_usd,
                "latency_ms": out.latency_ms,
                "error": bool(out.error),
            }
        info["attempts"] = self._attempts
        self._done = a == self._accept or self._attempts >= self.max_steps
        reward = self._final_reward() if self._done else 0.0
        return self._state(), reward, self._done, info

    def _final_reward(self) -> float:
        spec = self._sim.reward_spec
        if self._quality is None:
            return spec.error_reward
        wq, wc, wl = self._weights
        total = (
            wq * self._quality
            + wc * max(0.0, 1.0 - self._cost / spec.cost_scale_usd)
            + wl * max(0.0, 1.0 - self._latency / spec.latency_scale_ms)
        )
        return total / (wq + wc + wl)

    def _state(self) -> np.ndarray:
        req = self._request
        assert req is not None
        spec = self._sim.reward_spec
        x = np.zeros(self.state_dim)
        x[self.tasks.index(req.task_type)] = 1.0
        n = len(self.tasks)
        x[n] = math.log(max(1, req.input_tokens)) / math.log(MAX_INPUT_TOKENS)
        x[n + 1] = req.priority / 10.0
        x[n + 2] = self._attempts / self.max_steps
        x[n + 3] = self._quality or 0.0
        x[n + 4] = float(self._errored)
        x[n + 5] = self._cost / spec.cost_scale_usd
        x[n + 6] = self._latency / spec.latency_scale_ms
        return x

    # -- baselines --------------------------------------------------------------------------
    def copy(self) -> LLMWorkflowEnv:
        """A fresh environment on the same scenario, arms and reward spec."""
        return LLMWorkflowEnv(self.simulator, self.max_steps, self.seed)

    def fixed_policy_values(self, n_episodes: int, seed: int) -> dict[str, float]:
        """Mean reward of each fixed strategy "call arm ``a``, then accept"
        over ``n_episodes`` episodes from ``reset(seed)`` (the same requests
        for every arm)."""
        values = {}
        for arm in self.actions[: self._accept]:
            env = self.copy()
            total = 0.0
            for i in range(n_episodes):
                env.reset(seed if i == 0 else None)
                env.step(arm)
                total += env.step(ACCEPT)[1]
            values[arm] = total / n_episodes
        return values

    def best_fixed_policy_value(self, n_episodes: int, seed: int) -> float:
        """The best of :meth:`fixed_policy_values`: what the best single arm,
        chosen with hindsight, earns on these episodes."""
        return max(self.fixed_policy_values(n_episodes, seed).values())

    def random_policy_value(self, n_episodes: int, seed: int) -> float:
        """Mean reward of the uniformly random policy over all actions
        (``accept`` included) on the episodes from ``reset(seed)``."""
        env = self.copy()
        rng = np.random.default_rng(seed)
        total = 0.0
        for i in range(n_episodes):
            env.reset(seed if i == 0 else None)
            done = False
            while not done:
                _, r, done, _ = env.step(int(rng.integers(len(self.actions))))
                total += r
        return total / n_episodes
