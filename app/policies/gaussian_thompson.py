"""Thompson sampling for continuous rewards, variance unknown."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from app.policies._bandit_base import BanditPolicy


class GaussianThompson(BanditPolicy):
    """Thompson sampling with a Normal-Inverse-Gamma posterior per arm
    (rewards Normal, mean and variance unknown). After n rewards of mean x̄
    and sum of squared deviations M: κ = κ0 + n, m = (κ0·m0 + n·x̄)/κ,
    α = α0 + n/2, β = β0 + M/2 + κ0·n·(x̄ - m0)²/(2κ); the arm's mean is then
    Student-t with 2α degrees of freedom, location m and scale sqrt(β/(ακ)).

    Propensities are the posterior win probabilities, estimated as in
    ``ThompsonSampling``: ``propensity_samples`` vectorised draws from a
    generator seeded by the state, cached until the next update (standard
    error ≤ 0.5/sqrt(propensity_samples)). Any finite reward is accepted.

    >>> gt = GaussianThompson(["a", "b"], seed=1, propensity_samples=4000)
    >>> for i in range(100):
    ...     gt.update("a", 1.2 + 0.1 * (i % 3)); gt.update("b", 0.9 + 0.3 * (i % 2))
    >>> [round(float(m), 3) for m in gt.scores()]
    [1.299, 1.05]
    >>> gt.select().arm
    'a'
    >>> float(gt.probabilities()[0])
    1.0
    """

    algorithm = "gaussian_thompson"
    example_params: ClassVar[dict[str, Any]] = {"propensity_samples": 2000}
    _learned = ("_n", "_mean", "_m2")
    _keeps_m2 = True

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        prior_mean: float = 0.0,
        prior_kappa: float = 0.01,
        prior_alpha: float = 1.0,
        prior_beta: float = 0.1,
        propensity_samples: int = 20_000,
    ) -> None:
        super().__init__(arms, seed)
        self.prior_mean = prior_mean
        self.prior_kappa = prior_kappa
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.propensity_samples = propensity_samples
        self._allocate()

    def _check(self) -> None:
        if not math.isfinite(self.prior_mean):
            raise ValueError(f"prior_mean must be finite, got {self.prior_mean}")
        for name in ("prior_kappa", "prior_alpha", "prior_beta"):
            value = getattr(self, name)
            if not (value > 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive, got {value}")
        if self.propensity_samples < 100:
            raise ValueError("propensity_samples must be at least 100")

    def posterior(self, idx: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """(location, scale, degrees of freedom) of each arm's posterior mean."""
        if idx is None:
            idx = self._all
        n, xbar = self._n[idx], self._mean[idx]
        k0, m0 = self.prior_kappa, self.prior_mean
        kappa = k0 + n
        alpha = self.prior_alpha + n / 2.0
        beta = self.prior_beta + self._m2[idx] / 2.0 + k0 * n * (xbar - m0) ** 2 / (2.0 * kappa)
        loc = (k0 * m0 + n * xbar) / kappa
        return loc, np.sqrt(beta / (alpha * kappa)), 2.0 * alpha

    def _scores(self, idx: np.ndarray) -> np.ndarray:
        return self.posterior(idx)[0]

    def _probabilities(self, idx: np.ndarray) -> np.ndarray:
        if len(idx) == 1:
            return np.ones(1)
        # A generator seeded by the state keeps the estimate deterministic and
        # independent of how many selections came before.
        rng = np.random.default_rng([self.seed or 0, self._t % 2**32])
        loc, scale, df = self.posterior(idx)
        draws = loc + scale * rng.standard_t(df, size=(self.propensity_samples, len(idx)))
        wins = np.bincount(draws.argmax(axis=1), minlength=len(idx))
        return wins / self.propensity_samples

    def _update(self, index: int, reward: float, context: Any) -> None:
        self._welford(index, reward)
        self._record(index, reward)

    def _arm_stats(self, index: int) -> dict[str, float]:
        loc, scale, df = (float(v[0]) for v in self.posterior(np.array([index])))
        n = float(self._n[index])
        return {
            "posterior_mean": loc,
            "posterior_scale": scale,
            "degrees_of_freedom": df,
            "variance": float(self._m2[index]) / n if n else 0.0,
        }

    def _params(self) -> dict[str, Any]:
        return {
            "prior_mean": self.prior_mean,
            "prior_kappa": self.prior_kappa,
            "prior_alpha": self.prior_alpha,
            "prior_beta": self.prior_beta,
            "propensity_samples": self.propensity_samples,
        }
