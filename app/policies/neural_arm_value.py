"""A small neural network from the context to every arm's value, trained online."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from app.policies import _nn
from app.policies._contextual import ValuePolicy
from app.policies.base import SnapshotError

# PyTorch is the optional ``torch`` extra: without it this module still
# imports (the registry lists the policy) and constructing raises.
if _nn.TORCH_AVAILABLE:
    import torch

_EXPLORATIONS = ("epsilon", "softmax")
_OPTIMIZERS = ("adam", "sgd")


def _encode(t: torch.Tensor) -> dict[str, Any]:
    return {"dtype": str(t.dtype).removeprefix("torch."), "data": t.tolist()}


def _decode(doc: dict[str, Any]) -> torch.Tensor:
    dtype = getattr(torch, str(doc["dtype"]), None)
    if not isinstance(dtype, torch.dtype):
        raise SnapshotError(f"unknown tensor dtype {doc['dtype']!r} in the snapshot")
    return torch.tensor(doc["data"], dtype=dtype)


def _make_net(
    context_dim: int, hidden: int, arms: int, generator: torch.Generator
) -> torch.nn.Sequential:
    """context → ReLU(hidden) → ReLU(hidden) → one value per arm, float64."""
    dims = [(context_dim, hidden), (hidden, hidden), (hidden, arms)]
    # skip_init: torch's own initialisation would draw from the global
    # generator; these layers draw from the policy's.
    layers = [torch.nn.utils.skip_init(torch.nn.Linear, i, o, dtype=torch.float64) for i, o in dims]
    with torch.no_grad():
        for layer in layers[:-1]:
            bound = 1.0 / layer.in_features**0.5  # torch's default range
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
        # Every arm starts at value 0 (ties, hence uniform choices); a new
        # arm's row starts there too.
        layers[-1].weight.zero_()
        layers[-1].bias.zero_()
    return torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])


class NeuralArmValue(ValuePolicy):
    """A two-hidden-layer MLP predicts every arm's reward from the context.

    After each reward, one optimiser step (Adam or SGD, rate ``lr``) on the
    squared error of the chosen arm's output. Exploration is ``epsilon``-greedy
    (``epsilon / K`` each plus ``1 - epsilon`` on the best, shared by exact
    ties) or a ``softmax`` of the values at ``temperature``; either way the
    probabilities are exact. Unlike the linear policies it can learn rewards
    that are not linear in the context (interactions, thresholds).

    The network is float64 on the CPU, initialised from a private
    ``torch.Generator`` seeded by ``seed``: no global torch state is touched,
    and the same seed gives the same choices. Snapshots hold the weights and
    the optimiser's moments as JSON lists. A new arm gets a new output row:
    ``prior_from``'s (and its optimiser moments), or zeros.

    >>> import numpy as np
    >>> policy = NeuralArmValue(["a", "b"], seed=0, context_dim=2, hidden=16, epsilon=0.1)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(300):
    ...     x = np.array([1.0, rng.normal()])
    ...     policy.update("a", float(abs(x[1]) < 0.7), x)
    ...     policy.update("b", float(abs(x[1]) >= 0.7), x)
    >>> policy.select(np.array([1.0, 0.0]), explore=False).arm
    'a'
    >>> policy.select(np.array([1.0, 2.0]), explore=False).arm
    'b'
    >>> policy.probabilities(None, np.array([1.0, 2.0])).round(3).tolist()
    [0.05, 0.95]
    """

    algorithm = "neural_arm_value"
    example_params: ClassVar[dict[str, Any]] = {"context_dim": 3, "hidden": 8, "epsilon": 0.2}

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        context_dim: int = 8,
        hidden: int = 32,
        lr: float = 0.01,
        optimizer: str = "adam",
        exploration: str = "epsilon",
        epsilon: float = 0.1,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(arms, seed)
        _nn.require_torch(type(self).__name__)
        self.context_dim = context_dim
        self.hidden = hidden
        self.lr = lr
        self.optimizer = optimizer
        self.exploration = exploration
        self.epsilon = epsilon
        self.temperature = temperature
        self._check_params()
        generator = _nn.generator(np.random.SeedSequence(seed))
        self._net = _make_net(context_dim, hidden, len(self._arms), generator)
        self._shape = (context_dim, hidden)
        self._opt = self._make_optimizer()
        self._pulls = np.zeros(len(self._arms))
        self._reward_sum = np.zeros(len(self._arms))

    # -- hyperparameters -------------------------------------------------------
    def _check_params(self) -> None:
        self._check_context_dim()
        if not isinstance(self.hidden, int) or self.hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {self.hidden!r}")
        if not self.lr > 0.0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.exploration not in _EXPLORATIONS:
            raise ValueError(
                f"exploration must be one of {_EXPLORATIONS}, got {self.exploration!r}"
            )
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def _params_changed(self) -> None:
        self._keep_fixed({"context_dim": self._shape[0], "hidden": self._shape[1]})
        self._check_params()
        if self.optimizer != self._opt_name:
            self._opt = self._make_optimizer()  # a new optimiser starts without moments
        _nn.set_lr(self._opt, self.lr)
        self._cache = None

    def _make_optimizer(self) -> torch.optim.Optimizer:
        self._opt_name = self.optimizer
        params = list(self._net.parameters())
        # foreach=False: per-tensor steps, the fastest for tensors this small.
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, foreach=False)
        return torch.optim.SGD(params, lr=self.lr, foreach=False)

    # -- arms ------------------------------------------------------------------
    def _reshape_output(self, change: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply ``change`` (on dimension 0: one row per arm) to the output
        layer and to its optimiser moments; the optimiser is rebuilt."""
        old = list(self._net.parameters())
        moments = [self._opt.state.get(p) for p in old]
        out = self._net[-1]
        assert isinstance(out, torch.nn.Linear)
        with torch.no_grad():
            out.weight = torch.nn.Parameter(change(out.weight.detach()))
            out.bias = torch.nn.Parameter(change(out.bias.detach()))
        out.out_features = out.weight.shape[0]
        self._opt = self._make_optimizer()
        for p_old, p_new, state in zip(old, self._net.parameters(), moments, strict=True):
            if state:
                if p_new is not p_old:
                    state = {
                        k: change(v) if isinstance(v, torch.Tensor) and v.dim() > 0 else v
                        for k, v in state.items()
                    }
                self._opt.state[p_new] = state
        self._cache = None

    def _grow(self, prior_from: int | None) -> None:
        def add_row(t: torch.Tensor) -> torch.Tensor:
            row = t[prior_from : prior_from + 1] if prior_from is not None else t[:1] * 0.0
            return torch.cat([t, row.clone()])

        self._reshape_output(add_row)
        self._pulls = np.append(self._pulls, 0.0)
        self._reward_sum = np.append(self._reward_sum, 0.0)

    def _shrink(self, index: int) -> None:
        self._reshape_output(lambda t: torch.cat([t[:index], t[index + 1 :]]))
        self._pulls = np.delete(self._pulls, index)
        self._reward_sum = np.delete(self._reward_sum, index)

    # -- decisions -------------------------------------------------------------
    def _compute_values(self, x: np.ndarray) -> np.ndarray:
        """Every arm's predicted value (cached for the last context)."""
        with torch.no_grad():
            return self._net(torch.from_numpy(x)).numpy().copy()

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        v = self.scores(allowed, context)
        if self.exploration == "softmax":
            e = np.exp((v - v.max()) / self.temperature)
            return e / e.sum()
        tied = v == v.max()
        return self.epsilon / len(v) + (1.0 - self.epsilon) * tied / np.count_nonzero(tied)

    # -- learning --------------------------------------------------------------
    def _update(self, index: int, reward: float, context: Any) -> None:
        x = self._context(context)
        self._opt.zero_grad(set_to_none=True)
        predicted = self._net(torch.from_numpy(x))[index]
        loss = (predicted - reward) ** 2
        loss.backward()
        self._opt.step()
        self._pulls[index] += 1
        self._reward_sum[index] += reward
        self._cache = None

    # -- persistence ---------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        params = list(self._net.parameters())
        return {
            "weights": {k: _encode(v) for k, v in self._net.state_dict().items()},
            # Per parameter, in the network's order: the optimiser's moments.
            "optimizer_state": [
                {k: _encode(v) for k, v in self._opt.state.get(p, {}).items()} for p in params
            ],
            "pulls": self._pulls,
            "reward_sum": self._reward_sum,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        k = len(self._arms)
        weights = {name: _decode(doc) for name, doc in state["weights"].items()}
        if weights.keys() != self._net.state_dict().keys():
            raise SnapshotError(f"{self.algorithm} snapshot holds layers {sorted(weights)}")
        outputs = weights["4.bias"].shape
        if outputs != (k,):
            raise SnapshotError(f"{self.algorithm} snapshot has outputs {outputs} for {k} arms")
        try:
            self._net.load_state_dict(weights)
        except RuntimeError as exc:
            raise SnapshotError(
                f"{self.algorithm} snapshot does not fit the network: {exc}"
            ) from None
        self._opt = self._make_optimizer()
        params = list(self._net.parameters())
        for p, moments in zip(params, state["optimizer_state"], strict=True):
            if moments:
                self._opt.state[p] = {name: _decode(doc) for name, doc in moments.items()}
        self._pulls = np.asarray(state["pulls"], dtype=float)
        self._reward_sum = np.asarray(state["reward_sum"], dtype=float)
        self._cache = None
