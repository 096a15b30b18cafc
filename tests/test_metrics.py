"""Metrics: the Prometheus exposition (promtool-clean, bounded labels, base
units), snapshots that carry the very same series, and the dashboard history
that turns snapshots into rates, quantiles and shares — checked against hand
computations and brute force."""

from __future__ import annotations

import logging
import math
import random
import re
import shutil
import subprocess
from collections import namedtuple

import orjson
import pytest
from jsonschema import Draft202012Validator
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app import metrics
from app.dashboard.history import MetricsHistory
from app.dashboard.quantile import histogram_quantile
from app.error_log_counter import ErrorLogCounter
from app.metrics_snapshot import build_snapshot, collect_samples, sample_values
from app.policies.tradeoff import FrontRow
from app.records import MetricsSnapshot
from app.settings import ROOT
from app.stream.agent_sensor import AgentSensor, lag_by_topic

# Every label the worker's metrics may carry: each has a bounded set of values
# (agent and logger names, reason codes, results, policy and arm names from
# the policies file, topic roles) — never request ids, tenants or prompts.
BOUNDED_LABELS = {
    "agent", "result", "reason", "policy_id", "arm", "kind", "logger", "consumer", "topic",
    "le", "feature", "why", "signal", "detector", "severity", "rule", "action", "type",
    "spec",  # feature spec names: as many as configured specs
    "status",  # registry version statuses and record kinds
    "version", "estimator", "bound",  # shadow versions (a few per policy), their estimates
    "experiment", "variant", "metric",  # running experiments: an operator's, a few at a time
    "state", "name",  # capped per-key states; circuit breakers, one per guarded dependency
    "store",  # the worker's stores (join-pending, policy-state, feature-windows …)
    "task_type", "objective", "stat",  # trade-off fronts: the closed set of task types
}  # fmt: skip


def exercise_every_metric() -> None:
    """Give every labelled metric of app.metrics a series, so the exposition has them all."""
    metrics.EVENTS.labels("select_arm", "ok").inc()
    metrics.DEAD_LETTERS.labels("join_rewards", "malformed_json").inc()
    metrics.DECISIONS.labels("default", "gpt-4o").inc(3)
    metrics.DECISIONS_FALLBACK.labels("default", "deadline").inc()
    metrics.OUTCOMES.labels("default", "rewarded").inc()
    metrics.SENDS_RETRIED.labels("join_rewards").inc()
    metrics.POISONED_STATE.labels("feature-windows").inc()
    metrics.FEATURE_WINDOW_MISSES.labels("not_caught_up").inc()
    metrics.REGISTRY_RECORDS.labels("default", "retired").inc()
    metrics.EXPERIMENT_SHARE.labels("rollout-1", "challenger").set(0.05)
    metrics.set_experiment_result(
        "rollout-1",
        {
            "variants": {"champion": {"reward": {"n": 120, "mean": 0.7}}},
            "treatments": {"challenger": {"gate": "pending"}},
        },
    )
    metrics.EXPERIMENT_STOPS.labels("rolled_back").inc()
    metrics.set_tradeoff_front(
        "default",
        {"qa": [FrontRow("gpt-4o", 12, (0.8, 0.004, 900.0), (0.01, 0.0002, 30.0), True)]},
    )
    metrics.set_shadow_values(
        "default",
        {
            7: {
                "outcomes": 10,
                "ips": {"value": 0.5, "low": 0.4, "high": 0.6},
                "agreement": 0.8,
            }
        },
    )
    metrics.OUTCOME_REWARD.labels("default").inc(0.5)
    metrics.POLICY_UPDATES.labels("default").inc()
    metrics.POLICY_UPDATES_SKIPPED.labels("default", "duplicate").inc()
    metrics.SNAPSHOTS.labels("default").inc()
    metrics.POLICY_VERSION.labels("default").set(4)
    metrics.CONFIG_RELOADS.labels("ok").inc()
    metrics.AGENT_PROCESSING_SECONDS.labels("join_rewards").observe(0.0004)
    metrics.ERRORS.labels("faust.agents").inc()
    metrics.set_consumer_lag("select_arm", {"requests": 12})
    metrics.DECISION_LATENCY_SECONDS.observe(0.012)
    metrics.EVENT_LOOP_STALL_SECONDS.observe(0.004)
    metrics.DASHBOARD_EVENTS.labels("metrics", "ok").inc()
    metrics.WEB_AUTH_REFUSED.labels("unauthorized").inc()
    metrics.STATE_EVICTIONS.labels("open_workflows").inc()
    metrics.CIRCUIT_STATE.labels("feature_reads:demo").set(0)
    metrics.CIRCUIT_SKIPPED.labels("feature_reads:demo").inc()
    metrics.LABELS_OVERFLOW.labels("llmopt_decisions_total").inc()


def exposition() -> str:
    exercise_every_metric()
    return generate_latest(REGISTRY).decode()


# --- the exposition -----------------------------------------------------------------------


def test_exposition_passes_promtool_or_the_parser_checks() -> None:
    text = exposition()
    promtool = shutil.which("promtool")
    if promtool:
        out = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert not out.stdout.strip(), f"promtool lint problems:\n{out.stdout}"
    # The checks below hold with or without promtool (CI may not have it).
    families = list(text_string_to_metric_families(text))
    ours = [f for f in families if f.name.startswith("llmopt_")]
    assert len(ours) >= 20
    for f in ours:
        assert f.documentation, f"{f.name} has no HELP"
        assert f.type in {"counter", "gauge", "histogram"}, f.name
        for s in f.samples:
            assert s.name.startswith("llmopt_")
            if f.type == "counter":
                assert s.name.endswith(("_total", "_created")), s.name
            assert set(s.labels) <= BOUNDED_LABELS, f"{s.name}: unbounded label {s.labels}"


def test_durations_are_in_seconds_and_named_so() -> None:
    for f in text_string_to_metric_families(exposition()):
        if f.type == "histogram" and f.name.startswith("llmopt_") and "size" not in f.name:
            assert f.name.endswith("_seconds"), f.name
            bounds = [float(s.labels["le"]) for s in f.samples if s.name.endswith("_bucket")]
            assert max(b for b in bounds if math.isfinite(b)) <= 60, f"{f.name}: not seconds?"


def test_every_agent_is_timed_by_one_histogram() -> None:
    families = {f.name: f for f in text_string_to_metric_families(exposition())}
    f = families["llmopt_agent_processing_seconds"]
    assert f.type == "histogram"
    assert {s.labels["agent"] for s in f.samples} >= {"join_rewards"}


# --- snapshots: the same series as the exposition -----------------------------------------


def test_snapshot_carries_exactly_the_exposition_series() -> None:
    text = exposition()
    exposed = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if not s.name.endswith("_created") and math.isfinite(s.value)
    }
    snap = build_snapshot(REGISTRY, "worker", "w:1:2", now_ms=5, interval_ms=2000)
    carried = {(s["name"], tuple(sorted(s["labels"].items())), s["value"]) for s in snap.samples}
    # Same series; same values too, except the process's own (memory, CPU) which move.
    assert {c[:2] for c in carried} == {e[:2] for e in exposed}
    ours = {c for c in carried if c[0].startswith("llmopt_")}
    assert ours == {e for e in exposed if e[0].startswith("llmopt_")}
    assert any(c[0] == "llmopt_decisions_total" for c in ours)


def test_snapshot_is_a_valid_metrics_event() -> None:
    exercise_every_metric()
    snap = build_snapshot(REGISTRY, "worker", "w:1:2", now_ms=5, interval_ms=2000)
    schema = orjson.loads((ROOT / "schemas" / "metrics.v1.json").read_bytes())
    doc = orjson.loads(snap.dumps())
    Draft202012Validator(schema).validate(doc)
    assert MetricsSnapshot.loads(snap.dumps(), 1 << 22) == snap
    assert len(snap.dumps()) < 256 * 1024  # a worker's snapshot stays small


def test_non_finite_and_created_samples_are_left_out() -> None:
    registry = CollectorRegistry()
    g = metrics.Gauge("llmopt_demo", "Demo.", ["k"], registry=registry)
    g.labels("nan").set(float("nan"))
    g.labels("one").set(1)
    metrics.Counter("llmopt_demo_events_total", "Demo.", registry=registry).inc()
    names = {(s["name"], s["labels"].get("k")) for s in collect_samples(registry)}
    assert names == {("llmopt_demo", "one"), ("llmopt_demo_events_total", None)}


# --- quantiles from buckets ---------------------------------------------------------------


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_histogram_quantile_brackets_the_true_quantile(q: float) -> None:
    """Against brute force on seeded data: the estimate lies in the bucket
    that holds the true quantile (all a histogram can promise)."""
    bounds = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
    rng = random.Random(11)
    values = [rng.lognormvariate(-4, 1.0) for _ in range(20_000)]
    registry = CollectorRegistry()
    h = Histogram("llmopt_demo_seconds", "Demo.", buckets=bounds, registry=registry)
    for v in values:
        h.observe(v)
    buckets = {
        float(s["labels"]["le"]): s["value"]
        for s in collect_samples(registry)
        if s["name"] == "llmopt_demo_seconds_bucket"
    }
    estimate = histogram_quantile(q, buckets)
    truth = sorted(values)[math.ceil(q * len(values)) - 1]
    upper = min(b for b in (*bounds, math.inf) if b >= truth)
    lower = max((b for b in bounds if b < truth), default=0.0)
    assert estimate is not None and lower <= estimate <= upper


def test_histogram_quantile_by_hand() -> None:
    # 10 in (0, 1], 30 in (1, 2], 0 in (2, 4], 0 above: p50 = 1 + (20 - 10) / 30 = 1.333...
    buckets = {1.0: 10, 2.0: 40, 4.0: 40, math.inf: 40}
    assert histogram_quantile(0.5, buckets) == pytest.approx(1 + 10 / 30)
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.4)
    assert histogram_quantile(1.0, buckets) == pytest.approx(2.0)
    assert histogram_quantile(0.5, {1.0: 0, math.inf: 5}) == 1.0  # all above the last bound
    assert histogram_quantile(0.5, {}) is None


# --- the dashboard history ----------------------------------------------------------------


def snap(
    worker: str,
    t: int,
    decisions: dict[str, float],
    source: str = "worker",
    extra: list[dict] | None = None,
) -> MetricsSnapshot:
    samples = [
        {"name": "llmopt_decisions_total", "labels": {"policy_id": "p", "arm": a}, "value": v}
        for a, v in decisions.items()
    ]
    return MetricsSnapshot(f"{worker}-{t}", source, worker, t, 2000, samples + (extra or []))


def test_rates_add_up_over_workers_and_shares_are_by_count() -> None:
    h = MetricsHistory(bucket_ms=2000)
    h.add(snap("w1", 0, {"a": 0, "b": 0}))
    h.add(snap("w2", 100, {"a": 0, "b": 0}))
    h.add(snap("w1", 2000, {"a": 300, "b": 100}))  # 400 in 2 s: 200/s
    h.add(snap("w2", 2100, {"a": 100, "b": 100}))  # 200 in 2 s: 100/s
    view = h.view(now_ms=2100)
    (point,) = view["points"]
    assert point["decisions_per_s"] == pytest.approx(300.0)
    assert point["shares"] == {"p": pytest.approx({"a": 400 / 600, "b": 200 / 600}, abs=1e-4)}
    assert view["totals"]["decisions"] == 600
    assert view["totals"]["workers"] == 2


def test_counter_reset_counts_from_zero_and_stale_publishers_drop_out() -> None:
    h = MetricsHistory(bucket_ms=1000, stale_after_ms=5000)
    h.add(snap("w1", 0, {"a": 50}))
    h.add(snap("w1", 1000, {"a": 80}))  # +30
    h.add(snap("w1", 2000, {"a": 10}))  # restarted: +10
    rates = [p["decisions_per_s"] for p in h.view(now_ms=2000)["points"]]
    assert rates == [30.0, 10.0]
    assert h.view(now_ms=2000 + 5001)["totals"]["workers"] == 0


def test_latency_reward_and_regret_from_their_counters() -> None:
    def extra(n_bucket: tuple[float, float, float], reward: float, outcomes: float) -> list[dict]:
        les = ("0.01", "0.1", "+Inf")
        return [
            {"name": "llmopt_decision_latency_seconds_bucket", "labels": {"le": le}, "value": v}
            for le, v in zip(les, n_bucket, strict=True)
        ] + [
            {"name": "llmopt_outcome_reward_total", "labels": {"policy_id": "p"}, "value": reward},
            {
                "name": "llmopt_outcomes_total",
                "labels": {"policy_id": "p", "kind": "rewarded"},
                "value": outcomes,
            },
        ]

    def sim(t: int, n: float, regret: float, reward: float, best: str) -> MetricsSnapshot:
        samples = [
            {"name": "llmopt_simulator_decisions_total", "labels": {}, "value": n},
            {"name": "llmopt_simulator_true_regret_total", "labels": {}, "value": regret},
            {"name": "llmopt_simulator_reward_total", "labels": {}, "value": reward},
            {"name": "llmopt_simulator_best_arm", "labels": {"arm": best}, "value": 1},
        ]
        return MetricsSnapshot(f"s-{t}", "simulator", "sim", t, 2000, samples)

    h = MetricsHistory(bucket_ms=2000)
    h.add(snap("w1", 0, {"a": 0}, extra=extra((0, 0, 0), 0, 0)))
    h.add(sim(0, 0, 0, 0, "a"))
    # 100 decisions: 50 under 10 ms, 50 in (10, 100] ms; 80 outcomes with reward 60.
    h.add(snap("w1", 2000, {"a": 100}, extra=extra((50, 100, 100), 60, 80)))
    h.add(sim(2000, 90, 4.5, 72, "a"))
    view = h.view(now_ms=2000)
    (p,) = view["points"]
    assert p["latency_p50_s"] == pytest.approx(0.01)
    assert p["latency_p99_s"] == pytest.approx(0.01 + 0.09 * 49 / 50)
    assert p["reward_mean"] == {"p": 0.75}
    assert p["regret_per_decision"] == pytest.approx(0.05)
    assert p["sim_reward_mean"] == pytest.approx(0.8)
    totals = view["totals"]
    assert totals["true_regret"] == 4.5 and totals["mean_regret"] == pytest.approx(0.05)
    assert totals["best_arm"] == "a" and totals["simulator"] is True


def test_history_and_events_are_bounded() -> None:
    h = MetricsHistory(bucket_ms=1000, max_points=5, max_events=3)
    for i in range(50):
        h.add(snap("w1", i * 1000, {"a": i * 10}))
    for i in range(10):
        h.add_event("drift", {"policy_id": "p", "arm": "a", "detected_at": i})
    view = h.view(now_ms=49_000)
    assert len(view["points"]) <= 5
    assert [e["detected_at"] for e in view["events"]["drift"]] == [9, 8, 7]  # newest first
    assert view["event_counts"] == {"drift": 10, "alerts": 0}


def test_sample_values_keys_by_sorted_labels() -> None:
    s = [{"name": "m", "labels": {"b": "2", "a": "1"}, "value": 3}]
    assert sample_values(s, "m") == {(("a", "1"), ("b", "2")): 3.0}


# --- lag, sensor, error counter -----------------------------------------------------------

TP = namedtuple("TP", "topic partition")


def test_lag_is_high_water_minus_committed_over_assigned_partitions() -> None:
    a0, a1, b0 = TP("t.a", 0), TP("t.a", 1), TP("t.b", 0)
    lags = lag_by_topic(
        {a0: 100, a1: 40, b0: 7}, {a0: 90, a1: 40}, [a0, a1, b0], {"t.a": "a", "t.b": "b"}
    )
    assert lags == {"a": 10, "b": 7}
    assert lag_by_topic({a0: 100}, {}, [a1], {"t.a": "a"}) == {"a": 0}  # not fetched yet
    assert lag_by_topic({a0: 100}, {}, [TP("other", 0)], {"t.a": "a"}) == {}


def test_sensor_times_each_event_under_the_agent_name() -> None:
    sensor = AgentSensor()
    Stream = namedtuple("Stream", "prefix")
    child = metrics.AGENT_PROCESSING_SECONDS.labels("demo_agent")
    before = child._sum.get()
    count_before = sum(b.get() for b in child._buckets)
    state = sensor.on_stream_event_in(TP("t", 0), 1, Stream("demo_agent"), None)
    sensor.on_stream_event_out(TP("t", 0), 1, Stream("demo_agent"), None, state)
    assert sum(b.get() for b in child._buckets) == count_before + 1
    assert 0 <= child._sum.get() - before < 1.0


def test_error_log_counter_counts_errors_only_once_installed_once() -> None:
    logger = logging.getLogger("llmopt_test_errors")
    logger.propagate = False
    ErrorLogCounter.install(logger)
    ErrorLogCounter.install(logger)
    assert sum(isinstance(h, ErrorLogCounter) for h in logger.handlers) == 1
    child = metrics.ERRORS.labels("llmopt_test_errors")
    before = child._value.get()
    logger.warning("not counted")
    logger.error("counted")
    logger.critical("counted too")
    assert child._value.get() - before == 2


def test_a_point_not_every_publisher_reported_into_yet_is_not_shown() -> None:
    h = MetricsHistory(bucket_ms=2000)
    for t in (0, 2000, 4000):
        h.add(snap("w1", t, {"a": t / 10}))
        h.add(snap("w2", t + 500, {"a": t / 10}))
    h.add(snap("w1", 6000, {"a": 600}))  # w2 has not reported into the 6000 bucket yet
    view = h.view(now_ms=6000)
    assert [p["t"] for p in view["points"]] == [2000, 4000]
    assert view["points"][-1]["decisions_per_s"] == pytest.approx(200.0)


def test_an_ended_shadows_gauges_are_removed() -> None:
    summary = {"outcomes": 5, "ips": {"value": 0.5, "low": 0.4, "high": 0.6}, "agreement": 0.7}
    metrics.set_shadow_values("shadowed", {3: summary, 4: summary})

    def shown() -> set[str]:
        pattern = r'^llmopt_shadow_\w+\{policy_id="shadowed",version="(\d+)"'
        return set(re.findall(pattern, generate_latest().decode(), re.M))

    assert shown() == {"3", "4"}
    metrics.set_shadow_values("shadowed", {4: summary})
    assert shown() == {"4"}
    metrics.set_shadow_values("shadowed", {})
    assert shown() == set()
