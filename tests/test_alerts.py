"""Alert rules: firing and resolving on known windows, de-duplication,
cool-down, scopes, and each metric against a brute-force computation."""

from __future__ import annotations

import math
import random

import pytest

from app.drift import AlertEngine, AlertRule, DriftConfig
from app.records import AlertEvent, DriftEvent, Outcome


def outcome(t_ms: int, arm: str = "a", policy: str = "p", /, **c: object) -> Outcome:
    reward = float(c.pop("reward", 0.5))  # type: ignore[arg-type]
    return Outcome(
        request_id=f"r{t_ms}{arm}", tenant_id="t", policy_id=policy, policy_version=1, arm=arm,
        available_arms=["a", "b"], propensity=1.0, explored=False, reward=reward,
        defaulted=False, decided_at=t_ms, outcome_at=t_ms, components=dict(c),
    )  # fmt: skip


def rule(metric: str = "error_rate", comparison: str = ">", threshold: float = 0.1,
         window: float = 10, scope: str = "arm", min_samples: int = 10) -> AlertRule:  # fmt: skip
    return AlertRule("r", metric, comparison, threshold, window, "critical", scope, min_samples)


def run(engine: AlertEngine, outcomes: list[Outcome]) -> list[AlertEvent]:
    return [a for o in outcomes for a in engine.observe(o)]


def test_fires_once_while_breached_and_resolves_with_the_same_id() -> None:
    eng = AlertEngine([rule()], cooldown_seconds=1000, evaluate_every_seconds=0.001)
    # 100 ms apart: 30 s healthy, 20 s with every other call failing, 30 s healthy
    events = run(eng, [outcome(i * 100, error=(300 <= i < 500 and i % 2 == 0)) for i in range(800)])
    assert [e.status for e in events] == ["firing", "resolved"]
    firing, resolved = events
    assert firing.alert_id == resolved.alert_id and firing.started_at == resolved.started_at
    # the 10 s window first holds > 10% errors after 11 failures in 101 values: the 21st new value
    assert firing.started_at == 320 * 100 and firing.value == pytest.approx(11 / 101)
    assert firing.severity == "critical" and firing.arm == "a" and firing.samples == 101
    assert resolved.resolved_at is not None and resolved.value <= 0.1
    AlertEvent.from_dict(firing.to_dict())  # valid against its own record


def test_cooldown_suppresses_flapping() -> None:
    eng = AlertEngine([rule(window=1, min_samples=5)], cooldown_seconds=60,
                      evaluate_every_seconds=0.001)  # fmt: skip
    # errors on and off every 2 s for 100 s
    events = run(eng, [outcome(i * 100, error=(i // 20) % 2 == 0) for i in range(1000)])
    firings = [e for e in events if e.status == "firing"]
    assert [f.started_at for f in firings] == [400, 60_400]  # t=0.4 s, then after 60 s
    assert len([e for e in events if e.status == "resolved"]) == 2


def test_min_samples_and_policy_scope() -> None:
    r = rule("reward_mean", "<", 0.5, window=5, scope="policy", min_samples=30)
    eng = AlertEngine([r], evaluate_every_seconds=0.001)
    few = [outcome(i * 1000, "ab"[i % 2], reward=0.1) for i in range(5)]  # 5 in 5 s
    assert run(eng, few) == []
    many = [outcome(10_000 + i * 100, "ab"[i % 2], reward=0.1) for i in range(40)]
    events = run(eng, many)
    assert len(events) == 1 and events[0].arm is None and events[0].samples == 30


@pytest.mark.parametrize("metric", ["reward_mean", "error_rate", "latency_ms_mean",
                                    "latency_ms_p95", "cost_usd_mean"])  # fmt: skip
def test_metrics_match_a_brute_force_window(metric: str) -> None:
    rng = random.Random(11)
    rows = []
    for i in range(500):
        err = rng.random() < 0.1
        comps: dict[str, object] = {"error": err, "latency_ms": rng.lognormvariate(6, 0.5)}
        if not err:
            comps["cost_usd"] = rng.uniform(0.001, 0.01)
        rows.append(outcome(i * 10, reward=rng.random(), **comps))
    # threshold so high (or low) that it never fires: evaluate and read the values
    eng = AlertEngine([rule(metric, ">", math.inf, window=2, min_samples=0)],
                      evaluate_every_seconds=0.001)  # fmt: skip
    for o in rows:
        eng.observe(o)
    from app.drift.alerts import _metric

    w = eng._windows[("p", "a")]
    value, n = _metric(rule(metric, window=2), w, rows[-1].outcome_at)
    window = [o for o in rows if o.outcome_at >= rows[-1].outcome_at - 2000]
    if metric == "reward_mean":
        expected = [o.reward for o in window]
    elif metric == "error_rate":
        expected = [float(o.components["error"]) for o in window]
    elif metric.startswith("latency"):
        expected = [o.components["latency_ms"] for o in window]
    else:
        expected = [o.components["cost_usd"] for o in window if "cost_usd" in o.components]
    assert n == len(expected)
    if metric == "latency_ms_p95":
        ordered = sorted(expected)
        assert value == pytest.approx(ordered[math.ceil(0.95 * len(ordered)) - 1])
    else:
        assert value == pytest.approx(sum(expected) / len(expected))


def test_drift_event_counts() -> None:
    r = rule("drift_events", ">=", 3, window=60, scope="policy", min_samples=0)
    eng = AlertEngine([r], evaluate_every_seconds=0.001)

    def drift(t: int, kind: str = "drift") -> DriftEvent:
        return DriftEvent(event_id=f"d{t}", kind=kind, policy_id="p", signal="reward",
                          detector="cusum", observed_at=t, created_at=t, arm="a")  # fmt: skip

    eng.record_events([drift(1000), drift(2000), drift(3000, "anomaly")])
    assert eng.observe(outcome(3000)) == []
    eng.record_events([drift(4000)])
    events = eng.observe(outcome(4000))
    assert [(e.status, e.value) for e in events] == [("firing", 3.0)]
    # 60 s later the drifts have left the window
    assert [e.status for e in eng.observe(outcome(70_000))] == ["resolved"]


def test_shipped_rules_parse() -> None:
    cfg = DriftConfig.from_dict(
        {"alerts": {"cooldown_seconds": 10, "rules": [
            {"name": "slow", "metric": "latency_ms_p95", "comparison": ">=", "threshold": 9000,
             "window_seconds": 30, "severity": "info", "scope": "policy"}]}}
    )  # fmt: skip
    (r,) = cfg.alert_rules
    assert (r.metric, r.comparison, r.threshold, r.window_seconds, r.severity, r.scope) == (
        "latency_ms_p95", ">=", 9000.0, 30.0, "info", "policy")  # fmt: skip
    assert r.breached(9000) and not r.breached(8999)
    assert cfg.alert_cooldown_seconds == 10
