"""The soak's verdicts (benchmarks/soak.py): steady series pass, growing ones fail."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from benchmarks.soak import Params, evaluate, slope_per_minute, thirds

RATE = 400.0


def params(seconds: float = 600.0) -> Params:
    args = argparse.Namespace(
        seconds=seconds, rate=RATE, quick=False, seed=0, roles="decide", default_retention=False
    )
    return Params.from_args(args)


def rows(seconds: float = 600.0, **grow_per_min: float) -> list[dict[str, Any]]:
    """A sample every 10 s of a steady loop, with the named series growing."""
    out = []
    for i in range(1, int(seconds // 10) + 1):
        t = i * 10.0
        row = {
            "t": t,
            "decisions_per_s": RATE,
            "p50_ms": 12.0,
            "p99_ms": 40.0 + (i % 3),
            "worker_rss_mb": 400.0 + (i % 2),
            "rocksdb_wal_mb": 0.5 * t,
            "worker_fds": 120,
            "broker_rss_mb": 50.0 + t * 3,
            "broker_fds": 30,
            "worker_cores": 0.4,
            "broker_cores": 0.6,
            "lag": 900,
            "lag_max": 500 + 100 * (i % 4),
        }
        for name, per_min in grow_per_min.items():
            row[name] += per_min * t / 60
        row["worker_rss_mb"] += row["rocksdb_wal_mb"]  # the memtables
        row["worker_rss_less_memtables_mb"] = row["worker_rss_mb"] - row["rocksdb_wal_mb"]
        out.append(row)
    return out


def run(rows_: list[dict[str, Any]]) -> dict[str, Any]:
    return {"rows": rows_, "worker_exits": [], "simulate_returncode": 0}


def failed(result: dict[str, Any]) -> set[str]:
    return {name for name, c in result["checks"].items() if not c["pass"]}


def test_slope_and_thirds() -> None:
    assert slope_per_minute([0, 30, 60], [5, 5, 5]) == 0
    assert slope_per_minute([0, 60, 120, 180], [0, 1, 2, 3]) == pytest.approx(1.0)
    assert slope_per_minute([10], [1]) is None
    assert thirds([1, 2]) == ([1], [2])


def test_a_steady_loop_passes_and_the_broker_is_reported_not_judged() -> None:
    result = evaluate(params(), RATE, run(rows()))
    assert failed(result) == set()
    assert result["broker_memory"]["slope_mb_per_min"] == pytest.approx(180, rel=0.01)


@pytest.mark.parametrize(
    ("series", "per_min", "check"),
    [
        ("worker_rss_mb", 8.0, "worker RSS − memtables slope (MB/min)"),
        ("worker_fds", 3.0, "worker fd growth (last − first third max)"),
        ("broker_fds", 3.0, "broker fd growth (last − first third max)"),
        ("lag_max", 400.0, "largest lag, last third (s of traffic)"),
        ("p99_ms", 60.0, "max window p99 (ms)"),
    ],
)
def test_growth_fails_its_target(series: str, per_min: float, check: str) -> None:
    assert check in failed(evaluate(params(), RATE, run(rows(**{series: per_min}))))


def test_p99_doubling_within_bounds_fails_the_growth_target() -> None:
    samples = rows()
    for row in samples:
        row["p99_ms"] = 40.0 if row["t"] < 300 else 120.0  # within 500 ms, tripled
    assert failed(evaluate(params(), RATE, run(samples))) == {"p99 last third / first third"}


def test_samples_in_the_warm_up_and_after_the_end_are_not_judged() -> None:
    samples = rows()
    samples[0]["worker_rss_mb"] = 100.0  # still loading
    samples.append({**samples[-1], "t": 610.0, "decisions_per_s": 40.0})  # the tail
    assert failed(evaluate(params(), RATE, run(samples))) == set()


def test_a_worker_exit_and_a_short_throughput_fail() -> None:
    r = run([{**row, "decisions_per_s": RATE * 0.8} for row in rows()])
    r["worker_exits"] = [{"check": "", "returncode": -9}]
    assert failed(evaluate(params(), RATE, r)) == {"decisions / offered", "worker exits"}
