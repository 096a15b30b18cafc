"""Point-in-time-correct training sets: outcomes joined with the feature
values that were available when each decision was made.

Each outcome row gets, per entity kind, the feature row of its entity with
the largest ``available_at`` ≤ the outcome's ``decided_at`` (an as-of join),
separately for each window. ``available_at`` is when the window became
final (:meth:`~app.features.store.FeatureStore.get_historical_features`), so
no value observed after the decision time can reach a row. Outcomes
delivered twice (at-least-once archiving) count once.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

import pyarrow as pa

from app.features.observations import tenant_arm_entity, tenant_entity

JSON = dict[str, Any]
_META = ("entity", "window", "window_start", "window_end", "available_at")
ENTITY_KINDS = {
    "tenant": lambda o: tenant_entity(o["tenant_id"]),
    "tenant_arm": lambda o: tenant_arm_entity(o["tenant_id"], o["arm"]),
}


def _rows(x: pa.Table | list[JSON]) -> list[JSON]:
    return x.to_pylist() if isinstance(x, pa.Table) else list(x)


def build_training_set(
    outcomes: pa.Table | list[JSON],
    history: pa.Table | list[JSON],
    entity_kinds: tuple[str, ...] = ("tenant", "tenant_arm"),
) -> pa.Table:
    """Outcome columns plus ``<kind>__<feature>`` columns (``None`` when no
    value was available yet).

    >>> outcomes = [{"request_id": "r", "tenant_id": "a", "arm": "x", "decided_at": 100,
    ...              "reward": 1.0}]
    >>> row = {"entity": "tenant=a", "window": "1m"}
    >>> history = [{**row, "available_at": 50, "mean_reward_1m": 0.2},
    ...            {**row, "available_at": 150, "mean_reward_1m": 0.9}]
    >>> build_training_set(outcomes, history, ("tenant",))["tenant__mean_reward_1m"].to_pylist()
    [0.2]
    """
    # (entity, window) → (available_at times, rows), sorted by time.
    series: dict[tuple[str, str], tuple[list[int], list[JSON]]] = {}
    grouped: dict[tuple[str, str], list[JSON]] = defaultdict(list)
    columns: dict[str, list[str]] = defaultdict(list)  # window → its feature columns
    for h in _rows(history):
        grouped[(h["entity"], h["window"])].append(h)
        cols = columns[h["window"]]
        if not cols:
            cols += [k for k in h if k not in _META]
    for key, rows in grouped.items():
        rows.sort(key=lambda r: r["available_at"])
        series[key] = ([r["available_at"] for r in rows], rows)
    out: list[JSON] = []
    seen: set[str] = set()
    for o in _rows(outcomes):
        if o["request_id"] in seen:
            continue
        seen.add(o["request_id"])
        row = dict(o)
        for kind in entity_kinds:
            entity = ENTITY_KINDS[kind](o)
            for window, cols in columns.items():
                times, rows = series.get((entity, window), ((), ()))  # type: ignore[assignment]
                i = bisect.bisect_right(times, o["decided_at"]) - 1
                src = rows[i] if i >= 0 else None
                for c in cols:
                    row[f"{kind}__{c}"] = src.get(c) if src is not None else None
        out.append(row)
    return pa.Table.from_pylist(out)
