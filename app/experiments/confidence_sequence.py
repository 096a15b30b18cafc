"""Asymptotic confidence sequences for a difference in means.

The boundary is the two-sided normal-mixture one of Howard et al. (2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences"), used
with an estimated variance as the asymptotic confidence sequence of
Waudby-Smith et al. (2024, "Time-uniform central limit theory and
asymptotic confidence sequences", Ann. Statist.): after ``n`` units, with
``s²`` the variance of one unit's contribution to the estimate,

    estimate ± s · sqrt( 2 (n ρ² + 1) / (n² ρ²) · log( sqrt(n ρ² + 1) / α ) )

covers the true difference at every ``n`` at once with probability ≥ 1 − α
(asymptotically), so results may be looked at after every batch. ``ρ`` sets
where the boundary is tightest (:func:`mixture_rho`). Inverting the same
boundary at a hypothesised value gives the always-valid p-value of the
normal-mixture sequential probability ratio test (mSPRT; Johari et al.,
2017, "Peeking at A/B tests").

Written here rather than taken from ``confseq`` or ``savvi``: both need the
individual observations (or work per observation), while a worker only has
per-variant counts, sums and sums of squares; the boundary is one closed
form. Its validity under continuous peeking is checked by
``tests/test_experiment_stats.py`` and ``scripts/bench-experiments`` over
thousands of simulated experiments.

Every function takes numpy arrays as well as floats, so a benchmark can run
thousands of experiments through the same code at once.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ArrayLike = float | FloatArray


def mixture_rho(alpha: float, tuning_n: float) -> float:
    """The mixing scale ``ρ`` that makes the boundary tightest at ``tuning_n``
    units (Howard et al., 2021, in units of one standard deviation).

    The boundary is valid at every ``n`` whatever ``ρ`` is; the choice only
    moves where it is narrowest, so it is set to the planned sample size.

    >>> round(mixture_rho(0.05, 10_000), 5)
    0.02817
    """
    _check_alpha(alpha)
    if not tuning_n > 0:
        raise ValueError(f"tuning_n must be > 0, got {tuning_n}")
    la = -2.0 * math.log(alpha)
    return math.sqrt((la + math.log(la + 1.0)) / tuning_n)


@overload
def width_multiplier(n: float, alpha: float, rho: float) -> float: ...
@overload
def width_multiplier(n: FloatArray, alpha: float, rho: float) -> FloatArray: ...
def width_multiplier(n: ArrayLike, alpha: float, rho: float) -> ArrayLike:
    """The half-width in standard errors of the estimate after ``n`` units
    (the sequential counterpart of 1.96; it is ~3 at the tuning ``n``).

    >>> round(width_multiplier(10_000.0, 0.05, mixture_rho(0.05, 10_000)), 3)
    3.035
    """
    _check_alpha(alpha)
    nr2 = np.asarray(n, dtype=np.float64) * rho * rho
    out = np.sqrt(2.0 * (nr2 + 1.0) / nr2 * (0.5 * np.log1p(nr2) - math.log(alpha)))
    return float(out) if np.ndim(out) == 0 else out


@overload
def half_width(variance: float, n: float, alpha: float, rho: float) -> float: ...
@overload
def half_width(variance: FloatArray, n: FloatArray, alpha: float, rho: float) -> FloatArray: ...
def half_width(variance: ArrayLike, n: ArrayLike, alpha: float, rho: float) -> ArrayLike:
    """The confidence sequence's half-width for an estimate whose variance is
    ``variance`` (e.g. ``s_a²/n_a + s_b²/n_b``) after ``n`` units in all."""
    out = np.sqrt(np.asarray(variance, dtype=np.float64)) * width_multiplier(
        np.asarray(n, dtype=np.float64), alpha, rho
    )
    return float(out) if np.ndim(out) == 0 else out


@overload
def mixture_p_value(z: float, n: float, rho: float) -> float: ...
@overload
def mixture_p_value(z: FloatArray, n: FloatArray, rho: float) -> FloatArray: ...
def mixture_p_value(z: ArrayLike, n: ArrayLike, rho: float) -> ArrayLike:
    """``1 / Λ`` of the mixture likelihood ratio for a z-statistic ``z`` after
    ``n`` units, capped at 1. Its running minimum over the looks is an
    always-valid p-value: it is ≤ α exactly when the level-α confidence
    sequence excludes the hypothesised value.

    >>> round(mixture_p_value(3.035, 10_000.0, mixture_rho(0.05, 10_000)), 3)
    0.05
    """
    nr2 = np.asarray(n, dtype=np.float64) * rho * rho
    zz = np.asarray(z, dtype=np.float64)
    log_p = 0.5 * np.log1p(nr2) - zz * zz * nr2 / (2.0 * (nr2 + 1.0))
    out = np.exp(np.minimum(log_p, 0.0))
    return float(out) if np.ndim(out) == 0 else out


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
