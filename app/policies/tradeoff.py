"""Multi-objective decisions: quality, cost and latency of each arm per task
type, the Pareto front of the arms with its uncertainty, and the choice of an
arm for a request's trade-off (docs/tradeoffs.md).

Pure (numpy only). The learner keeps the per-(task type, arm) running
moments of the three objectives beside the guardrails' estimates
(:class:`~app.policies.guardrails.ArmEstimates`); the decider turns them into
posteriors of the means and, for a request that carries a ``tradeoff``,
chooses with :func:`win_probabilities` and probability matching.

Objectives are compared in a "larger is better" orientation, each divided by
the policy's reward scale so that the weights mean what they mean in the
reward (``app/rewards.py``): ``quality``, ``-cost_usd / cost_scale_usd`` and
``-latency_ms / latency_scale_ms``. A trade-off's utility is the weighted sum
``wq·q + wc·(1 − c/cs) + wl·(1 − l/ls)`` with weights normalised to sum to 1:
the reward's weighted sum without its clipping at 0, so a utility maximiser
always picks a Pareto-optimal arm.

>>> t = Tradeoff.parse("cost_first")
>>> t.preset, t.weights
('cost_first', (0.1, 0.8, 0.1))
>>> Tradeoff.parse({"quality": 2, "latency": 2}).weights
(0.5, 0.0, 0.5)
>>> pareto_front(np.array([[0.9, -1.0, -1.0], [0.8, -2.0, -1.0], [0.5, -0.5, -1.0]]))
[0, 2]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.features.request_vector import TASK_TYPES

OBJECTIVES = ("quality", "cost_usd", "latency_ms")
"""The objectives, as named in a reward's components."""
WEIGHT_KEYS = ("quality", "cost", "latency")
"""A trade-off's weights, as named in a policy's ``reward.weights``."""
PRESETS: dict[str, tuple[float, float, float]] = {
    "quality_first": (0.8, 0.1, 0.1),
    "balanced": (0.5, 0.25, 0.25),
    "cost_first": (0.1, 0.8, 0.1),
}
"""Preset trade-offs: (quality, cost, latency) weights, summing to 1."""
MAX_WEIGHT = 1e6
# Draws of the objectives' posteriors per win-probability estimate: the
# standard error of a probability is at most 0.5 / sqrt(samples) (0.011).
SAMPLES = 2_000


class TradeoffError(ValueError):
    """A trade-off that is neither a preset nor valid weights."""


def task_bucket(task_type: str | None) -> str | None:
    """The closed set of task types the estimates are kept under: a type
    outside ``TASK_TYPES`` counts as ``other`` (as in the request vector).

    >>> task_bucket("qa"), task_bucket("translation"), task_bucket(None)
    ('qa', 'other', None)
    """
    if task_type is None:
        return None
    return task_type if task_type in TASK_TYPES else "other"


@dataclass(frozen=True, slots=True)
class Tradeoff:
    """A request's trade-off: the preset it names (``None`` for explicit
    weights) and its (quality, cost, latency) weights, summing to 1."""

    preset: str | None
    weights: tuple[float, float, float]

    @classmethod
    def parse(cls, value: Any) -> Tradeoff:
        """A preset name or a mapping of some of ``quality``, ``cost`` and
        ``latency`` to non-negative weights, not all zero (the others are 0)."""
        if isinstance(value, str):
            found = PRESETS.get(value)
            if found is None:
                raise TradeoffError(
                    f"unknown trade-off preset {value!r}; known: {sorted(PRESETS)}, "
                    "or weights {quality, cost, latency}"
                )
            return cls(value, found)
        if not isinstance(value, Mapping):
            raise TradeoffError("a trade-off is a preset name or {quality, cost, latency} weights")
        unknown = set(value) - set(WEIGHT_KEYS)
        if unknown:
            raise TradeoffError(
                f"unknown trade-off weight(s) {sorted(map(str, unknown))}; known: "
                f"{list(WEIGHT_KEYS)}"
            )
        raw = []
        for key in WEIGHT_KEYS:
            w = value.get(key, 0.0)
            if (
                isinstance(w, bool)
                or not isinstance(w, int | float)
                or not math.isfinite(w)
                or not 0.0 <= w <= MAX_WEIGHT
            ):
                raise TradeoffError(
                    f"trade-off weight {key!r} must be a number in [0, {MAX_WEIGHT:g}]"
                )
            raw.append(float(w))
        total = sum(raw)
        if total <= 0.0:
            raise TradeoffError("trade-off weights must not all be zero")
        q, c, lat = (w / total for w in raw)
        return cls(None, (q, c, lat))

    def record(self) -> dict[str, Any]:
        """What a decision logs: the preset (when one was named) and the
        normalised weights."""
        weights = dict(zip(WEIGHT_KEYS, (round(w, 6) for w in self.weights), strict=True))
        return {"preset": self.preset, "weights": weights} if self.preset else {"weights": weights}


# -- running moments ---------------------------------------------------------------------------


def moments_add(entry: list[float], x: float) -> None:
    """Add one value to ``[count, mean, m2]`` (Welford: m2 is the sum of
    squared deviations from the mean).

    >>> e = [0.0, 0.0, 0.0]
    >>> for x in (1.0, 2.0, 3.0):
    ...     moments_add(e, x)
    >>> e, moments_variance(e)
    ([3.0, 2.0, 2.0], 1.0)
    """
    entry[0] += 1.0
    delta = x - entry[1]
    entry[1] += delta / entry[0]
    entry[2] += delta * (x - entry[1])


def moments_merge(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """The moments of two sets of values together (Chan et al.): moments are
    sufficient statistics that add up, so shards' estimates pool exactly.

    >>> e = [0.0, 0.0, 0.0]
    >>> for x in (1.0, 2.0, 3.0, 10.0):
    ...     moments_add(e, x)
    >>> merged = moments_merge([2.0, 1.5, 0.5], [2.0, 6.5, 24.5])
    >>> [round(v, 9) for v in merged] == [round(v, 9) for v in e]
    True
    """
    n = a[0] + b[0]
    if n == 0.0:
        return [0.0, 0.0, 0.0]
    delta = b[1] - a[1]
    mean = a[1] + delta * b[0] / n
    return [n, mean, a[2] + b[2] + delta * delta * a[0] * b[0] / n]


def moments_variance(entry: Sequence[float]) -> float:
    """The sample variance (0 below two values)."""
    return entry[2] / (entry[0] - 1.0) if entry[0] > 1.0 else 0.0


# -- posteriors of the objectives' means -------------------------------------------------------

Moments = Mapping[str, Sequence[float]]  # objective -> [count, mean, m2]


def scales_of(cost_scale_usd: float, latency_scale_ms: float) -> np.ndarray:
    """The objectives' scales: quality 1, and the reward's cost and latency scales."""
    return np.array([1.0, cost_scale_usd, latency_scale_ms])


def posterior(
    arms: Sequence[str],
    per_task: Mapping[str, Moments],
    pooled: Mapping[str, Moments],
    scales: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per arm and objective, the mean and standard error of the objective's
    mean (a normal posterior under a flat prior: ``s / sqrt(n)``), shape
    ``(len(arms), 3)`` each.

    With fewer than two values in the task type, an objective is vague: its
    mean is the task type's single value, else the arm's mean over every task
    type, else half the scale; its standard error is the whole scale, so a
    Thompson draw explores it.
    """
    k = len(arms)
    means = np.empty((k, 3))
    ses = np.empty((k, 3))
    for i, arm in enumerate(arms):
        mine = per_task.get(arm) or {}
        every = pooled.get(arm) or {}
        for j, objective in enumerate(OBJECTIVES):
            m = mine.get(objective)
            if m is not None and m[0] >= 2.0:
                means[i, j] = m[1]
                # A floor keeps constant values (a fixed price) from an exact zero.
                ses[i, j] = max(math.sqrt(moments_variance(m) / m[0]), 1e-6 * scales[j])
                continue
            p = every.get(objective)
            if m is not None and m[0] >= 1.0:
                means[i, j] = m[1]
            elif p is not None and p[0] >= 1.0:
                means[i, j] = p[1]
            else:
                means[i, j] = 0.5 * scales[j]
            ses[i, j] = scales[j]
    return means, ses


def oriented(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Objective values (``(..., 3)``: quality, cost, latency) in the larger-is-better,
    scaled orientation: ``(q, -c/cs, -l/ls)``."""
    return values * np.array([1.0, -1.0, -1.0]) / scales


def utilities(values: np.ndarray, weights: Sequence[float], scales: np.ndarray) -> np.ndarray:
    """``wq·q + wc·(1 − c/cs) + wl·(1 − l/ls)`` over the last axis.

    >>> float(utilities(np.array([0.8, 0.01, 4000.0]), (0.5, 0.25, 0.25), scales_of(0.02, 8000)))
    0.65
    """
    w = np.asarray(weights, dtype=float)
    return oriented(values, scales) @ w + w[1] + w[2]


def win_probabilities(
    means: np.ndarray,
    ses: np.ndarray,
    weights: Sequence[float],
    scales: np.ndarray,
    seed: Sequence[int],
    samples: int = SAMPLES,
) -> list[float]:
    """Each arm's probability of the highest utility when every objective's
    mean is drawn from its posterior (Thompson sampling over the arms'
    utilities), estimated from ``samples`` joint draws of a generator seeded
    by ``seed``: deterministic for a given state, so a choice drawn from
    these probabilities logs exactly the probability it was drawn with.

    >>> means = np.array([[0.9, 0.01, 4000.0], [0.5, 0.001, 1000.0]])
    >>> ses = np.full((2, 3), 1e-9)
    >>> scales = scales_of(0.02, 8000)
    >>> win_probabilities(means, ses, (1, 0, 0), scales, [0]), win_probabilities(
    ...     means, ses, (0, 1, 0), scales, [0])
    ([1.0, 0.0], [0.0, 1.0])
    """
    k = len(means)
    if k == 1:
        return [1.0]
    rng = np.random.default_rng(list(seed))
    draws = means + ses * rng.standard_normal((samples, k, 3))
    wins = np.bincount(utilities(draws, weights, scales).argmax(axis=1), minlength=k)
    return (wins / samples).tolist()


# -- the Pareto front --------------------------------------------------------------------------


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    return bool(np.all(a >= b) and np.any(a > b))


def pareto_front(points: np.ndarray) -> list[int]:
    """The positions of the points no other point dominates (larger is
    better in every column)."""
    n = len(points)
    return [i for i in range(n) if not any(dominates(points[j], points[i]) for j in range(n))]


def confident_front(
    means: np.ndarray, ses: np.ndarray, scales: np.ndarray, z: float = 2.0
) -> list[int]:
    """The arms not dominated with confidence: arm ``i`` is off the front
    when some arm's interval ``mean ± z·se`` lies at or beyond ``i``'s in
    every objective, and strictly beyond it in one. An arm whose evidence
    cannot tell it from a front arm stays on the front.

    >>> m = np.array([[0.9, 0.01, 2000.0], [0.85, 0.012, 2100.0], [0.5, 0.03, 5000.0]])
    >>> confident_front(m, np.full((3, 3), 1e-9), scales_of(0.02, 8000))
    [0]
    >>> confident_front(m, np.array([[0.1, 0.001, 100.0]] * 3), scales_of(0.02, 8000))
    [0, 1]
    """
    good = oriented(means, scales)
    spread = z * ses / scales
    lo, hi = good - spread, good + spread
    n = len(means)
    return [
        i
        for i in range(n)
        if not any(
            j != i and bool(np.all(lo[j] >= hi[i]) and np.any(lo[j] > hi[i])) for j in range(n)
        )
    ]


def hypervolume(points: np.ndarray, reference: Sequence[float]) -> float:
    """The volume of objective space (larger is better) that ``points``
    dominate and that dominates ``reference``: exact, by slicing along the
    last objective and recursing (a few arms: no approximation needed).

    >>> hypervolume(np.array([[2.0, 1.0], [1.0, 2.0]]), [0.0, 0.0])
    3.0
    >>> hypervolume(np.array([[1.0, 1.0, 1.0], [2.0, 0.5, 0.5]]), [0.0, 0.0, 0.0])
    1.25
    """
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    pts = pts[np.all(pts > ref, axis=1)]
    return _hv(pts, ref)


def _hv(pts: np.ndarray, ref: np.ndarray) -> float:
    if len(pts) == 0:
        return 0.0
    if len(ref) == 1:
        return float(pts[:, 0].max() - ref[0])
    levels = sorted(set(pts[:, -1].tolist()), reverse=True)
    total = 0.0
    for i, level in enumerate(levels):
        below = levels[i + 1] if i + 1 < len(levels) else float(ref[-1])
        total += (level - below) * _hv(pts[pts[:, -1] >= level][:, :-1], ref[:-1])
    return total


# -- what a policy has learned, per task type ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrontRow:
    """One arm in one task type: its outcomes, each objective's mean and
    standard error, and whether it is on the front (not dominated with
    confidence by another arm of the same task type)."""

    arm: str
    outcomes: int
    means: tuple[float, float, float]
    stderrs: tuple[float, float, float]
    on_front: bool


def learned_front(
    arms: Sequence[str],
    per_task: Mapping[str, Moments],
    scales: np.ndarray,
    z: float = 2.0,
) -> list[FrontRow]:
    """The arms of ``arms`` with at least two outcomes of every objective in
    one task type (``per_task``: ArmEstimates.objectives), in order, with
    their estimates and whether each is on that task type's front.

    >>> def m(q, c, lat):
    ...     return {"quality": [9, q, 0.08], "cost_usd": [9, c, 0.0], "latency_ms": [9, lat, 8e4]}
    >>> per_task = {"a": m(0.9, 0.01, 900), "b": m(0.5, 0.02, 1500), "c": {"quality": [1, 0.7, 0]}}
    >>> rows = learned_front(["a", "b", "c"], per_task, scales_of(0.02, 8000))
    >>> [(r.arm, r.on_front) for r in rows]
    [('a', True), ('b', False)]
    """
    known = [
        a for a in arms if all((per_task.get(a) or {}).get(o, _NONE)[0] >= 2.0 for o in OBJECTIVES)
    ]
    if not known:
        return []
    means, ses = posterior(known, per_task, {}, scales)
    front = set(confident_front(means, ses, scales, z))
    return [
        FrontRow(
            arm,
            int(min(per_task[arm][o][0] for o in OBJECTIVES)),
            (float(means[i, 0]), float(means[i, 1]), float(means[i, 2])),
            (float(ses[i, 0]), float(ses[i, 1]), float(ses[i, 2])),
            i in front,
        )
        for i, arm in enumerate(known)
    ]


_NONE = (0.0, 0.0, 0.0)
