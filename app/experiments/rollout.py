"""What a look at an experiment's statistics leads to: the rules of rollout
stages, rollbacks and winners, apart from any broker."""

from __future__ import annotations

from dataclasses import dataclass

from app.experiments.definition import ExperimentDefinition
from app.experiments.experiment import Experiment


@dataclass(frozen=True)
class Step:
    """``advance`` to ``stage`` (a rollout's next share), ``promote`` (its
    last stage, 100%), ``rollback`` (the challenger's share to 0), or
    ``winner`` (an experiment decided); ``reason`` in words."""

    action: str
    reason: str
    stage: int | None = None
    winner: str | None = None


def next_step(d: ExperimentDefinition, stage: int, exp: Experiment) -> Step | None:
    """The step the last look (``exp.check()``) calls for, or None: keep going.

    A rollout's challenger is **rolled back** once its primary metric is
    decided worse than the champion's, or its gate fails (some metric shown
    worse by more than its margin); it **advances** once its gate passes
    (every metric shown no worse than the margin), and advancing to the last
    stage (100%) **promotes** it. Each stage tests fresh statistics at
    ``alpha / (stages - 1)`` (``ExperimentDefinition.statistics_alpha``), so
    a challenger as good as the champion is rolled back wrongly with
    probability at most ``alpha`` over the whole rollout.

    An experiment stops with a **winner** once a treatment is decided better
    on the primary metric without failing its gate (the best such), or every
    treatment is decided worse (the control wins).

    >>> import random
    >>> d = ExperimentDefinition.from_mapping({"id": "r", "policy": "p", "stages": [50, 100],
    ...     "variants": [{"name": "old", "policy": "p"}, {"name": "new", "arm": "x"}],
    ...     "min_samples": 20})
    >>> exp, rng = d.statistics(), random.Random(1)
    >>> for _ in range(20):
    ...     exp.add_values("old", {"reward": [float(rng.random() < 0.8) for _ in range(20)]})
    ...     exp.add_values("new", {"reward": [float(rng.random() < 0.3) for _ in range(20)]})
    ...     step = (exp.check(), next_step(d, 0, exp))[1]
    ...     if step: break
    >>> step.action
    'rollback'
    """
    if d.rollout:
        name = d.challenger.name
        decision, gate = exp.decision(name), exp.gate(name)
        if decision == "worse" or gate == "fail":
            failed = _failed_metrics(exp, name)
            what = ", ".join(failed) if failed else exp.primary
            return Step("rollback", f"{name} is worse than {d.control} on {what}")
        if gate == "pass" and stage < d.last_stage:
            assert d.stages is not None
            now, then = d.stages[stage], d.stages[stage + 1]
            action = "promote" if stage + 1 == d.last_stage else "advance"
            return Step(
                action,
                f"{name} passed its gate at {now:g}%: no worse than {d.control} within the "
                f"margins; {then:g}% from now on",
                stage=stage + 1,
            )
        return None
    better = [v for v in exp.treatments if exp.decision(v) == "better" and exp.gate(v) != "fail"]
    if better:
        results = exp.check()
        best = max(better, key=lambda v: results[v][exp.primary].estimate)
        return Step("winner", f"{best} is better than {d.control} on {exp.primary}", winner=best)
    if all(exp.decision(v) == "worse" for v in exp.treatments):
        return Step(
            "winner",
            f"every variant is worse than {d.control} on {exp.primary}",
            winner=d.control,
        )
    return None


def _failed_metrics(exp: Experiment, variant: str) -> list[str]:
    by_metric = exp.check()[variant]
    return [
        name
        for name, r in by_metric.items()
        if r.gate == "fail" or (name == exp.primary and r.decision == "worse")
    ]
