"""One worker beside two, in the same run, on the embedded broker.

    scripts/bench-scaleout            20 s per measurement, 30,000 requests at saturation
    scripts/bench-scaleout --quick    10 s, 15,000 requests

One broker, one app, two workers with their own data directories and web
ports (as on two machines; they share every consumer group). Measured with
one worker, then with both:

- **saturation**: a burst of requests as fast as the harness can send them,
  each rewarded as soon as its decision is read: requests decided per second
  and requests joined (outcome written) per second, from the first request
  sent to the last decision and the last outcome;
- **latency**: request→decision p50/p99 (the decisions' ``decided_at`` −
  ``requested_at``) at a fixed rate;
- **rebalance**: while the fixed-rate stream runs, the second worker is
  started (join) and later stopped with SIGTERM (leave): the time until it
  is healthy, the worst request→decision latency of the requests sent in the
  next 30 s, how many of them took over 1 s, and how long after the event
  the last of those was sent.

Nothing here is a target: on a 2-core machine that also runs the broker and
the harness, two workers share the same cores, so they are not expected to
be faster. The run records the load average at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.chaos import (
    POLICIES_A,
    REGISTRY,
    Deployment,
    Stream,
    _pct,
    now_ms,
    tenants_per_partition,
    wait_until,
)
from benchmarks.common import stop_on_termination_signals
from benchmarks.common.progress import progress_logger
from benchmarks.common.results import report, result_path, run_header

log = progress_logger("scaleout")
RATE = 300.0  # requests/s of the fixed-rate stream
LATE_MS = 1000  # a request decided later than this counts as held up by the rebalance


def latencies(stream: Stream, start_ms: int = 0, end_ms: int = 2**62) -> list[int]:
    return [
        d.decided_at - d.requested_at
        for d in stream.decided.values()
        if start_ms <= d.requested_at < end_ms
    ]


async def saturation(dep: Deployment, n: int, tag: str, tenants: list[str]) -> dict[str, Any]:
    """``n`` requests as fast as they can be sent, all rewarded at once."""
    stream = Stream(dep, tag, 1e9, 1.0, tenants, 1, reward_delay=(0.0, 0.0), max_requests=n)
    t0 = time.monotonic()
    start_ms = now_ms()
    stream.start()
    try:
        await wait_until(lambda: len(stream.decided) >= n, 240, lambda: len(stream.decided), 30)
        decided_s = time.monotonic() - t0
        await wait_until(
            lambda: all(k in dep.ledger.outcomes for k in stream.decided),
            240,
            lambda: len(dep.ledger.outcomes),
            30,
        )
        joined_s = time.monotonic() - t0
    finally:
        await stream.stop()
    joined = sum(1 for k in stream.decided if k in dep.ledger.outcomes)
    send_s = max(stream.sent.values(), default=start_ms) - start_ms
    return {
        "requests": n,
        "decided": len(stream.decided),
        "joined": joined,
        "send_s": round(send_s / 1000, 2),
        "decided_per_s": round(len(stream.decided) / decided_s, 1),
        "joined_per_s": round(joined / joined_s, 1),
    }


def late_window(stream: Stream, event_ms: int, late_ms: float) -> dict[str, Any]:
    """Requests sent within 30 s of ``event_ms``: the worst latency, and the
    last of them decided later than ``late_ms``."""
    window = [d for d in stream.decided.values() if event_ms <= d.requested_at < event_ms + 30_000]
    late = [d for d in window if d.decided_at - d.requested_at > late_ms]
    return {
        "worst_latency_ms": max((d.decided_at - d.requested_at for d in window), default=None),
        "late_requests": len(late),
        "late_until_s": round((max(d.requested_at for d in late) - event_ms) / 1000, 2)
        if late
        else 0.0,
    }


async def run(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    seconds = 10.0 if args.quick else 20.0
    n = 15_000 if args.quick else 30_000
    dep = Deployment("S", args.workdir, POLICIES_A, workers=2)
    tenants = tenants_per_partition(dep.catalog["requests"].partitions, 2)
    try:
        await dep.start(workers=1)
        first, second = dep.workers
        results: dict[str, Any] = {}
        for workers in (1, 2):
            if workers == 2:
                log("starting the second worker during a steady stream")
                stream = Stream(dep, "join", RATE, 0.9, tenants, 2)
                stream.start()
                await asyncio.sleep(seconds)
                join_ms = now_ms()
                second.start()
                healthy = await second.wait_healthy(120)
                await asyncio.sleep(30)
                await stream.drain(60)
                await stream.stop()
                results["join"] = {
                    "health_s": healthy,
                    "steady_p99_ms": _pct(latencies(stream, 0, join_ms), 0.99),
                    **late_window(stream, join_ms, LATE_MS),
                }
                log(f"join: {results['join']}")
            log(f"{workers} worker(s): {RATE:g} requests/s for {seconds:g}s")
            stream = Stream(dep, f"rate{workers}", RATE, 0.9, tenants, 3)
            stream.start()
            await asyncio.sleep(seconds)
            await stream.drain(60)
            await stream.stop()
            lat = latencies(stream)
            fixed = {
                "rate_per_s": RATE,
                "decided": len(lat),
                "p50_ms": _pct(lat, 0.5),
                "p99_ms": _pct(lat, 0.99),
            }
            log(f"{workers} worker(s): {n:,} requests as fast as they can be sent")
            sat = await saturation(dep, n, f"sat{workers}", tenants)
            results[f"workers_{workers}"] = {"fixed_rate": fixed, "saturation": sat}
            log(f"{workers} worker(s): {results[f'workers_{workers}']}")
        log("stopping the second worker (SIGTERM) during a steady stream")
        stream = Stream(dep, "leave", RATE, 0.9, tenants, 4)
        stream.start()
        await asyncio.sleep(seconds)
        leave_ms = now_ms()
        second.expecting_exit = True
        exit_s = await second.stop(grace=30)
        await asyncio.sleep(30)
        await stream.drain(60)
        await stream.stop()
        results["leave"] = {
            "exit_s": exit_s,
            "steady_p99_ms": _pct(latencies(stream, 0, leave_ms), 0.99),
            **late_window(stream, leave_ms, LATE_MS),
        }
        log(f"leave: {results['leave']}")
        assert first.alive()
        doc["results"] = results
    finally:
        await dep.close()


def render(doc: dict[str, Any]) -> str:
    r = doc.get("results", {})
    lines = [f"One worker beside two — commit {(doc.get('commit') or '?')[:7]}", ""]
    lines.append(
        f"{'workers':<8} {'decided/s':>10} {'joined/s':>10} "
        f"{'p50 ms @' + format(RATE, 'g'):>12} {'p99 ms':>8}"
    )
    for w in (1, 2):
        x = r.get(f"workers_{w}")
        if x is None:
            continue
        sat, fixed = x["saturation"], x["fixed_rate"]
        lines.append(
            f"{w:<8} {sat['decided_per_s']:>10} {sat['joined_per_s']:>10} "
            f"{fixed['p50_ms']!s:>12} {fixed['p99_ms']!s:>8}"
        )
    for event in ("join", "leave"):
        x = r.get(event)
        if x is not None:
            lines.append(
                f"rebalance on {event}: worst request→decision {x['worst_latency_ms']} ms, "
                f"{x['late_requests']} requests over {LATE_MS} ms, the last sent "
                f"{x['late_until_s']} s after the {event}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench-scaleout", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 s per measurement, 15,000 requests")
    ap.add_argument("--json", action="store_true", help="JSON on stdout, the tables on stderr")
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    args = ap.parse_args(argv)
    stop_on_termination_signals()
    doc: dict[str, Any] = {**run_header("scaleout"), "quick": args.quick}
    args.workdir = Path(tempfile.mkdtemp(prefix="llmopt-scaleout-"))
    try:
        asyncio.run(run(args, doc))
    except KeyboardInterrupt:
        return 130
    finally:
        REGISTRY.cleanup()
        shutil.rmtree(args.workdir, ignore_errors=True)
    doc["machine"]["loadavg_end"] = list(os.getloadavg())
    saved = None if args.no_save else result_path("scaleout", doc["commit"], args.quick)
    # No target: two workers on two shared cores are not expected to be faster.
    report(doc, render(doc), None, saved, json_stdout=args.json)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
