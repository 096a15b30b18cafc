"""LinUCB, disjoint variant: one ridge regression per arm, optimism in the face of uncertainty."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from app.policies._contextual import ContextualPolicy, load_ridge, ridge_figures, share_best
from app.policies.base import ContextError, Selection

_F64 = np.dtype(np.float64)


class LinUCB(ContextualPolicy):
    """Disjoint LinUCB (Li et al., 2010) with ridge-regularised per-arm models.

    Each arm ``k`` keeps a ridge regression of the reward on the context
    ``x``: ``A_k = ridge·I + Σ x xᵀ`` and ``θ_k = A_k⁻¹ b_k``. It scores
    ``θ_kᵀx + alpha·√(xᵀ A_k⁻¹ x)`` and picks the highest score. ``A_k⁻¹`` is
    kept by Sherman–Morrison rank-one updates and ``θ_k`` by the matching
    recursive-least-squares step, so neither select nor update inverts.

    ``alpha`` scales the confidence width, in reward units per standard
    deviation of the estimate. The textbook ``1 + √(ln(2/δ)/2)`` assumes noise
    as wide as the whole [0, 1] range; scalarised LLM rewards are far less
    noisy than that, and 1 over-explores them (on the benchmark's σ = 0.1
    workload α = 0.3 halves the regret of α = 1), so the default is 0.3.

    The choice is deterministic: the best arm has probability 1 (``explore``
    changes nothing). Arms whose scores tie exactly (every arm before any
    update, or a fresh ``prior_from`` clone) share the probability evenly and
    the ``seed`` breaks the tie, so the logged propensity is ``1 / ties``.

    ``select`` and ``update`` have a fast path for a ``float64`` array of
    length ``context_dim``: no conversion, and a finiteness test by ``x·x``
    instead of ``check_context``'s ``isfinite`` scan (anything else goes
    through ``check_context``, which raises the usual :class:`ContextError`).
    ``select`` is overridden to compute the scores once, and :meth:`select_batch`
    decides a whole batch of contexts in a few matrix products.

    >>> import numpy as np
    >>> policy = LinUCB(["small", "large"], seed=0, context_dim=2, alpha=0.1)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(200):
    ...     x = np.array([1.0, rng.normal()])
    ...     policy.update("small", 0.5 + 0.2 * x[1], x)
    ...     policy.update("large", 0.5 - 0.2 * x[1], x)
    >>> policy.select(np.array([1.0, 1.5])).arm
    'small'
    >>> policy.select(np.array([1.0, -1.5])).arm
    'large'
    >>> np.round(policy.coefficients()["large"], 2).tolist()
    [0.5, -0.2]
    """

    algorithm = "lin_ucb"
    example_params: ClassVar[dict[str, Any]] = {"context_dim": 3, "alpha": 0.5}

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        context_dim: int = 8,
        alpha: float = 0.3,
        ridge: float = 1.0,
    ) -> None:
        super().__init__(arms, seed)
        self.context_dim = context_dim
        self.alpha = alpha
        self.ridge = ridge
        self._check_params()
        d, k = context_dim, len(self._arms)
        # One block per arm: rows 0..d-1 hold A⁻¹, row d holds θ, so that a
        # single matmul with x gives every arm's A⁻¹x and θᵀx.
        self._model = np.zeros((k, d + 1, d))
        self._model[:, :d, :] = np.eye(d) / ridge
        self._pulls: list[float] = [0.0] * k
        self._reward_sum: list[float] = [0.0] * k
        self._bind()

    # -- hyperparameters -----------------------------------------------------
    def _check_params(self) -> None:
        self._check_context_dim()
        if not self.alpha >= 0.0:
            raise ValueError(f"alpha must be non-negative, got {self.alpha}")
        if not self.ridge > 0.0:
            raise ValueError(f"ridge must be positive, got {self.ridge}")

    def _params_changed(self) -> None:
        self._keep_fixed({"context_dim": self._model.shape[2]})
        self._check_params()  # ridge applies to arms added from now on
        self._stale()

    # -- state plumbing ------------------------------------------------------
    def _bind(self) -> None:
        """Views and scratch buffers over ``_model`` (after it is replaced)."""
        d = self.context_dim
        k = self._model.shape[0]
        self._ainv = self._model[:, :d, :]
        self._theta = self._model[:, d, :]
        self._ainv_k = [self._model[i, :d, :] for i in range(k)]
        self._theta_k = [self._model[i, d, :] for i in range(k)]
        self._proj = np.empty((k, d + 1))  # [A⁻¹x | θᵀx] per arm
        self._quad = np.empty(k)  # xᵀA⁻¹x per arm
        self._score = np.empty(k)
        self._all = (np.arange(k), list(range(k)))
        self._shape = (d,)
        self._allowed_cache: dict[tuple[str, ...], tuple[np.ndarray, list[int]]] = {}
        self._stale()

    def _stale(self) -> None:
        """Forget the projections cached from the last select."""
        self._proj_key: bytes | None = None

    def _grow(self, prior_from: int | None) -> None:
        d = self.context_dim
        if prior_from is not None:
            block = self._model[prior_from].copy()
        else:
            block = np.zeros((d + 1, d))
            block[:d] = np.eye(d) / self.ridge
        self._model = np.concatenate([self._model, block[None]])
        self._pulls.append(0.0)
        self._reward_sum.append(0.0)
        self._bind()

    def _shrink(self, index: int) -> None:
        self._model = np.delete(self._model, index, axis=0)
        del self._pulls[index]
        del self._reward_sum[index]
        self._bind()

    # -- decisions -----------------------------------------------------------
    def _indices(self, allowed: Sequence[str] | None) -> tuple[np.ndarray, list[int]]:
        """The allowed arms' indices, as an array and as a list (memoised)."""
        if allowed is None:
            return self._all
        key = tuple(allowed)
        found = self._allowed_cache.get(key)
        if found is None:
            idx = self.allowed_indices(allowed)
            found = (idx, idx.tolist())
            if len(self._allowed_cache) >= 256:
                self._allowed_cache.clear()
            self._allowed_cache[key] = found
        return found

    def _fast(self, context: Any) -> np.ndarray | None:
        """The context itself when it is a finite float64 vector of the right
        length, else ``None`` (then ``check_context`` converts or refuses it).

        ``x·x`` is finite exactly when every value is (save for values beyond
        1e154, which take the slow path) and costs a third of ``isfinite``.
        """
        if (
            type(context) is np.ndarray
            and context.dtype is _F64
            and context.shape == self._shape
            and math.isfinite(context.dot(context))
        ):
            return context
        return None

    def _all_scores(self, context: Any) -> np.ndarray:
        """Every arm's UCB score for ``context`` (a scratch buffer: copy to keep).

        Leaves ``A⁻¹x`` and ``θᵀx`` of every arm in ``_proj`` for ``update``.
        """
        x = self._fast(context)
        if x is None:
            x = self._context(context)
        d = self.context_dim
        proj, quad, score = self._proj, self._quad, self._score
        np.matmul(self._model, x, out=proj)
        np.matmul(proj[:, :d], x, out=quad)
        np.maximum(quad, 0.0, out=score)  # rounding must not make it negative
        np.sqrt(score, out=score)
        score *= self.alpha
        score += proj[:, d]
        self._proj_key = x.tobytes()
        return score

    def scores(self, allowed: Sequence[str] | None = None, context: Any = None) -> np.ndarray:
        idx, _ = self._indices(allowed)
        return self._all_scores(context)[idx]

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        return share_best(self.scores(allowed, context))

    def select(
        self, context: Any = None, allowed: Sequence[str] | None = None, explore: bool = True
    ) -> Selection:
        _, idx = self._indices(allowed)
        names = self._arms if allowed is None else list(allowed)
        every = self._all_scores(context).tolist()
        listed = every if allowed is None else [every[i] for i in idx]
        best = max(listed)
        greedy = listed.index(best)
        choice, propensity = greedy, 1.0
        if explore:
            ties = listed.count(best)
            if ties > 1:
                tied = [i for i, s in enumerate(listed) if s == best]
                choice = tied[min(int(self._rng.random() * ties), ties - 1)]
                propensity = 1.0 / ties
        probs = dict.fromkeys(names, 0.0)
        if propensity == 1.0:
            probs[names[choice]] = 1.0
        else:
            for name, s in zip(names, listed, strict=True):
                if s == best:
                    probs[name] = propensity
        return Selection(
            arm=names[choice],
            propensity=propensity,
            scores=dict(zip(names, listed, strict=True)),
            explored=choice != greedy,
            probabilities=probs,
        )

    def select_batch(
        self, contexts: Any, allowed: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decide a batch of ``B`` contexts (shape ``(B, context_dim)``) at once.

        Returns the chosen arms as indices into ``allowed`` (into
        :attr:`arms` when ``allowed`` is ``None``), their propensities and the
        ``(B, len(allowed))`` scores. Same decisions as :meth:`select`, ties
        broken by the policy's generator.
        """
        x = np.asarray(contexts, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.context_dim:
            raise ContextError(
                f"{self.algorithm} needs contexts of shape (B, {self.context_dim}), "
                f"got shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ContextError("context values must be finite")
        idx, _ = self._indices(allowed)
        ainv, theta = self._ainv[idx], self._theta[idx]
        proj = np.matmul(x, ainv)  # (K, B, d): xᵀA⁻¹ per arm and context
        quad = np.einsum("kbd,bd->bk", proj, x)
        scores = x @ theta.T
        scores += self.alpha * np.sqrt(np.maximum(quad, 0.0))
        best = scores.max(axis=1, keepdims=True)
        tied = scores == best
        ties = np.count_nonzero(tied, axis=1)
        choice = tied.argmax(axis=1)
        several = np.flatnonzero(ties > 1)
        if several.size:
            # The j-th tied arm, j uniform in [0, ties).
            j = (self._rng.random(several.size) * ties[several]).astype(np.intp)
            j = np.minimum(j, ties[several] - 1)
            rank = np.cumsum(tied[several], axis=1)
            choice[several] = (rank > j[:, None]).argmax(axis=1)
        return choice, 1.0 / ties, scores

    # -- learning ------------------------------------------------------------
    def _update(self, index: int, reward: float, context: Any) -> None:
        x = self._fast(context)
        if x is None:
            x = self._context(context)
        d = self.context_dim
        if self._proj_key is not None and self._proj_key == x.tobytes():
            u = self._proj[index, :d]  # A⁻¹x from the select that preceded
            quad = float(self._quad[index])
            mean = float(self._proj[index, d])
        else:
            ainv = self._ainv_k[index]
            u = ainv @ x
            quad = float(u @ x)
            mean = float(self._theta_k[index] @ x)
        scale = 1.0 + quad
        if not math.isfinite(scale) or not math.isfinite(mean):
            raise ContextError(f"context too large for {self.algorithm}: xᵀA⁻¹x overflows")
        root = math.sqrt(scale)
        w = u / root
        # Sherman–Morrison: (A + xxᵀ)⁻¹ = A⁻¹ - (A⁻¹x)(A⁻¹x)ᵀ / (1 + xᵀA⁻¹x), written as
        # w wᵀ so that it stays exactly symmetric; θ moves along A⁻¹x by the error.
        self._theta_k[index] += w * ((reward - mean) / root)
        self._ainv_k[index] -= np.multiply.outer(w, w)
        self._pulls[index] += 1.0
        self._reward_sum[index] += reward
        self._proj_key = None

    # -- inspection and persistence ------------------------------------------
    def coefficients(self) -> dict[str, np.ndarray]:
        """Each arm's ridge estimate ``θ`` (a copy)."""
        return {arm: self._theta[i].copy() for i, arm in enumerate(self._arms)}

    def ridge_model(self) -> tuple[np.ndarray, np.ndarray]:
        """Every arm's ``A⁻¹`` and ``θ`` (copies, in :attr:`arms` order): what
        explanations read a prediction's mean, spread and terms from."""
        return self._ainv.copy(), self._theta.copy()

    def _figures(self) -> dict[str, np.ndarray]:
        return ridge_figures(self._ainv, self._theta)

    def _get_state(self) -> dict[str, Any]:
        return {
            "a_inv": np.ascontiguousarray(self._ainv),
            "theta": np.ascontiguousarray(self._theta),
            "pulls": self._pulls,
            "reward_sum": self._reward_sum,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        ainv, theta = load_ridge(state, len(self._arms), self.context_dim, self.algorithm)
        self._model = np.concatenate([ainv, theta[:, None, :]], axis=1)
        self._pulls = [float(v) for v in state["pulls"]]
        self._reward_sum = [float(v) for v in state["reward_sum"]]
        self._bind()
