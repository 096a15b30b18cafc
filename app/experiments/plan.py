"""Sample size and power before an experiment starts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy import optimize, stats

from app.experiments.confidence_sequence import mixture_rho, width_multiplier


@dataclass(frozen=True)
class Plan:
    """How many units each variant needs.

    ``fixed_n_per_variant``: a two-sided two-sample t-test looked at once, at
    that size, has the requested power. ``sequential_n_per_variant``: the
    confidence sequence of :class:`~app.experiments.comparison.Comparison`
    (tuned with ``tuning_n``), looked at after every batch, has decided by
    then with at least that power — an upper estimate, since it may decide
    earlier. ``sequential_median_n_per_variant``: where its interval, centred
    on the true effect, first excludes zero: about when half the runs have
    decided. Every comparison with the control runs at ``comparison_alpha``
    (Bonferroni over the ``variants − 1`` comparisons).
    """

    baseline_mean: float
    mde: float
    sd_control: float
    sd_treatment: float
    alpha: float
    power: float
    variants: int
    comparison_alpha: float
    fixed_n_per_variant: int
    sequential_n_per_variant: int
    sequential_median_n_per_variant: int
    tuning_n: int

    @property
    def fixed_total(self) -> int:
        return self.fixed_n_per_variant * self.variants

    @property
    def sequential_total(self) -> int:
        return self.sequential_n_per_variant * self.variants

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "fixed_total": self.fixed_total,
            "sequential_total": self.sequential_total,
        }


def plan(
    baseline_mean: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    variants: int = 2,
    sd: float | None = None,
) -> Plan:
    """The sample sizes to detect a difference of ``mde`` (in the metric's
    units, either sign) from a control whose mean is ``baseline_mean``.

    ``sd`` is the metric's standard deviation per unit. Without it the metric
    is taken as a rate in [0, 1] and each variant's standard deviation as
    that of a 0/1 outcome with its mean — the largest any [0, 1] metric with
    that mean can have, so the plan errs on the safe side for scores too.

    >>> p = plan(0.5, 0.1, sd=1.0)  # effect size 0.1 sd: the textbook case
    >>> p.fixed_n_per_variant, p.sequential_n_per_variant >= p.fixed_n_per_variant
    (1571, True)
    >>> plan(0.7, 0.02).fixed_n_per_variant
    8078
    """
    for name, value in (("baseline mean", baseline_mean), ("minimum detectable effect", mde)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if mde == 0:
        raise ValueError("minimum detectable effect must not be 0")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must be between 0 and 1, got {power}")
    if isinstance(variants, bool) or int(variants) != variants or variants < 2:
        raise ValueError(f"variants must be a whole number >= 2, got {variants}")
    variants = int(variants)
    if sd is None:
        treated = baseline_mean + mde
        if not (0 < baseline_mean < 1 and 0 < treated < 1):
            raise ValueError(
                f"without --sd the metric is a rate: baseline mean ({baseline_mean:g}) and "
                f"baseline + effect ({treated:g}) must be strictly between 0 and 1"
            )
        sd_a = math.sqrt(baseline_mean * (1 - baseline_mean))
        sd_b = math.sqrt(treated * (1 - treated))
    else:
        if not (math.isfinite(sd) and sd > 0):
            raise ValueError(f"standard deviation must be > 0, got {sd}")
        sd_a = sd_b = sd
    comparison_alpha = alpha / (variants - 1)
    fixed = _t_test_n(abs(mde), sd_a, sd_b, comparison_alpha, power)
    tuning_n = 2 * fixed
    rho = mixture_rho(comparison_alpha, tuning_n)
    # One unit's variance contribution to the estimate of the difference with
    # equal allocation: Var(estimate) = 2 (sd_a² + sd_b²) / N for N units in all.
    s = math.sqrt(2 * (sd_a**2 + sd_b**2))
    z_power = float(stats.norm.ppf(power))

    def total_for(extra: float) -> int:
        # Smallest N in all with |mde| ≥ s / sqrt(N) · (multiplier(N) + extra).
        def gap(log_n: float) -> float:
            n = math.exp(log_n)
            return abs(mde) * math.sqrt(n) / s - width_multiplier(n, comparison_alpha, rho) - extra

        hi = math.log(4.0)
        while gap(hi) < 0:
            hi += 1.0
        root = optimize.brentq(gap, math.log(2.0), hi, xtol=1e-9)
        return math.ceil(math.exp(root))

    sequential = math.ceil(total_for(z_power) / 2)
    median = math.ceil(total_for(0.0) / 2)
    return Plan(
        baseline_mean=baseline_mean,
        mde=mde,
        sd_control=sd_a,
        sd_treatment=sd_b,
        alpha=alpha,
        power=power,
        variants=variants,
        comparison_alpha=comparison_alpha,
        fixed_n_per_variant=fixed,
        sequential_n_per_variant=sequential,
        sequential_median_n_per_variant=median,
        tuning_n=tuning_n,
    )


def _t_test_n(delta: float, sd_a: float, sd_b: float, alpha: float, power: float) -> int:
    """Units per group for a two-sided two-sample t-test with the given power:
    the exact power from the noncentral t distribution (as
    ``statsmodels.stats.power.TTestIndPower`` computes it), with the two
    groups' variances pooled; scipy has the distributions, statsmodels would
    bring pandas into the worker for this one formula."""
    sd = math.sqrt((sd_a**2 + sd_b**2) / 2)
    d = delta / sd

    def shortfall(n: float) -> float:
        df = 2 * n - 2
        nc = d * math.sqrt(n / 2)
        crit = float(stats.t.ppf(1 - alpha / 2, df))
        got = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
        return got - power

    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    guess = max(2 * (z / d) ** 2, 2.5)
    hi = guess * 2 + 10
    while shortfall(hi) < 0:
        hi *= 2
    return math.ceil(optimize.brentq(shortfall, 2.0 + 1e-9, hi, xtol=1e-6))
