"""publish_metrics: every ``metrics_publish_seconds``, this worker's Prometheus
metrics → one snapshot on the metrics topic (key: the worker's id).

The snapshot names and labels are those of ``/metrics``, so the dashboard
(fed from the topic, on any worker) and Prometheus (scraping each worker)
show the same series. Just before each snapshot the consumer-lag gauges of
the Faust agents are refreshed from the Faust monitor's offsets. A snapshot
that fails is logged and counted, and the next one is tried on time: an
exception in a Faust timer would stop the worker.
"""

from __future__ import annotations

import logging

import faust
from prometheus_client import REGISTRY

from app import metrics
from app.metrics_snapshot import build_snapshot, process_id
from app.records import now_ms
from app.stream.agent_sensor import lag_by_topic
from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
AGENT = "publish_metrics"


def register(app: faust.App, runtime: Runtime) -> None:
    settings = runtime.settings
    topic = app.topic(runtime.topics.name("metrics"), key_serializer="raw", value_serializer="raw")
    interval = settings.metrics_publish_seconds
    worker_id = process_id(settings.web_port)
    role_by_topic = {spec.name: role for role, spec in runtime.topics.topics.items()}

    @app.timer(interval, name="publish_metrics")
    async def publish_metrics() -> None:
        try:
            await publish()
        except Exception:
            metrics.EVENTS.labels(AGENT, "failed").inc()
            log.exception("metrics snapshot not published")

    async def publish() -> None:
        assigned = app.consumer.assignment() if app.consumer else set()
        monitor = app.monitor
        lags = lag_by_topic(
            monitor.tp_end_offsets, monitor.tp_committed_offsets, assigned, role_by_topic
        )
        metrics.set_consumer_lag("faust", lags)
        snap = build_snapshot(REGISTRY, "worker", worker_id, now_ms(), int(interval * 1000))
        await topic.send(key=worker_id.encode(), value=snap.dumps())
        metrics.METRICS_SNAPSHOTS.inc()
        metrics.EVENTS.labels(AGENT, "ok").inc()
