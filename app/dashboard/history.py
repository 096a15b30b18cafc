"""A bounded, in-memory history of the metrics topic: what the dashboard and
``llmopt monitor`` show.

Each publisher (a worker, or the traffic simulator) sends cumulative
Prometheus samples every few seconds. The history turns consecutive
snapshots of one publisher into increments (a counter that went down was
reset: its new value is the increment), adds the increments of all
publishers into time buckets of ``bucket_ms``, and keeps the last
``max_points`` buckets. Rates divide each publisher's increments by the time
its snapshots span, then add up over publishers, so two workers deciding
100/s each show 200/s.

>>> from app.records import MetricsSnapshot
>>> def snap(t, n):
...     s = [{"name": "llmopt_decisions_total", "labels": {"policy_id": "p", "arm": "a"},
...           "value": n}]
...     return MetricsSnapshot("id", "worker", "w1", t, 2_000, s)
>>> h = MetricsHistory(bucket_ms=2_000, max_points=10)
>>> h.add(snap(0, 0)); h.add(snap(2_000, 300)); h.add(snap(4_000, 500))
>>> [p["decisions_per_s"] for p in h.view(now_ms=4_000)["points"]]
[150.0, 100.0]
>>> h.view(now_ms=4_000)["totals"]["decisions"]
500.0
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from app.dashboard.quantile import histogram_quantile
from app.records import JSON, MetricsSnapshot

DECISIONS = "llmopt_decisions_total"
LATENCY_BUCKET = "llmopt_decision_latency_seconds_bucket"
OUTCOMES = "llmopt_outcomes_total"
REWARD = "llmopt_outcome_reward_total"
DEAD_LETTERS = "llmopt_dead_letters_total"
ERRORS = "llmopt_errors_total"
LAG = "llmopt_consumer_lag_messages"
SIM_DECISIONS = "llmopt_simulator_decisions_total"
SIM_REGRET = "llmopt_simulator_true_regret_total"
SIM_REWARD = "llmopt_simulator_reward_total"
SIM_BEST_ARM = "llmopt_simulator_best_arm"
# Experiments (docs/experiments.md#live-experiments): gauge name → field shown.
EXPERIMENT_GAUGES = {
    "llmopt_experiment_share": "share",
    "llmopt_experiment_units": "n",
    "llmopt_experiment_mean": "reward_mean",
    "llmopt_experiment_gate": "gate",
}
# Trade-off fronts (docs/tradeoffs.md).
TRADEOFF_OBJECTIVE = "llmopt_tradeoff_objective"
TRADEOFF_ON_FRONT = "llmopt_tradeoff_on_front"
COUNTERS = (
    DECISIONS,
    LATENCY_BUCKET,
    OUTCOMES,
    REWARD,
    DEAD_LETTERS,
    ERRORS,
    SIM_DECISIONS,
    SIM_REGRET,
    SIM_REWARD,
)
EVENT_KINDS = ("drift", "alerts")

Key = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


@dataclass
class _Publisher:
    source: str
    interval_ms: int
    last_at: int
    values: dict[Key, float]


@dataclass
class _Point:
    """Increments of every publisher within one time bucket."""

    t: int
    deltas: dict[Key, float] = field(default_factory=dict)
    # per publisher: seconds its snapshots spanned, and its own increments of
    # the counters turned into rates
    spans: dict[str, float] = field(default_factory=dict)
    rate_deltas: dict[str, dict[str, float]] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)


RATED = (DECISIONS, DEAD_LETTERS, ERRORS, SIM_DECISIONS)


class MetricsHistory:
    """Recent figures from the metrics topic, plus the last drift events and alerts.

    Parameters
    ----------
    bucket_ms
        Width of one point of history (the publishing interval is a good choice).
    max_points
        Points kept; older ones are dropped.
    max_events
        Drift events and alerts kept, each.
    stale_after_ms
        A publisher silent this long no longer counts in the totals.
    """

    def __init__(
        self,
        bucket_ms: int = 2_000,
        max_points: int = 300,
        max_events: int = 50,
        stale_after_ms: int = 30_000,
    ) -> None:
        self.bucket_ms = bucket_ms
        self.max_points = max_points
        self.max_events = max_events
        self.stale_after_ms = stale_after_ms
        self._publishers: dict[str, _Publisher] = {}
        self._points: deque[_Point] = deque(maxlen=max_points)
        self._events: dict[str, deque[JSON]] = {k: deque(maxlen=max_events) for k in EVENT_KINDS}
        self._event_counts: dict[str, int] = dict.fromkeys(EVENT_KINDS, 0)
        self._snapshots = 0

    # -- input -----------------------------------------------------------------------
    def add(self, snap: MetricsSnapshot) -> None:
        """Take one snapshot; the first of a publisher is only its baseline."""
        self._snapshots += 1
        values = {
            (s["name"], tuple(sorted(s["labels"].items()))): float(s["value"]) for s in snap.samples
        }
        prev = self._publishers.get(snap.worker_id)
        self._publishers[snap.worker_id] = _Publisher(
            snap.source, snap.interval_ms, snap.created_at, values
        )
        point = self._point(snap.created_at)
        point.lag[snap.worker_id] = sum(v for (n, _), v in values.items() if n == LAG)
        if prev is None or snap.created_at <= prev.last_at:
            return
        wid = snap.worker_id
        point.spans[wid] = point.spans.get(wid, 0.0) + (snap.created_at - prev.last_at) / 1000
        rated = point.rate_deltas.setdefault(wid, {})
        for key, value in values.items():
            if key[0] not in COUNTERS:
                continue
            before = prev.values.get(key, 0.0)
            delta = value - before if value >= before else value  # a reset starts from 0
            if delta:
                point.deltas[key] = point.deltas.get(key, 0.0) + delta
                if key[0] in RATED:
                    rated[key[0]] = rated.get(key[0], 0.0) + delta

    def add_event(self, kind: str, doc: JSON) -> None:
        """A drift event or an alert (``kind`` ``drift`` or ``alerts``), kept as sent."""
        self._events[kind].append(doc)
        self._event_counts[kind] += 1

    def _point(self, t: int) -> _Point:
        start = t - t % self.bucket_ms
        for p in reversed(self._points):
            if p.t == start:
                return p
            if p.t < start:
                break
        if self._points and start < self._points[-1].t:
            return self._points[-1]  # late: count it in the newest point
        p = _Point(start)
        self._points.append(p)
        return p

    # -- output ----------------------------------------------------------------------
    def view(self, now_ms: int, recent_points: int = 3) -> JSON:
        """Everything the dashboard shows, as JSON-able data."""
        live = {
            w: p for w, p in self._publishers.items() if now_ms - p.last_at <= self.stale_after_ms
        }
        points = [p for p in self._points if p.spans]
        if len(points) > 1 and (set(points[-2].spans) & set(live)) - set(points[-1].spans):
            points.pop()  # still open: not every publisher has reported into it yet
        latest = _figures(points[-recent_points:]) if points else _figures([])
        latest["lag"] = sum(v for p in live.values() for (n, _), v in p.values.items() if n == LAG)
        return {
            "generated_at": now_ms,
            "bucket_ms": self.bucket_ms,
            "snapshots": self._snapshots,
            "publishers": [
                {
                    "worker_id": w,
                    "source": p.source,
                    "last_seen_at": p.last_at,
                    "interval_ms": p.interval_ms,
                }
                for w, p in sorted(live.items())
            ],
            "points": [{"t": p.t, **_figures([p]), "lag": sum(p.lag.values())} for p in points],
            "latest": latest,
            "totals": self._totals(live),
            "experiments": _experiments(live),
            "tradeoffs": _tradeoffs(live),
            "events": {k: list(reversed(self._events[k])) for k in EVENT_KINDS},
            "event_counts": dict(self._event_counts),
        }

    def _totals(self, live: dict[str, _Publisher]) -> JSON:
        def total(name: str, source: str) -> float:
            return sum(
                v
                for p in live.values()
                if p.source == source
                for (n, _), v in p.values.items()
                if n == name
            )

        sim = [p for p in live.values() if p.source == "simulator"]
        best = None
        for p in sim:
            for (n, labels), v in p.values.items():
                if n == SIM_BEST_ARM and v == 1.0:
                    best = dict(labels).get("arm")
        sim_decisions = total(SIM_DECISIONS, "simulator")
        regret = total(SIM_REGRET, "simulator")
        return {
            "decisions": total(DECISIONS, "worker"),
            "dead_letters": total(DEAD_LETTERS, "worker"),
            "workers": sum(p.source == "worker" for p in live.values()),
            "simulator": bool(sim),
            "sim_decisions": sim_decisions if sim else None,
            "true_regret": regret if sim else None,
            "mean_regret": regret / sim_decisions if sim and sim_decisions else None,
            "best_arm": best,
        }


def _experiments(live: dict[str, _Publisher]) -> JSON:
    """Per experiment and variant: its share (the largest any decider
    reports: every decider assigns the same), and the evaluator's units,
    mean reward and gate (1 pass, 0 pending, -1 fail)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for p in live.values():
        for (name, labels), v in p.values.items():
            what = EXPERIMENT_GAUGES.get(name)
            lab = dict(labels)
            if what is None or (what == "reward_mean" and lab.get("metric") != "reward"):
                continue
            cell = out.setdefault(lab.get("experiment", ""), {}).setdefault(
                lab.get("variant", ""), {}
            )
            cell[what] = max(cell.get(what, v), v) if what == "share" else v
    return {e: dict(sorted(vs.items())) for e, vs in sorted(out.items())}


def _tradeoffs(live: dict[str, _Publisher]) -> JSON:
    """Per policy, task type and arm: the learned mean of each objective
    (quality, cost_usd, latency_ms), its standard error (``<objective>_se``)
    and whether the arm is on the front, from the most recent publisher that
    reports it (every decider holds the same snapshots)."""
    out: dict[str, dict[str, dict[str, JSON]]] = {}
    for p in sorted(live.values(), key=lambda p: p.last_at):
        for (name, labels), v in p.values.items():
            if name not in (TRADEOFF_OBJECTIVE, TRADEOFF_ON_FRONT):
                continue
            lab = dict(labels)
            cell = (
                out.setdefault(lab.get("policy_id", ""), {})
                .setdefault(lab.get("task_type", ""), {})
                .setdefault(lab.get("arm", ""), {})
            )
            if name == TRADEOFF_ON_FRONT:
                cell["on_front"] = v == 1.0
            else:
                suffix = "" if lab.get("stat") == "mean" else "_se"
                cell[lab.get("objective", "") + suffix] = v
    return {
        pid: {task: dict(sorted(arms.items())) for task, arms in sorted(tasks.items())}
        for pid, tasks in sorted(out.items())
    }


def _figures(points: list[_Point]) -> JSON:
    """Rates, latency quantiles, mean reward and arm shares over ``points``."""
    deltas: dict[Key, float] = {}
    per_publisher: dict[str, tuple[float, dict[str, float]]] = {}
    for p in points:
        for k, v in p.deltas.items():
            deltas[k] = deltas.get(k, 0.0) + v
        for w, span in p.spans.items():
            s, d = per_publisher.get(w, (0.0, {}))
            merged = dict(d)
            for name, v in p.rate_deltas.get(w, {}).items():
                merged[name] = merged.get(name, 0.0) + v
            per_publisher[w] = (s + span, merged)

    def rate(name: str) -> float:
        return round(sum(d.get(name, 0.0) / s for s, d in per_publisher.values() if s > 0), 3)

    buckets: dict[float, float] = {}
    by_arm: dict[str, dict[str, float]] = {}
    outcomes: dict[str, float] = {}
    rewards: dict[str, float] = {}
    sim: dict[str, float] = {}
    # Per task type (the simulator's labels): decisions per arm, and true regret.
    task_arms: dict[str, dict[str, float]] = {}
    task_regret: dict[str, float] = {}
    for (name, labels), v in deltas.items():
        lab = dict(labels)
        if name == LATENCY_BUCKET:
            le = float(lab["le"])
            buckets[le] = buckets.get(le, 0.0) + v
        elif name == DECISIONS:
            arms = by_arm.setdefault(lab.get("policy_id", ""), {})
            arm = lab.get("arm", "")
            arms[arm] = arms.get(arm, 0.0) + v
        elif name == OUTCOMES:
            pid = lab.get("policy_id", "")
            outcomes[pid] = outcomes.get(pid, 0.0) + v
        elif name == REWARD:
            pid = lab.get("policy_id", "")
            rewards[pid] = rewards.get(pid, 0.0) + v
        elif name in (SIM_DECISIONS, SIM_REGRET, SIM_REWARD):
            sim[name] = sim.get(name, 0.0) + v
            task = lab.get("task_type")
            if task is not None and name == SIM_DECISIONS:
                arms = task_arms.setdefault(task, {})
                arms[lab.get("arm", "")] = arms.get(lab.get("arm", ""), 0.0) + v
            elif task is not None and name == SIM_REGRET:
                task_regret[task] = task_regret.get(task, 0.0) + v
    p50, p99 = histogram_quantile(0.5, buckets), histogram_quantile(0.99, buckets)
    sim_n = sim.get(SIM_DECISIONS, 0.0)
    return {
        "decisions_per_s": rate(DECISIONS),
        "dead_letters_per_s": rate(DEAD_LETTERS),
        "errors_per_s": rate(ERRORS),
        "latency_p50_s": _round(p50),
        "latency_p99_s": _round(p99),
        "reward_mean": {
            pid: round(rewards.get(pid, 0.0) / n, 4) for pid, n in sorted(outcomes.items()) if n
        },
        "shares": {
            pid: {
                arm: round(n / sum(arms.values()), 4)
                for arm, n in sorted(arms.items(), key=lambda kv: -kv[1])
            }
            for pid, arms in sorted(by_arm.items())
            if sum(arms.values()) > 0
        },
        "sim_decisions_per_s": rate(SIM_DECISIONS),
        "regret_per_decision": _round(sim.get(SIM_REGRET, 0.0) / sim_n) if sim_n else None,
        "sim_reward_mean": _round(sim.get(SIM_REWARD, 0.0) / sim_n) if sim_n else None,
        "tasks": _task_figures(task_arms, task_regret),
    }


def _task_figures(arms: dict[str, dict[str, float]], regret: dict[str, float]) -> JSON:
    """Per task type: decisions, true regret per decision and arm shares."""
    out = {}
    for task, counts in sorted(arms.items()):
        n = sum(counts.values())
        if n <= 0:
            continue
        out[task] = {
            "decisions": n,
            "regret_per_decision": _round(regret.get(task, 0.0) / n),
            "shares": {
                arm: round(c / n, 4) for arm, c in sorted(counts.items(), key=lambda kv: -kv[1])
            },
        }
    return out


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 6)


def event_time(doc: Any) -> int | None:
    """The first ``*_at`` epoch-millisecond field of an event, if any."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k.endswith("_at") and type(v) is int:
                return v
    return None
