"""Loading logged bandit feedback: files with column mappings, the Parquet
archive, outcome records; unusable rows dropped and counted."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from app.evaluation.logged_data import (
    ColumnMapping,
    LoggedData,
    LoggedDataError,
    read_archive,
    read_file,
    read_table,
)
from app.records import Outcome

ARMS = ("a", "b", "c")


def _table() -> pa.Table:
    return pa.table(
        {
            "arm": ["a", "b", "c", "b", "z", "a", "c", "b"],
            "r": [1.0, 0.5, 0.0, 0.25, 1.0, float("nan"), 0.75, 0.5],
            "p": [0.5, 0.25, float("nan"), 0.0, 0.5, 0.5, 1.5, 0.4],
            "x1": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            "x2": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
            "other": [9.0] * 8,
            "avail": ["a|b", "a|b|c", "c", "b", "a", "a", "c", "a|c"],
            "ts": [5, 1, 3, 2, 4, 6, 7, 8],
        }
    )


def _mapping(**kw: object) -> ColumnMapping:
    base: dict[str, object] = dict(
        action="arm",
        reward="r",
        propensity="p",
        context="x*",
        available="avail",
        timestamp="ts",
    )
    base.update(kw)
    return ColumnMapping(**base)  # type: ignore[arg-type]


def test_a_table_becomes_arrays_and_every_unusable_row_is_counted() -> None:
    d = read_table(_table(), _mapping(), ARMS)
    q = d.quality
    # Row by row: 0 ok; 1 ok; 2 NaN propensity; 3 propensity 0; 4 unknown arm z;
    # 5 NaN reward; 6 propensity 1.5; 7 arm b not in its available a|c.
    assert q.rows_read == 8 and q.rows_kept == 2 and q.dropped == 6
    assert q.problems() == {
        "missing_propensity": 1,
        "nonpositive_propensity": 1,
        "propensity_above_one": 1,
        "non_finite_reward": 1,
        "unknown_action": 1,
        "action_not_available": 1,
    }
    assert d.actions.tolist() == [0, 1]
    assert d.rewards.tolist() == [1.0, 0.5]
    assert d.propensities.tolist() == [0.5, 0.25]
    assert d.contexts is not None and d.contexts.tolist() == [[1.0, 0.1], [2.0, 0.2]]
    assert d.feature_names == ("x1", "x2")  # the glob picked x1, x2 and not "other"
    assert d.available is not None
    assert d.available.tolist() == [[True, True, False], [True, True, True]]
    assert d.timestamps is not None and d.timestamps.tolist() == [5, 1]
    assert "6 dropped" in q.summary() and "missing propensity 1" in q.summary()
    with pytest.raises(ValueError):
        d.actions[0] = 2  # frozen arrays


def test_arms_default_to_every_name_seen_sorted() -> None:
    d = read_table(_table(), _mapping())
    assert d.arm_names == ("a", "b", "c", "z")
    assert d.quality.unknown_action == 0


def test_missing_columns_are_named_with_the_columns_there_are() -> None:
    with pytest.raises(LoggedDataError, match=r"no column 'prop' for --propensity"):
        read_table(_table(), _mapping(propensity="prop"))
    with pytest.raises(LoggedDataError, match="no column matches --context 'y\\*'"):
        read_table(_table(), _mapping(context="y*"))


def test_csv_parquet_and_jsonl_files_read_the_same(tmp_path: Path) -> None:
    t = _table()
    pcsv.write_csv(t, tmp_path / "log.csv")
    pq.write_table(t, tmp_path / "log.parquet")
    with (tmp_path / "log.jsonl").open("wb") as fh:
        for row in t.to_pylist():
            fh.write(orjson.dumps({k: (None if v != v else v) for k, v in row.items()}) + b"\n")
    got = [read_file(tmp_path / f"log.{ext}", _mapping(), ARMS) for ext in ("csv", "parquet")]
    got.append(read_file(tmp_path / "log.jsonl", _mapping(), ARMS))
    for d in got:
        assert d.actions.tolist() == [0, 1]
        assert d.rewards.tolist() == [1.0, 0.5]
        assert d.quality.rows_kept == 2
    with pytest.raises(LoggedDataError, match="does not exist"):
        read_file(tmp_path / "nope.csv", _mapping())
    (tmp_path / "log.xls").write_text("x")
    with pytest.raises(LoggedDataError, match="unknown file type"):
        read_file(tmp_path / "log.xls", _mapping())


def test_time_range_iso_timestamps_and_time_order(tmp_path: Path) -> None:
    t = pa.table(
        {
            "action": ["a", "b", "a", "b"],
            "reward": [0.0, 1.0, 0.5, 0.5],
            "propensity": [0.5] * 4,
            "at": [
                "2026-01-01T00:00:03Z",
                "2026-01-01T00:00:01Z",
                "2026-01-01T00:00:02Z",
                "2026-01-01T00:00:09Z",
            ],
        }
    )
    pcsv.write_csv(t, tmp_path / "t.csv")
    base = 1767225600000  # 2026-01-01T00:00:00Z
    d = read_file(
        tmp_path / "t.csv",
        ColumnMapping(timestamp="at"),
        start_ms=base + 1000,
        end_ms=base + 3000,
    )
    assert d.timestamps is not None
    assert sorted(d.timestamps.tolist()) == [base + 1000, base + 2000]  # 3 s and 9 s are out
    ordered = d.time_ordered()
    assert ordered.timestamps is not None and ordered.timestamps.tolist() == [
        base + 1000,
        base + 2000,
    ]
    assert ordered.rewards.tolist() == [1.0, 0.5]
    with pytest.raises(LoggedDataError, match="needs timestamps"):
        read_table(t, ColumnMapping()).between(0, 1)


def _outcome(i: int, policy: str = "p1", arm: str = "a", features: bool = True) -> Outcome:
    return Outcome(
        request_id=f"r{i}",
        tenant_id="t",
        policy_id=policy,
        policy_version=1,
        arm=arm,
        available_arms=["a", "b"],
        propensity=0.5,
        explored=False,
        reward=i / 10,
        defaulted=False,
        decided_at=1000 + i,
        outcome_at=2000 + i,
        features=[1.0, float(i)] if features else None,
    )


def test_outcome_records_with_a_policy_filter() -> None:
    outs = [_outcome(i, "p1" if i % 2 else "p2", "ab"[i % 2]) for i in range(6)]
    d = LoggedData.from_outcomes(outs, arm_names=("a", "b"), policy_id="p1")
    assert d.n_events == 3
    assert d.actions.tolist() == [1, 1, 1]
    assert d.rewards.tolist() == [0.1, 0.3, 0.5]
    assert d.contexts is not None and d.contexts[:, 1].tolist() == [1.0, 3.0, 5.0]
    assert d.timestamps is not None and d.timestamps.tolist() == [1001, 1003, 1005]
    assert d.available is not None and d.available.all()
    no_features = LoggedData.from_outcomes([_outcome(i, features=False) for i in range(3)])
    assert no_features.contexts is None
    with pytest.raises(LoggedDataError, match="no outcomes of policy 'p9'"):
        LoggedData.from_outcomes(outs, policy_id="p9")


def test_the_parquet_archive_with_hive_partitions(tmp_path: Path) -> None:
    for policy in ("p1", "p2"):
        for day, offset in (("2026-01-01", 0), ("2026-01-02", 100)):
            rows = [
                {k: v for k, v in _outcome(offset + i, policy, "ab"[i % 2]).to_dict().items()}
                for i in range(5)
            ]
            for r in rows:
                r.pop("policy_id")  # a partition column, as the archive writes it
                r.pop("components", None)
            part = tmp_path / f"date={day}" / f"policy_id={policy}"
            part.mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist(rows), part / "part-0.parquet")
    d = read_archive(tmp_path, policy_id="p2", start_ms=1000, end_ms=1103)
    # p2's rows decided at 1000..1004 and 1100..1102: 8 rows.
    assert d.n_events == 8
    assert d.timestamps is not None and sorted(d.timestamps.tolist()) == [
        1000,
        1001,
        1002,
        1003,
        1004,
        1100,
        1101,
        1102,
    ]
    assert d.arm_names == ("a", "b") and d.context_dim == 2
    with pytest.raises(LoggedDataError, match="no outcomes"):
        read_archive(tmp_path, policy_id="p3")


def test_direct_construction_checks_shapes_and_propensities() -> None:
    with pytest.raises(LoggedDataError, match="index the 2 arm names"):
        LoggedData(np.array([0, 2]), np.zeros(2), np.ones(2), ("a", "b"))
    with pytest.raises(LoggedDataError, match="duplicate"):
        LoggedData(np.array([0]), np.zeros(1), np.ones(1), ("a", "a"))
    d = LoggedData(np.array([0, 1, 0]), np.zeros(3), np.array([math.nan, 0.0, 2.0]), ("a", "b"))
    assert d.invalid_propensity_counts() == {
        "missing_propensity": 1,
        "nonpositive_propensity": 1,
        "propensity_above_one": 1,
    }
    with pytest.raises(LoggedDataError, match="3 of 3 propensities are unusable"):
        d.check_propensities()
