"""Prometheus registry → :class:`~app.records.MetricsSnapshot` events.

A snapshot carries every sample of the registry under the name and labels it
has in the ``/metrics`` exposition (histograms as ``_bucket``, ``_sum`` and
``_count``), so a dashboard reading the metrics topic and Prometheus scraping
a worker see the same series. ``_created`` samples (a scrape-time detail) and
non-finite values (not JSON) are left out.

>>> from prometheus_client import CollectorRegistry, Counter
>>> registry = CollectorRegistry()
>>> c = Counter("llmopt_demo_total", "Demo.", ["arm"], registry=registry)
>>> c.labels("a").inc(3)
>>> snap = build_snapshot(registry, "worker", "host:6066:1", now_ms=1_000, interval_ms=2_000)
>>> snap.samples
[{'name': 'llmopt_demo_total', 'labels': {'arm': 'a'}, 'value': 3.0}]
>>> sample_values(snap.samples, "llmopt_demo_total")
{(('arm', 'a'),): 3.0}
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from app.records import MAX_METRIC_SAMPLES, MetricsSnapshot

LabelKey = tuple[tuple[str, str], ...]


def collect_samples(registry: CollectorRegistry = REGISTRY) -> list[dict[str, Any]]:
    """Every finite, non-``_created`` sample of ``registry``, in exposition order."""
    out: list[dict[str, Any]] = []
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith("_created") or not math.isfinite(s.value):
                continue
            out.append({"name": s.name, "labels": dict(s.labels), "value": float(s.value)})
    return out[:MAX_METRIC_SAMPLES]


def build_snapshot(
    registry: CollectorRegistry,
    source: str,
    worker_id: str,
    now_ms: int,
    interval_ms: int,
) -> MetricsSnapshot:
    return MetricsSnapshot(
        snapshot_id=uuid.uuid4().hex,
        source=source,
        worker_id=worker_id,
        created_at=now_ms,
        interval_ms=max(1, interval_ms),
        samples=collect_samples(registry),
    )


def process_id(web_port: int | None = None) -> str:
    """``host:port:pid`` (or ``host:pid``): names a publisher uniquely and boundedly."""
    parts = [socket.gethostname()[:200]]
    if web_port is not None:
        parts.append(str(web_port))
    parts.append(str(os.getpid()))
    return ":".join(parts)


def sample_values(samples: Iterable[dict[str, Any]], name: str) -> dict[LabelKey, float]:
    """Values of one sample name, keyed by the sorted label items."""
    return {
        tuple(sorted(s["labels"].items())): float(s["value"]) for s in samples if s["name"] == name
    }
