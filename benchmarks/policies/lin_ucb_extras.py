"""LinUCB beyond the loop: snapshot + restore, and select_batch."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from app.policies.lin_ucb import LinUCB
from benchmarks.policies.workloads import ARMS_B, DIM, Linear


def snapshot_bench(reps: int = 200) -> dict[str, Any]:
    """Snapshot + restore of a 20-arm d=10 LinUCB after 5,000 updates."""
    cls = LinUCB
    arms = [f"arm{i}" for i in range(20)]
    p = cls(arms, seed=0, context_dim=DIM)
    rng = np.random.default_rng(0)
    for _ in range(5_000):
        x = rng.normal(size=DIM)
        p.update(arms[int(rng.integers(20))], float(rng.normal()), x)
    snap, rest = [], []
    data = b""
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        data = p.snapshot()
        t1 = time.perf_counter_ns()
        q = cls.restore(data)
        t2 = time.perf_counter_ns()
        snap.append(t1 - t0)
        rest.append(t2 - t1)
    assert isinstance(q, LinUCB)
    assert np.allclose(q.coefficients()["arm3"], p.coefficients()["arm3"])
    tot = np.asarray(snap) + np.asarray(rest)

    def ms(v: Any, q_: float) -> float:
        return float(np.percentile(v, q_)) / 1e6

    return {
        "arms": 20,
        "context_dim": DIM,
        "bytes": len(data),
        "reps": reps,
        "snapshot_p50_ms": ms(snap, 50),
        "restore_p50_ms": ms(rest, 50),
        "total_p50_ms": ms(tot, 50),
        "total_p99_ms": ms(tot, 99),
        "total_max_ms": float(tot.max()) / 1e6,
    }


def batch_bench(batch: int = 1024, reps: int = 50) -> dict[str, Any]:
    """LinUCB.select_batch on workload B's shape (4 arms, 11 features)."""
    env = Linear.make(0, 5_000)
    arms = [f"arm{i}" for i in range(ARMS_B)]
    p = LinUCB(arms, seed=0, context_dim=DIM + 1)
    for t in range(5_000):
        p.update(arms[t % ARMS_B], env.rewards[t][t % ARMS_B], env.X[t])
    X = np.ascontiguousarray(env.X[:batch])
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        p.select_batch(X)
        times.append(time.perf_counter_ns() - t0)
    med = statistics.median(times) / 1e9
    return {"batch": batch, "median_ms": med * 1e3, "contexts_per_s": batch / med}
