"""A run's figures (throughput, call times, regret, recovery) and their
median over seeds."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

from benchmarks.policies.runners import Trace
from benchmarks.policies.workloads import RECOVERY_SHARE, RECOVERY_WINDOW, Bernoulli, Linear


def checkpoints(rounds: int) -> list[int]:
    return sorted({c for c in (1_000, 10_000, rounds) if c <= rounds})


def summarise(tr: Trace, env: Bernoulli | Linear, rounds: int) -> dict[str, Any]:
    n = len(tr.arms)
    sel = np.asarray(tr.sel, dtype=np.int64)
    upd = np.asarray(tr.upd, dtype=np.int64)
    arms = np.asarray(tr.arms, dtype=np.intp)
    best, got = env.expected(arms)
    cum = np.cumsum(best - got)
    out: dict[str, Any] = {
        "rounds": n,
        "throughput_rps": n / max(1e-9, (sel.sum() + upd.sum()) / 1e9),
        "wall_rps": n / max(1e-9, tr.wall),
        # Share of the loop's wall time this thread was on a CPU (< 1: other
        # processes took the core, and every time above is inflated).
        "on_cpu": tr.cpu / max(1e-9, tr.wall),
        "select_p50_us": float(np.percentile(sel, 50)) / 1e3,
        "select_p99_us": float(np.percentile(sel, 99)) / 1e3,
        "update_p50_us": float(np.percentile(upd, 50)) / 1e3,
        "update_p99_us": float(np.percentile(upd, 99)) / 1e3,
        "regret": {str(c): float(cum[c - 1]) for c in checkpoints(rounds) if c <= n},
    }
    if isinstance(env, Bernoulli) and env.change < rounds:
        out["recovery_rounds"] = recovery(arms, env)
    return out


def recovery(arms: np.ndarray, env: Bernoulli) -> int | None:
    """Rounds after the change until the new best arm has more than 80% of
    the last 1,000 picks (the window may reach back before the change, where
    the new best arm was rarely picked); None: never."""
    best = int(np.argmax(env.means_after))
    hits = np.concatenate([[0], np.cumsum(arms == best)])
    t = np.arange(env.change + 1, len(arms) + 1)  # rounds seen so far
    share = (hits[t] - hits[np.maximum(t - RECOVERY_WINDOW, 0)]) / RECOVERY_WINDOW
    above = np.flatnonzero(share > RECOVERY_SHARE)
    return int(above[0]) + 1 if above.size else None


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0].get("error"), "seeds": 0}
    out: dict[str, Any] = {"seeds": len(ok)}
    for key in (
        "throughput_rps",
        "wall_rps",
        "on_cpu",
        "select_p50_us",
        "select_p99_us",
        "update_p50_us",
        "update_p99_us",
        "other_cores",
    ):
        out[key] = statistics.median(r[key] for r in ok)
    common = set.intersection(*(set(r["regret"]) for r in ok))
    out["regret"] = {
        c: statistics.median(r["regret"][c] for r in ok) for c in sorted(common, key=int)
    }
    if "recovery_rounds" in ok[0]:
        rec = [math.inf if r["recovery_rounds"] is None else r["recovery_rounds"] for r in ok]
        m = statistics.median(rec)
        out["recovery_rounds"] = None if m == math.inf else m
    if any("error" in r for r in runs):
        out["errors"] = [r["error"] for r in runs if "error" in r]
    return out
