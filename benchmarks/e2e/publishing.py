"""What metrics publishing costs a worker per interval, timed in process."""

from __future__ import annotations

import time
from typing import Any


def measure_snapshot_cost(repeat: int = 300) -> dict[str, Any]:
    """CPU time of one metrics snapshot (collect the registry, encode it) with
    a worker's label sets: the drains above last a few seconds, one or two
    publishing intervals, so this says what publishing costs per interval."""
    from prometheus_client import REGISTRY

    from app import metrics
    from app.metrics_snapshot import build_snapshot
    from app.policies.config import PoliciesConfig
    from app.settings import Settings

    settings = Settings()
    config = PoliciesConfig.load(settings.policies_path)
    agents = ("select_arm", "join_rewards", "learn_from_outcomes", "publish_metrics")
    for pid, pc in config.policies.items():  # every series a busy worker has
        for arm in pc.arms:
            metrics.DECISIONS.labels(pid, arm.name).inc()
        for kind in ("rewarded", "defaulted"):
            metrics.OUTCOMES.labels(pid, kind).inc()
        metrics.OUTCOME_REWARD.labels(pid).inc()
        metrics.POLICY_UPDATES.labels(pid).inc()
        metrics.SNAPSHOTS.labels(pid).inc()
        metrics.POLICY_VERSION.labels(pid).set(1)
    for agent in agents:
        metrics.EVENTS.labels(agent, "ok").inc()
        metrics.AGENT_PROCESSING_SECONDS.labels(agent).observe(0.001)
    for topic in ("decisions", "rewards", "outcomes"):
        metrics.set_consumer_lag("faust", {topic: 1})
    metrics.DECISION_LATENCY_SECONDS.observe(0.01)
    times = []
    size = 0
    for _ in range(repeat):
        t0 = time.process_time()
        raw = build_snapshot(REGISTRY, "worker", "bench:1:1", 0, 2000).dumps()
        times.append(time.process_time() - t0)
        size = len(raw)
    times.sort()
    # ... and what every worker's dashboard feed spends reading one back.
    from app.dashboard.history import MetricsHistory
    from app.records import MetricsSnapshot

    history = MetricsHistory()
    reads = []
    for i in range(repeat):
        snap = build_snapshot(REGISTRY, "worker", "bench:1:1", i * 2000, 2000)
        raw = snap.dumps()
        t0 = time.process_time()
        history.add(MetricsSnapshot.loads(raw, 1 << 22))
        reads.append(time.process_time() - t0)
    reads.sort()
    interval = settings.metrics_publish_seconds
    median_ms = times[len(times) // 2] * 1000
    read_ms = reads[len(reads) // 2] * 1000
    return {
        "snapshot_cpu_ms_median": round(median_ms, 3),
        "snapshot_cpu_ms_p99": round(times[int(0.99 * (len(times) - 1))] * 1000, 3),
        "feed_read_cpu_ms_median": round(read_ms, 3),
        "snapshot_bytes": size,
        "interval_s": interval,
        # one worker: publish its snapshot and read it back, once per interval
        "core_fraction": round((median_ms + read_ms) / 1000 / interval, 6),
    }
