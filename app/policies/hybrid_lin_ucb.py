"""LinUCB, hybrid variant: coefficients shared by every arm plus per-arm ones."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from app.policies._contextual import ValuePolicy, ridge_figures, share_best
from app.policies.base import SnapshotError


class HybridLinUCB(ValuePolicy):
    """Hybrid LinUCB (Li et al., 2010, Algorithm 2).

    The context is split in two: its first ``shared_dim`` values are the
    shared features ``z``, the remaining ``context_dim - shared_dim`` the
    per-arm features ``x`` (put a constant 1 among these, so that each arm
    has its own intercept). The expected reward of arm ``k`` is modelled as
    ``zᵀβ + xᵀθ_k``: ``β`` is one vector learnt from every arm's rewards (an
    effect common to all arms, e.g. how hard the request is), ``θ_k`` is the
    arm's own. The score adds ``alpha·√s_k`` where ``s_k`` is the variance of
    that estimate, coupling through the shared part. A new arm starts from
    what ``β`` already knows. Ridge ``λ`` regularises ``β`` and each ``θ_k``.

    As in :class:`~app.policies.lin_ucb.LinUCB` the choice is deterministic:
    the best arm has probability 1, exact ties share it and the seed breaks
    them. Each arm's ``A_k⁻¹`` is kept by Sherman–Morrison; the ``shared_dim``
    square matrix of ``β`` is re-inverted on update (it is small).

    Since ``z`` is the same for every arm here (arms have no features of
    their own), ``zᵀβ`` adds the same to every arm's mean: it does not rank
    the arms (only the uncertainty about it does), but it keeps the shared
    effect out of each ``θ_k`` and gives a new arm a baseline.

    >>> import numpy as np
    >>> policy = HybridLinUCB(["a", "b"], seed=0, context_dim=3, shared_dim=1, alpha=0.1)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(300):
    ...     z, x = rng.normal(), rng.normal()
    ...     c = np.array([z, 1.0, x])
    ...     policy.update("a", 0.8 * z + 0.5 + 0.3 * x, c)
    ...     policy.update("b", 0.8 * z + 0.5 - 0.3 * x, c)
    >>> np.round(policy.shared_coefficients(), 2).tolist()
    [0.8]
    >>> policy.select(np.array([0.0, 1.0, 1.0])).arm, policy.select(np.array([0.0, 1.0, -1.0])).arm
    ('a', 'b')
    """

    algorithm = "hybrid_lin_ucb"
    example_params: ClassVar[dict[str, Any]] = {"context_dim": 3, "shared_dim": 1, "alpha": 0.5}

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        context_dim: int = 8,
        shared_dim: int = 1,
        alpha: float = 1.0,
        ridge: float = 1.0,
    ) -> None:
        super().__init__(arms, seed)
        self.context_dim = context_dim
        self.shared_dim = shared_dim
        self.alpha = alpha
        self.ridge = ridge
        self._check_params()
        k, d, m = len(self._arms), context_dim - shared_dim, shared_dim
        # Per arm: A_k⁻¹ (d×d), B_k = Σ x zᵀ (d×m), b_k = Σ r x, and the derived
        # C_k = A_k⁻¹B_k and θ_k = A_k⁻¹(b_k - B_k β).
        self._ainv = np.tile(np.eye(d) / ridge, (k, 1, 1))
        self._B = np.zeros((k, d, m))
        self._b = np.zeros((k, d))
        self._C = np.zeros((k, d, m))
        self._theta = np.zeros((k, d))
        # Shared: A_0 (m×m), b_0, and the derived A_0⁻¹ and β = A_0⁻¹b_0.
        self._A0 = np.eye(m) * ridge
        self._b0 = np.zeros(m)
        self._A0inv: np.ndarray = np.eye(m) / ridge
        self._beta = np.zeros(m)
        self._pulls = np.zeros(k)
        self._reward_sum = np.zeros(k)

    _PER_ARM = ("_ainv", "_B", "_b", "_C", "_theta", "_pulls", "_reward_sum")

    def _check_params(self) -> None:
        if not isinstance(self.context_dim, int) or self.context_dim < 2:
            raise ValueError(f"context_dim must be an integer ≥ 2, got {self.context_dim!r}")
        if not isinstance(self.shared_dim, int) or not 1 <= self.shared_dim < self.context_dim:
            raise ValueError(
                f"shared_dim must be an integer in [1, context_dim) = [1, {self.context_dim}), "
                f"got {self.shared_dim!r}"
            )
        if not self.alpha >= 0.0:
            raise ValueError(f"alpha must be non-negative, got {self.alpha}")
        if not self.ridge > 0.0:
            raise ValueError(f"ridge must be positive, got {self.ridge}")

    def _params_changed(self) -> None:
        m = self._b0.shape[0]
        self._keep_fixed({"context_dim": m + self._b.shape[1], "shared_dim": m})
        self._check_params()
        self._cache = None

    # -- arms ------------------------------------------------------------------
    def _grow(self, prior_from: int | None) -> None:
        """A clone copies the source arm's own statistics; the shared ones are
        left as they are (the clone's data is not counted twice for β)."""
        d, m = self._b.shape[1], self.shared_dim
        if prior_from is not None:
            new = [getattr(self, name)[prior_from] for name in self._PER_ARM[:5]]
        else:
            new = [np.eye(d) / self.ridge, np.zeros((d, m)), np.zeros(d)]
            new += [np.zeros((d, m)), np.zeros(d)]
        for name, value in zip(self._PER_ARM[:5], new, strict=True):
            setattr(self, name, np.concatenate([getattr(self, name), value[None]]))
        self._pulls = np.append(self._pulls, 0.0)
        self._reward_sum = np.append(self._reward_sum, 0.0)
        self._cache = None

    def _shrink(self, index: int) -> None:
        for name in self._PER_ARM:
            setattr(self, name, np.delete(getattr(self, name), index, axis=0))
        self._cache = None

    # -- decisions -------------------------------------------------------------
    def _split(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return c[: self.shared_dim], c[self.shared_dim :]

    def _compute_values(self, c: np.ndarray) -> np.ndarray:
        """Every arm's score for the context ``c`` (cached until the state changes)."""
        z, x = self._split(c)
        w = np.einsum("kdm,d->km", self._C, x)  # B_kᵀA_k⁻¹x
        gap = z - w
        s = ((gap @ self._A0inv) * gap).sum(axis=1)
        s += (self._ainv @ x) @ x
        mean = z @ self._beta + self._theta @ x
        return mean + self.alpha * np.sqrt(np.maximum(s, 0.0))

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        return share_best(self.scores(allowed, context))

    # -- learning --------------------------------------------------------------
    def _update(self, index: int, reward: float, context: Any) -> None:
        z, x = self._split(self._context(context))
        B, b, C = self._B[index], self._b[index], self._C[index]
        A0 = self._A0 + B.T @ C
        b0 = self._b0 + C.T @ b
        ainv = self._ainv[index]
        u = ainv @ x
        w = u / math.sqrt(1.0 + float(u @ x))
        ainv -= np.multiply.outer(w, w)
        B += np.multiply.outer(x, z)
        b += reward * x
        np.matmul(ainv, B, out=C)
        A0 += np.multiply.outer(z, z) - B.T @ C
        b0 += reward * z - C.T @ b
        self._A0, self._b0 = (A0 + A0.T) / 2.0, b0
        self._A0inv = np.linalg.inv(self._A0)
        self._beta = self._A0inv @ b0
        rhs = self._b - self._B @ self._beta
        self._theta = np.einsum("kij,kj->ki", self._ainv, rhs)
        self._pulls[index] += 1
        self._reward_sum[index] += reward
        self._cache = None

    # -- inspection and persistence ----------------------------------------------
    def shared_coefficients(self) -> np.ndarray:
        """The estimate of ``β``, the shared features' coefficients (a copy)."""
        return self._beta.copy()

    def coefficients(self) -> dict[str, np.ndarray]:
        """Each arm's own coefficients ``θ_k`` on the per-arm features (a copy)."""
        return {arm: self._theta[i].copy() for i, arm in enumerate(self._arms)}

    def _figures(self) -> dict[str, np.ndarray]:
        return ridge_figures(self._ainv, self._theta)

    def _get_state(self) -> dict[str, Any]:
        state = {name.lstrip("_"): getattr(self, name) for name in self._PER_ARM}
        for name in ("_A0", "_b0", "_A0inv", "_beta"):
            state[name.lstrip("_")] = getattr(self, name)
        return state

    def _set_state(self, state: dict[str, Any]) -> None:
        k, m = len(self._arms), self.shared_dim
        d = self.context_dim - m
        shapes = {
            "_ainv": (k, d, d),
            "_B": (k, d, m),
            "_b": (k, d),
            "_C": (k, d, m),
            "_theta": (k, d),
            "_pulls": (k,),
            "_reward_sum": (k,),
            "_A0": (m, m),
            "_b0": (m,),
            "_A0inv": (m, m),
            "_beta": (m,),
        }
        for name, shape in shapes.items():
            value = np.asarray(state[name.lstrip("_")], dtype=float)
            if value.size == 0:
                value = value.reshape(shape)
            if value.shape != shape:
                raise SnapshotError(
                    f"{self.algorithm} snapshot holds {name.lstrip('_')} of shape {value.shape}, "
                    f"expected {shape}"
                )
            setattr(self, name, value)
        self._cache = None
