"""Thompson sampling for continuous rewards, variance unknown."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from app.policies._posterior_sampling import PosteriorSampling


class GaussianThompson(PosteriorSampling):
    """Thompson sampling with a Normal-Inverse-Gamma posterior per arm
    (rewards Normal, mean and variance unknown). After n rewards of mean x̄
    and sum of squared deviations M: κ = κ0 + n, m = (κ0·m0 + n·x̄)/κ,
    α = α0 + n/2, β = β0 + M/2 + κ0·n·(x̄ - m0)²/(2κ); the arm's mean is then
    Student-t with 2α degrees of freedom, location m and scale sqrt(β/(ακ)).

    Propensities are the posterior win probabilities, estimated as in
    ``ThompsonSampling``: ``propensity_samples`` vectorised draws (standard
    error ≤ 0.5/sqrt(propensity_samples)), refreshed as ``refresh_fraction``
    says (see ``_posterior_sampling``). Any finite reward is accepted.

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
    snapshot_format = 2  # 2: the decision posterior is part of the state
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
        refresh_fraction: float = 0.1,
    ) -> None:
        super().__init__(arms, seed)
        self.prior_mean = prior_mean
        self.prior_kappa = prior_kappa
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.propensity_samples = propensity_samples
        self.refresh_fraction = refresh_fraction
        self._allocate()
        self._freeze()

    def _check(self) -> None:
        if not math.isfinite(self.prior_mean):
            raise ValueError(f"prior_mean must be finite, got {self.prior_mean}")
        for name in ("prior_kappa", "prior_alpha", "prior_beta"):
            value = getattr(self, name)
            if not (value > 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive, got {value}")
        self._check_sampling()

    def posterior(self, idx: Sequence[int] | None = None) -> tuple[np.ndarray, ...]:
        """(location, scale, degrees of freedom) of each arm's posterior mean
        (of the arms at positions ``idx``, or of every arm)."""
        state = {"_n": self._n, "_mean": self._mean, "_m2": self._m2}
        return self._posterior(state, self._all if idx is None else list(idx))

    def _posterior(self, arrays: dict[str, list[float]], idx: list[int]) -> tuple[np.ndarray, ...]:
        n, xbar = np.array(self._at(arrays["_n"], idx)), np.array(self._at(arrays["_mean"], idx))
        k0, m0 = self.prior_kappa, self.prior_mean
        kappa = k0 + n
        alpha = self.prior_alpha + n / 2.0
        shift = k0 * n * (xbar - m0) ** 2 / (2.0 * kappa)
        beta = self.prior_beta + np.array(self._at(arrays["_m2"], idx)) / 2.0 + shift
        loc = (k0 * m0 + n * xbar) / kappa
        return loc, np.sqrt(beta / (alpha * kappa)), 2.0 * alpha

    def _scores(self, idx: list[int]) -> list[float]:
        return self._posterior(self._frozen, idx)[0].tolist()

    def _evidence(self) -> float:
        return float(np.array(self._n).sum())  # numpy's sum, as the refresh schedule's always was

    def _draw(
        self,
        posterior: dict[str, list[float]],
        idx: list[int],
        rng: np.random.Generator,
        samples: int,
    ) -> np.ndarray:
        loc, scale, df = self._posterior(posterior, idx)
        return loc + scale * rng.standard_t(df, size=(samples, len(idx)))

    def _update(self, index: int, reward: float, context: Any) -> None:
        self._welford(index, reward)
        self._record(index, reward)

    def _arm_stats(self, index: int) -> dict[str, float]:
        loc, scale, df = (float(v[0]) for v in self.posterior([index]))
        n = self._n[index]
        return {
            "posterior_mean": loc,
            "posterior_scale": scale,
            "degrees_of_freedom": df,
            "variance": self._m2[index] / n if n else 0.0,
        }
