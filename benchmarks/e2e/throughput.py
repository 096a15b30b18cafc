"""Saturation throughput: N requests written before the processor starts,
drained as fast as it can."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import CpuRecorder, cpu_between, wait_for_quiet
from benchmarks.e2e import BenchError, log
from benchmarks.e2e.broker import fresh_broker
from benchmarks.e2e.configs import JOIN_WINDOW, QUIET, WORKER_ENV
from benchmarks.e2e.join_progress import measure_join
from benchmarks.e2e.meter import Meter
from benchmarks.e2e.payloads import make_requests, produce_all
from benchmarks.e2e.processor import Processor
from benchmarks.e2e.profiling import start_py_spy, stop_py_spy
from benchmarks.e2e.stats import r2


async def measure_throughput(
    config: str, n: int, seed: int, fetch_wait_ms: int, workdir: Path, profile_dir: Path | None
) -> dict[str, Any]:
    async with fresh_broker() as (bootstrap, topics):
        broker_pid = int(topics["broker_pid"])
        docs = make_requests(n, seed)
        payload_bytes = sum(len(orjson.dumps(d)) for d in docs[:2000]) / min(n, 2000)
        expected = {d["request_id"].encode() for d in docs}
        if len(expected) != n:
            raise BenchError("the simulator produced duplicate request ids")
        prefill_s = await produce_all(bootstrap, topics["requests"], docs)
        del docs
        log(
            f"{config}: pre-filled {n:,} requests in {prefill_s:.1f}s "
            f"({n / prefill_s:,.0f}/s, {payload_bytes:.0f} B each)"
        )
        background = await asyncio.to_thread(
            wait_for_quiet,
            QUIET["wait"],
            QUIET["threshold"],
            {"broker": broker_pid, "meter": os.getpid()},
            log,
        )
        proc = Processor(config, bootstrap, workdir, extra_env=WORKER_ENV)
        meter: Meter | None = None
        spy: subprocess.Popen[bytes] | None = None
        cpu: CpuRecorder | None = None
        try:
            proc.start(topics["requests"], topics["decisions"])
            started_ns = time.time_ns()
            cpu = CpuRecorder({"processor": proc.pid, "broker": broker_pid, "meter": os.getpid()})
            cpu.start()
            meter = Meter(bootstrap, proc.output_topic, fetch_wait_ms)

            def first() -> None:
                nonlocal spy
                if profile_dir is not None:  # the drain, not the imports and start-up
                    spy = start_py_spy(proc.pid, profile_dir / f"{config}.collapsed")

            meter.on_first = first
            await meter.start()
            ok = await meter.wait_for(n, proc, idle_timeout=30.0)
            await cpu.stop()
            # Let late duplicates (if any) arrive before checking the id set.
            await asyncio.sleep(0.3)
            got = set(meter.recv_ns)
            missing = len(expected - got)
            unexpected = len(got - expected)
            # Outputs come in bursts: the processor's loop does not yield while
            # its prefetched records last, and its producer sends full 512 KiB
            # batches. So the drain runs from the processor's first produce()
            # (the earliest output's CreateTime) to the receipt of the last
            # output; the meter-only span would count the first burst as free.
            created = sorted(meter.produced_ms.values())
            first_created_ns = created[0] * 1_000_000 if created else 0
            drain_s = (meter.last_new_ns - first_created_ns) / 1e9
            startup_s = (first_created_ns - started_ns) / 1e9 if created else None
            span = cpu.window(first_created_ns, meter.last_new_ns) if created else None
            recv_span_s = (meter.last_new_ns - meter.first_ns) / 1e9
            created_span_s = (created[-1] - created[0]) / 1e3 if len(created) > 1 else 0.0
            result: dict[str, Any] = {
                "n": n,
                "payload_bytes_mean": round(payload_bytes, 1),
                "prefill_seconds": round(prefill_s, 2),
                "distinct_out": len(got),
                "missing": missing,
                "unexpected": unexpected,
                "duplicates": meter.duplicates,
                "complete": ok and missing == 0 and unexpected == 0,
                "drain_seconds": round(drain_s, 3),
                "rate_per_s": round(n / drain_s, 1) if ok and drain_s > 0 else None,
                # N / (last - first receipt): overstates when the first burst is large
                "recv_span_per_s": round(n / recv_span_s, 1) if ok and recv_span_s > 0 else None,
                # N / CreateTime span: the processor's own pace, without the last delivery
                "processor_side_per_s": round(n / created_span_s, 1)
                if ok and created_span_s > 0
                else None,
                "output_bursts": len(meter.timeline),
                "first_burst": meter.timeline[0][1] if meter.timeline else 0,
                "largest_burst": max((c for _, c in meter.timeline), default=0),
                "startup_to_first_output_s": r2(startup_s),
                # CPU over the drain (sampled every 25 ms, so slightly wider)
                "cpu_cores": cpu_between(*span) if span else None,
                "profiled": profile_dir is not None,
                "background_cores_before": round(background, 2),
                "bad_samples": meter.bad_samples[:5],
            }
            if span:
                a, b = span
                result["cpu_us_per_request"] = {
                    k: round((b.procs[k] - a.procs[k]) * 1e6 / n, 1)
                    for k in ("processor", "broker", "meter")
                }
            if proc.joins and ok and JOIN_WINDOW[0] > 0:
                result["join"] = await measure_join(
                    proc, bootstrap, topics["decisions"], n, JOIN_WINDOW[0]
                )
                j = result["join"]
                log(
                    f"{config}: join_rewards joined {j['joined_at_start']:,} of {n:,} decisions "
                    f"when the last decision came out, then {j['rate_per_s']:,.0f}/s"
                )
            if not result["complete"]:
                log(
                    f"{config}: INCOMPLETE: {len(got):,} of {n:,} distinct ids "
                    f"({missing} missing, {unexpected} unexpected)\n{proc.tail()}"
                )
            return result
        finally:
            if spy is not None:
                stop_py_spy(spy)
            if cpu is not None:
                await cpu.stop()
            if meter is not None:
                await meter.stop()
            proc.stop()


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best complete run (the least disturbed by whatever else runs on
    the machine: disturbance only ever slows a run down), with every run's
    figures and the median."""
    complete = [r for r in runs if r["complete"] and r["rate_per_s"]]
    best = max(complete, key=lambda r: r["rate_per_s"]) if complete else runs[-1]
    rates = sorted(r["rate_per_s"] for r in complete)
    out = dict(best)
    out["runs"] = [
        {
            "rate_per_s": r["rate_per_s"],
            "complete": r["complete"],
            "processor_cores": (r["cpu_cores"] or {}).get("processor"),
            "other_cores": (r["cpu_cores"] or {}).get("other"),
        }
        for r in runs
    ]
    out["median_rate_per_s"] = rates[len(rates) // 2] if rates else None
    out["complete"] = len(complete) == len(runs)
    return out
