"""Bayesian optimisation over the unit cube with BoTorch: one plan per batch.

:class:`GPOptimizer` is a pure function of the evaluations so far (points,
mean rewards, the variance of each mean, mean costs): :meth:`GPOptimizer.plan`
fits a Gaussian process to them and returns the next batch of points to
evaluate and the recommended one. It keeps no state, so whoever owns the
evaluations (a policy, in its snapshot) owns the loop, and the same
evaluations and seed give the same plan.

- **Start.** Until ``initial_points`` points are evaluated, proposals are
  the next points of a scrambled Sobol sequence (space-filling).
- **Surrogate.** ``SingleTaskGP`` (Matérn 5/2, ARD) with each mean's own
  noise variance (a mean of n rewards is n times surer than one reward).
- **Acquisition.** ``ei``: log noisy expected improvement (qLogNEI, batch
  aware); ``ucb``: q-upper confidence bound with ``ucb_beta``;
  ``thompson``: the maxima of joint posterior draws. Each is maximised over
  a Sobol candidate set plus points near the best evaluated ones (clipped to
  the cube, so optima on a bound are reachable exactly).
- **Constraint.** With ``cost_cap``, a second GP models the mean cost;
  ``ei`` weighs improvement by the probability of meeting the cap
  (constrained qLogNEI), ``ucb`` and ``thompson`` choose among candidates
  whose predicted cost is within it, and the recommendation is the best
  predicted point whose predicted cost is within it.

BoTorch is imported when a plan needs a model, so the policies load without
it (it ships with the ``torch`` extra).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

__all__ = ["ACQUISITIONS", "GPOptimizer", "Plan"]

ACQUISITIONS = ("ei", "ucb", "thompson")
_MC_SAMPLES = 128
_LOCAL_SPREAD = 0.08  # sd of the perturbations around the best points, in unit coordinates


@dataclass(frozen=True, slots=True)
class Plan:
    """The next points to evaluate, and the recommended evaluated point
    (its index, or -1 before any evaluation) with its predicted mean."""

    proposals: np.ndarray
    incumbent: int
    incumbent_mean: float


class GPOptimizer:
    """Plans batches of points in ``[0, 1]^dim``.

    >>> opt = GPOptimizer(dim=2, initial_points=3)
    >>> plan = opt.plan(np.empty((0, 2)), np.empty(0), np.empty(0), n=3, seed=1)
    >>> plan.proposals.shape, plan.incumbent
    ((3, 2), -1)
    """

    def __init__(
        self,
        dim: int,
        acquisition: str = "ei",
        initial_points: int = 4,
        ucb_beta: float = 4.0,
        cost_cap: float | None = None,
        candidates: int = 1024,
    ) -> None:
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {acquisition!r}")
        if dim < 1 or initial_points < 1 or candidates < 16:
            raise ValueError("dim, initial_points must be >= 1 and candidates >= 16")
        if not ucb_beta > 0:
            raise ValueError(f"ucb_beta must be positive, got {ucb_beta!r}")
        if cost_cap is not None and not cost_cap > 0:
            raise ValueError(f"cost_cap must be positive, got {cost_cap!r}")
        self.dim = dim
        self.acquisition = acquisition
        self.initial_points = initial_points
        self.ucb_beta = ucb_beta
        self.cost_cap = cost_cap
        self.candidates = candidates

    def sobol(self, start: int, n: int, seed: int) -> np.ndarray:
        """Points ``start .. start + n - 1`` of the scrambled Sobol sequence of ``seed``."""
        from torch.quasirandom import SobolEngine

        engine = SobolEngine(self.dim, scramble=True, seed=seed)
        return engine.draw(start + n).double().numpy()[start:]

    def plan(
        self,
        x: np.ndarray,
        y: np.ndarray,
        yvar: np.ndarray,
        cost: np.ndarray | None = None,
        *,
        n: int,
        seed: int,
    ) -> Plan:
        """``n`` points to evaluate next, given the evaluated points ``x``
        (k × dim), their mean rewards ``y``, the variance of each mean
        ``yvar`` and, for a cost cap, their mean costs ``cost``."""
        k = len(x)
        if k < self.initial_points:
            fresh = self.sobol(k, n, seed)
            best = int(np.argmax(y)) if k else -1
            return Plan(fresh, best, float(y[best]) if k else math.nan)
        import torch
        from botorch.exceptions.warnings import InputDataWarning
        from linear_operator.utils.warnings import NumericalWarning

        with torch.random.fork_rng(), warnings.catch_warnings():
            # Jitter added to a near-singular covariance, equal rewards: handled, not news.
            warnings.simplefilter("ignore", NumericalWarning)
            warnings.simplefilter("ignore", InputDataWarning)
            torch.manual_seed(seed)
            return self._plan(x, y, yvar, cost, n, seed)

    def _plan(
        self,
        x: np.ndarray,
        y: np.ndarray,
        yvar: np.ndarray,
        cost: np.ndarray | None,
        n: int,
        seed: int,
    ) -> Plan:
        import torch
        from botorch.acquisition import qUpperConfidenceBound
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.acquisition.objective import GenericMCObjective
        from botorch.generation import MaxPosteriorSampling
        from botorch.models import ModelListGP
        from botorch.optim import optimize_acqf_discrete
        from botorch.sampling import SobolQMCNormalSampler

        train_x = torch.as_tensor(x, dtype=torch.double)
        reward_gp = _fit(train_x, y, yvar)
        cost_gp = None
        cap = math.inf
        if self.cost_cap is not None and cost is not None:
            cost_gp, cap = _fit(train_x, cost, None), float(self.cost_cap)

        with torch.no_grad():
            mean = reward_gp.posterior(train_x).mean.squeeze(-1).numpy()
            feasible = np.ones(len(x), dtype=bool)
            if cost_gp is not None:
                feasible = cost_gp.posterior(train_x).mean.squeeze(-1).numpy() <= cap
        ranked = np.where(feasible, mean, -np.inf)
        incumbent = int(np.argmax(ranked)) if feasible.any() else int(np.argmin(cost))  # type: ignore[arg-type]

        choices = torch.as_tensor(self._candidates(x, mean, seed), dtype=torch.double)
        if cost_gp is not None:
            with torch.no_grad():
                predicted = cost_gp.posterior(choices).mean.squeeze(-1)
            within = predicted <= cap
            if int(within.sum()) >= n:
                choices = choices[within]
            else:  # nothing predicted within the cap: the cheapest candidates
                choices = choices[torch.argsort(predicted)[: max(n, 16)]]
        sampler = SobolQMCNormalSampler(sample_shape=torch.Size([_MC_SAMPLES]), seed=seed)
        if self.acquisition == "thompson":
            draw = MaxPosteriorSampling(model=reward_gp, replacement=False)
            with torch.no_grad():
                picked = draw(choices, num_samples=n)
        else:
            acq: Any
            if self.acquisition == "ucb":
                acq = qUpperConfidenceBound(reward_gp, beta=self.ucb_beta, sampler=sampler)
            elif cost_gp is not None:
                acq = qLogNoisyExpectedImprovement(
                    ModelListGP(reward_gp, cost_gp),
                    train_x,
                    sampler=sampler,
                    objective=GenericMCObjective(_reward_output),
                    constraints=[partial(_cost_over_cap, cap=cap)],
                    prune_baseline=True,
                )
            else:
                acq = qLogNoisyExpectedImprovement(
                    reward_gp, train_x, sampler=sampler, prune_baseline=True
                )
            picked, _ = optimize_acqf_discrete(acq, q=n, choices=choices, unique=True)
        return Plan(picked.detach().numpy().reshape(n, self.dim), incumbent, float(mean[incumbent]))

    def _candidates(self, x: np.ndarray, mean: np.ndarray, seed: int) -> np.ndarray:
        """A Sobol set over the cube, plus perturbations of the best points
        clipped to it (the bounds, where monotone effects put optima, included)."""
        rng = np.random.default_rng(seed)
        best = x[np.argsort(-mean)[:4]]
        local = best[rng.integers(len(best), size=self.candidates // 4)]
        local = np.clip(local + rng.normal(0.0, _LOCAL_SPREAD, local.shape), 0.0, 1.0)
        return np.vstack([self.sobol(0, self.candidates, seed), local])


def _reward_output(z: Any, X: Any = None) -> Any:
    return z[..., 0]


def _cost_over_cap(z: Any, cap: float) -> Any:
    """Feasible where not positive: the predicted cost minus the cap."""
    return z[..., 1] - cap


def _fit(train_x: Any, values: Any, variances: Any) -> Any:
    """A GP fitted by maximum marginal likelihood; with ``variances``, each
    value's noise is known (a fixed-noise GP), otherwise it is learnt."""
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    train_y = torch.as_tensor(np.asarray(values, dtype=float), dtype=torch.double).unsqueeze(-1)
    yvar = None
    if variances is not None:
        yvar = torch.as_tensor(np.asarray(variances, dtype=float), dtype=torch.double)
        yvar = yvar.clamp_min(1e-8).unsqueeze(-1)
    model = SingleTaskGP(train_x, train_y, train_Yvar=yvar)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model
