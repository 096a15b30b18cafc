"""Deep Q-network (DQN / Double-DQN) over the request context."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from app.policies import _nn
from app.policies._agent import epsilon_greedy, linear_decay
from app.policies.replay_buffer import ReplayBuffer

if _nn.TORCH_AVAILABLE:  # else constructing the agent raises ImportError
    import torch
    import torch.nn.functional as F


class DQN(_nn.TorchAgent):
    """DQN: an MLP maps the state (the context) to one Q-value per arm.

    Learning (Mnih et al. 2015): every transition goes to a
    :class:`~app.policies.replay_buffer.ReplayBuffer`; every ``train_every``
    transitions (once ``learning_starts`` are stored) one Adam step on the
    Huber loss between ``Q(s, a)`` and the target ``r + gamma * (1 - done) *
    Q_target(s', a*)`` over a uniform batch of ``batch_size``, gradients
    clipped to norm ``max_grad_norm``. ``a*`` is ``argmax Q_target(s', .)``,
    or with ``double=True`` ``argmax Q(s', .)`` (Double-DQN, van Hasselt et
    al. 2016). The target network is copied from the online one every
    ``target_update`` training steps, or, with ``tau > 0``, moved by Polyak
    averaging ``tau`` of the way on every step.

    Selection is ε-greedy over the Q-values of the allowed arms (ties split
    evenly), so the logged propensity is exact; ε goes linearly from
    ``epsilon_start`` to ``epsilon`` over ``epsilon_decay_steps`` learned
    transitions (selections alone change nothing). ``update(arm, reward,
    context)`` is a terminal one-step transition; multi-step episodes use
    ``observe(state, arm, reward, next_state, done)``.

    An added arm gets a fresh output unit, or a copy of ``prior_from``'s
    (weights, target weights and Adam moments); a removed arm's unit and its
    transitions in the buffer are dropped.

    Snapshots hold the online and target weights, Adam's state, the private
    generators and the replay buffer — its ``snapshot_buffer_max`` most recent
    transitions. A restored agent continues exactly as the original would have
    while the buffer holds at most that many; past it, the restored agent
    samples from the most recent part only. Size with 12 state features:
    ~145 bytes per stored transition (10,000 → 1.5 MB; a full 100,000 →
    14.7 MB), plus ~125 kB for the default 64-64 network (weights, target
    weights, Adam's moments, generator state).

    >>> agent = DQN(["cheap", "strong"], seed=0, context_dim=2, hidden=(16,),
    ...             learning_starts=16, batch_size=16, epsilon=0.1, epsilon_decay_steps=0)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(400):
    ...     x = rng.random(2)
    ...     s = agent.select(x)
    ...     agent.update(s.arm, float(x[0] > 0.5) if s.arm == "strong" else 0.5, x)
    >>> agent.select([0.9, 0.5], explore=False).arm, agent.select([0.1, 0.5], explore=False).arm
    ('strong', 'cheap')
    >>> agent.probabilities(context=[0.9, 0.5]).round(3).tolist()  # ε = 0.1 over 2 arms
    [0.05, 0.95]
    """

    algorithm = "dqn"
    example_params: ClassVar[dict[str, Any]] = {
        "context_dim": 3,
        "hidden": (8,),
        "batch_size": 8,
        "buffer_size": 256,
        "learning_starts": 8,
        "target_update": 10,
        "epsilon": 0.2,
        "epsilon_decay_steps": 0,
        "learning_rate": 0.01,
    }
    _structural = ("context_dim", "hidden", "buffer_size")

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        context_dim: int = 8,
        hidden: Sequence[int] = (64, 64),
        learning_rate: float = 1e-3,
        gamma: float = 0.99,
        epsilon: float = 0.05,
        epsilon_start: float = 1.0,
        epsilon_decay_steps: int = 5_000,
        batch_size: int = 64,
        buffer_size: int = 100_000,
        learning_starts: int = 500,
        train_every: int = 1,
        target_update: int = 500,
        tau: float = 0.0,
        double: bool = False,
        max_grad_norm: float = 10.0,
        snapshot_buffer_max: int = 10_000,
    ) -> None:
        super().__init__(arms, seed, context_dim, hidden, learning_rate, gamma, max_grad_norm)
        for name, eps in (("epsilon", epsilon), ("epsilon_start", epsilon_start)):
            if not 0.0 <= eps <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if not 0.0 <= tau <= 1.0:
            raise ValueError("tau must be in [0, 1] (0: hard target updates)")
        for name, n in (
            ("batch_size", batch_size),
            ("buffer_size", buffer_size),
            ("train_every", train_every),
            ("target_update", target_update),
        ):
            if n < 1:
                raise ValueError(f"{name} must be at least 1")
        if learning_rate <= 0 or max_grad_norm <= 0:
            raise ValueError("learning_rate and max_grad_norm must be positive")
        self.epsilon = epsilon
        self.epsilon_start = epsilon_start
        self.epsilon_decay_steps = epsilon_decay_steps
        self.batch_size = batch_size
        self.buffer_size = buffer_size
        self.learning_starts = learning_starts
        self.train_every = train_every
        self.target_update = target_update
        self.tau = tau
        self.double = double
        self.snapshot_buffer_max = snapshot_buffer_max

        self._q = _nn.mlp(context_dim, self.hidden, len(self._arms), self._gen)
        self._target = _nn.mlp(context_dim, self.hidden, len(self._arms), self._gen)
        self._target.load_state_dict(self._q.state_dict())
        self._target.requires_grad_(False)
        self._optimizer = torch.optim.Adam(self._q.parameters(), lr=learning_rate)
        self._buffer = ReplayBuffer(buffer_size, context_dim, seed=self._seeds[1])
        self._train_steps = 0
        self._last_loss = math.nan
        self._built_with = self._built()

    # -- decisions --------------------------------------------------------------------------
    @property
    def current_epsilon(self) -> float:
        return linear_decay(
            self.epsilon_start, self.epsilon, self.epsilon_decay_steps, self._learned
        )

    def _compute_values(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self._q(torch.as_tensor(x, dtype=torch.float32)).numpy()

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        return epsilon_greedy(self.scores(allowed, context), self.current_epsilon)

    # -- learning ---------------------------------------------------------------------------
    def _observe(self, s: np.ndarray, i: int, r: float, s2: np.ndarray, done: bool) -> None:
        self._buffer.push(s, i, r, s2, done)
        if self._learned % self.train_every == 0 and len(self._buffer) >= max(
            1, self.learning_starts
        ):
            self.train_step()

    def train_step(self) -> float:
        """One gradient step on a batch from the replay buffer; returns the loss."""
        s, a, r, s2, d = (torch.from_numpy(v) for v in self._buffer.sample(self.batch_size))
        q = self._q(s).gather(1, a.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            q_next = self._target(s2)
            if self.double:
                best = self._q(s2).argmax(1, keepdim=True)
                v_next = q_next.gather(1, best).squeeze(1)
            else:
                v_next = q_next.max(1).values
            y = r + self.gamma * (~d).float() * v_next
        loss = F.smooth_l1_loss(q, y)
        self._step(loss, self._q)
        self._train_steps += 1
        if self.tau > 0.0:
            with torch.no_grad():
                for pt, p in zip(self._target.parameters(), self._q.parameters(), strict=True):
                    pt.lerp_(p, self.tau)
        elif self._train_steps % self.target_update == 0:
            self._target.load_state_dict(self._q.state_dict())
        self._cache = None
        self._last_loss = float(loss.detach())
        return self._last_loss

    # -- arms -------------------------------------------------------------------------------
    def _resize(self, ops: tuple[_nn.RowOp, _nn.RowOp], moment_op: _nn.RowOp) -> None:
        """Apply ``ops`` to the output layer's weight rows and bias of both
        networks, and ``moment_op`` to Adam's moments of them."""
        n = len(self._q) - 1
        self._q[n] = _nn.resize_linear(self._q[n], *ops)
        self._target[n] = _nn.resize_linear(self._target[n], *ops)
        self._target.requires_grad_(False)
        self._resize_moments(self._q, self._q[n], moment_op)

    def _shrink_model(self, index: int) -> None:
        super()._shrink_model(index)
        self._buffer.remove_action(index)

    # -- persistence ------------------------------------------------------------------------
    def _get_model_state(self) -> dict[str, Any]:
        return self._torch_state({"q": self._q, "target": self._target}) | {
            "buffer": self._buffer.to_dict(max_items=self.snapshot_buffer_max),
            "train_steps": self._train_steps,
        }

    def _set_model_state(self, state: dict[str, Any]) -> None:
        self._load_torch_state(state, {"q": self._q, "target": self._target})
        self._buffer.load_dict(state["buffer"])
        self._train_steps = int(state["train_steps"])
