"""Exploration guardrails applied around any policy's selection.

A policy's ``guardrails:`` mapping in the policies YAML configures them::

    guardrails:
      max_explore_priority: 8          # priority >= 8: the greedy arm, propensity 1
      exploration_budget: {fraction: 0.1, window_seconds: 3600}   # per tenant
      min_pulls: 20                    # warm-up: arms with fewer outcomes first
      strict_constraints: false        # an arm with no cost/latency data passes the filter
      prior_from: {gpt-4o-2024-08: gpt-4o}   # a new arm starts from a similar arm's state

:meth:`Guardrails.choose` is the single entry point. In order, it

1. filters the allowed arms by the request's ``max_cost_usd`` /
   ``max_latency_ms`` (from its metadata) against per-arm running means
   (:class:`ArmEstimates`); when no arm is left it picks, with propensity 1,
   the arm that overshoots the limits least — the lowest estimated cost when
   only ``max_cost_usd`` is set, the lowest latency when only
   ``max_latency_ms`` is, else the lowest ``max(cost / max_cost_usd,
   latency / max_latency_ms)``; arms without an estimate rank last, ties go to
   the earlier allowed arm — and flags the decision;
2. gives requests with ``priority >= max_explore_priority`` the policy's
   greedy arm among what is left (propensity 1);
3. gives the policy's greedy arm (propensity 1) to a tenant whose
   exploration budget is spent (:class:`ExplorationBudget`);
4. warm-up: while some remaining arm has fewer than ``min_pulls`` outcomes
   (the ``pulls`` of ``policy.stats()``), picks one of those arms uniformly,
   propensity ``1 / len(under-pulled)`` exactly;
5. otherwise lets the policy select (exploring) among what is left.

Every randomisation it applies is drawn from its own seeded generator and
logged with its exact probability, so decisions stay valid for off-policy
evaluation; ``GuardedSelection.allowed`` is the arm set the propensity refers
to (log it as the decision's ``available_arms``). An explored decision (the
arm differs from the policy's greedy arm) counts against the tenant's budget.

Optimistic initialisation is a policy hyperparameter, not a guardrail:
``thompson_sampling`` (``prior_alpha`` / ``prior_beta``), ``gaussian_thompson``
(``prior_mean`` weighted by ``prior_kappa``) and ``q_learning`` (``initial_q``)
take an optimistic prior; the UCB family and ``softmax`` try untried arms
first. Faking it here with pseudo-outcomes would corrupt the policy's stats.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app import metrics
from app.policies.base import Policy, PolicyError, Selection, draw_selection
from app.policies.tradeoff import OBJECTIVES, moments_add, moments_merge, task_bucket

_METRICS = ("cost_usd", "latency_ms")
# Selects among arms in the policy's place: (arms, explore) -> Selection.
Chooser = Callable[[list[str], bool], Selection]
# Request metadata key -> the metric it limits.
_LIMITS = {"max_cost_usd": "cost_usd", "max_latency_ms": "latency_ms"}
_NO_LIMIT_PRIORITY = 11  # above the highest request priority (10)


class GuardrailError(PolicyError):
    """A bad ``guardrails:`` mapping or a bad per-request constraint."""


# -- state -------------------------------------------------------------------------------------


class ArmEstimates:
    """Running mean and count of each arm's cost (USD) and latency (ms),
    learnt from outcomes' reward components; and, per task type, the running
    moments (count, mean, squared deviations) of each arm's quality, cost and
    latency: the objectives of trade-off decisions (app/policies/tradeoff.py).
    A failed call counts as quality 0.

    >>> est = ArmEstimates()
    >>> est.observe("a", {"cost_usd": 0.01, "latency_ms": 900.0, "quality": 0.8})
    >>> est.observe("a", {"cost_usd": 0.02})
    >>> est.mean("a", "cost_usd"), est.count("a", "latency_ms"), est.mean("b", "cost_usd")
    (0.015, 1, None)
    >>> est.observe("a", {"quality": 0.5, "cost_usd": 0.01}, task_type="qa")
    >>> est.observe("a", {"error": True, "cost_usd": 0.0}, task_type="qa")
    >>> est.objectives("qa")["a"]["quality"], est.objectives("code")
    ([2.0, 0.25, 0.125], {})
    """

    def __init__(self) -> None:
        # metric -> arm -> [count, mean]
        self._data: dict[str, dict[str, list[float]]] = {m: {} for m in _METRICS}
        # task type -> arm -> objective -> [count, mean, m2]
        self._objectives: dict[str, dict[str, dict[str, list[float]]]] = {}

    def update(
        self, arm: str, cost_usd: float | None = None, latency_ms: float | None = None
    ) -> None:
        """Add one observation; ``None`` (or a non-finite or negative value) is skipped."""
        for metric, value in (("cost_usd", cost_usd), ("latency_ms", latency_ms)):
            if not _usable(value):
                continue
            entry = self._data[metric].setdefault(arm, [0.0, 0.0])
            entry[0] += 1.0
            entry[1] += (float(value) - entry[1]) / entry[0]  # type: ignore[arg-type]

    def observe(
        self, arm: str, components: Mapping[str, Any], task_type: str | None = None
    ) -> None:
        """Learn from an outcome's ``components`` (its ``cost_usd`` and
        ``latency_ms``; with the decision's ``task_type``, its objectives too)."""
        self.update(arm, components.get("cost_usd"), components.get("latency_ms"))
        task = task_bucket(task_type)
        if task is None or not components:
            return
        quality = 0.0 if components.get("error") is True else components.get("quality")
        values = (quality, components.get("cost_usd"), components.get("latency_ms"))
        per_arm = None
        for objective, value in zip(OBJECTIVES, values, strict=True):
            if not _usable(value):
                continue
            if per_arm is None:
                per_arm = self._objectives.setdefault(task, {}).setdefault(arm, {})
            moments_add(per_arm.setdefault(objective, [0.0, 0.0, 0.0]), float(value))  # type: ignore[arg-type]

    def mean(self, arm: str, metric: str) -> float | None:
        """The mean of ``metric`` (``cost_usd`` or ``latency_ms``) for ``arm``,
        ``None`` without data."""
        entry = self._data[metric].get(arm)
        return entry[1] if entry else None

    def count(self, arm: str, metric: str) -> int:
        entry = self._data[metric].get(arm)
        return int(entry[0]) if entry else 0

    def objectives(self, task_type: str) -> dict[str, dict[str, list[float]]]:
        """Per arm, the moments of each objective in ``task_type`` (its bucket)."""
        return self._objectives.get(task_bucket(task_type) or "", {})

    def objectives_pooled(self) -> dict[str, dict[str, list[float]]]:
        """Per arm, the moments of each objective over every task type."""
        out: dict[str, dict[str, list[float]]] = {}
        for per_arm in self._objectives.values():
            for arm, per_objective in per_arm.items():
                mine = out.setdefault(arm, {})
                for objective, m in per_objective.items():
                    mine[objective] = moments_merge(mine.get(objective, _EMPTY), m)
        return out

    def task_types(self) -> list[str]:
        """The task types with objective estimates, sorted."""
        return sorted(self._objectives)

    def forget(self, arm: str) -> None:
        """Drop an arm's estimates (the arm was removed)."""
        for by_arm in self._data.values():
            by_arm.pop(arm, None)
        for by_task in self._objectives.values():
            by_task.pop(arm, None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, for the learner's state."""
        out: dict[str, Any] = {
            m: {a: list(v) for a, v in per_arm.items()} for m, per_arm in self._data.items()
        }
        if self._objectives:
            out["objectives"] = _copy_objectives(self._objectives)
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ArmEstimates:
        est = cls()
        for metric in _METRICS:
            for arm, (n, mean) in doc.get(metric, {}).items():
                est._data[metric][arm] = [float(n), float(mean)]
        est._objectives = _copy_objectives(doc.get("objectives") or {})
        return est

    def arm_stats(self) -> dict[str, dict[str, Any]]:
        """Per arm, ``<metric>_mean`` and ``<metric>_count``, and
        ``objectives`` ({task type: {objective: [count, mean, m2]}}): what a
        policy snapshot's ``arm_stats`` can carry to the deciders."""
        out: dict[str, dict[str, Any]] = {}
        for metric, per_arm in self._data.items():
            for arm, (n, mean) in per_arm.items():
                out.setdefault(arm, {}).update({f"{metric}_mean": mean, f"{metric}_count": n})
        for task, of_task in self._objectives.items():
            for arm, per_objective in of_task.items():
                mine = out.setdefault(arm, {}).setdefault("objectives", {})
                mine[task] = {o: list(m) for o, m in per_objective.items()}
        return out

    @classmethod
    def pooled(cls, parts: Sequence[ArmEstimates]) -> ArmEstimates:
        """The estimates of all the parts' observations together (shards of one policy).

        >>> a, b = ArmEstimates(), ArmEstimates()
        >>> a.update("x", cost_usd=1.0); b.update("x", cost_usd=2.0); b.update("x", cost_usd=3.0)
        >>> pooled = ArmEstimates.pooled([a, b])
        >>> pooled.mean("x", "cost_usd"), pooled.count("x", "cost_usd")
        (2.0, 3)
        """
        est = cls()
        for metric in _METRICS:
            for part in parts:
                for arm, (n, mean) in part._data[metric].items():
                    entry = est._data[metric].setdefault(arm, [0.0, 0.0])
                    entry[0] += n
                    entry[1] += (mean - entry[1]) * n / entry[0] if entry[0] else 0.0
        for part in parts:
            for task, per_arm in part._objectives.items():
                for arm, per_objective in per_arm.items():
                    mine = est._objectives.setdefault(task, {}).setdefault(arm, {})
                    for objective, m in per_objective.items():
                        mine[objective] = moments_merge(mine.get(objective, _EMPTY), m)
        return est

    @classmethod
    def from_arm_stats(cls, stats: Mapping[str, Mapping[str, Any]]) -> ArmEstimates:
        """The inverse of :meth:`arm_stats` (other keys are ignored)."""
        est = cls()
        for arm, s in stats.items():
            for metric in _METRICS:
                n, mean = s.get(f"{metric}_count"), s.get(f"{metric}_mean")
                if n and mean is not None:
                    est._data[metric][arm] = [float(n), float(mean)]
            for task, per_objective in (s.get("objectives") or {}).items():
                est._objectives.setdefault(task, {})[arm] = {
                    o: [float(v) for v in m] for o, m in per_objective.items()
                }
        return est


_EMPTY = (0.0, 0.0, 0.0)


def _usable(value: Any) -> bool:
    """A finite, non-negative number (not a bool)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _copy_objectives(doc: Mapping[str, Any]) -> dict[str, dict[str, dict[str, list[float]]]]:
    return {
        task: {
            arm: {o: [float(v) for v in m] for o, m in per_objective.items()}
            for arm, per_objective in per_arm.items()
        }
        for task, per_arm in doc.items()
    }


class ExplorationBudget:
    """Per tenant, at most ``fraction`` of the requests in a rolling window of
    ``window_seconds`` may explore.

    The window is ``buckets`` consecutive buckets of ``window_seconds /
    buckets`` each, so it slides in those steps and memory per tenant is
    bounded. A request may explore when, counting it, the explored share of
    the window would stay within ``fraction``: ``explored + 1 <= fraction *
    (requests + 1)``; so the share never exceeds the budget (and a fresh
    tenant's first ``1 / fraction - 1`` requests do not explore). Only the
    ``max_tenants`` most recently seen tenants are remembered; a forgotten
    tenant starts afresh (``llmopt_state_evictions_total{state=
    "exploration_budgets"}`` counts them). Time is epoch milliseconds; a timestamp older than
    the newest bucket counts in the newest one.

    >>> b = ExplorationBudget(fraction=0.25, window_seconds=60)
    >>> allowed = []
    >>> for i in range(8):
    ...     ok = b.may_explore("t", now_ms=i)
    ...     allowed.append(ok)
    ...     b.record("t", now_ms=i, explored=ok)
    >>> allowed
    [False, False, False, True, False, False, False, True]
    >>> b.may_explore("t", now_ms=61_000)  # the window has moved past them
    False
    >>> b.usage("t", now_ms=61_000)
    (0, 0)
    """

    def __init__(
        self,
        fraction: float,
        window_seconds: float,
        buckets: int = 60,
        max_tenants: int = 100_000,
    ) -> None:
        if not (isinstance(fraction, int | float) and 0.0 <= fraction <= 1.0):
            raise GuardrailError(f"exploration_budget.fraction must be in [0, 1], got {fraction!r}")
        if not (isinstance(window_seconds, int | float) and window_seconds > 0):
            raise GuardrailError(
                f"exploration_budget.window_seconds must be positive, got {window_seconds!r}"
            )
        if not (isinstance(buckets, int) and buckets >= 1):
            raise GuardrailError(f"exploration_budget.buckets must be >= 1, got {buckets!r}")
        if not (isinstance(max_tenants, int) and max_tenants >= 1):
            raise GuardrailError(
                f"exploration_budget.max_tenants must be >= 1, got {max_tenants!r}"
            )
        self.fraction = float(fraction)
        self.window_seconds = float(window_seconds)
        self.buckets = buckets
        self.max_tenants = max_tenants
        self._width_ms = self.window_seconds * 1000.0 / buckets
        # tenant -> (deque of [bucket, requests, explored], [requests, explored] in the window)
        self._tenants: OrderedDict[str, tuple[deque[list[int]], list[int]]] = OrderedDict()

    def _window(self, tenant: str, now_ms: int) -> tuple[deque[list[int]], list[int]]:
        entry = self._tenants.get(tenant)
        if entry is None:
            entry = (deque(), [0, 0])
            self._tenants[tenant] = entry
            if len(self._tenants) > self.max_tenants:
                self._tenants.popitem(last=False)
                metrics.STATE_EVICTIONS.labels("exploration_budgets").inc()
        else:
            self._tenants.move_to_end(tenant)
        window, totals = entry
        oldest = int(now_ms // self._width_ms) - self.buckets + 1
        while window and window[0][0] < oldest:
            _, n, e = window.popleft()
            totals[0] -= n
            totals[1] -= e
        return entry

    def usage(self, tenant: str, now_ms: int) -> tuple[int, int]:
        """(requests, explored) of ``tenant`` in the window ending at ``now_ms``."""
        if tenant not in self._tenants:
            return (0, 0)
        requests, explored = self._window(tenant, now_ms)[1]
        return (requests, explored)

    def may_explore(self, tenant: str, now_ms: int) -> bool:
        requests, explored = self.usage(tenant, now_ms)
        return explored + 1 <= self.fraction * (requests + 1) + 1e-9

    def record(self, tenant: str, now_ms: int, explored: bool) -> None:
        window, totals = self._window(tenant, now_ms)
        bucket = int(now_ms // self._width_ms)
        if window and window[-1][0] >= bucket:
            window[-1][1] += 1
            window[-1][2] += int(explored)
        else:
            window.append([bucket, 1, int(explored)])
        totals[0] += 1
        totals[1] += int(explored)


# -- decisions ---------------------------------------------------------------------------------


@dataclass(slots=True)
class GuardedSelection:
    """A policy's selection after the guardrails: the :class:`Selection` (its
    propensity is the probability of the arm among ``allowed``), the arms it
    was made among, the guardrails that acted (in order) and why."""

    selection: Selection
    allowed: list[str]
    acted: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    # The request's cost/latency limits could not be met by any allowed arm.
    flagged: bool = False

    @property
    def arm(self) -> str:
        return self.selection.arm

    @property
    def propensity(self) -> float:
        return self.selection.propensity

    @property
    def explored(self) -> bool:
        return self.selection.explored

    @property
    def guardrail(self) -> str | None:
        """The guardrail that decided the choice last, ``None`` if the policy chose freely."""
        return self.acted[-1] if self.acted else None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


_KEYS = {
    "max_explore_priority",
    "exploration_budget",
    "min_pulls",
    "strict_constraints",
    "prior_from",
}
_BUDGET_KEYS = {"fraction", "window_seconds", "buckets", "max_tenants"}


@dataclass
class Guardrails:
    """The guardrails of one policy, and the state they keep (the tenants'
    exploration budgets, the arms' cost/latency estimates). Build it with
    :meth:`from_config`; choose with :meth:`choose`; feed outcomes to
    :meth:`observe`. ``seed`` seeds the warm-up draws (``None``: the policy's
    seed, at the first choice).

    >>> from app.policies.thompson_sampling import ThompsonSampling
    >>> ts = ThompsonSampling(["a", "b", "c"], seed=0, propensity_samples=1000)
    >>> g = Guardrails.from_config({"max_explore_priority": 8, "min_pulls": 1}, seed=0)
    >>> ts.update("a", 1.0)
    >>> s = g.choose(ts, None, None, {}, "t1", priority=5, now_ms=0)
    >>> s.arm in ("b", "c"), s.propensity, s.guardrail
    (True, 0.5, 'warm_up')
    >>> s = g.choose(ts, None, None, {}, "t1", priority=9, now_ms=0)
    >>> s.arm, s.propensity, s.guardrail
    ('a', 1.0, 'priority')
    >>> g.observe("b", {"cost_usd": 0.05}); g.observe("c", {"cost_usd": 0.001})
    >>> s = g.choose(ts, None, ["b", "c"], {"max_cost_usd": 0.01}, "t1", 9, now_ms=0)
    >>> s.arm, s.allowed, s.acted
    ('c', ['c'], ['constraints', 'priority'])
    """

    max_explore_priority: int = _NO_LIMIT_PRIORITY
    budget: ExplorationBudget | None = None
    min_pulls: int = 0
    strict_constraints: bool = False
    prior_from: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    estimates: ArmEstimates = field(default_factory=ArmEstimates)
    _rng: np.random.Generator | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.max_explore_priority, int) and self.max_explore_priority >= 0):
            raise GuardrailError(
                f"max_explore_priority must be an integer >= 0, got {self.max_explore_priority!r}"
            )
        if not (isinstance(self.min_pulls, int) and self.min_pulls >= 0):
            raise GuardrailError(f"min_pulls must be an integer >= 0, got {self.min_pulls!r}")
        if self.seed is not None:
            self._rng = np.random.default_rng([self.seed, 0x6775617264])

    @classmethod
    def from_config(cls, doc: Mapping[str, Any] | None, seed: int | None = None) -> Guardrails:
        """Guardrails from a policy's ``guardrails:`` mapping (``None``: none)."""
        doc = dict(doc or {})
        unknown = set(doc) - _KEYS
        if unknown:
            raise GuardrailError(f"unknown guardrail(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
        budget = None
        raw_budget = doc.get("exploration_budget")
        if raw_budget is not None:
            if not isinstance(raw_budget, Mapping) or not {"fraction", "window_seconds"} <= set(
                raw_budget
            ):
                raise GuardrailError(
                    "exploration_budget needs a mapping with fraction and window_seconds"
                )
            extra = set(raw_budget) - _BUDGET_KEYS
            if extra:
                raise GuardrailError(f"exploration_budget: unknown key(s) {sorted(extra)}")
            budget = ExplorationBudget(**raw_budget)
        priors = doc.get("prior_from") or {}
        if not isinstance(priors, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in priors.items()
        ):
            raise GuardrailError("prior_from must map new arm names to existing arm names")
        if any(k == v for k, v in priors.items()):
            raise GuardrailError("prior_from: an arm cannot take its prior from itself")
        strict = doc.get("strict_constraints", False)
        if not isinstance(strict, bool):
            raise GuardrailError(f"strict_constraints must be true or false, got {strict!r}")
        return cls(
            max_explore_priority=doc.get("max_explore_priority", _NO_LIMIT_PRIORITY),
            budget=budget,
            min_pulls=doc.get("min_pulls", 0),
            strict_constraints=strict,
            prior_from=dict(priors),
            seed=seed,
        )

    @property
    def per_request(self) -> bool:
        """Whether a choice depends on more than (policy, allowed, priority):
        a budget or a warm-up (a request's own limits also make it so)."""
        return self.budget is not None or self.min_pulls > 0

    def observe(
        self, arm: str, components: Mapping[str, Any], task_type: str | None = None
    ) -> None:
        """Learn an arm's cost and latency (and, with the task type, its
        objectives) from an outcome's components."""
        self.estimates.observe(arm, components, task_type)

    # -- the entry point ---------------------------------------------------------------------
    def choose(
        self,
        policy: Policy,
        context: Any,
        allowed: Sequence[str] | None,
        request_meta: Mapping[str, Any] | None,
        tenant: str,
        priority: int,
        now_ms: int,
        chooser: Chooser | None = None,
    ) -> GuardedSelection:
        """The policy's selection for one request, with the guardrails applied
        (see the module's docstring for the order). Records the decision in
        the tenant's exploration budget. ``chooser(arms, explore)``, when
        given, selects in the policy's place (a request's trade-off); the
        limits, priority, budget and warm-up rules stay the same."""
        names = list(allowed) if allowed is not None else policy.arms
        select = chooser or (lambda arms, explore: policy.select(context, arms, explore))
        policy.allowed_indices(names)  # unknown, repeated or no arms: the policy's errors
        out = GuardedSelection(Selection(names[0], 1.0, {}, False), names)

        limits = self._limits(request_meta)
        if limits:
            kept = [a for a in names if self._within(a, limits)]
            if not kept:
                arm = min(names, key=lambda a: (self._overshoot(a, limits), names.index(a)))
                out.acted.append("constraints_fallback")
                out.reasons.append(
                    f"no allowed arm is estimated within {_describe(limits)}; "
                    f"{arm!r} overshoots least"
                )
                out.flagged = True
                out.allowed = [arm]
                out.selection = select([arm], False)
                self._record(tenant, now_ms, False)
                return out
            if len(kept) < len(names):
                out.acted.append("constraints")
                dropped = [a for a in names if a not in kept]
                out.reasons.append(f"{dropped} estimated over {_describe(limits)}")
            names = kept
        out.allowed = names

        if priority >= self.max_explore_priority:
            out.acted.append("priority")
            out.reasons.append(
                f"priority {priority} >= {self.max_explore_priority}: the greedy arm"
            )
            out.selection = select(names, False)
        elif self.budget is not None and not self.budget.may_explore(tenant, now_ms):
            used = self.budget.usage(tenant, now_ms)
            out.acted.append("exploration_budget")
            out.reasons.append(
                f"tenant {tenant!r} explored {used[1]} of {used[0]} requests in the last "
                f"{self.budget.window_seconds:g} s (budget {self.budget.fraction:g}): "
                "the greedy arm"
            )
            out.selection = select(names, False)
        else:
            under = self.under_pulled(policy, names)
            if under:
                out.acted.append("warm_up")
                out.reasons.append(f"{under} have fewer than {self.min_pulls} outcomes")
                out.selection = self._warm_up(policy, context, names, under)
            else:
                out.selection = select(names, True)
        self._record(tenant, now_ms, out.selection.explored)
        return out

    def under_pulled(self, policy: Policy, allowed: Sequence[str]) -> list[str]:
        """The allowed arms with fewer than ``min_pulls`` outcomes, in ``allowed`` order."""
        if self.min_pulls <= 0:
            return []
        stats = policy.stats()
        return [a for a in allowed if stats[a].get("pulls", 0.0) < self.min_pulls]

    # -- helpers -----------------------------------------------------------------------------
    def _record(self, tenant: str, now_ms: int, explored: bool) -> None:
        if self.budget is not None:
            self.budget.record(tenant, now_ms, explored)

    def _warm_up(
        self, policy: Policy, context: Any, names: list[str], under: list[str]
    ) -> Selection:
        if self._rng is None:
            self._rng = np.random.default_rng([policy.seed or 0, 0x6775617264])
        scores = policy.scores(names, context).tolist()
        p = 1.0 / len(under)
        return draw_selection(self._rng, names, scores, [p if a in under else 0.0 for a in names])

    @staticmethod
    def _limits(meta: Mapping[str, Any] | None) -> dict[str, float]:
        limits: dict[str, float] = {}
        for key, metric in _LIMITS.items():
            value = (meta or {}).get(key)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise GuardrailError(f"{key} must be a finite number >= 0, got {value!r}")
            limits[metric] = float(value)
        return limits

    def _within(self, arm: str, limits: Mapping[str, float]) -> bool:
        for metric, limit in limits.items():
            mean = self.estimates.mean(arm, metric)
            if mean is None:
                if self.strict_constraints:
                    return False
            elif mean > limit:
                return False
        return True

    def _overshoot(self, arm: str, limits: Mapping[str, float]) -> float:
        """How far over its limits an arm is estimated to be: the largest
        estimate / limit (``inf`` without an estimate)."""
        worst = 0.0
        for metric, limit in limits.items():
            mean = self.estimates.mean(arm, metric)
            if mean is None:
                return math.inf
            ratio = mean / limit if limit > 0 else (math.inf if mean > 0 else 0.0)
            worst = max(worst, ratio)
        return worst


def _describe(limits: Mapping[str, float]) -> str:
    units = {"cost_usd": "max_cost_usd", "latency_ms": "max_latency_ms"}
    return ", ".join(f"{units[m]}={v:g}" for m, v in limits.items())


# -- arms added by config ----------------------------------------------------------------------


def reconcile_arms(
    policy: Policy, configured_arms: Iterable[str], priors: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Make ``policy``'s arms the configured ones: add the missing arms — a
    new arm named in ``priors`` copies the learned state of its similar arm
    (``add_arm(arm, prior_from=...)``), the others start from the prior — then
    remove the arms no longer configured (adding first, so that the similar
    arm may be one the config drops, e.g. the old version of a model).

    A similar arm that the policy does not have (and that is not itself added
    earlier in the same call) cannot lend its state: the new arm starts from
    the prior and is listed under ``missing_prior``. Returns what was done:
    ``added``, ``copied`` ({new: similar}), ``missing_prior``, ``removed``.

    >>> from app.policies.thompson_sampling import ThompsonSampling
    >>> ts = ThompsonSampling(["old", "b"], seed=0)
    >>> for _ in range(5):
    ...     ts.update("old", 1.0)
    >>> reconcile_arms(ts, ["new", "b"], {"new": "old"})
    {'added': ['new'], 'copied': {'new': 'old'}, 'missing_prior': [], 'removed': ['old']}
    >>> ts.stats()["new"]["alpha"], ts.stats()["new"]["pulls"]
    (6.0, 0.0)
    """
    configured = list(configured_arms)
    priors = dict(priors or {})
    report: dict[str, Any] = {"added": [], "copied": {}, "missing_prior": [], "removed": []}
    pending = [a for a in configured if a not in policy.arms]
    # An arm whose similar arm is itself being added waits for it.
    while pending:
        progressed = False
        for arm in list(pending):
            source = priors.get(arm)
            if source is not None and source in pending:
                continue
            if source is not None and source in policy.arms:
                policy.add_arm(arm, prior_from=source)
                report["copied"][arm] = source
            else:
                policy.add_arm(arm)
                if source is not None:
                    report["missing_prior"].append(arm)
            report["added"].append(arm)
            pending.remove(arm)
            progressed = True
        if not progressed:  # a cycle of priors: break it by starting one arm afresh
            arm = pending.pop(0)
            policy.add_arm(arm)
            report["added"].append(arm)
            report["missing_prior"].append(arm)
    for arm in policy.arms:
        if arm not in configured:
            policy.remove_arm(arm)
            report["removed"].append(arm)
    return report
