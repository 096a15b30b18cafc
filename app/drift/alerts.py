"""Alert rules over windows of outcomes and drift events. Pure: the
``detect_drift`` agent feeds it and sends the alert events it returns."""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.drift.config import AlertRule
from app.drift.monitor import signal_values
from app.records import AlertEvent, DriftEvent, Outcome, now_ms

_EVENT_METRICS = {"drift_events": "drift", "anomaly_events": "anomaly"}


@dataclass
class _Window:
    """Observations of one (policy, arm) — or one policy, ``arm`` None — in
    outcome-time order: (at, reward, error, latency_ms, cost_usd), and the
    times of drift and anomaly events."""

    outcomes: deque[tuple[int, float, float, float, float]] = field(default_factory=deque)
    events: dict[str, deque[int]] = field(
        default_factory=lambda: {"drift": deque(), "anomaly": deque()}
    )
    next_check: int = 0

    def trim(self, oldest: int) -> None:
        while self.outcomes and self.outcomes[0][0] < oldest:
            self.outcomes.popleft()
        for times in self.events.values():
            while times and times[0] < oldest:
                times.popleft()


@dataclass
class _State:
    alert_id: str
    started_at: int
    firing: bool = True


class AlertEngine:
    """Evaluates alert ``rules`` per policy (``scope: policy``) or per arm
    (``scope: arm``) over sliding windows of outcome time.

    A rule fires when its metric over the last ``window_seconds`` breaches
    the threshold with at least ``min_samples`` values in the window, and
    resolves when it no longer does; both are events with the same
    ``alert_id``. De-duplication: while an alert fires, the rule is not
    re-sent. Cool-down: after a firing, the same rule on the same policy/arm
    does not fire again for ``cooldown_seconds``, so a flapping signal gives
    one alert, not one per flap. Rules are evaluated at most every
    ``evaluate_every_seconds`` of outcome time per key (percentiles cost a
    sort of the window).

    Metrics: ``reward_mean``, ``error_rate``, ``latency_ms_mean``,
    ``latency_ms_p95``, ``cost_usd_mean`` (from outcomes that carry the
    component), ``drift_events`` and ``anomaly_events`` (counts in the window).

    >>> rule = AlertRule("errors", "error_rate", ">", 0.05, window_seconds=10, min_samples=20)
    >>> eng = AlertEngine([rule], cooldown_seconds=60, evaluate_every_seconds=1)
    >>> def outcome(i, error):
    ...     return Outcome(request_id=str(i), tenant_id="t", policy_id="p", policy_version=1,
    ...         arm="a", available_arms=["a"], propensity=1.0, explored=False, reward=0.5,
    ...         defaulted=False, decided_at=0, outcome_at=i * 100, components={"error": error})
    >>> errors = [200 <= i < 300 and i % 5 == 0 for i in range(600)]  # 20% for 10 s
    >>> alerts = [a for i in range(600) for a in eng.observe(outcome(i, errors[i]))]
    >>> [(a.status, a.rule, a.arm, a.started_at) for a in alerts]
    [('firing', 'errors', 'a', 23000), ('resolved', 'errors', 'a', 23000)]
    """

    def __init__(
        self,
        rules: Iterable[AlertRule],
        cooldown_seconds: float = 300.0,
        evaluate_every_seconds: float = 1.0,
        clock: Callable[[], int] = now_ms,
        ids: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.rules = tuple(rules)
        self.cooldown_seconds = cooldown_seconds
        self.evaluate_every_seconds = evaluate_every_seconds
        self._clock = clock
        self._ids = ids
        self._span_ms = int(max((r.window_seconds for r in self.rules), default=0) * 1000)
        self._windows: dict[tuple[str, str | None], _Window] = {}
        self._states: dict[tuple[str, str, str | None], _State] = {}
        self._last_fired: dict[tuple[str, str, str | None], int] = {}

    def _keys(self, policy_id: str, arm: str | None) -> list[tuple[str, str | None]]:
        scopes = {r.scope for r in self.rules}
        keys: list[tuple[str, str | None]] = []
        if "arm" in scopes and arm is not None:
            keys.append((policy_id, arm))
        if "policy" in scopes:
            keys.append((policy_id, None))
        return keys

    def record_events(self, events: Iterable[DriftEvent]) -> None:
        """Count drift and anomaly events for the event-count metrics."""
        for e in events:
            if e.kind not in ("drift", "anomaly") or not self.rules:
                continue
            for key in self._keys(e.policy_id, e.arm):
                w = self._windows.setdefault(key, _Window())
                w.events[e.kind].append(e.observed_at)

    def observe(self, outcome: Outcome) -> list[AlertEvent]:
        if not self.rules:
            return []
        at = outcome.outcome_at
        v = signal_values(outcome)
        row = (
            at,
            v.get("reward", math.nan),
            v.get("error", math.nan),
            math.exp(v["latency"]) if "latency" in v else math.nan,
            math.exp(v["cost"]) if "cost" in v else math.nan,
        )
        out: list[AlertEvent] = []
        for key in self._keys(outcome.policy_id, outcome.arm):
            w = self._windows.setdefault(key, _Window())
            if v:
                w.outcomes.append(row)
            if at < w.next_check:
                continue
            w.next_check = at + int(self.evaluate_every_seconds * 1000)
            w.trim(at - self._span_ms)
            out += self._evaluate(key, w, at)
        return out

    def _evaluate(self, key: tuple[str, str | None], w: _Window, at: int) -> list[AlertEvent]:
        pid, arm = key
        out = []
        for rule in self.rules:
            if (rule.scope == "arm") != (arm is not None):
                continue
            value, n = _metric(rule, w, at)
            skey = (rule.name, pid, arm)
            state = self._states.get(skey)
            breached = n >= rule.min_samples and not math.isnan(value) and rule.breached(value)
            if breached and state is None:
                last = self._last_fired.get(skey)
                if last is not None and at - last < self.cooldown_seconds * 1000:
                    continue  # cool-down
                state = self._states[skey] = _State(self._ids(), at)
                self._last_fired[skey] = at
                out.append(self._event(rule, pid, arm, state, "firing", value, n, None))
            elif not breached and state is not None and n >= rule.min_samples:
                del self._states[skey]
                out.append(self._event(rule, pid, arm, state, "resolved", value, n, at))
        return out

    def _event(
        self,
        rule: AlertRule,
        pid: str,
        arm: str | None,
        state: _State,
        status: str,
        value: float,
        n: int,
        resolved_at: int | None,
    ) -> AlertEvent:
        where = f"{pid}/{arm}" if arm else pid
        verb = "breaches" if status == "firing" else "no longer breaches"
        return AlertEvent(
            alert_id=state.alert_id,
            rule=rule.name,
            status=status,
            severity=rule.severity,
            policy_id=pid,
            arm=arm,
            metric=rule.metric,
            comparison=rule.comparison,
            threshold=rule.threshold,
            value=value,
            window_seconds=rule.window_seconds,
            samples=n,
            started_at=state.started_at,
            created_at=self._clock(),
            resolved_at=resolved_at,
            summary=f"{where}: {rule.metric} {value:.4g} {verb} {rule.comparison} "
            f"{rule.threshold:g} over {rule.window_seconds:g} s ({n} values)",
        )


def _metric(rule: AlertRule, w: _Window, at: int) -> tuple[float, int]:
    """The rule's metric over its window ending at ``at``, and how many values it used."""
    oldest = at - int(rule.window_seconds * 1000)
    if rule.metric in _EVENT_METRICS:
        times = w.events[_EVENT_METRICS[rule.metric]]
        n = sum(1 for t in times if oldest <= t <= at)
        return float(n), n
    column = {
        "reward_mean": 1,
        "error_rate": 2,
        "latency_ms_mean": 3,
        "latency_ms_p95": 3,
        "cost_usd_mean": 4,
    }[rule.metric]
    values = [row[column] for row in w.outcomes if row[0] >= oldest]
    values = [x for x in values if not math.isnan(x)]
    if not values:
        return math.nan, 0
    if rule.metric == "latency_ms_p95":
        values.sort()
        return values[min(len(values) - 1, math.ceil(0.95 * len(values)) - 1)], len(values)
    return math.fsum(values) / len(values), len(values)
