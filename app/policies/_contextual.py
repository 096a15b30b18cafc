"""Machinery shared by the contextual policies (private: the registry skips
modules whose name starts with ``_``, and these classes name no algorithm).

``ContextualPolicy`` checks contexts and ``context_dim``, refuses a live
change of the hyperparameters the learned state was built with, and reports
each arm's pulls and mean reward. ``ValuePolicy`` adds scores that are every
arm's value at the context, computed once per context and cached until the
state changes. The functions serve the policies that keep a ridge regression
per arm (LinUCB, HybridLinUCB, LinearThompson).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.policies._stats import arm_stats
from app.policies.base import Policy, PolicyError, SnapshotError


class ContextualPolicy(Policy):
    """A policy that needs a context of ``context_dim`` values. Subclasses
    keep each arm's pulls and reward sum in ``_pulls`` and ``_reward_sum``
    (for :meth:`stats`) and may add figures of their own with ``_figures``."""

    contextual = True
    context_dim: int
    _pulls: Any  # one entry per arm: an array (LinUCB: a list)
    _reward_sum: Any

    def _check_context_dim(self) -> None:
        if not isinstance(self.context_dim, int) or self.context_dim < 1:
            raise ValueError(f"context_dim must be a positive integer, got {self.context_dim!r}")

    def _context(self, context: Any) -> np.ndarray:
        x = self.check_context(context)
        assert x is not None  # contextual
        return x

    def _keep_fixed(self, learnt: dict[str, Any]) -> None:
        """Undo and refuse a change, by ``set_params``, of hyperparameters the
        learned state was built with (``learnt``: their values then)."""
        wanted = {name: getattr(self, name) for name in learnt}
        if wanted != learnt:
            for name, value in learnt.items():
                setattr(self, name, value)
            names = list(learnt)
            what = names[0] if len(names) == 1 else f"({', '.join(names)})"
            raise PolicyError(
                f"{self.algorithm}: {what} cannot change on a live policy "
                f"({_shown(learnt)} → {_shown(wanted)}); start a fresh one"
            )

    def _figures(self) -> dict[str, np.ndarray]:
        """The algorithm's own per-arm figures for :meth:`stats`, by name (one
        finite number per arm each)."""
        return {}

    def stats(self) -> dict[str, dict[str, float]]:
        return arm_stats(self._arms, self._pulls, self._reward_sum, **self._figures())


def _shown(values: dict[str, Any]) -> str:
    """One value as itself, several as a tuple: ``3``, ``(3, 1)``."""
    items = tuple(values.values())
    return str(items[0]) if len(items) == 1 else str(items)


class ValuePolicy(ContextualPolicy):
    """A contextual policy whose scores are a value per arm at the context:
    ``_compute_values`` gives every arm's, cached for the last context until
    ``_cache`` is set to ``None`` (which subclasses do whenever the state
    changes)."""

    def __init__(self, arms: Sequence[str], seed: int | None = None) -> None:
        super().__init__(arms, seed)
        self._cache: tuple[bytes, np.ndarray] | None = None

    @abc.abstractmethod
    def _compute_values(self, x: np.ndarray) -> np.ndarray:
        """A score per arm (all arms) for the context ``x``."""

    def _values(self, x: np.ndarray) -> np.ndarray:
        key = x.tobytes()
        if self._cache is None or self._cache[0] != key:
            values = np.asarray(self._compute_values(x), dtype=np.float64)
            values.flags.writeable = False  # shared with every caller
            self._cache = (key, values)
        return self._cache[1]

    def scores(self, allowed: Sequence[str] | None = None, context: Any = None) -> np.ndarray:
        idx = self.allowed_indices(allowed)
        return self._values(self._context(context))[idx]


def share_best(scores: np.ndarray) -> np.ndarray:
    """Probability 1 on the highest score, shared evenly by exact ties.

    >>> share_best(np.array([0.2, 0.7, 0.7])).tolist()
    [0.0, 0.5, 0.5]
    """
    tied = scores == scores.max()
    return tied / np.count_nonzero(tied)


# -- per-arm ridge regressions -------------------------------------------------------------------
def ridge_figures(ainv: np.ndarray, theta: np.ndarray) -> dict[str, np.ndarray]:
    """Each arm's ``|θ|`` and the trace of its ``A⁻¹`` (the uncertainty: it
    shrinks as the arm's data covers more directions of the context)."""
    return {
        "theta_norm": np.linalg.norm(theta, axis=1),
        "uncertainty": np.trace(ainv, axis1=1, axis2=2),
    }


def load_ridge(
    state: dict[str, Any], arms: int, dim: int, algorithm: str
) -> tuple[np.ndarray, np.ndarray]:
    """A snapshot's ``A⁻¹`` and ``θ`` of every arm, checked to be of ``arms``
    arms over ``dim`` features."""
    ainv = np.asarray(state["a_inv"], dtype=float)
    theta = np.asarray(state["theta"], dtype=float)
    if ainv.shape != (arms, dim, dim) or theta.shape != (arms, dim):
        raise SnapshotError(
            f"{algorithm} snapshot holds A⁻¹ {ainv.shape} and θ {theta.shape}, "
            f"expected {(arms, dim, dim)} and {(arms, dim)}"
        )
    return ainv, theta
