"""The paced producer, run as its own process (``python -m benchmarks.e2e
--drive SPEC``) so that pacing and measuring do not share a GIL."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from app.kafka_security import kafka_security
from benchmarks.common import ROOT
from benchmarks.e2e import BenchError
from benchmarks.e2e.payloads import make_requests


async def drive(spec: dict[str, Any]) -> None:
    """The paced producer (its own process): ``rate`` requests/s for
    ``duration`` s, in bursts every ``burst_ms`` that catch up on any lag."""
    from aiokafka import AIOKafkaProducer

    rate, duration = float(spec["rate"]), float(spec["duration"])
    burst_s = float(spec["burst_ms"]) / 1000.0
    total = max(1, round(rate * duration))
    docs = make_requests(total, int(spec["seed"]))
    keys = [d["tenant_id"].encode() for d in docs]
    ids = [d["request_id"] for d in docs]
    send_ns = [0] * total
    producer = AIOKafkaProducer(
        bootstrap_servers=spec["bootstrap"],
        acks=1,
        linger_ms=0,
        max_batch_size=512 * 1024,
        client_id="llmopt-bench-driver",
        **kafka_security(),
    )
    await producer.start()
    cpu0 = time.process_time()
    max_lag_ns = 0
    try:
        print("ready", flush=True)
        topic, send, dumps, clock = spec["topic"], producer.send, orjson.dumps, time.time_ns
        futures = []
        interval_ns = 1e9 / rate
        burst_ns = int(burst_s * 1e9)
        t0 = next_tick = time.monotonic_ns()
        sent = 0
        while sent < total:
            now = time.monotonic_ns()
            due = min(total, int((now - t0) / interval_ns) + 1)
            if sent < due:
                max_lag_ns = max(max_lag_ns, now - (t0 + int(sent * interval_ns)))
            while sent < due:
                d = docs[sent]
                t = clock()
                d["created_at"] = t // 1_000_000
                send_ns[sent] = t
                futures.append(await send(topic, dumps(d), key=keys[sent]))
                sent += 1
            # Next burst one interval later (what falls due meanwhile waits for it);
            # when behind, go on at once: `due` above catches up.
            next_tick += burst_ns
            await asyncio.sleep(max(0.0, (next_tick - time.monotonic_ns()) / 1e9))
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    Path(spec["out"]).write_bytes(
        orjson.dumps(
            {
                "ids": ids,
                "send_ns": send_ns,
                "max_lag_ms": round(max_lag_ns / 1e6, 2),
                "cpu_seconds": time.process_time() - cpu0,
            }
        )
    )


async def start_driver(spec: dict[str, Any]) -> asyncio.subprocess.Process:
    """:func:`drive` in a process of its own (``python -m benchmarks.e2e
    --drive SPEC``), once it says it is ready to send."""
    driver = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.e2e",
        "--drive",
        orjson.dumps(spec).decode(),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")},
    )
    line = await asyncio.wait_for(driver.stdout.readline(), 120) if driver.stdout else b""
    if line.strip() != b"ready":
        driver.kill()
        await driver.wait()
        raise BenchError(f"driver did not start (said {line!r})")
    return driver
