"""Several variants against a control, on a primary metric and guardrails."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.experiments.comparison import Comparison
from app.experiments.comparison_result import ComparisonResult, Decision, Gate
from app.experiments.metric import REWARD, Metric
from app.experiments.moments import Moments


class Experiment:
    """Variants compared with the first of ``variants`` (the control or the
    champion) on every metric, each comparison an anytime-valid
    :class:`~app.experiments.comparison.Comparison`.

    Several variants: each of the ``k − 1`` comparisons with the control runs
    at ``alpha / (k − 1)`` (Bonferroni), so the chance that any variant is
    wrongly declared better or worse stays ≤ ``alpha`` at every look,
    whatever the dependence between the comparisons (they share the control).

    The primary metric (the first of ``metrics``) makes the ``decision``. A
    variant's ``gate`` passes once every metric passes its non-inferiority
    test — an intersection–union test, which needs no correction across
    metrics — and fails as soon as any one fails.

    Outcomes arrive per batch as values (:meth:`add_values`) or as each
    metric's count, sum and sum of squares (:meth:`add_sums`); a look
    (:meth:`check`) may follow every batch.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(3)
    >>> latency = Metric("latency_ms", higher_is_better=False, margin=0.1, relative_margin=True)
    >>> exp = Experiment(["A", "B", "C"], [REWARD, latency], tuning_n=6_000)
    >>> quality = {"A": 0.70, "B": 0.70, "C": 0.76}
    >>> for look in range(30):
    ...     for v, q in quality.items():
    ...         exp.add_values(v, {
    ...             "reward": [float(rng.random() < q) for _ in range(100)],
    ...             "latency_ms": [rng.lognormvariate(6.7, 0.5) for _ in range(100)],
    ...         })
    ...     res = exp.check()
    >>> exp.decision("B"), exp.decision("C"), exp.gate("C")
    ('inconclusive', 'better', 'pass')
    >>> Experiment.from_dict(exp.to_dict()).to_dict() == exp.to_dict()
    True
    """

    def __init__(
        self,
        variants: Sequence[str],
        metrics: Sequence[Metric] = (REWARD,),
        alpha: float = 0.05,
        tuning_n: float = 10_000,
        min_samples: int = 100,
    ) -> None:
        if len(variants) < 2 or len(set(variants)) != len(variants):
            raise ValueError(f"need two or more distinct variants, got {list(variants)}")
        names = [m.name for m in metrics]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"need one or more distinct metrics, got {names}")
        self.variants = tuple(variants)
        self.metrics = tuple(metrics)
        self.alpha = alpha
        self.tuning_n = tuning_n
        self.min_samples = min_samples
        self._moments = {
            v: {m.name: Moments(m.bounds) for m in self.metrics} for v in self.variants
        }
        self._comparisons = {
            v: {m.name: self._comparison(v, m) for m in self.metrics} for v in self.treatments
        }

    @property
    def control(self) -> str:
        return self.variants[0]

    @property
    def treatments(self) -> tuple[str, ...]:
        return self.variants[1:]

    @property
    def primary(self) -> str:
        return self.metrics[0].name

    @property
    def comparison_alpha(self) -> float:
        """The level of each comparison with the control (Bonferroni)."""
        return self.alpha / len(self.treatments)

    def _comparison(self, variant: str, metric: Metric) -> Comparison:
        return Comparison(
            alpha=self.comparison_alpha,
            higher_is_better=metric.higher_is_better,
            margin=metric.margin,
            relative_margin=metric.relative_margin,
            tuning_n=self.tuning_n,
            min_samples=self.min_samples,
            bounds=metric.bounds,
            control=self._moments[self.control][metric.name],
            treatment=self._moments[variant][metric.name],
        )

    def _cell(self, variant: str, metric: str) -> Moments:
        try:
            return self._moments[variant][metric]
        except KeyError:
            raise ValueError(f"unknown variant {variant!r} or metric {metric!r}") from None

    def add_values(self, variant: str, values: Mapping[str, Iterable[float]]) -> None:
        """Fold in a batch of ``variant``'s outcomes: values per metric."""
        for metric, xs in values.items():
            self._cell(variant, metric).update(xs)

    def add_sums(
        self, variant: str, metric: str, count: int, total: float, total_sq: float
    ) -> None:
        """Fold in a batch of one metric of ``variant`` by count, sum and sum of squares."""
        self._cell(variant, metric).add_sums(count, total, total_sq)

    def check(self) -> dict[str, dict[str, ComparisonResult]]:
        """One look: every variant's result on every metric."""
        return {
            v: {name: c.check() for name, c in by_metric.items()}
            for v, by_metric in self._comparisons.items()
        }

    def decision(self, variant: str) -> Decision:
        """The primary metric's decision for ``variant`` (as of the last look)."""
        return self._comparisons[variant][self.primary].decision

    def gate(self, variant: str) -> Gate:
        """``fail`` if any metric failed, ``pass`` if all passed, else ``pending``."""
        gates = [c.gate for c in self._comparisons[variant].values()]
        if "fail" in gates:
            return "fail"
        return "pass" if all(g == "pass" for g in gates) else "pending"

    def summary(self) -> dict[str, Any]:
        """A JSON-able view of the last look, per variant."""
        out: dict[str, Any] = {}
        for v in self.treatments:
            out[v] = {
                "decision": self.decision(v),
                "gate": self.gate(v),
                "metrics": {name: c.check().to_dict() for name, c in self._comparisons[v].items()},
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "variants": list(self.variants),
            "metrics": [m.to_dict() for m in self.metrics],
            "alpha": self.alpha,
            "tuning_n": self.tuning_n,
            "min_samples": self.min_samples,
            "moments": {
                v: {name: m.to_dict() for name, m in by_metric.items()}
                for v, by_metric in self._moments.items()
            },
            "comparisons": {
                v: {name: c.to_dict(moments=False) for name, c in by_metric.items()}
                for v, by_metric in self._comparisons.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Experiment:
        exp = cls(
            variants=list(d["variants"]),
            metrics=[Metric.from_dict(m) for m in d["metrics"]],
            alpha=float(d["alpha"]),
            tuning_n=float(d["tuning_n"]),
            min_samples=int(d["min_samples"]),
        )
        for v, by_metric in d["moments"].items():
            for name, m in by_metric.items():
                exp._moments[v][name] = Moments.from_dict(m)
        for v, by_metric in d["comparisons"].items():
            for name, c in by_metric.items():
                exp._comparisons[v][name] = Comparison.from_dict(
                    c, exp._moments[exp.control][name], exp._moments[v][name]
                )
        return exp
