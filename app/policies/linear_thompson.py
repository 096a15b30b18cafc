"""Linear Thompson sampling: Gaussian posteriors over per-arm ridge regressions."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from app.policies._contextual import ContextualPolicy, load_ridge, ridge_figures


@cache
def _normal_quantiles(n: int) -> np.ndarray:
    """The standard normal quantiles at (i + 0.5) / n, i < n."""
    inv = NormalDist().inv_cdf
    q = np.array([inv((i + 0.5) / n) for i in range(n)])
    q.flags.writeable = False
    return q


class LinearThompson(ContextualPolicy):
    """Linear Thompson sampling (Agrawal & Goyal, 2013) with disjoint arms.

    Each arm keeps a ridge regression ``θ_k = A_k⁻¹ b_k`` (``A_k⁻¹`` by
    Sherman–Morrison, as in :class:`~app.policies.lin_ucb.LinUCB`). Thompson
    sampling draws ``θ̃_k ~ N(θ_k, v² A_k⁻¹)`` and plays the arm with the largest
    ``θ̃_kᵀx``. That score is itself normal, ``N(θ_kᵀx, v² xᵀA_k⁻¹x)``, and the
    arms are independent, so the probability that each arm wins is estimated
    from ``propensity_samples`` vectorised one-dimensional draws per context.

    Selection is probability matching on those estimates (as in
    :class:`~app.policies.thompson_sampling.ThompsonSampling`), so the logged
    propensity is exactly the probability the choice was made with; its
    standard error against the exact win probability is at most
    ``0.5 / sqrt(propensity_samples)`` (less: the draws are a Latin hypercube,
    see ``_latin_hypercube``). They are a function of the seed and the number
    of updates, so an estimate depends only on the state, the context and
    the allowed arms; it is cached for that triple until the next update.
    ``scores`` are the posterior means ``θ_kᵀx``.

    >>> import numpy as np
    >>> policy = LinearThompson(["a", "b"], seed=3, context_dim=2, propensity_samples=2000)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(300):
    ...     x = np.array([1.0, rng.normal()])
    ...     policy.update("a", 0.5 + 0.3 * x[1], x)
    ...     policy.update("b", 0.5 - 0.3 * x[1], x)
    >>> policy.select(np.array([1.0, 2.0])).arm
    'a'
    >>> policy.probabilities(None, np.array([1.0, -2.0])).tolist()
    [0.0, 1.0]
    """

    algorithm = "linear_thompson"
    example_params: ClassVar[dict[str, Any]] = {"context_dim": 3, "propensity_samples": 1000}
    _CACHE_SIZE = 64

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        context_dim: int = 8,
        v: float = 0.5,
        ridge: float = 1.0,
        propensity_samples: int = 10_000,
    ) -> None:
        super().__init__(arms, seed)
        self.context_dim = context_dim
        self.v = v
        self.ridge = ridge
        self.propensity_samples = propensity_samples
        self._check_params()
        k, d = len(self._arms), context_dim
        self._ainv = np.tile(np.eye(d) / ridge, (k, 1, 1))
        self._theta = np.zeros((k, d))
        self._pulls = np.zeros(k)
        self._reward_sum = np.zeros(k)
        self._updates = 0
        # Entropy of the propensity draws: the seed, or fresh entropy kept in
        # the snapshot when there is none.
        self._entropy = int(np.random.SeedSequence(seed).entropy)  # type: ignore[arg-type]
        self._cache: OrderedDict[tuple[bytes, tuple[int, ...]], np.ndarray] = OrderedDict()
        self._pool: np.ndarray | None = None
        self._shifts: np.ndarray | None = None

    def _check_params(self) -> None:
        self._check_context_dim()
        if not self.v >= 0.0:
            raise ValueError(f"v must be non-negative, got {self.v}")
        if not self.ridge > 0.0:
            raise ValueError(f"ridge must be positive, got {self.ridge}")
        if not isinstance(self.propensity_samples, int) or self.propensity_samples < 100:
            raise ValueError("propensity_samples must be an integer of at least 100")

    def _params_changed(self) -> None:
        self._keep_fixed({"context_dim": self._theta.shape[1]})
        self._check_params()
        self._forget()

    def _forget(self) -> None:
        """Drop what was derived from the state (the propensities and the pairing
        of the draws; the pool of draws itself depends only on the arm count)."""
        self._cache.clear()
        self._shifts = None

    # -- arms ------------------------------------------------------------------
    def _grow(self, prior_from: int | None) -> None:
        if prior_from is not None:
            ainv, theta = self._ainv[prior_from], self._theta[prior_from]
        else:
            ainv, theta = np.eye(self.context_dim) / self.ridge, np.zeros(self.context_dim)
        self._ainv = np.concatenate([self._ainv, ainv[None]])
        self._theta = np.concatenate([self._theta, theta[None]])
        self._pulls = np.append(self._pulls, 0.0)
        self._reward_sum = np.append(self._reward_sum, 0.0)
        self._forget()

    def _shrink(self, index: int) -> None:
        for name in ("_ainv", "_theta", "_pulls", "_reward_sum"):
            setattr(self, name, np.delete(getattr(self, name), index, axis=0))
        self._forget()

    # -- decisions -------------------------------------------------------------
    def _posterior(self, idx: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of ``θ̃_kᵀx`` for the arms ``idx``."""
        mean = self._theta[idx] @ x
        quad = (self._ainv[idx] @ x) @ x
        return mean, self.v * np.sqrt(np.maximum(quad, 0.0))

    def scores(self, allowed: Sequence[str] | None = None, context: Any = None) -> np.ndarray:
        x = self._context(context)
        idx = self.allowed_indices(allowed)
        return self._theta[idx] @ x

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        x = self._context(context)
        idx = self.allowed_indices(allowed)
        key = (x.tobytes(), tuple(idx.tolist()))
        cached = self._cache.get(key)
        if cached is None:
            cached = self._win_probabilities(idx, x)
            cached.flags.writeable = False  # shared with every caller
            self._cache[key] = cached
            if len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return cached

    def _win_probabilities(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        if len(idx) == 1:
            return np.ones(1)
        n = self.propensity_samples
        pool, shifts = self._latin_hypercube()
        mean, sd = self._posterior(idx, x)
        samples = np.empty((len(idx), n))
        for j, (row, shift) in enumerate(zip(idx.tolist(), shifts[idx].tolist(), strict=True)):
            samples[j, : n - shift] = pool[row, shift:]
            samples[j, n - shift :] = pool[row, :shift]
        samples *= sd[:, None]
        samples += mean[:, None]
        best = samples.max(axis=0)
        # The first arm (in allowed order) to reach the maximum wins the draw;
        # draws tie only where arms have no uncertainty left.
        won = np.zeros(n, dtype=bool)
        wins = np.empty(len(idx))
        for j in range(len(idx)):
            mine = samples[j] == best
            mine &= ~won
            won |= mine
            wins[j] = np.count_nonzero(mine)
        return wins / n

    def _latin_hypercube(self) -> tuple[np.ndarray, np.ndarray]:
        """Standard normal draws for every arm, as a Latin hypercube: row
        ``k`` holds the ``propensity_samples`` normal quantiles at the middle
        of equal-probability strata, in an order of its own (fixed for the
        policy), and each state shifts every row cyclically by a random
        amount, so the rows are paired afresh without drawing anew. Each
        column is a draw of independent normals; the margins are exact."""
        n, k = self.propensity_samples, len(self._arms)
        if self._pool is None or self._pool.shape != (k, n):
            quantiles = _normal_quantiles(n)
            self._pool = np.stack(
                [
                    quantiles[np.random.default_rng([self._entropy, 1, j]).permutation(n)]
                    for j in range(k)
                ]
            )
        if self._shifts is None:
            rng = np.random.default_rng([self._entropy, 2, self._updates])
            self._shifts = rng.integers(0, n, size=k)
        return self._pool, self._shifts

    # -- learning --------------------------------------------------------------
    def _update(self, index: int, reward: float, context: Any) -> None:
        x = self._context(context)
        ainv = self._ainv[index]
        u = ainv @ x
        root = np.sqrt(1.0 + u @ x)
        w = u / root
        self._theta[index] += w * ((reward - self._theta[index] @ x) / root)
        ainv -= np.multiply.outer(w, w)
        self._pulls[index] += 1
        self._reward_sum[index] += reward
        self._updates += 1
        self._forget()

    # -- inspection and persistence ----------------------------------------------
    def coefficients(self) -> dict[str, np.ndarray]:
        """Each arm's posterior mean ``θ`` (a copy)."""
        return {arm: self._theta[i].copy() for i, arm in enumerate(self._arms)}

    def ridge_model(self) -> tuple[np.ndarray, np.ndarray]:
        """Every arm's ``A⁻¹`` and ``θ`` (copies, in :attr:`arms` order); the
        posterior of ``θ_k`` is ``N(θ_k, v² A_k⁻¹)``."""
        return self._ainv.copy(), self._theta.copy()

    def _figures(self) -> dict[str, np.ndarray]:
        return ridge_figures(self._ainv, self._theta)

    def _get_state(self) -> dict[str, Any]:
        return {
            "a_inv": self._ainv,
            "theta": self._theta,
            "pulls": self._pulls,
            "reward_sum": self._reward_sum,
            "updates": self._updates,
            # Larger than a JSON number can hold exactly when no seed was given.
            "entropy": str(self._entropy),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        k, d = len(self._arms), self.context_dim
        ainv, theta = load_ridge(state, k, d, self.algorithm)
        self._ainv = ainv.reshape(k, d, d)
        self._theta = theta.reshape(k, d)
        self._pulls = np.asarray(state["pulls"], dtype=float)
        self._reward_sum = np.asarray(state["reward_sum"], dtype=float)
        self._updates = int(state["updates"])
        self._entropy = int(state["entropy"])
        self._forget()
