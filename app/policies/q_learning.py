"""Tabular Q-learning over a discretised context, with experience replay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from app.policies._agent import Agent, epsilon_greedy, linear_decay
from app.policies.replay_buffer import ReplayBuffer


class QLearning(Agent):
    """Watkins' Q-learning on a table keyed by the discretised state.

    **Discretisation.** Each of the ``context_dim`` features is cut into
    ``bins`` equal-width bins over ``[low, high]``; values outside fall into
    the first or last bin. Feature ``x_j`` goes to bin ``min(bins - 1,
    max(0, floor((x_j - low) / (high - low) * bins)))`` and the state key is
    the bin numbers joined by commas (``"0,3,1"``). Only visited states are
    stored; an unvisited one has ``initial_q`` for every arm (set it above
    the rewards for optimistic exploration).

    **Learning.** A transition ``(s, a, r, s', done)`` moves
    ``Q(s, a)`` by ``learning_rate`` toward ``r + gamma * (1 - done) *
    max Q(s', .)``; it is then stored in a replay buffer, from which
    ``replay_steps`` uniformly drawn transitions are replayed the same way.
    ``update(arm, reward, context)`` is a terminal transition.

    **Selection** is ε-greedy over the allowed arms' Q-values, ties split
    evenly; ε decays linearly from ``epsilon_start`` to ``epsilon`` over
    ``epsilon_decay_steps`` learned transitions.

    Snapshots hold the table (one JSON row of Q-values per visited state), the
    generators and the ``snapshot_buffer_max`` most recent transitions
    (float64 states, base64: ``(16 * context_dim + 17) * 4 / 3`` bytes each,
    279 for 12 features); continuation after a restore is exact while the
    buffer holds no more than that.

    >>> q = QLearning(["left", "right"], seed=0, context_dim=1, bins=2, epsilon=0.1)
    >>> for _ in range(200):
    ...     q.update("right", 1.0, [0.9]); q.update("left", 0.0, [0.9])
    ...     q.update("left", 1.0, [0.1]); q.update("right", 0.0, [0.1])
    >>> q.select([0.8], explore=False).arm, q.select([0.2], explore=False).arm
    ('right', 'left')
    >>> q.state_key([0.8]), q.state_key([0.2]), q.state_key([7.0])
    ('1', '0', '1')
    """

    algorithm = "q_learning"
    example_params: ClassVar[dict[str, Any]] = {
        "context_dim": 3,
        "bins": 3,
        "epsilon": 0.2,
        "epsilon_decay_steps": 0,
        "initial_q": 1.0,
        "learning_rate": 0.2,
        "buffer_size": 256,
        "replay_steps": 2,
    }
    _structural = ("context_dim", "bins", "low", "high", "buffer_size")

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        context_dim: int = 8,
        bins: int = 5,
        low: float = 0.0,
        high: float = 1.0,
        learning_rate: float = 0.1,
        gamma: float = 0.99,
        epsilon: float = 0.1,
        epsilon_start: float = 1.0,
        epsilon_decay_steps: int = 0,
        initial_q: float = 0.0,
        buffer_size: int = 10_000,
        replay_steps: int = 4,
        snapshot_buffer_max: int = 10_000,
    ) -> None:
        super().__init__(arms, seed, context_dim)
        if bins < 1:
            raise ValueError("bins must be at least 1")
        if not high > low:
            raise ValueError("high must be above low")
        if not 0.0 < learning_rate <= 1.0:
            raise ValueError("learning_rate must be in (0, 1]")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1]")
        for name, eps in (("epsilon", epsilon), ("epsilon_start", epsilon_start)):
            if not 0.0 <= eps <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if buffer_size < 1 or replay_steps < 0:
            raise ValueError("buffer_size must be at least 1 and replay_steps at least 0")
        self.bins = bins
        self.low = low
        self.high = high
        self.learning_rate = learning_rate
        self.gamma = gamma
        self.epsilon = epsilon
        self.epsilon_start = epsilon_start
        self.epsilon_decay_steps = epsilon_decay_steps
        self.initial_q = initial_q
        self.buffer_size = buffer_size
        self.replay_steps = replay_steps
        self.snapshot_buffer_max = snapshot_buffer_max
        self._table: dict[str, np.ndarray] = {}
        self._buffer = ReplayBuffer(buffer_size, context_dim, seed=self._seeds[1], dtype=np.float64)
        self._built_with = self._built()

    def state_key(self, context: Any) -> str:
        """The table key of a context (its bin numbers)."""
        x = np.asarray(context, dtype=float)
        b = np.floor((x - self.low) / (self.high - self.low) * self.bins)
        return ",".join(str(int(v)) for v in np.clip(b, 0, self.bins - 1))

    @property
    def current_epsilon(self) -> float:
        return linear_decay(
            self.epsilon_start, self.epsilon, self.epsilon_decay_steps, self._learned
        )

    def _row(self, x: np.ndarray) -> np.ndarray | None:
        return self._table.get(self.state_key(x))

    def _compute_values(self, x: np.ndarray) -> np.ndarray:
        row = self._row(x)
        return row.copy() if row is not None else np.full(len(self._arms), float(self.initial_q))

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        return epsilon_greedy(self.scores(allowed, context), self.current_epsilon)

    def _td(self, s: np.ndarray, i: int, r: float, s2: np.ndarray, done: bool) -> None:
        key = self.state_key(s)
        row = self._table.get(key)
        if row is None:
            row = self._table[key] = np.full(len(self._arms), float(self.initial_q))
        target = r
        if not done:
            nxt = self._row(s2)
            target += self.gamma * (float(nxt.max()) if nxt is not None else self.initial_q)
        row[i] += self.learning_rate * (target - row[i])

    def _observe(self, s: np.ndarray, i: int, r: float, s2: np.ndarray, done: bool) -> None:
        self._td(s, i, r, s2, done)
        self._buffer.push(s, i, r, s2, done)
        if self.replay_steps:
            ss, aa, rr, ss2, dd = self._buffer.sample(self.replay_steps)
            for j in range(self.replay_steps):
                self._td(ss[j], int(aa[j]), float(rr[j]), ss2[j], bool(dd[j]))

    def _grow_model(self, prior_from: int | None) -> None:
        for key, row in self._table.items():
            v = row[prior_from] if prior_from is not None else self.initial_q
            self._table[key] = np.append(row, v)

    def _shrink_model(self, index: int) -> None:
        for key, row in self._table.items():
            self._table[key] = np.delete(row, index)
        self._buffer.remove_action(index)

    def _get_model_state(self) -> dict[str, Any]:
        return {
            "table": {key: row.tolist() for key, row in self._table.items()},
            "buffer": self._buffer.to_dict(max_items=self.snapshot_buffer_max),
        }

    def _set_model_state(self, state: dict[str, Any]) -> None:
        self._table = {k: np.asarray(v, dtype=float) for k, v in state["table"].items()}
        self._buffer.load_dict(state["buffer"])
