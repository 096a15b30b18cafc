"""Percentiles and rounding for the latency figures."""

from __future__ import annotations

import math


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    i = min(len(sorted_values) - 1, max(0, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[i]


def r2(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 2)


def latency_summary(sorted_ms: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/p99.9/max/mean of sorted latencies (ms), rounded.

    >>> latency_summary([1.0, 2.0, 3.0])["max"]
    3.0
    """
    lat = sorted_ms
    return {
        "p50": r2(percentile(lat, 50)),
        "p95": r2(percentile(lat, 95)),
        "p99": r2(percentile(lat, 99)),
        "p999": r2(percentile(lat, 99.9)),
        "max": r2(lat[-1] if lat else math.nan),
        "mean": r2(sum(lat) / len(lat)) if lat else None,
    }
