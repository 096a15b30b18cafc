"""Torch plumbing of the neural agents: networks initialised from a private
generator (never the global one), an output layer that grows and shrinks with
the arms (and the Adam moments with it), and exact JSON-able snapshots of
weights, optimiser state and generator state. :class:`TorchAgent` puts these
together for the agents trained by Adam (DQN, REINFORCE, actor-critic).

PyTorch is the optional ``torch`` extra: without it the agent modules still
import (so the registry lists them) and constructing one raises ImportError.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from app.policies._agent import Agent
from app.policies._codec import decode_array, encode_array

try:
    import torch
    from torch import nn
except ModuleNotFoundError as exc:  # pragma: no cover - torch is installed in CI
    _TORCH_MISSING: ModuleNotFoundError | None = exc
else:
    _TORCH_MISSING = None
TORCH_AVAILABLE = _TORCH_MISSING is None


def require_torch(who: str) -> None:
    if _TORCH_MISSING is not None:
        raise ImportError(
            f"{who} needs PyTorch: pip install 'llm-auto-optimizer[torch]'"
        ) from _TORCH_MISSING


def generator(seed_seq: np.random.SeedSequence) -> torch.Generator:
    """A private torch generator seeded from a numpy seed sequence."""
    g = torch.Generator()
    g.manual_seed(int(seed_seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))
    return g


def _uniform_(t: torch.Tensor, bound: float, g: torch.Generator) -> None:
    with torch.no_grad():
        t.uniform_(-bound, bound, generator=g)


def linear(in_features: int, out_features: int, g: torch.Generator) -> nn.Linear:
    """``nn.Linear`` with its default initialisation (uniform in
    ±1/sqrt(fan_in)) drawn from ``g``; ``skip_init`` keeps the global
    generator untouched."""
    layer = nn.utils.skip_init(nn.Linear, in_features, out_features)
    bound = 1.0 / math.sqrt(in_features)
    _uniform_(layer.weight, bound, g)
    _uniform_(layer.bias, bound, g)
    return layer


def mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int | None, g: torch.Generator
) -> nn.Sequential:
    """Linear + ReLU per hidden width, then a linear output of ``out_dim``
    (none if ``out_dim`` is None: a trunk for several heads)."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [linear(width, h, g), nn.ReLU()]
        width = h
    if out_dim is not None:
        layers.append(linear(width, out_dim, g))
    return nn.Sequential(*layers)


def out_width(in_dim: int, hidden: Sequence[int]) -> int:
    return hidden[-1] if hidden else in_dim


# -- arms: one output row each -----------------------------------------------------------------
RowOp = Callable[["torch.Tensor"], "torch.Tensor"]


def grow_rows(source: int | None, fresh: torch.Tensor | None = None) -> RowOp:
    """Append a row: a copy of row ``source``, else ``fresh`` (else zeros)."""

    def op(t: torch.Tensor) -> torch.Tensor:
        if source is not None:
            row = t[source : source + 1]
        elif fresh is not None:
            row = fresh.reshape(1, *t.shape[1:]).to(t.dtype)
        else:
            row = torch.zeros_like(t[:1])
        return torch.cat([t, row])

    return op


def drop_row(index: int) -> RowOp:
    def op(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:index], t[index + 1 :]])

    return op


def resize_linear(layer: nn.Module, weight_op: RowOp, bias_op: RowOp) -> nn.Linear:
    """A new output layer whose weight rows and bias are ``op`` of the old ones."""
    assert isinstance(layer, nn.Linear)
    with torch.no_grad():
        w, b = weight_op(layer.weight.detach()), bias_op(layer.bias.detach())
    new = nn.utils.skip_init(nn.Linear, layer.in_features, w.shape[0])
    with torch.no_grad():
        new.weight.copy_(w)
        new.bias.copy_(b)
    return new


def fresh_row(in_features: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial weights and bias of one new output unit."""
    bound = 1.0 / math.sqrt(in_features)
    w, b = torch.empty(in_features), torch.empty(1)
    _uniform_(w, bound, g)
    _uniform_(b, bound, g)
    return w, b


def rebuild_adam(
    old: torch.optim.Optimizer,
    params: list[nn.Parameter],
    ops: dict[int, RowOp],
) -> torch.optim.Adam:
    """A new Adam over ``params`` (same order as ``old``'s) carrying over
    ``old``'s state, with the moments of parameter ``i`` passed through
    ``ops[i]`` (an arm added or removed)."""
    sd = old.state_dict()
    group = {k: v for k, v in sd["param_groups"][0].items() if k != "params"}
    new = torch.optim.Adam(params, **group)
    state = {}
    for i, st in sd["state"].items():
        op = ops.get(i)
        state[i] = {
            k: op(v) if op is not None and isinstance(v, torch.Tensor) and v.dim() > 0 else v
            for k, v in st.items()
        }
    nsd = new.state_dict()
    nsd["state"] = state
    new.load_state_dict(nsd)
    return new


# -- snapshots -----------------------------------------------------------------------------
def encode_tensor(t: torch.Tensor) -> dict[str, Any]:
    return encode_array(t.detach().cpu().numpy())


def decode_tensor(d: dict[str, Any]) -> torch.Tensor:
    return torch.from_numpy(decode_array(d))


def module_state(module: nn.Module) -> dict[str, Any]:
    return {name: encode_tensor(t) for name, t in module.state_dict().items()}


def load_module_state(module: nn.Module, state: dict[str, Any]) -> None:
    module.load_state_dict({name: decode_tensor(d) for name, d in state.items()})


def optimizer_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The per-parameter state (Adam's step and moments), exactly."""
    return {
        str(i): {k: encode_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in st.items()}
        for i, st in opt.state_dict()["state"].items()
    }


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    sd = opt.state_dict()
    sd["state"] = {
        int(i): {k: decode_tensor(v) if isinstance(v, dict) else v for k, v in st.items()}
        for i, st in state.items()
    }
    opt.load_state_dict(sd)


def generator_state(g: torch.Generator) -> dict[str, Any]:
    return encode_tensor(g.get_state())


def set_generator_state(g: torch.Generator, state: dict[str, Any]) -> None:
    g.set_state(decode_tensor(state))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


Resize = tuple[tuple[RowOp, RowOp], RowOp]


def grow_ops(prior_from: int | None, in_features: int, g: torch.Generator) -> Resize:
    """Row operations adding an arm: on (weight, bias) of the output layer,
    and on Adam's moments of them. The new unit copies ``prior_from``'s
    weights and moments, else gets fresh weights from ``g`` and zero moments."""
    if prior_from is not None:
        op = grow_rows(prior_from)
        return (op, op), op
    w, b = fresh_row(in_features, g)
    return (grow_rows(None, w), grow_rows(None, b)), grow_rows(None)


def drop_ops(index: int) -> Resize:
    """Row operations removing the arm at ``index``."""
    op = drop_row(index)
    return (op, op), op


class TorchAgent(Agent):
    """An :class:`~app.policies._agent.Agent` whose networks are trained by one
    Adam optimiser (``_optimizer``, which subclasses create) and initialised
    from a private generator (``_gen``). It checks ``gamma`` and keeps the
    hyperparameters these agents share, takes clipped gradient steps, grows
    and shrinks the output layer with the arms (subclasses say how in
    ``_resize``), and snapshots networks, Adam's state and the generator."""

    _structural: tuple[str, ...] = ("context_dim", "hidden")
    _optimizer: torch.optim.Optimizer

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None,
        context_dim: int,
        hidden: Sequence[int],
        learning_rate: float,
        gamma: float,
        max_grad_norm: float,
    ) -> None:
        require_torch(type(self).__name__)
        super().__init__(arms, seed, context_dim)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1]")
        self.hidden = tuple(int(h) for h in hidden)
        self.learning_rate = learning_rate
        self.gamma = gamma
        self.max_grad_norm = max_grad_norm
        self._gen = generator(self._seeds[0])

    def _params_changed(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        super()._params_changed()
        set_lr(self._optimizer, self.learning_rate)

    # -- learning ---------------------------------------------------------------------------
    def _step(self, loss: torch.Tensor, net: nn.Module) -> None:
        """One Adam step down ``loss``, the gradient of ``net``'s parameters
        clipped to norm ``max_grad_norm``."""
        self._optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), self.max_grad_norm)
        self._optimizer.step()

    # -- arms -------------------------------------------------------------------------------
    @abc.abstractmethod
    def _resize(self, ops: tuple[RowOp, RowOp], moment_op: RowOp) -> None:
        """Apply ``ops`` to the weight rows and bias of the output layer (one
        row per arm) and ``moment_op`` to Adam's moments of them."""

    def _resize_moments(self, net: nn.Module, output: nn.Module, moment_op: RowOp) -> None:
        """Rebuild Adam over ``net``'s parameters, passing the moments of its
        (resized) ``output`` layer through ``moment_op``."""
        params = list(net.parameters())
        resized = {id(p) for p in output.parameters()}
        ops = {i: moment_op for i, p in enumerate(params) if id(p) in resized}
        self._optimizer = rebuild_adam(self._optimizer, params, ops)

    def _grow_model(self, prior_from: int | None) -> None:
        self._resize(*grow_ops(prior_from, out_width(self.context_dim, self.hidden), self._gen))

    def _shrink_model(self, index: int) -> None:
        self._resize(*drop_ops(index))

    # -- persistence ------------------------------------------------------------------------
    def _torch_state(self, networks: dict[str, nn.Module]) -> dict[str, Any]:
        """The weights of ``networks`` (by name), Adam's state and the generator."""
        return {name: module_state(net) for name, net in networks.items()} | {
            "optimizer": optimizer_state(self._optimizer),
            "generator": generator_state(self._gen),
        }

    def _load_torch_state(self, state: dict[str, Any], networks: dict[str, nn.Module]) -> None:
        for name, net in networks.items():
            load_module_state(net, state[name])
        load_optimizer_state(self._optimizer, state["optimizer"])
        set_generator_state(self._gen, state["generator"])
