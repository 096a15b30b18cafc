"""POST /decide under load, beside the Kafka path's request → decision
latency: one decide-only worker (``--roles decide``) on a fresh embedded
broker, its web server driven by load-generator processes.

- **Open loop** at each offered rate: every send time is fixed up front
  (``t0 + i / rate``) and each request is sent at its time over a pool of
  keep-alive connections (aiohttp, :data:`CONNECTIONS` per process), whether
  or not earlier answers came; a request's latency is its answer time minus
  its *scheduled* send time, so waiting for a free connection or behind a
  late event loop counts. Once without and once with ``?ack=1`` (the answer
  waits for the broker's acknowledgement of the logged decision).
- **Saturation**, closed loop: :data:`SATURATION_IN_FLIGHT` requests in
  flight per process on the same pool for the step's duration; the answers
  per second are the maximum throughput.
- After each step the decisions topic must have grown by one decision per
  200 answer (``logged``).

Run alone: ``scripts/bench --only http --quick``. Each load generator is
``python -m benchmarks.e2e.http_decide SPEC`` (JSON): it prints ``ready``
once its requests are built and its connections open, reads the common
start time (a
``time.monotonic()`` value: one clock for every process) from its stdin,
and writes its figures to ``SPEC["out"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import ROOT, CpuSample, cpu_between, wait_for_quiet
from benchmarks.e2e import BenchError, log
from benchmarks.e2e.broker import fresh_broker
from benchmarks.e2e.configs import QUIET, WORKER_ENV
from benchmarks.e2e.payloads import make_requests
from benchmarks.e2e.processor import Processor
from benchmarks.e2e.stats import latency_summary

CONNECTIONS = 64  # keep-alive connections per load generator (open loop)
SATURATION_IN_FLIGHT = 32  # requests in flight per load generator (closed loop)
JSON_HEADERS = {"Content-Type": "application/json"}
START_DELAY_S = 0.5  # between the start time's announcement and the first send


async def measure_http_decide(
    rates: list[float], duration: float, seed: int, workdir: Path, procs: int = 1
) -> dict[str, Any]:
    """Open-loop steps at ``rates`` (without, then with ``?ack=1``), then
    the closed-loop saturation run, on one worker and broker."""
    async with fresh_broker() as (bootstrap, topics):
        broker_pid = int(topics["broker_pid"])
        proc = Processor("decide", bootstrap, workdir, extra_env=WORKER_ENV)
        try:
            proc.start(topics["requests"], topics["decisions"])
            await proc.wait_ready()
            url = f"http://127.0.0.1:{proc.web_port}/decide"
            pids = {"processor": proc.pid, "broker": broker_pid}
            # Warm-up: connections, the decider's tables, the producer.
            await run_step(url, None, 2.0, seed + 999, workdir, procs, pids, ack=False)
            steps = []
            plan = [(r, False) for r in rates] + [(r, True) for r in rates]
            for i, (rate, ack) in enumerate(plan):
                step = await measured(
                    proc, bootstrap, topics, url, rate, duration, seed + i, workdir, procs, ack
                )
                steps.append(step)
            saturation = await measured(
                proc, bootstrap, topics, url, None, duration, seed + 99, workdir, procs, False
            )
        finally:
            proc.stop()
    return {
        "connections_per_generator": CONNECTIONS,
        "generators": procs,
        "steps": steps,
        "saturation": {
            **saturation,
            "mode": f"closed loop, {SATURATION_IN_FLIGHT * procs} in flight",
        },
    }


async def measured(
    proc: Processor,
    bootstrap: str,
    topics: dict[str, str],
    url: str,
    rate: float | None,
    duration: float,
    seed: int,
    workdir: Path,
    procs: int,
    ack: bool,
) -> dict[str, Any]:
    """One step after a quiet machine, with the decisions it logged."""
    pids = {"processor": proc.pid, "broker": int(topics["broker_pid"])}
    background = await asyncio.to_thread(
        wait_for_quiet, QUIET["wait"], QUIET["threshold"], {**pids, "meter": os.getpid()}, log
    )
    before = await decisions_logged(bootstrap, topics["decisions"])
    step = await run_step(url, rate, duration, seed, workdir, procs, pids, ack)
    step["logged"] = await decisions_logged(bootstrap, topics["decisions"], before + step["ok"])
    step["logged"] -= before
    step["background_cores_before"] = round(background, 2)
    lt = step["latency_ms"]
    what = f"{rate:,.0f}/s offered" if rate else "closed loop"
    log(
        f"POST /decide{'?ack=1' if ack else ''}: {what}, {step['answered_per_s'] or 0:,.0f}/s "
        f"answered: p50 {lt['p50']} p99 {lt['p99']} max {lt['max']} ms, "
        f"{step['errors']} errors, {step['logged']:,}/{step['ok']:,} logged"
    )
    return step


async def run_step(
    url: str,
    rate: float | None,
    duration: float,
    seed: int,
    workdir: Path,
    procs: int,
    pids: dict[str, int | None],
    ack: bool,
) -> dict[str, Any]:
    """``procs`` load generators at ``rate`` in all (None: closed loop)."""
    gens = []
    outs = [workdir / f"http-{seed}-{k}.json" for k in range(procs)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        for k, out in enumerate(outs):
            spec = {
                "url": url + ("?ack=1" if ack else ""),
                "rate": rate,
                "duration": duration,
                "seed": seed * 100 + k,
                "index": k,
                "procs": procs,
                "out": str(out),
            }
            gens.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "benchmarks.e2e.http_decide",
                    orjson.dumps(spec).decode(),
                    cwd=ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env=env,
                )
            )
        for g in gens:
            line = await asyncio.wait_for(g.stdout.readline(), 120) if g.stdout else b""
            if line.strip() != b"ready":
                raise BenchError(f"load generator did not start (said {line!r})")
        start_at = time.monotonic() + START_DELAY_S
        for g in gens:
            assert g.stdin is not None
            g.stdin.write(f"{start_at}\n".encode())
            await g.stdin.drain()
        a = CpuSample.take(pids)  # the generators report their own CPU
        for g in gens:
            await asyncio.wait_for(g.wait(), duration + 120)
            if g.returncode != 0:
                raise BenchError(f"load generator exited with {g.returncode}")
        b = CpuSample.take(pids)
    finally:
        for g in gens:
            if g.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    g.kill()
                await g.wait()
    parts = [orjson.loads(out.read_bytes()) for out in outs]
    for out in outs:
        out.unlink()
    cpu = cpu_between(a, b)
    cpu["generators"] = round(sum(p["cpu_seconds"] for p in parts) / max(1e-9, b.t - a.t), 2)
    cpu["other"] = round(max(0.0, cpu.get("other", 0.0) - cpu["generators"]), 2)
    return summarize(parts, rate, duration, ack, cpu)


def summarize(
    parts: list[dict[str, Any]],
    rate: float | None,
    duration: float,
    ack: bool,
    cpu: dict[str, float],
) -> dict[str, Any]:
    lat = sorted(x for p in parts for x in p["latency_ms"])
    sent = sum(p["sent"] for p in parts)
    ok = sum(p["ok"] for p in parts)
    first = min((p["first_answer_s"] for p in parts if p["first_answer_s"] is not None), default=0)
    last = max((p["last_answer_s"] for p in parts if p["last_answer_s"] is not None), default=0)
    span = last - first
    return {
        "offered_per_s": rate,
        "ack": ack,
        "duration_s": duration,
        "sent": sent,
        "ok": ok,
        "errors": sent - ok,
        "statuses": _merge([p["statuses"] for p in parts]),
        "answered_per_s": round((len(lat) - 1) / span, 1) if span > 0 and lat else None,
        "max_send_lag_ms": max(p["max_send_lag_ms"] for p in parts),
        "latency_ms": latency_summary(lat),
        "cpu_cores": cpu,
    }


async def _get(session: Any, url: str) -> None:
    async with session.get(url) as resp:
        await resp.read()


def _merge(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


async def decisions_logged(bootstrap: str, topic: str, expect: int | None = None) -> int:
    """The decisions topic's size (its partitions' ends, fetched: the
    embedded broker's ListOffsets answers short); with ``expect``, waits up
    to 10 s for it to reach that many."""
    from aiokafka.structs import TopicPartition

    from app.stream.partition_ends import fetched_end_offsets
    from app.topics import TopicCatalog

    count = TopicCatalog.load(ROOT / "topics.yaml")["decisions"].partitions
    tps = [TopicPartition(topic, p) for p in range(count)]
    deadline = time.monotonic() + 10
    while True:
        total = sum((await fetched_end_offsets(bootstrap, tps)).values())
        if expect is None or total >= expect or time.monotonic() > deadline:
            return total
        await asyncio.sleep(0.2)


# -- the load generator (its own process) ------------------------------------------------
async def generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Open loop at ``rate / procs`` (this process's share of the schedule),
    or closed loop when ``rate`` is None."""
    import aiohttp

    rate, duration = spec["rate"], float(spec["duration"])
    k, procs = int(spec["index"]), int(spec["procs"])
    seed = int(spec["seed"])
    templates = make_requests(5000, seed)

    def body(i: int) -> bytes:
        return orjson.dumps({**templates[i % len(templates)], "request_id": f"h{seed}-{i}"})

    statuses: dict[str, int] = {}
    latency: list[float] = []
    answered: list[float] = []
    connector = aiohttp.TCPConnector(limit=CONNECTIONS, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as session:
        url, post = spec["url"], session.post

        async def one(body: bytes, at: float) -> None:
            try:
                async with post(url, data=body, headers=JSON_HEADERS) as resp:
                    await resp.read()
                    status = str(resp.status)
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            done = time.monotonic()
            statuses[status] = statuses.get(status, 0) + 1
            if status == "200":
                latency.append((done - at) * 1000)
                answered.append(done)

        # Every connection of the pool open before the clock starts (GETs:
        # no decisions), and no collector pauses of this process during it.
        health = url.split("/decide")[0] + "/health"
        await asyncio.gather(*(_get(session, health) for _ in range(CONNECTIONS)))
        gc.collect()
        gc.disable()
        print("ready", flush=True)
        start_at = float(await asyncio.to_thread(sys.stdin.readline))
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        max_lag = 0.0
        sent = 0
        if rate:
            interval = procs / rate
            first = start_at + k / rate  # the processes interleave on one schedule
            bodies = [body(i) for i in range(max(1, round(rate * duration / procs)))]
            tasks = []
            for i, raw in enumerate(bodies):
                at = first + i * interval
                now = time.monotonic()
                if at - now > 0.0005:
                    await asyncio.sleep(at - now)
                else:
                    max_lag = max(max_lag, now - at)
                tasks.append(asyncio.create_task(one(raw, at)))
                sent += 1
            await asyncio.gather(*tasks)
        else:
            end = start_at + duration
            counter = iter(range(1 << 62))

            async def loop() -> int:
                count = 0
                while time.monotonic() < end:
                    await one(body(next(counter)), time.monotonic())
                    count += 1
                return count

            sent = sum(await asyncio.gather(*(loop() for _ in range(SATURATION_IN_FLIGHT))))
    return {
        "sent": sent,
        "ok": statuses.get("200", 0),
        "statuses": statuses,
        "latency_ms": latency,
        "first_answer_s": min(answered) if answered else None,
        "last_answer_s": max(answered) if answered else None,
        "max_send_lag_ms": round(max_lag * 1000, 2),
        "cpu_seconds": time.process_time() - cpu0,
    }


if __name__ == "__main__":
    spec = orjson.loads(sys.argv[1])
    Path(spec["out"]).write_bytes(orjson.dumps(asyncio.run(generate(spec))))
