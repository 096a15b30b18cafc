"""The feature store: windowed aggregates per entity, online and historical reads.

Pure: the ``aggregate_features`` agent feeds it observations and persists
the panes it reports changed (one RocksDB table entry per pane, so a write
is small); after a restart it is rebuilt from the table. ``select_arm``,
the HTTP endpoint and offline code read it through the same methods.

Feature names are ``<metric>_<window>`` (``mean_reward_5m``), metrics from
:data:`app.features.aggregate.METRICS`, windows from the spec.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from app.features.aggregate import METRICS
from app.features.windows import DEFAULT_WINDOWS, Window, WindowedAggregates

JSON = dict[str, Any]


class UnknownFeature(KeyError):
    """A feature name that is not ``<metric>_<window>`` of this store."""


class FeatureStore:
    """Entities → :class:`WindowedAggregates`.

    >>> s = FeatureStore((Window("1m", 60_000),), grace_ms=0, retention_ms=600_000)
    >>> for t in (1_000, 2_000, 61_000):
    ...     _ = s.observe("tenant=a", {"k": "o", "t": t, "reward": 0.5, "latency_ms": 100.0})
    >>> s.get_features("tenant=a", ["mean_reward_1m", "outcome_count_1m"])
    {'mean_reward_1m': 0.5, 'outcome_count_1m': 2.0}
    >>> s.get_features("tenant=zz", ["outcome_count_1m"])  # unknown entity: missing
    {'outcome_count_1m': None}
    """

    def __init__(
        self,
        windows: tuple[Window, ...] = DEFAULT_WINDOWS,
        grace_ms: int = 5_000,
        retention_ms: int = 3_600_000,
    ) -> None:
        self.windows = windows
        self.grace_ms = grace_ms
        self.retention_ms = retention_ms
        self._by_name = {w.name: w for w in windows}
        self.feature_names = [f"{m}_{w.name}" for w in windows for m in METRICS]
        self._parsed = {f"{m}_{w.name}": (m, w) for w in windows for m in METRICS}
        self._entities: dict[str, WindowedAggregates] = {}
        self.writes = 0
        # False while a worker's copy is still reading the windows that
        # existed when it started (agents/replicate_features.py).
        self.complete = True

    @classmethod
    def for_spec(cls, spec: Any) -> FeatureStore:
        return cls(spec.windows, spec.grace_ms, spec.retention_ms)

    def _entity(self, entity: str) -> WindowedAggregates:
        e = self._entities.get(entity)
        if e is None:
            e = self._entities[entity] = WindowedAggregates(
                self.windows, self.grace_ms, self.retention_ms
            )
        return e

    # -- writes -----------------------------------------------------------------
    def observe(self, entity: str, obs: JSON, pos: int = -1) -> int | None:
        """Apply one observation; returns the changed pane's start (``None``:
        dropped late, or already applied at source position ``pos``)."""
        self.writes += 1
        return self._entity(entity).add(obs, pos)

    def expire(self) -> list[bytes]:
        """Drop panes past retention everywhere; returns their table keys.
        Retention counts back from the latest event of any entity, so an
        entity that has gone quiet is forgotten too (memory stays bounded by
        the entities active within the retention)."""
        gone = []
        latest = max((e.watermark for e in self._entities.values()), default=None)
        for name, e in list(self._entities.items()):
            gone += [pane_key(name, s) for s in e.expire(latest)]
            if not e.pane_starts():
                del self._entities[name]
        return gone

    def pane_value(self, entity: str, start: int) -> bytes:
        return orjson.dumps(self._entities[entity].pane_list(start))

    def load(self, key: bytes, value: bytes) -> None:
        """Restore one table entry (see :func:`pane_key`)."""
        entity, start = parse_pane_key(key)
        self._entity(entity).load_pane(start, orjson.loads(value))

    def forget_positions(self) -> None:
        """The observations' source logs started again (a new cluster): the
        positions kept to skip redelivered observations no longer apply."""
        for e in self._entities.values():
            e.forget_positions()

    def drop(self, key: bytes) -> None:
        """Forget one table entry (a deleted pane); an entity left without
        panes is forgotten."""
        entity, start = parse_pane_key(key)
        e = self._entities.get(entity)
        if e is not None and e.drop_pane(start) and not e.pane_starts():
            del self._entities[entity]

    def clear(self) -> None:
        self._entities.clear()

    # -- reads ------------------------------------------------------------------
    def entities(self) -> list[str]:
        return sorted(self._entities)

    def entity_count(self) -> int:
        return len(self._entities)

    def late(self, entity: str) -> int:
        e = self._entities.get(entity)
        return e.late if e is not None else 0

    def _resolve(self, name: str) -> tuple[str, Window]:
        try:
            return self._parsed[name]
        except KeyError:
            raise UnknownFeature(name) from None

    def get_features(
        self, entity: str, names: Iterable[str] | None = None, as_of: int | None = None
    ) -> dict[str, float | None]:
        """Online values: each feature from the latest final window (at
        ``as_of``, default the entity's watermark). Unknown entity → ``None``s."""
        names = list(self.feature_names if names is None else names)
        e = self._entities.get(entity)
        if e is None:
            for n in names:
                self._resolve(n)
            return dict.fromkeys(names)
        out: dict[str, float | None] = {}
        for n in names:
            metric, w = self._resolve(n)
            out[n] = e.online(w, as_of)[2][metric]
        return out

    def get_feature(self, entity: str, name: str) -> float | None:
        """One online value (the decision path's lookup)."""
        e = self._entities.get(entity)
        if e is None:
            return None
        metric, w = self._resolve(name)
        return e.online(w)[2][metric]

    def get_features_batch(
        self, entities: Iterable[str], names: Iterable[str] | None = None
    ) -> dict[str, dict[str, float | None]]:
        names = list(self.feature_names if names is None else names)
        return {e: self.get_features(e, names) for e in entities}

    def get_historical_features(
        self, entity: str, start_ms: int, end_ms: int, names: Iterable[str] | None = None
    ) -> list[JSON]:
        """Every final window ending in ``[start_ms, end_ms]`` (still retained),
        as rows ``{entity, window, window_start, window_end, available_at, <feature>...}``
        sorted by ``available_at``. ``available_at`` is when the values became
        final; a point-in-time join uses it (:mod:`app.features.training_set`)."""
        names = list(self.feature_names if names is None else names)
        wanted: dict[str, list[tuple[str, str]]] = {}
        for n in names:
            metric, w = self._resolve(n)
            wanted.setdefault(w.name, []).append((n, metric))
        e = self._entities.get(entity)
        rows: list[JSON] = []
        if e is None:
            return rows
        for wname, cols in wanted.items():
            for r in e.history(self._by_name[wname], start_ms, end_ms):
                row = {"entity": entity, **{k: r[k] for k in _WINDOW_COLS}}
                row.update((n, r[m]) for n, m in cols)
                rows.append(row)
        rows.sort(key=lambda r: (r["available_at"], r["window"]))
        return rows


_WINDOW_COLS = ("window", "window_start", "window_end", "available_at")


def pane_key(entity: str, start: int) -> bytes:
    return f"{entity}@{start}".encode()


def parse_pane_key(key: bytes) -> tuple[str, int]:
    entity, _, start = key.decode().rpartition("@")
    return entity, int(start)
