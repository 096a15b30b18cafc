"""A request → its feature vector: the engineered vector plus the spec's features.

The engineered part is :class:`RequestVectorizer` unchanged (its fast path);
the spec's features are compiled once into small closures. Missing, invalid
or out-of-range values get the feature's default and count in
``llmopt_feature_defaults_total{feature,reason}``. Each decision logs the
spec's values with the spec's lineage (name, version, content hash) in
``spec_features``; ``policy_vector: true`` in the spec appends the values to
the vector contextual policies see (``features``), otherwise that vector is
the 13 engineered features, as without a spec.

``window.*`` reads go through a circuit breaker (app/circuit_breaker.py,
``feature_reads:<spec>``): a read that raises, or is slower than
FEATURE_READ_SLOW_SECONDS, counts as a failure; after FEATURE_READ_FAILURES
in a row no read is made for FEATURE_READ_RESET_SECONDS and those features
take their default, counted with reason ``unavailable``, so the decider
never waits on a failing store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app import metrics
from app.circuit_breaker import CircuitBreaker
from app.features.request_vector import FEATURE_NAMES, RequestVectorizer
from app.features.spec import FeatureDef, FeatureSpec
from app.records import Request

JSON = dict[str, Any]
Lookup = Callable[[str, str], float | None]  # (entity, feature name) → online value
_Extract = Callable[[Request, JSON, list[float]], None]
FEATURE_READ_FAILURES = 5
FEATURE_READ_RESET_SECONDS = 10.0
FEATURE_READ_SLOW_SECONDS = 0.01
# What a window read gives when it failed or its breaker is open.
UNAVAILABLE: Any = object()


def _no_lookup(entity: str, name: str) -> float | None:
    return None


class FeatureExtractor:
    """``row(request)`` is the policy vector; ``values(request)`` the spec's
    columns; ``annotate(requests, decisions)`` logs both on decisions.

    ``lookup(entity, name)`` serves ``window.*`` sources (the feature store's
    :meth:`~app.features.store.FeatureStore.get_feature`); without one they
    take their default. ``summary_interval_s``: how often per-feature
    distribution summaries are refreshed in the ``llmopt_feature_*`` gauges
    (published to the metrics topic with every other metric).

    >>> spec = FeatureSpec.from_dict({"name": "s", "version": 1, "features": [
    ...     {"name": "docs", "source": "metadata.docs", "range": [0, 100], "default": 0},
    ...     {"name": "tier", "type": "one_hot", "source": "metadata.tier",
    ...      "categories": ["free", "pro"], "default": "free"}]})
    >>> x = FeatureExtractor(spec)
    >>> r = Request(request_id="r", tenant_id="t", task_type="qa", created_at=0,
    ...             metadata={"docs": 250, "tier": "pro"})
    >>> x.values(r), x.defaults[("docs", "out_of_range")], x.dim
    ([0.0, 0.0, 1.0, 0.0], 1, 13)
    """

    def __init__(
        self,
        spec: FeatureSpec,
        lookup: Lookup | None = None,
        summary_interval_s: float = 10.0,
    ) -> None:
        self.spec = spec
        self.lookup = lookup or _no_lookup
        self.summary_interval_s = summary_interval_s
        self.breaker = CircuitBreaker(
            f"feature_reads:{spec.name}",
            failures=FEATURE_READ_FAILURES,
            reset_seconds=FEATURE_READ_RESET_SECONDS,
            slow_seconds=FEATURE_READ_SLOW_SECONDS,
        )
        self._base = RequestVectorizer()
        self._lineage = spec.lineage
        self._steps = [self._compile(f) for f in spec.features]
        self.columns = list(spec.columns)
        self.logged_columns = (
            [*FEATURE_NAMES, *self.columns] if spec.policy_vector else list(FEATURE_NAMES)
        )
        self.dim = len(self.logged_columns)
        reasons = ("missing", "invalid", "out_of_range", "unavailable")
        self.defaults: dict[tuple[str, str], int] = {
            (f.name, why): 0 for f in spec.features for why in reasons
        }
        self._counters = {
            k: metrics.FEATURE_DEFAULTS.labels(self.spec.name, *k) for k in self.defaults
        }
        self._summary: list[np.ndarray] = []
        self._summary_at = time.monotonic()

    # -- extraction -------------------------------------------------------------
    def _default(self, f: FeatureDef, why: str) -> None:
        self.defaults[(f.name, why)] += 1
        self._counters[(f.name, why)].inc()

    def _raw(self, f: FeatureDef) -> Callable[[Request, JSON], Any]:
        kind, _, rest = f.source.partition(".")
        if kind == "metadata":
            return lambda r, meta: meta.get(rest)
        if kind == "request":
            return lambda r, meta: getattr(r, rest)
        entity_kind, _, name = rest.partition(".")
        read = self._read
        if entity_kind == "tenant":
            return lambda r, meta: read(f"tenant={r.tenant_id}", name)
        return lambda r, meta: read(f"task_type={r.task_type}", name)

    def _read(self, entity: str, name: str) -> Any:
        """A window feature's online value, through the breaker (UNAVAILABLE:
        the read failed, or was not made)."""
        breaker = self.breaker
        if not breaker.allow():
            return UNAVAILABLE
        started = breaker.clock()
        try:
            value = self.lookup(entity, name)
        except Exception:
            breaker.failed()
            return UNAVAILABLE
        breaker.finished(started)
        return value

    def _compile(self, f: FeatureDef) -> _Extract:
        raw = self._raw(f)
        if f.type != "numeric":
            encode, default = f.encoder.transform, f.default

            def categorical(r: Request, meta: JSON, out: list[float]) -> None:
                v = raw(r, meta)
                if v is None or v is UNAVAILABLE:
                    self._default(f, "missing" if v is None else "unavailable")
                    v = default
                elif isinstance(v, bool | dict | list):
                    self._default(f, "invalid")
                    v = default
                out += encode(v)

            return categorical
        lo, hi = f.range if f.range is not None else (-math.inf, math.inf)
        transform = f.transform.transform if f.transform is not None else None
        fallback = transform(f.default) if transform else f.default

        def numeric(r: Request, meta: JSON, out: list[float]) -> None:
            v = raw(r, meta)
            if v is None or v is UNAVAILABLE:
                self._default(f, "missing" if v is None else "unavailable")
                out.append(fallback)
            elif type(v) is bool or not isinstance(v, int | float) or v != v or v in _INF:
                self._default(f, "invalid")
                out.append(fallback)
            elif not lo <= v <= hi:
                self._default(f, "out_of_range")
                out.append(fallback)
            else:
                out.append(transform(v) if transform else float(v))

        return numeric

    def values(self, r: Request) -> list[float]:
        out: list[float] = []
        meta = r.metadata or _EMPTY
        for step in self._steps:
            step(r, meta, out)
        return out

    def row(self, r: Request) -> list[float]:
        """The vector contextual policies see (a drop-in for RequestVectorizer.row)."""
        x = self._base.row(r)
        if self.spec.policy_vector:
            x += self.values(r)
        return x

    # -- decisions ----------------------------------------------------------------
    def annotate(self, requests: list[Request], decisions: list[Any]) -> None:
        """Log on each decision document (aligned with ``requests``; errors are
        skipped) the policy vector, when the policy did not already, and the
        spec's values with its lineage."""
        rows = []
        policy_vector = self.spec.policy_vector
        for r, d in zip(requests, decisions, strict=True):
            if not isinstance(d, dict):
                continue
            if "features" in d:
                x = d["features"]
                vals = x[13:] if policy_vector else self.values(r)
            else:
                vals = self.values(r)
                x = self._base.row(r)
                if policy_vector:
                    x = x + vals
                d["features"] = x
            d["spec_features"] = {**self._lineage, "values": vals}
            rows.append(x if policy_vector else x + vals)
        if rows:
            self._summary.append(np.asarray(rows, dtype=float))
        if time.monotonic() - self._summary_at >= self.summary_interval_s:
            self.publish_summaries()

    def publish_summaries(self) -> dict[str, JSON]:
        """Per-column distribution (count, mean, std, min, max) of what was
        extracted since the last call → the ``llmopt_feature_*`` gauges."""
        self._summary_at = time.monotonic()
        if not self._summary:
            return {}
        x = np.concatenate(self._summary)
        self._summary = []
        names = [*FEATURE_NAMES, *self.columns]
        out = {}
        for j, name in enumerate(names):
            col = x[:, j]
            s = {
                "count": float(len(col)),
                "mean": float(col.mean()),
                "std": float(col.std()),
                "min": float(col.min()),
                "max": float(col.max()),
            }
            out[name] = s
            for stat, gauge in metrics.FEATURE_SUMMARY.items():
                gauge.labels(self.spec.name, name).set(s[stat])
        return out


_EMPTY: JSON = {}
_INF = (math.inf, -math.inf)
