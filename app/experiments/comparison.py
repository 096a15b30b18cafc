"""Anytime-valid comparison of one metric between a control and a treatment."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from app.experiments.comparison_result import ComparisonResult, Decision, Gate
from app.experiments.confidence_sequence import half_width, mixture_p_value, mixture_rho
from app.experiments.moments import Moments

ARMS = ("control", "treatment")


class Comparison:
    """Treatment against control on one metric, checked as often as wanted.

    Each look (:meth:`check`) puts a level-``alpha`` confidence sequence
    around the difference in means (treatment − control) from the two
    variants' counts, means and variances
    (:mod:`app.experiments.confidence_sequence`): it covers the true
    difference at every look at once, so stopping at the first look that is
    conclusive keeps the error rate at ``alpha``.

    * ``decision``: ``better`` once the sequence lies wholly on the good side
      of zero, ``worse`` once wholly on the bad side, else ``inconclusive``.
      "Good" is up for a reward (``higher_is_better``) and down for a
      guardrail such as cost or latency.
    * ``gate`` (non-inferiority, for rollouts): ``pass`` once the treatment is
      shown to be no worse than control by more than ``margin``, ``fail``
      once it is shown to be worse by more than ``margin``, else
      ``pending``. With ``relative_margin`` the margin is a fraction of the
      control's mean (e.g. 0.1: latency at most 10% higher), taken at the
      look.

    Nothing is concluded before each variant has ``min_samples`` values: the
    variance estimates behind the sequence need a few dozen values to mean
    anything. ``tuning_n`` (units in both variants together) is where the
    sequence is narrowest — the planned sample size; it stays valid
    everywhere else.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> c = Comparison(alpha=0.05, margin=0.02, tuning_n=4_000)
    >>> for look in range(40):
    ...     c.add_values("control", [rng.betavariate(7.0, 3.0) for _ in range(50)])
    ...     c.add_values("treatment", [rng.betavariate(7.6, 2.4) for _ in range(50)])
    ...     r = c.check()
    ...     if r.decision != "inconclusive":
    ...         break
    >>> r.decision, r.gate, look
    ('better', 'pass', 4)
    >>> Comparison.from_dict(c.to_dict()).check() == c.check()
    True
    """

    def __init__(
        self,
        alpha: float = 0.05,
        higher_is_better: bool = True,
        margin: float = 0.0,
        relative_margin: bool = False,
        tuning_n: float = 10_000,
        min_samples: int = 100,
        bounds: tuple[float, float] | None = None,
        control: Moments | None = None,
        treatment: Moments | None = None,
    ) -> None:
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if min_samples < 2:
            raise ValueError(f"min_samples must be >= 2, got {min_samples}")
        self.alpha = alpha
        self.higher_is_better = higher_is_better
        self.margin = margin
        self.relative_margin = relative_margin
        self.tuning_n = tuning_n
        self.min_samples = min_samples
        self.bounds = bounds
        self._rho = mixture_rho(alpha, tuning_n)
        # Given moments may be shared with other comparisons (one control
        # against several treatments); they are updated by their owner.
        self._moments = {
            "control": control if control is not None else Moments(bounds),
            "treatment": treatment if treatment is not None else Moments(bounds),
        }
        self._decision: Decision = "inconclusive"
        self._gate: Gate = "pending"
        self._min_p = 1.0
        self._decided_n: int | None = None
        self._gated_n: int | None = None

    @property
    def control(self) -> Moments:
        return self._moments["control"]

    @property
    def treatment(self) -> Moments:
        return self._moments["treatment"]

    def add_values(self, arm: str, values: Iterable[float]) -> None:
        """Fold a batch of ``arm``'s values in (``control`` or ``treatment``)."""
        self._arm(arm).update(values)

    def add_sums(self, arm: str, count: int, total: float, total_sq: float) -> None:
        """Fold a batch of ``arm``'s values in by count, sum and sum of squares."""
        self._arm(arm).add_sums(count, total, total_sq)

    def _arm(self, arm: str) -> Moments:
        try:
            return self._moments[arm]
        except KeyError:
            raise ValueError(f"arm must be one of {ARMS}, got {arm!r}") from None

    def check(self) -> ComparisonResult:
        """Look at the results now; records the first conclusive decision and gate."""
        a, b = self.control, self.treatment
        estimate = b.mean - a.mean if a.n and b.n else math.nan
        low = high = math.nan
        p_value = self._min_p
        margin = self.margin * abs(a.mean) if self.relative_margin and a.n else self.margin
        if a.n >= self.min_samples and b.n >= self.min_samples:
            var = a.variance / a.n + b.variance / b.n
            n = a.n + b.n
            hw = half_width(var, n, self.alpha, self._rho)
            low, high = estimate - hw, estimate + hw
            if var > 0:
                p_value = min(self._min_p, mixture_p_value(estimate / math.sqrt(var), n, self._rho))
                self._min_p = p_value
            self._look(low, high, margin, n)
        return ComparisonResult(
            n_control=a.n,
            n_treatment=b.n,
            mean_control=a.mean,
            mean_treatment=b.mean,
            estimate=estimate,
            low=low,
            high=high,
            p_value=p_value,
            margin=margin,
            decision=self._decision,
            gate=self._gate,
            alpha=self.alpha,
        )

    def _look(self, low: float, high: float, margin: float, n: int) -> None:
        # Orient so that "good" is positive.
        good_low, good_high = (low, high) if self.higher_is_better else (-high, -low)
        if self._decision == "inconclusive":
            if good_low > 0:
                self._decision, self._decided_n = "better", n
            elif good_high < 0:
                self._decision, self._decided_n = "worse", n
        if self._gate == "pending":
            if good_low > -margin:
                self._gate, self._gated_n = "pass", n
            elif good_high < -margin:
                self._gate, self._gated_n = "fail", n

    @property
    def decision(self) -> Decision:
        """The first conclusive decision reached (``inconclusive``: none yet)."""
        return self._decision

    @property
    def gate(self) -> Gate:
        """The first conclusive gate reached (``pending``: none yet)."""
        return self._gate

    @property
    def decided_n(self) -> int | None:
        """Units in both variants at the look that decided (None: not yet)."""
        return self._decided_n

    @property
    def gated_n(self) -> int | None:
        """Units in both variants at the look that passed or failed the gate."""
        return self._gated_n

    def to_dict(self, moments: bool = True) -> dict[str, Any]:
        """A JSON-able state; ``moments=False`` leaves out the variants'
        statistics when their owner stores them."""
        d: dict[str, Any] = {
            "alpha": self.alpha,
            "higher_is_better": self.higher_is_better,
            "margin": self.margin,
            "relative_margin": self.relative_margin,
            "tuning_n": self.tuning_n,
            "min_samples": self.min_samples,
            "bounds": None if self.bounds is None else list(self.bounds),
            "decision": self._decision,
            "gate": self._gate,
            "min_p": self._min_p,
            "decided_n": self._decided_n,
            "gated_n": self._gated_n,
        }
        if moments:
            d["control"] = self.control.to_dict()
            d["treatment"] = self.treatment.to_dict()
        return d

    @classmethod
    def from_dict(
        cls,
        d: dict[str, Any],
        control: Moments | None = None,
        treatment: Moments | None = None,
    ) -> Comparison:
        bounds = d.get("bounds")
        if control is None and "control" in d:
            control = Moments.from_dict(d["control"])
        if treatment is None and "treatment" in d:
            treatment = Moments.from_dict(d["treatment"])
        c = cls(
            alpha=float(d["alpha"]),
            higher_is_better=bool(d["higher_is_better"]),
            margin=float(d["margin"]),
            relative_margin=bool(d["relative_margin"]),
            tuning_n=float(d["tuning_n"]),
            min_samples=int(d["min_samples"]),
            bounds=None if bounds is None else (bounds[0], bounds[1]),
            control=control,
            treatment=treatment,
        )
        if d["decision"] not in ("better", "worse", "inconclusive"):
            raise ValueError(f"bad decision {d['decision']!r}")
        if d["gate"] not in ("pass", "fail", "pending"):
            raise ValueError(f"bad gate {d['gate']!r}")
        c._decision, c._gate = d["decision"], d["gate"]
        c._min_p = float(d["min_p"])
        c._decided_n, c._gated_n = d.get("decided_n"), d.get("gated_n")
        return c
