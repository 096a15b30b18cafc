"""Advantage actor-critic with a TD(0) advantage, one step per transition."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from app.policies import _nn
from app.policies._agent import softmax

if _nn.TORCH_AVAILABLE:  # else constructing the agent raises ImportError
    import torch


class ActorCritic(_nn.TorchAgent):
    """One-step advantage actor-critic (A2C without the parallel workers).

    A shared MLP trunk feeds a policy head (one logit per arm) and a value
    head ``V(s)``. The policy is the softmax of the allowed arms' logits —
    the logged propensity is the policy's own probability — and ``scores``
    are the logits. Each transition ``(s, a, r, s', done)`` takes one Adam
    step on::

        delta = r + gamma * (1 - done) * V(s') - V(s)        (V(s') not differentiated)
        loss  = -delta * log pi(a | s) + value_coef * delta**2 - entropy_coef * H(pi(. | s))

    with ``delta`` held constant in the actor term (the TD(0) advantage) and
    gradients clipped to norm ``max_grad_norm``. ``update(arm, reward,
    context)`` is a terminal transition (``delta = r - V(s)``): a contextual
    bandit with a learned baseline.

    Snapshots hold the weights, Adam's state and the private generator; a
    restored agent continues exactly.

    >>> agent = ActorCritic(["cheap", "strong"], seed=0, context_dim=2, hidden=(16,),
    ...                     learning_rate=0.02)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(500):
    ...     x = rng.random(2)
    ...     s = agent.select(x)
    ...     agent.update(s.arm, float(x[0] > 0.5) if s.arm == "strong" else 0.5, x)
    >>> agent.select([0.9, 0.5], explore=False).arm, agent.select([0.1, 0.5], explore=False).arm
    ('strong', 'cheap')
    >>> bool(agent.probabilities(context=[0.9, 0.5])[1] > 0.95)
    True
    """

    algorithm = "actor_critic"
    example_params: ClassVar[dict[str, Any]] = {
        "context_dim": 3,
        "hidden": (8,),
        "learning_rate": 0.02,
    }

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        context_dim: int = 8,
        hidden: Sequence[int] = (32,),
        learning_rate: float = 3e-3,
        gamma: float = 0.99,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        max_grad_norm: float = 1.0,
    ) -> None:
        super().__init__(arms, seed, context_dim, hidden, learning_rate, gamma, max_grad_norm)
        if learning_rate <= 0 or max_grad_norm <= 0 or value_coef <= 0 or entropy_coef < 0:
            raise ValueError(
                "learning_rate, max_grad_norm and value_coef must be positive, "
                "entropy_coef non-negative"
            )
        self.value_coef = value_coef
        self.entropy_coef = entropy_coef
        width = _nn.out_width(context_dim, self.hidden)
        self._net = torch.nn.ModuleDict(
            {
                "trunk": _nn.mlp(context_dim, self.hidden, None, self._gen),
                "policy": _nn.linear(width, len(self._arms), self._gen),
                "value": _nn.linear(width, 1, self._gen),
            }
        )
        self._optimizer = torch.optim.Adam(self._net.parameters(), lr=learning_rate)
        self._built_with = self._built()

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._net["trunk"](x)
        return self._net["policy"](h), self._net["value"](h).squeeze(-1)

    # -- decisions --------------------------------------------------------------------------
    def _compute_values(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self._heads(torch.as_tensor(x, dtype=torch.float32))[0].numpy()

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        return softmax(self.scores(allowed, context))

    def value(self, context: Any) -> float:
        """The critic's estimate ``V(s)`` of a state."""
        x = torch.as_tensor(self._context(context), dtype=torch.float32)
        with torch.no_grad():
            return float(self._heads(x)[1])

    # -- learning ---------------------------------------------------------------------------
    def _observe(self, s: np.ndarray, i: int, r: float, s2: np.ndarray, done: bool) -> None:
        x = torch.as_tensor(s, dtype=torch.float32)
        logits, v = self._heads(x)
        bootstrap = 0.0
        if not done and self.gamma > 0.0:
            with torch.no_grad():
                bootstrap = self.gamma * float(
                    self._heads(torch.as_tensor(s2, dtype=torch.float32))[1]
                )
        delta = r + bootstrap - v
        logp = torch.log_softmax(logits, dim=-1)
        entropy = -(logp.exp() * logp).sum()
        loss = (
            -delta.detach() * logp[i] + self.value_coef * delta.pow(2) - self.entropy_coef * entropy
        )
        self._step(loss, self._net)

    # -- arms -------------------------------------------------------------------------------
    def _resize(self, ops: tuple[_nn.RowOp, _nn.RowOp], moment_op: _nn.RowOp) -> None:
        self._net["policy"] = _nn.resize_linear(self._net["policy"], *ops)
        self._resize_moments(self._net, self._net["policy"], moment_op)

    # -- persistence ------------------------------------------------------------------------
    def _get_model_state(self) -> dict[str, Any]:
        return self._torch_state({"net": self._net})

    def _set_model_state(self, state: dict[str, Any]) -> None:
        self._load_torch_state(state, {"net": self._net})
