"""What the RL agents share: the state vector is the policy's context, the
actions are its arms, and besides the contract's one-step ``update`` (a
terminal transition) they learn from multi-step transitions with
``observe(state, arm, reward, next_state, done)``."""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.policies._contextual import ValuePolicy
from app.policies.base import InvalidRewardError, PolicyError


def epsilon_greedy(values: np.ndarray, epsilon: float) -> np.ndarray:
    """ε-greedy probabilities: ``ε / n`` each, plus ``1 - ε`` split evenly
    between the arms tied for the highest value.

    >>> epsilon_greedy(np.array([1.0, 3.0, 3.0, 0.0]), 0.2).tolist()
    [0.05, 0.45, 0.45, 0.05]
    """
    n = len(values)
    best = values == values.max()
    p = np.full(n, epsilon / n)
    p[best] += (1.0 - epsilon) / int(best.sum())
    return p


def softmax(logits: np.ndarray) -> np.ndarray:
    """A softmax in float64 (so the probabilities sum to 1 within 1e-15)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def linear_decay(start: float, end: float, steps: int, t: int) -> float:
    """``start`` going linearly to ``end`` over ``steps`` steps (``end`` if
    ``steps`` is 0)."""
    if steps <= 0 or t >= steps:
        return end
    return start + (end - start) * t / steps


class Agent(ValuePolicy):
    """A contextual policy that learns from transitions. Subclasses implement
    ``_compute_values`` (a score per arm for one state), ``probabilities``,
    ``_observe``, ``_grow_model``, ``_shrink_model``, ``_get_model_state``
    and ``_set_model_state``."""

    # Hyperparameters that shape the learned state: they cannot change live.
    _structural: tuple[str, ...] = ("context_dim",)

    def __init__(self, arms: Sequence[str], seed: int | None, context_dim: int) -> None:
        super().__init__(arms, seed)
        self.context_dim = context_dim
        self._check_context_dim()
        k = len(self._arms)
        self._pulls = np.zeros(k)
        self._reward_sum = np.zeros(k)
        self._learned = 0  # transitions learned from (update + observe)
        # Independent streams for the agent's own randomness (initialisation,
        # replay sampling); the base class's ``_rng`` only draws selections.
        self._seeds = np.random.SeedSequence(seed).spawn(2)

    def _built(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._structural}

    def _params_changed(self) -> None:
        built = getattr(self, "_built_with", None)
        now = self._built()
        if built is not None and built != now:
            for name, value in built.items():
                setattr(self, name, value)
            changed = sorted(n for n in built if built[n] != now[n])
            raise PolicyError(f"{self.algorithm}: {changed} cannot change on a live policy")
        self._cache = None

    # -- learning ---------------------------------------------------------------------------
    def observe(self, state: Any, arm: str, reward: float, next_state: Any, done: bool) -> None:
        """Learn from one transition: ``arm`` taken in ``state`` gave
        ``reward`` and led to ``next_state`` (``done``: the episode ended)."""
        i = self.index_of(arm)
        if not isinstance(reward, int | float) or not math.isfinite(reward):
            raise InvalidRewardError(f"reward must be a finite number, got {reward!r}")
        s, s2 = self._context(state), self._context(next_state)
        self._learn(s, i, float(reward), s2, bool(done))

    def end_episode(self) -> None:
        """Close the episode in progress (Monte-Carlo agents learn here)."""
        return

    def _update(self, index: int, reward: float, context: Any) -> None:
        x = self._context(context)
        self._learn(x, index, reward, x, True)

    def _learn(self, s: np.ndarray, i: int, r: float, s2: np.ndarray, done: bool) -> None:
        self._count(i, r)
        self._cache = None
        self._observe(s, i, r, s2, done)

    def _count(self, i: int, r: float) -> None:
        """Count a transition learned from: a pull of arm ``i`` for reward ``r``."""
        self._pulls[i] += 1
        self._reward_sum[i] += r
        self._learned += 1

    @abc.abstractmethod
    def _observe(self, s: np.ndarray, i: int, r: float, s2: np.ndarray, done: bool) -> None: ...

    # -- arms -------------------------------------------------------------------------------
    def _grow(self, prior_from: int | None) -> None:
        self._pulls = np.append(self._pulls, 0.0)
        self._reward_sum = np.append(self._reward_sum, 0.0)
        self._cache = None
        self._grow_model(prior_from)

    def _shrink(self, index: int) -> None:
        self._pulls = np.delete(self._pulls, index)
        self._reward_sum = np.delete(self._reward_sum, index)
        self._cache = None
        self._shrink_model(index)

    @abc.abstractmethod
    def _grow_model(self, prior_from: int | None) -> None: ...

    @abc.abstractmethod
    def _shrink_model(self, index: int) -> None: ...

    # -- persistence ------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "pulls": self._pulls.tolist(),
            "reward_sum": self._reward_sum.tolist(),
            "learned": self._learned,
            "model": self._get_model_state(),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._pulls = np.asarray(state["pulls"], dtype=float)
        self._reward_sum = np.asarray(state["reward_sum"], dtype=float)
        self._learned = int(state["learned"])
        self._cache = None
        self._set_model_state(state["model"])

    @abc.abstractmethod
    def _get_model_state(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _set_model_state(self, state: dict[str, Any]) -> None: ...
