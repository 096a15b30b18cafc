"""A minimal, dependency-free environment interface for RL agents (gym-like)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Environment(abc.ABC):
    """An episodic environment with a finite, named action set.

    ``reset(seed)`` starts an episode and returns its first state (a float
    vector of length :attr:`state_dim`); ``step(action)`` takes an action (its
    index in :attr:`actions`, or its name) and returns ``(next_state, reward,
    done, info)``. Passing a ``seed`` to :meth:`reset` reseeds the
    environment's own random streams; later resets without one continue them,
    so a run is deterministic given the first seed.

    >>> class Coin(Environment):
    ...     actions = ["stop"]
    ...     state_dim = 1
    ...     def reset(self, seed=None):
    ...         return np.zeros(1)
    ...     def step(self, action):
    ...         return np.ones(1), 1.0, True, {}
    >>> env = Coin()
    >>> env.reset(seed=0).tolist(), env.step("stop")[1:3]
    ([0.0], (1.0, True))
    >>> env.action_index("stop")
    0
    """

    actions: list[str]
    state_dim: int

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode; returns the first state."""

    @abc.abstractmethod
    def step(self, action: int | str) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        """Take ``action``; returns ``(next_state, reward, done, info)``."""

    def action_index(self, action: int | str) -> int:
        """The index of an action given by index or by name."""
        if isinstance(action, str):
            try:
                return self.actions.index(action)
            except ValueError:
                raise KeyError(f"unknown action {action!r}; actions are {self.actions}") from None
        i = int(action)
        if not 0 <= i < len(self.actions):
            raise IndexError(f"action index {i} out of range for {len(self.actions)} actions")
        return i


class _Agent(Protocol):
    """What :func:`run_episode` needs of an agent (every RL policy has it)."""

    def select(
        self, context: Any = None, allowed: Sequence[str] | None = None, explore: bool = True
    ) -> Any: ...

    def observe(self, state: Any, arm: str, reward: float, next_state: Any, done: bool) -> None: ...


def run_episode(
    env: Environment,
    agent: _Agent,
    seed: int | None = None,
    learn: bool = True,
    explore: bool = True,
) -> float:
    """Play one episode of ``agent`` in ``env`` (the agent's arms are the
    environment's action names) and return its undiscounted return. With
    ``learn`` every transition is passed to ``agent.observe``."""
    state = env.reset(seed)
    total, done = 0.0, False
    while not done:
        arm = agent.select(state, explore=explore).arm
        next_state, reward, done, _ = env.step(arm)
        if learn:
            agent.observe(state, arm, reward, next_state, done)
        total += reward
        state = next_state
    return total


def average_return(
    env: Environment,
    agent: _Agent,
    n_episodes: int,
    seed: int | None = None,
    learn: bool = False,
    explore: bool = False,
) -> float:
    """Mean return over ``n_episodes`` (the first reset gets ``seed``, the
    next ones continue its streams); by default greedy and without learning,
    i.e. an evaluation of what the agent has learnt."""
    returns = [
        run_episode(env, agent, seed if i == 0 else None, learn=learn, explore=explore)
        for i in range(n_episodes)
    ]
    return float(np.mean(returns))
