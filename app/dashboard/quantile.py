"""Quantiles from Prometheus histogram buckets, as PromQL's ``histogram_quantile``."""

from __future__ import annotations

import math
from collections.abc import Mapping


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q``-quantile of a histogram given cumulative counts by upper
    bound (``le``, with ``inf`` for ``+Inf``), interpolating linearly inside
    the bucket it falls in, as Prometheus does. ``None`` when it is empty.

    A quantile in the ``+Inf`` bucket is the highest finite bound (there is
    nothing to interpolate to); a quantile in the first bucket interpolates
    from 0 (the metrics here are durations).

    >>> histogram_quantile(0.5, {0.1: 0, 0.2: 10, 0.4: 20, math.inf: 20})
    0.2
    >>> histogram_quantile(0.75, {0.1: 0, 0.2: 10, 0.4: 20, math.inf: 20})
    0.30000000000000004
    >>> histogram_quantile(0.5, {1.0: 0, math.inf: 0}) is None
    True
    """
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank and count > prev_count:
            if math.isinf(bound):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound
