"""Logged bandit feedback as plain numpy arrays, and loaders for it.

:class:`LoggedData` is where logged data, policies under test and
off-policy estimators meet (as in Open Bandit Pipeline's ``bandit_feedback``
dict, but typed and frozen): one row per logged decision with the chosen
action, its reward, the logging policy's propensity, and optionally the
context vector, the arms that were available, a slot position and a time.

Loaders:

* :meth:`LoggedData.from_outcomes` — :class:`~app.records.Outcome` records;
* :func:`outcomes_from_values` — outcomes as the outcomes topic holds them
  (``app.stream.kafka_io.read_outcomes_topic`` reads a time range of it);
* :func:`read_archive` — the Parquet archive of outcomes (a directory of
  Parquet files, hive partitions allowed);
* :func:`read_file` — an external logged-bandit file (CSV, Parquet, JSONL)
  with a :class:`ColumnMapping`.

Arms are named in natural order (``2`` before ``10``). String context
columns are one-hot encoded or hashed (``ColumnMapping.categorical``).
A policy under test that was evaluated elsewhere can come with the log: a
column of its propensities for the logged action
(``ColumnMapping.target_propensity``) or of its whole action distribution
(``ColumnMapping.target_dist``), carried in ``LoggedData.targets``.

Rows whose propensity is missing or degenerate (NaN, ≤ 0, > 1), whose reward
is not finite, whose action is unknown or was not available, or whose context
is missing are never used silently: the loaders drop them and count them, per
reason, in :class:`DataQuality` (``LoggedData.quality``).
"""

from __future__ import annotations

import datetime as dt
import difflib
import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "OUTCOME_COLUMNS",
    "ColumnMapping",
    "DataQuality",
    "LoggedData",
    "LoggedDataError",
    "natural_key",
    "outcomes_from_values",
    "read_archive",
    "read_file",
    "read_table",
]


class LoggedDataError(ValueError):
    """Logged data that cannot be used: a missing column, a bad range, no rows."""


@dataclass(frozen=True, slots=True)
class DataQuality:
    """How many rows a loader read, and how many it dropped for each reason."""

    rows_read: int = 0
    missing_propensity: int = 0
    nonpositive_propensity: int = 0
    propensity_above_one: int = 0
    non_finite_reward: int = 0
    unknown_action: int = 0
    action_not_available: int = 0
    missing_context: int = 0

    @property
    def dropped(self) -> int:
        return self.rows_read - self.rows_kept

    @property
    def rows_kept(self) -> int:
        return self.rows_read - sum(
            (
                self.missing_propensity,
                self.nonpositive_propensity,
                self.propensity_above_one,
                self.non_finite_reward,
                self.unknown_action,
                self.action_not_available,
                self.missing_context,
            )
        )

    def problems(self) -> dict[str, int]:
        """The non-zero drop counts, by reason."""
        return {
            k: v
            for k, v in (
                ("missing_propensity", self.missing_propensity),
                ("nonpositive_propensity", self.nonpositive_propensity),
                ("propensity_above_one", self.propensity_above_one),
                ("non_finite_reward", self.non_finite_reward),
                ("unknown_action", self.unknown_action),
                ("action_not_available", self.action_not_available),
                ("missing_context", self.missing_context),
            )
            if v
        }

    def summary(self) -> str:
        problems = self.problems()
        if not problems:
            return f"{self.rows_read} rows read, all usable"
        detail = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in problems.items())
        return f"{self.rows_read} rows read, {self.dropped} dropped ({detail})"

    def to_dict(self) -> dict[str, int]:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            **{k: getattr(self, k) for k in self.__dataclass_fields__ if k != "rows_read"},
        }


def _frozen(a: np.ndarray | None) -> np.ndarray | None:
    if a is not None:
        a.setflags(write=False)
    return a


@dataclass(frozen=True)
class LoggedData:
    """Logged bandit feedback: ``n`` rows over ``k`` arms.

    ``actions`` index ``arm_names``; ``propensities`` are the logging policy's
    probabilities of the logged actions; ``available[i, a]`` says whether arm
    ``a`` could be chosen at row ``i`` (``None``: every arm always);
    ``timestamps`` are epoch milliseconds; ``targets`` holds policies under
    test given by their probabilities, by name: ``[n]`` of the logged actions
    or ``[n, k]`` of every arm. Arrays are read-only.

    >>> d = LoggedData(actions=np.array([0, 1, 1]), rewards=np.array([1.0, 0.0, 0.5]),
    ...                propensities=np.array([0.5, 0.5, 0.25]), arm_names=("a", "b"))
    >>> d.n_events, d.n_arms, d.allowed_mask().sum()
    (3, 2, np.int64(6))
    """

    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    arm_names: tuple[str, ...]
    contexts: np.ndarray | None = None
    available: np.ndarray | None = None
    positions: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None
    quality: DataQuality = field(default_factory=DataQuality)
    targets: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "arm_names", tuple(self.arm_names))
        set_(self, "actions", np.asarray(self.actions, dtype=np.int64))
        set_(self, "rewards", np.asarray(self.rewards, dtype=np.float64))
        set_(self, "propensities", np.asarray(self.propensities, dtype=np.float64))
        n, k = len(self.actions), len(self.arm_names)
        if k == 0:
            raise LoggedDataError("logged data needs at least one arm name")
        if len(set(self.arm_names)) != k:
            raise LoggedDataError(f"duplicate arm names in {list(self.arm_names)}")
        for name in ("actions", "rewards", "propensities"):
            if getattr(self, name).shape != (n,):
                raise LoggedDataError(f"{name} must have shape ({n},)")
        if n and (self.actions.min() < 0 or self.actions.max() >= k):
            raise LoggedDataError(f"actions must index the {k} arm names")
        if self.contexts is not None:
            ctx = np.asarray(self.contexts, dtype=np.float64)
            if ctx.ndim != 2 or len(ctx) != n:
                raise LoggedDataError(f"contexts must have shape ({n}, d)")
            set_(self, "contexts", ctx)
        if self.available is not None:
            av = np.asarray(self.available, dtype=bool)
            if av.shape != (n, k):
                raise LoggedDataError(f"available must have shape ({n}, {k})")
            set_(self, "available", av)
        for name in ("positions", "timestamps"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, dtype=np.int64)
                if v.shape != (n,):
                    raise LoggedDataError(f"{name} must have shape ({n},)")
                set_(self, name, v)
        targets = {}
        for name, v in self.targets.items():
            v = np.asarray(v, dtype=np.float64)
            if v.shape not in ((n,), (n, k)):
                raise LoggedDataError(f"target {name!r} must have shape ({n},) or ({n}, {k})")
            targets[name] = _frozen(v)
        set_(self, "targets", targets)
        for name in (
            "actions",
            "rewards",
            "propensities",
            "contexts",
            "available",
            "positions",
            "timestamps",
        ):
            _frozen(getattr(self, name))

    # -- shape ---------------------------------------------------------------
    @property
    def n_events(self) -> int:
        return len(self.actions)

    @property
    def n_arms(self) -> int:
        return len(self.arm_names)

    @property
    def context_dim(self) -> int:
        return 0 if self.contexts is None else int(self.contexts.shape[1])

    def allowed_mask(self) -> np.ndarray:
        """``available``, or all-True when every arm was always available."""
        if self.available is not None:
            return self.available
        return np.ones((self.n_events, self.n_arms), dtype=bool)

    # -- checks --------------------------------------------------------------
    def invalid_propensity_counts(self) -> dict[str, int]:
        """Counts of propensities that are NaN, ≤ 0 or > 1 (zero when valid)."""
        p = self.propensities
        return {
            "missing_propensity": int(np.isnan(p).sum()),
            "nonpositive_propensity": int((p <= 0).sum()),
            "propensity_above_one": int((p > 1).sum()),
        }

    def check_propensities(self) -> None:
        """Raise :class:`LoggedDataError` naming the counts of unusable propensities."""
        bad = {k: v for k, v in self.invalid_propensity_counts().items() if v}
        if bad:
            detail = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in bad.items())
            raise LoggedDataError(
                f"{sum(bad.values())} of {self.n_events} propensities are unusable ({detail}); "
                "load through a reader, which drops and reports them"
            )

    # -- slicing -------------------------------------------------------------
    def take(self, rows: np.ndarray) -> LoggedData:
        """The rows at ``rows`` (indices or a boolean mask), quality kept."""

        def sub(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return replace(
            self,
            actions=self.actions[rows],
            rewards=self.rewards[rows],
            propensities=self.propensities[rows],
            contexts=sub(self.contexts),
            available=sub(self.available),
            positions=sub(self.positions),
            timestamps=sub(self.timestamps),
            targets={name: v[rows] for name, v in self.targets.items()},
        )

    def time_ordered(self) -> LoggedData:
        """Rows sorted by timestamp (stable), as progressive validation needs."""
        if self.timestamps is None:
            return self
        order = np.argsort(self.timestamps, kind="stable")
        if (order == np.arange(self.n_events)).all():
            return self
        return self.take(order)

    def between(self, start_ms: int | None, end_ms: int | None) -> LoggedData:
        """Rows with ``start_ms <= timestamp < end_ms`` (either bound optional)."""
        if start_ms is None and end_ms is None:
            return self
        if self.timestamps is None:
            raise LoggedDataError("a time range needs timestamps; map a timestamp column")
        keep = np.ones(self.n_events, dtype=bool)
        if start_ms is not None:
            keep &= self.timestamps >= start_ms
        if end_ms is not None:
            keep &= self.timestamps < end_ms
        return self.take(keep)

    # -- constructors --------------------------------------------------------
    @classmethod
    def from_outcomes(
        cls,
        outcomes: Iterable[Any],
        arm_names: Sequence[str] | None = None,
        policy_id: str | None = None,
        with_contexts: bool | None = None,
    ) -> LoggedData:
        """From :class:`~app.records.Outcome` records (or their dicts).
        ``policy_id`` keeps one policy's rows; contexts come from ``features``
        (``with_contexts=None``: when every row has them)."""
        rows = [o if isinstance(o, dict) else o.to_dict() for o in outcomes]
        if policy_id is not None:
            rows = [r for r in rows if r.get("policy_id") == policy_id]
        if not rows:
            which = f" of policy {policy_id!r}" if policy_id else ""
            raise LoggedDataError(f"no outcomes{which}")
        cols = ("arm", "reward", "propensity", "available_arms", "decided_at", "features")
        table = pa.table(
            {c: pa.array([r.get(c) for r in rows]) for c in cols if any(c in r for r in rows)}
        )
        mapping = ColumnMapping.for_outcomes()
        if with_contexts is None:
            with_contexts = "features" in table.column_names and table["features"].null_count == 0
        if not with_contexts:
            mapping = replace(mapping, context=None)
        return read_table(table, mapping, arm_names)


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Which column holds what. ``context`` is a list-valued column (one
    vector per row) or column names, each of which may be a glob pattern
    (``"x*"``); ``available`` is a list column, or a string column of
    ``|``-separated arm names. ``None`` means absent.

    String context columns are encoded by ``categorical``: ``"onehot"`` (one
    column per value seen) or ``"hash:B"`` (``B`` hashed columns, for many
    values). ``target_propensity`` is a column of a policy's probabilities of
    the logged actions; ``target_dist`` a list column of its probabilities of
    every arm (in ``arm_names`` order); both land in ``LoggedData.targets``."""

    action: str = "action"
    reward: str = "reward"
    propensity: str = "propensity"
    context: str | tuple[str, ...] | None = None
    available: str | None = None
    position: str | None = None
    timestamp: str | None = None
    categorical: str = "onehot"
    target_propensity: str | None = None
    target_dist: str | None = None

    @classmethod
    def for_outcomes(cls) -> ColumnMapping:
        """The columns of outcome records (topic and Parquet archive):
        :class:`~app.records.Outcome` fields, as ``tests/test_records.py`` checks."""
        return cls(
            action="arm",
            reward="reward",
            propensity="propensity",
            context="features",
            available="available_arms",
            timestamp="decided_at",
        )

    def required(self) -> list[str]:
        return [self.action, self.reward, self.propensity]


OUTCOME_COLUMNS = ColumnMapping.for_outcomes()


# -- tables ---------------------------------------------------------------------------------


# The command-line flag that maps each field, for messages.
_FLAGS = {
    "action": "--action",
    "reward": "--reward",
    "propensity": "--propensity",
    "context": "--context",
    "available arms": "--available",
    "position": "--position",
    "timestamp": "--timestamp",
    "target propensity": "--target-propensity",
    "target distribution": "--target-dist",
}


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: ``arm2`` before ``arm10``.

    >>> sorted(["10", "2", "b1", "a", "1"], key=natural_key)
    ['1', '2', '10', 'a', 'b1']
    """
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts if p)


def _nearest(name: str, columns: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.5)
    if not close:  # a shortened or lengthened name: 'prob' for 'propensity_score'
        low = name.lower()
        close = [
            c
            for c in columns
            if c
            and (
                low in c.lower() or c.lower() in low or (len(low) >= 3 and c.lower()[:3] == low[:3])
            )
        ][:3]
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(repr(c) for c in columns[:6])
    more = f" and {len(columns) - 6} more" if len(columns) > 6 else ""
    return f"the columns are {shown}{more}"


def _column(table: pa.Table, name: str, what: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        flag = _FLAGS.get(what)
        label = f"{flag} (the {what})" if flag else f"the {what}"
        raise LoggedDataError(
            f"no column {name!r} for {label}; {_nearest(name, table.column_names)}"
        )
    return table[name]


def _float(col: pa.ChunkedArray, what: str) -> np.ndarray:
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        if pa.types.is_null(col.type):
            return np.full(len(col), np.nan)
        try:
            col = pc.cast(col, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise LoggedDataError(f"the {what} column must be numeric, got {col.type}") from None
    return np.asarray(pc.fill_null(pc.cast(col, pa.float64()), math.nan), dtype=np.float64)


_PER_MS = {"ms": 1, "us": 1_000, "ns": 1_000_000}


def _iso_ms(text: str | None) -> int | None:
    if text is None:
        return None
    when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return delta // dt.timedelta(milliseconds=1)


def _timestamps(col: pa.ChunkedArray) -> np.ndarray:
    """Epoch milliseconds (floored) from numbers, Arrow times of any unit, or
    ISO 8601 strings with any fraction of a second and with or without an offset."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:  # Arrow's parser first (fast); it wants every row with an offset or none
            col = pc.cast(col, pa.timestamp("ns", tz="UTC"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            try:
                col = pc.cast(col, pa.timestamp("ns"))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                try:
                    values = [_iso_ms(v) for v in col.to_pylist()]
                except ValueError as exc:
                    raise LoggedDataError(
                        f"--timestamp: {exc}; use epoch milliseconds or ISO 8601 times "
                        "(2026-11-20T08:15:00.123456+00:00)"
                    ) from None
                col = pa.chunked_array([pa.array(values, pa.int64())])
        t = col.type
    if pa.types.is_date(t):
        col = pc.cast(col, pa.timestamp("ms"))
        t = col.type
    if pa.types.is_timestamp(t):
        # Times are int64 counts of their unit since the epoch (UTC whatever the
        # zone): floor them to milliseconds rather than cast, which refuses to
        # drop the microseconds.
        raw = np.asarray(pc.fill_null(pc.cast(col, pa.int64()), 0), dtype=np.int64)
        ms = raw * 1000 if t.unit == "s" else raw // _PER_MS[t.unit]
        if col.null_count:
            raise LoggedDataError(f"--timestamp: {col.null_count} rows have no timestamp")
        return ms
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise LoggedDataError(f"--timestamp: timestamps must be numbers or times, got {t}")
    if col.null_count:
        raise LoggedDataError(f"--timestamp: {col.null_count} rows have no timestamp")
    return np.asarray(pc.cast(col, pa.int64(), safe=False), dtype=np.int64)


def _names(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = pc.cast(col, pa.string())
    return col


def _available_lists(col: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """(list lengths, flattened arm names) of an available-arms column."""
    arr = col.combine_chunks()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        stripped = pc.utf8_trim(pc.fill_null(arr, ""), characters="[]\" '")
        arr = pc.split_pattern(stripped, pattern="|")
        return pc.list_value_length(arr), pc.utf8_trim_whitespace(pc.list_flatten(arr))
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise LoggedDataError(f"the available-arms column must hold lists, got {arr.type}")
    return pc.list_value_length(arr), _names(pc.list_flatten(arr))


def _context_columns(table: pa.Table, spec: str | tuple[str, ...]) -> list[str]:
    patterns = (spec,) if isinstance(spec, str) else tuple(spec)
    cols: list[str] = []
    for p in patterns:
        hit = [c for c in table.column_names if fnmatch.fnmatchcase(c, p) and c not in cols]
        if not hit:
            raise LoggedDataError(
                f"no column matches --context {p!r}; {_nearest(p, table.column_names)}"
            )
        cols.extend(hit)
    return cols


# One-hot beyond this many distinct values is a hashing job.
MAX_ONE_HOT = 1000


def _categorical(col: pa.ChunkedArray, name: str, how: str) -> tuple[np.ndarray, list[str]]:
    """A string column as one-hot or hashed columns (NaN rows where missing),
    laid out as :mod:`app.features.transformers` lays them out."""
    from app.features.transformers import FeatureHasher, OneHotEncoder

    arr = _names(col)
    values = sorted(pc.unique(arr.drop_null()).to_pylist(), key=natural_key)
    idx = np.asarray(pc.fill_null(pc.index_in(arr, value_set=pa.array(values, pa.string())), -1))
    if how == "onehot":
        if len(values) > MAX_ONE_HOT:
            raise LoggedDataError(
                f"context column {name!r} has {len(values)} distinct values; "
                "hash them instead: --categorical hash:64"
            )
        enc = OneHotEncoder(values or [""], handle_unknown="ignore")
        cols = np.arange(len(values))  # value i → column i
        width, names, signs = enc.width, enc.names(name), np.ones(len(values))
    else:
        hasher = FeatureHasher(buckets=_buckets(how))
        hashed = [hasher.index(v) for v in values]
        cols = np.asarray([h[0] for h in hashed], dtype=np.int64)
        signs = np.asarray([h[1] for h in hashed])
        width, names = hasher.width, hasher.names(name)
    out = np.zeros((len(arr), width))
    rows = np.flatnonzero(idx >= 0)
    if len(values):
        out[rows, cols[idx[rows]]] = signs[idx[rows]]
    out[idx < 0] = np.nan
    return out, names


def _buckets(how: str) -> int:
    kind, _, size = how.partition(":")
    if kind != "hash" or not size.isdigit() or int(size) < 1:
        raise LoggedDataError(
            f"--categorical {how!r}: use onehot or hash:B (B hashed columns, e.g. hash:64)"
        )
    return int(size)


def _contexts(
    table: pa.Table, spec: str | tuple[str, ...], categorical: str = "onehot"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """(contexts with NaN rows where missing, feature names)."""
    if categorical != "onehot":
        _buckets(categorical)
    n = table.num_rows
    if isinstance(spec, str) and spec in table.column_names:
        col = table[spec]
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            arr = col.combine_chunks()
            lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0))
            present = np.asarray(arr.is_valid()) & (lengths > 0)
            dims = set(lengths[present].tolist())
            if len(dims) > 1:
                raise LoggedDataError(
                    f"context vectors in {spec!r} have different lengths {sorted(dims)}"
                )
            d = dims.pop() if dims else 0
            out = np.full((n, d), np.nan)
            if d:
                flat = _float(pa.chunked_array([pc.list_flatten(arr.filter(present))]), "context")
                out[present] = flat.reshape(-1, d)
            return out, tuple(f"{spec}[{j}]" for j in range(d))
    blocks: list[np.ndarray] = []
    feature_names: list[str] = []
    for c in _context_columns(table, spec):
        col = table[c]
        t = col.type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
            block, names = _categorical(col, c, categorical)
        else:
            block, names = _float(col, f"context {c!r}")[:, None], [c]
        blocks.append(block)
        feature_names.extend(names)
    out = np.hstack(blocks) if blocks else np.empty((n, 0))
    return out.reshape(n, len(feature_names)), tuple(feature_names)


def read_table(
    table: pa.Table,
    mapping: ColumnMapping,
    arm_names: Sequence[str] | None = None,
) -> LoggedData:
    """A pyarrow table → :class:`LoggedData`, dropping (and counting) the
    rows that cannot be used. Arms are ``arm_names`` (an action outside them
    is an unknown action) or, by default, every action and available arm seen,
    in natural order (``2`` before ``10``)."""
    n = table.num_rows
    action_col = _names(_column(table, mapping.action, "action"))
    reward = _float(_column(table, mapping.reward, "reward"), "reward")
    prop = _float(_column(table, mapping.propensity, "propensity"), "propensity")
    avail = None
    if mapping.available is not None:
        avail = _available_lists(_column(table, mapping.available, "available arms"))
    if arm_names is None:
        seen = pc.unique(action_col.drop_null()).to_pylist()
        if avail is not None:
            seen += pc.unique(avail[1].drop_null()).to_pylist()
        arm_names = sorted(set(seen), key=natural_key)
    arm_names = tuple(arm_names)
    if not arm_names:
        raise LoggedDataError("no arms: the action column is empty")
    value_set = pa.array(arm_names, type=pa.string())
    action_idx = pc.index_in(action_col, value_set=value_set)
    actions = np.asarray(pc.fill_null(action_idx, -1), dtype=np.int64)

    available = None
    if avail is not None:
        lengths, flat = avail
        parents = np.repeat(np.arange(n), np.asarray(pc.fill_null(lengths, 0), dtype=np.int64))
        idx = np.asarray(pc.fill_null(pc.index_in(flat, value_set=value_set), -1), np.int64)
        available = np.zeros((n, len(arm_names)), dtype=bool)
        known = idx >= 0  # arms outside ``arm_names`` simply cannot be chosen by the policies
        available[parents[known], idx[known]] = True

    contexts, feature_names = None, None
    if mapping.context is not None:
        contexts, feature_names = _contexts(table, mapping.context, mapping.categorical)
    targets: dict[str, np.ndarray] = {}
    if mapping.target_propensity is not None:
        tp = _float(_column(table, mapping.target_propensity, "target propensity"), "target")
        targets[mapping.target_propensity] = tp
    if mapping.target_dist is not None:
        targets[mapping.target_dist] = _target_dist(table, mapping.target_dist, len(arm_names))

    # Drop reasons are counted in order: each row counts once, under its first reason.
    keep = np.ones(n, dtype=bool)
    counts: dict[str, int] = {}

    def drop(reason: str, bad: np.ndarray) -> None:
        bad = bad & keep
        counts[reason] = int(bad.sum())
        keep[bad] = False

    drop("unknown_action", actions < 0)
    drop("missing_propensity", np.isnan(prop))
    drop("nonpositive_propensity", prop <= 0)
    drop("propensity_above_one", prop > 1)
    drop("non_finite_reward", ~np.isfinite(reward))
    if available is not None:
        safe = np.where(actions >= 0, actions, 0)
        drop("action_not_available", ~available[np.arange(n), safe])
    if contexts is not None:
        drop("missing_context", ~np.isfinite(contexts).all(axis=1))
    for name, v in targets.items():
        bad = ~np.isfinite(v) if v.ndim == 1 else ~np.isfinite(v).all(axis=1)
        bad |= (v < 0) if v.ndim == 1 else (v < 0).any(axis=1)
        if (bad & keep).any():
            raise LoggedDataError(
                f"{int((bad & keep).sum())} usable rows have no valid target probability in "
                f"{name!r} (missing, non-finite or negative)"
            )

    positions = None
    if mapping.position is not None:
        pos = _float(_column(table, mapping.position, "position"), "position")
        if np.isnan(pos[keep]).any():
            raise LoggedDataError("some rows have no position")
        positions = np.nan_to_num(pos).astype(np.int64)
    timestamps = None
    if mapping.timestamp is not None:
        timestamps = _timestamps(_column(table, mapping.timestamp, "timestamp"))

    def kept(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[keep]

    return LoggedData(
        actions=actions[keep],
        rewards=reward[keep],
        propensities=prop[keep],
        arm_names=arm_names,
        contexts=kept(contexts),
        available=kept(available),
        positions=kept(positions),
        timestamps=kept(timestamps),
        feature_names=feature_names,
        quality=DataQuality(rows_read=n, **counts),
        targets={name: v[keep] for name, v in targets.items()},
    )


def _target_dist(table: pa.Table, name: str, k: int) -> np.ndarray:
    """A list column of ``k`` probabilities per row → ``[n, k]`` (NaN where missing)."""
    col = _column(table, name, "target distribution")
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise LoggedDataError(
            f"--target-dist {name!r} must be a list column of {k} probabilities (one per arm, "
            f"in arm order), got {col.type}"
        )
    arr = col.combine_chunks()
    lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0))
    present = np.asarray(arr.is_valid())
    wrong = present & (lengths != k)
    if wrong.any():
        raise LoggedDataError(
            f"--target-dist {name!r}: {int(wrong.sum())} rows do not hold {k} probabilities "
            "(one per arm, in arm order)"
        )
    out = np.full((len(arr), k), np.nan)
    if present.any():
        flat = _float(pa.chunked_array([pc.list_flatten(arr.filter(present))]), "target")
        out[present] = flat.reshape(-1, k)
    return out


# -- files ----------------------------------------------------------------------------------


def _read_any(path: Path) -> pa.Table:
    suffix = "".join(path.suffixes[-2:]).lower() if path.is_file() else ""
    try:
        if path.is_dir() or suffix.endswith(".parquet") or suffix.endswith(".pq"):
            import pyarrow.dataset as ds

            return ds.dataset(path, format="parquet", partitioning="hive").to_table()
        if suffix.endswith((".jsonl", ".ndjson", ".json")):
            import pyarrow.json as pj

            return pj.read_json(path)
        if suffix.endswith((".csv", ".csv.gz", ".tsv")):
            import pyarrow.csv as pcsv

            delimiter = "\t" if ".tsv" in suffix else ","
            return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
    except (pa.ArrowInvalid, OSError) as exc:
        raise LoggedDataError(f"cannot read {path}: {exc}") from None
    raise LoggedDataError(
        f"{path}: unknown file type; use .csv, .tsv, .parquet, .jsonl (or a Parquet directory)"
    )


def read_file(
    path: str | Path,
    mapping: ColumnMapping,
    arm_names: Sequence[str] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    target_file: str | Path | None = None,
) -> LoggedData:
    """An external logged-bandit file (CSV/TSV, Parquet file or directory,
    JSONL) with a column mapping, optionally cut to a time range.

    ``target_file`` holds a policy's action distribution, row for row with
    the log: one column per arm, named after the arm (or one list column);
    it becomes the target ``target_file``'s name in ``LoggedData.targets``."""
    p = Path(path)
    if not p.exists():
        raise LoggedDataError(f"{p} does not exist")
    table = _read_any(p)
    if target_file is not None:
        table, mapping, arm_names = _with_target_file(table, mapping, Path(target_file), arm_names)
    return read_table(table, mapping, arm_names).between(start_ms, end_ms)


def _with_target_file(
    table: pa.Table, mapping: ColumnMapping, path: Path, arm_names: Sequence[str] | None
) -> tuple[pa.Table, ColumnMapping, Sequence[str] | None]:
    if not path.exists():
        raise LoggedDataError(f"--target-dist {path} does not exist")
    dist = _read_any(path)
    if dist.num_rows != table.num_rows:
        raise LoggedDataError(
            f"--target-dist {path} has {dist.num_rows} rows and the log {table.num_rows}; "
            "it needs one row per logged row, in the same order"
        )
    name = path.name
    if name in table.column_names:
        raise LoggedDataError(f"--target-dist {path}: the log has a column {name!r} too; rename")
    if dist.num_columns == 1 and pa.types.is_list(dist.schema.types[0]):
        column = dist.column(0)
    else:
        names = list(arm_names) if arm_names is not None else None
        if names is None:
            seen = set(_names(_column(table, mapping.action, "action")).drop_null().to_pylist())
            names = sorted(seen | set(dist.column_names), key=natural_key)
        missing = [a for a in names if a not in dist.column_names]
        if missing:
            raise LoggedDataError(
                f"--target-dist {path} has no column for arm(s) {missing[:5]}; "
                "name one column per arm after the arm"
            )
        probs = np.column_stack([_float(dist[a], f"target {a!r}") for a in names])
        column = pa.chunked_array([pa.FixedSizeListArray.from_arrays(probs.ravel(), len(names))])
        column = pc.cast(column, pa.list_(pa.float64()))
        arm_names = names
    return table.append_column(name, column), replace(mapping, target_dist=name), arm_names


def read_archive(
    path: str | Path,
    policy_id: str | None = None,
    arm_names: Sequence[str] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    mapping: ColumnMapping = OUTCOME_COLUMNS,
) -> LoggedData:
    """The Parquet archive of outcomes (a directory of Parquet files with the
    outcome fields plus ``features``; hive partitions such as ``date=`` and
    ``policy=`` are read as columns). Rows are filtered by ``policy_id``
    and by decision time before conversion."""
    import pyarrow.dataset as ds

    p = Path(path)
    if not p.exists():
        raise LoggedDataError(f"{p} does not exist")
    try:
        dataset = ds.dataset(p, format="parquet", partitioning="hive")
    except (pa.ArrowInvalid, OSError) as exc:
        raise LoggedDataError(f"cannot read the archive {p}: {exc}") from None
    expr = None
    names = dataset.schema.names
    if policy_id is not None:
        if "policy_id" not in names:
            raise LoggedDataError(f"the archive has no policy_id column; columns are {names}")
        expr = ds.field("policy_id") == policy_id
    if mapping.timestamp is not None and mapping.timestamp in names:
        for bound, op in ((start_ms, "ge"), (end_ms, "lt")):
            if bound is not None:
                f = ds.field(mapping.timestamp)
                cond = f >= bound if op == "ge" else f < bound
                expr = cond if expr is None else expr & cond
    table = dataset.to_table(filter=expr)
    if table.num_rows == 0:
        raise LoggedDataError(f"no outcomes in {p} for the given policy and time range")
    ctx = mapping.context
    if isinstance(ctx, str) and (
        ctx not in table.column_names or table[ctx].null_count == table.num_rows
    ):
        mapping = replace(mapping, context=None)  # an archive of non-contextual decisions
    return read_table(table, mapping, arm_names)


# -- Kafka records ---------------------------------------------------------------------------


def outcomes_from_values(
    values: Iterable[bytes | None],
    where: str,
    arm_names: Sequence[str] | None = None,
    policy_id: str | None = None,
) -> LoggedData:
    """Outcomes as the outcomes topic holds them (serialized
    :class:`~app.records.Outcome` records; app/stream/kafka_io.py reads
    them) as logged data. Unparseable records are skipped and counted in the
    error if nothing else is left; ``where`` says where they were read."""
    from app.records import InvalidEvent, Outcome

    rows: list[dict[str, Any]] = []
    bad = 0
    for value in values:
        try:
            rows.append(Outcome.loads(value).to_dict())
        except InvalidEvent:
            bad += 1
    if not rows:
        raise LoggedDataError(f"no outcomes {where}" + (f" ({bad} unparseable)" if bad else ""))
    return LoggedData.from_outcomes(rows, arm_names, policy_id)
