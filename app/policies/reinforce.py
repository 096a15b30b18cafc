"""REINFORCE: a softmax policy network trained on Monte-Carlo returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from app.policies import _nn
from app.policies._agent import softmax
from app.policies._codec import decode_array, encode_array

if _nn.TORCH_AVAILABLE:  # else constructing the agent raises ImportError
    import torch


class Reinforce(_nn.TorchAgent):
    """REINFORCE with a baseline (Williams 1992).

    An MLP maps the state (the context) to one logit per arm; the policy is
    the softmax of the allowed arms' logits, so the logged propensity is the
    policy's own probability (no separate exploration). ``scores`` are the
    logits (``explore=False`` takes the most preferred arm).

    ``observe(state, arm, reward, next_state, done)`` records a step of the
    episode in progress; at ``done`` (or an explicit :meth:`end_episode`)
    the returns ``G_t = sum_k gamma^k r_{t+k}`` are computed and one Adam step
    is taken on ``-sum_t (G_t - b) log pi(a_t | s_t) - entropy_coef *
    mean_t H(pi(. | s_t))``. The baseline ``b`` is a running mean of the
    episodes' mean returns: the plain mean over the first ``1 /
    baseline_rate`` episodes, then an exponential average with that rate.
    ``update(arm, reward, context)`` learns from a length-1 episode of its
    own, leaving any episode in progress alone. The log-probabilities are
    taken over all arms (the allowed set is not recorded).

    Snapshots hold the weights, Adam's state, the baseline, the episode in
    progress and the private generator, so a restored agent continues
    exactly.

    >>> agent = Reinforce(["cheap", "strong"], seed=0, context_dim=2, hidden=(16,),
    ...                   learning_rate=0.02)
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

    monte_carlo = True  # learns from whole episodes (app/episodes.py hands them over)
    algorithm = "reinforce"
    example_params: ClassVar[dict[str, Any]] = {
        "context_dim": 3,
        "hidden": (8,),
        "learning_rate": 0.05,
    }

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        context_dim: int = 8,
        hidden: Sequence[int] = (32,),
        learning_rate: float = 0.01,
        gamma: float = 1.0,
        baseline_rate: float = 0.05,
        entropy_coef: float = 0.01,
        max_grad_norm: float = 10.0,
    ) -> None:
        super().__init__(arms, seed, context_dim, hidden, learning_rate, gamma, max_grad_norm)
        if not 0.0 < baseline_rate <= 1.0:
            raise ValueError("baseline_rate must be in (0, 1]")
        if learning_rate <= 0 or max_grad_norm <= 0 or entropy_coef < 0:
            raise ValueError(
                "learning_rate and max_grad_norm must be positive, entropy_coef non-negative"
            )
        self.baseline_rate = baseline_rate
        self.entropy_coef = entropy_coef
        self._net = _nn.mlp(context_dim, self.hidden, len(self._arms), self._gen)
        self._optimizer = torch.optim.Adam(self._net.parameters(), lr=learning_rate)
        self._baseline = 0.0
        self._episodes = 0
        self._ep_states: list[np.ndarray] = []
        self._ep_actions: list[int] = []
        self._ep_rewards: list[float] = []
        self._built_with = self._built()

    # -- decisions --------------------------------------------------------------------------
    def _compute_values(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self._net(torch.as_tensor(x, dtype=torch.float32)).numpy()

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        return softmax(self.scores(allowed, context))

    # -- learning ---------------------------------------------------------------------------
    def _observe(self, s: np.ndarray, i: int, r: float, s2: np.ndarray, done: bool) -> None:
        self._ep_states.append(s.astype(np.float32))
        self._ep_actions.append(i)
        self._ep_rewards.append(r)
        if done:
            self.end_episode()

    def _update(self, index: int, reward: float, context: Any) -> None:
        x = self._context(context)
        self._count(index, reward)
        self._learn_episode([x.astype(np.float32)], [index], [reward])

    def end_episode(self) -> None:
        """Learn from the episode in progress and start a new one."""
        if self._ep_actions:
            states, actions, rewards = self._ep_states, self._ep_actions, self._ep_rewards
            self._ep_states, self._ep_actions, self._ep_rewards = [], [], []
            self._learn_episode(states, actions, rewards)

    def _learn_episode(
        self, states: list[np.ndarray], actions: list[int], rewards: list[float]
    ) -> None:
        returns = np.zeros(len(rewards))
        g = 0.0
        for t in range(len(rewards) - 1, -1, -1):
            g = rewards[t] + self.gamma * g
            returns[t] = g
        self._episodes += 1
        if self._episodes == 1:
            self._baseline = float(returns.mean())
        advantages = torch.as_tensor(returns - self._baseline, dtype=torch.float32)
        rate = max(self.baseline_rate, 1.0 / self._episodes)
        self._baseline += rate * (float(returns.mean()) - self._baseline)

        logits = self._net(torch.from_numpy(np.stack(states)))
        logp = torch.log_softmax(logits, dim=1)
        chosen = logp.gather(1, torch.as_tensor(actions).unsqueeze(1)).squeeze(1)
        entropy = -(logp.exp() * logp).sum(1).mean()
        loss = -(advantages * chosen).sum() - self.entropy_coef * entropy
        self._step(loss, self._net)
        self._cache = None

    # -- arms -------------------------------------------------------------------------------
    def _resize(self, ops: tuple[_nn.RowOp, _nn.RowOp], moment_op: _nn.RowOp) -> None:
        n = len(self._net) - 1
        self._net[n] = _nn.resize_linear(self._net[n], *ops)
        self._resize_moments(self._net, self._net[n], moment_op)

    def _shrink_model(self, index: int) -> None:
        super()._shrink_model(index)
        keep = [j for j, a in enumerate(self._ep_actions) if a != index]
        self._ep_states = [self._ep_states[j] for j in keep]
        self._ep_rewards = [self._ep_rewards[j] for j in keep]
        self._ep_actions = [a - (a > index) for a in (self._ep_actions[j] for j in keep)]

    # -- persistence ------------------------------------------------------------------------
    def _get_model_state(self) -> dict[str, Any]:
        states = np.stack(self._ep_states) if self._ep_states else np.zeros((0, self.context_dim))
        return self._torch_state({"net": self._net}) | {
            "baseline": self._baseline,
            "episodes": self._episodes,
            "episode": {
                "states": encode_array(states.astype(np.float32)),
                "actions": list(self._ep_actions),
                "rewards": list(self._ep_rewards),
            },
        }

    def _set_model_state(self, state: dict[str, Any]) -> None:
        self._load_torch_state(state, {"net": self._net})
        self._baseline = float(state["baseline"])
        self._episodes = int(state["episodes"])
        ep = state["episode"]
        self._ep_states = list(decode_array(ep["states"]))
        self._ep_actions = [int(a) for a in ep["actions"]]
        self._ep_rewards = [float(r) for r in ep["rewards"]]
