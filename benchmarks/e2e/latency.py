"""Latency at offered rates: a driver process sends at each rate, the meter
times each request's output."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import CpuSample, cpu_between, wait_for_quiet
from benchmarks.e2e import BenchError, log
from benchmarks.e2e.broker import fresh_broker
from benchmarks.e2e.configs import QUIET, WORKER_ENV
from benchmarks.e2e.driver import start_driver
from benchmarks.e2e.join_progress import group_committed, join_group
from benchmarks.e2e.meter import Meter
from benchmarks.e2e.payloads import make_requests, produce_all
from benchmarks.e2e.processor import Processor
from benchmarks.e2e.stats import latency_summary, percentile, r2


async def measure_latency(
    config: str,
    rates: list[float],
    duration: float,
    seed: int,
    fetch_wait_ms: int,
    grace: float,
    burst_ms: float,
    workdir: Path,
) -> dict[str, Any]:
    """One fresh broker + processor per offered rate: the embedded broker's
    fetch cost grows with the number of record batches a partition holds, so
    a step must not inherit the batches of the steps before it."""
    steps = []
    for i, rate in enumerate(rates):
        async with fresh_broker() as (bootstrap, topics):
            broker_pid = int(topics["broker_pid"])
            proc = Processor(config, bootstrap, workdir, extra_env=WORKER_ENV)
            meter: Meter | None = None
            try:
                proc.start(topics["requests"], topics["decisions"])
                ready_s = await proc.wait_ready()
                meter = Meter(bootstrap, proc.output_topic, fetch_wait_ms)
                await meter.start()
                # Warm-up: the decider's tables, the fetch loops and the meter's
                # positions; then a pause for whatever the worker still starts.
                warm = make_requests(500, seed + 10_000 + i)
                await produce_all(bootstrap, topics["requests"], warm)
                if not await meter.wait_for(
                    {d["request_id"].encode() for d in warm}, proc, idle_timeout=30.0
                ):
                    raise BenchError(f"{config}: warm-up requests did not come out:\n{proc.tail()}")
                await asyncio.sleep(1.0)
                # In a thread: the meter's task goes on reading meanwhile.
                background = await asyncio.to_thread(
                    wait_for_quiet,
                    QUIET["wait"],
                    QUIET["threshold"],
                    {"broker": broker_pid, "meter": os.getpid(), "processor": proc.pid},
                    log,
                )
                step = await latency_step(
                    config,
                    proc,
                    meter,
                    bootstrap,
                    topics["requests"],
                    rate,
                    duration,
                    seed + 1 + i,
                    grace,
                    burst_ms,
                    workdir,
                    broker_pid,
                )
                step["ready_seconds"] = round(ready_s, 2)
                step["background_cores_before"] = round(background, 2)
                steps.append(step)
            finally:
                if meter is not None:
                    await meter.stop()
                proc.stop()
    return {"steps": steps}


async def latency_step(
    config: str,
    proc: Processor,
    meter: Meter,
    bootstrap: str,
    topic: str,
    rate: float,
    duration: float,
    seed: int,
    grace: float,
    burst_ms: float,
    workdir: Path,
    broker_pid: int,
) -> dict[str, Any]:
    send_log = workdir / f"sends-{config}-{int(rate)}.json"
    spec = {
        "bootstrap": bootstrap,
        "topic": topic,
        "rate": rate,
        "duration": duration,
        "seed": seed,
        "out": str(send_log),
        "burst_ms": burst_ms,
    }
    driver = await start_driver(spec)
    try:
        pids = {
            "processor": proc.pid,
            "broker": broker_pid,
            "meter": os.getpid(),
            "driver": driver.pid,
        }
        a = CpuSample.take(pids)
        await asyncio.wait_for(driver.wait(), duration + 120)
        b = CpuSample.take({**pids, "driver": None})
        b.procs["driver"] = a.procs["driver"]  # gone by now; see below
        if driver.returncode != 0:
            raise BenchError(f"driver exited with {driver.returncode}")
    finally:
        if driver.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)
            await driver.wait()
    sends = orjson.loads(send_log.read_bytes())
    send_log.unlink()
    ids = [i.encode() for i in sends["ids"]]
    send_ns = sends["send_ns"]
    # The driver's own CPU is reported by the driver itself (it has exited).
    cpu = cpu_between(a, b)
    cpu["driver"] = round(sends["cpu_seconds"] / max(1e-9, (b.t - a.t)), 2)
    cpu["other"] = round(max(0.0, cpu["other"] - cpu["driver"]), 2)
    await meter.wait_for(set(ids), proc, idle_timeout=grace, first_timeout=grace)
    recv, produced = meter.recv_ns, meter.produced_ms
    lat: list[float] = []
    inbound: list[float] = []
    last_recv = 0
    first_recv = None
    lost = 0
    by_second: dict[int, list[float]] = {}
    t0 = send_ns[0] if send_ns else 0
    for k, s in zip(ids, send_ns, strict=True):
        r = recv.get(k)
        if r is None:
            lost += 1
            continue
        lat.append((r - s) / 1e6)
        by_second.setdefault((s - t0) // 1_000_000_000, []).append(lat[-1])
        inbound.append(produced[k] - s / 1e6)
        last_recv = max(last_recv, r)
        first_recv = r if first_recv is None else min(first_recv, r)
    lat.sort()
    inbound.sort()
    # The embedded broker's fetch cost grows with the batches a partition
    # holds, so latency drifts up during a step: per second of send time.
    seconds = []
    for sec in sorted(by_second):
        xs = sorted(by_second[sec])
        seconds.append(
            {
                "second": sec,
                "n": len(xs),
                "p50": r2(percentile(xs, 50)),
                "p99": r2(percentile(xs, 99)),
            }
        )
    first = sorted(x for sec in (0, 1) for x in by_second.get(sec, []))
    n = len(ids)
    send_span = (send_ns[-1] - send_ns[0]) / 1e9 if n > 1 else 0.0
    recv_span = (last_recv - first_recv) / 1e9 if first_recv and last_recv > first_recv else 0.0
    step = {
        "offered_per_s": rate,
        "duration_s": duration,
        "sent": n,
        "achieved_per_s": round((n - 1) / send_span, 1) if send_span else None,
        "received": len(lat),
        "received_per_s": round((len(lat) - 1) / recv_span, 1) if recv_span else None,
        "lost": lost,
        "latency_ms": latency_summary(lat),
        # the first 2 s of the step, before the broker's per-fetch cost has grown
        "first_2s_latency_ms": {"p50": r2(percentile(first, 50)), "p99": r2(percentile(first, 99))},
        "latency_by_second": seconds,
        # send → the processor's produce() of the output (Kafka CreateTime, 1 ms resolution)
        "to_processor_send_ms": {
            "p50": r2(percentile(inbound, 50)),
            "p99": r2(percentile(inbound, 99)),
        },
        "driver_max_lag_ms": sends["max_lag_ms"],
        "cpu_cores": cpu,
    }
    if proc.joins:
        decided = len(meter.recv_ns)
        joined = await group_committed(bootstrap, join_group(proc.app_id), proc.output_topic)
        step["join_backlog_at_end"] = max(0, decided - joined)
    lt = step["latency_ms"]
    log(
        f"{config}: {rate:,.0f}/s offered, {step['achieved_per_s'] or 0:,.0f}/s sent, "
        f"{len(lat):,}/{n:,} out: p50 {lt['p50']} p99 {lt['p99']} max {lt['max']} ms, lost {lost}"
    )
    return step
