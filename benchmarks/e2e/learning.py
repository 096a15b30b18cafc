"""The learning side under load: an all-roles worker whose every decision is
rewarded as soon as it comes out (a :class:`Rewarder` in the bench process),
measured three ways on fresh embedded brokers:

- saturation: a pre-filled backlog of requests, decided, rewarded, joined
  and learned as fast as the worker can; outcomes/s and policy updates/s
  from the worker's counters (sampled every second), beside the echo's
  drain rate of the same run; then the same with every policy whose shards
  merge set to ``learning: sharded``;
- reward→decision lag at a modest offered rate: the worker's
  ``llmopt_learning_lag_seconds`` histogram (each snapshot's oldest reward,
  from its ``sent_at`` to the decider taking the snapshot);
- steps at fixed offered rates: at the end of each step, how far behind the
  decisions the join is (decisions out − the join's committed offsets), in
  decisions and in seconds of that step's traffic, and how far the learner
  is behind the outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from app.kafka_security import kafka_security
from benchmarks.common import ROOT
from benchmarks.common.cpu import proc_cpu_seconds
from benchmarks.e2e import BenchError, log
from benchmarks.e2e.broker import fresh_broker
from benchmarks.e2e.configs import WORKER_ENV
from benchmarks.e2e.driver import start_driver
from benchmarks.e2e.join_progress import group_committed, join_group
from benchmarks.e2e.payloads import make_requests, produce_all
from benchmarks.e2e.processor import Processor
from benchmarks.e2e.stats import latency_summary


class Rewarder:
    """Reads every decision from the start and sends its reward at once."""

    def __init__(self, bootstrap: str, decisions: str, rewards: str) -> None:
        self.bootstrap, self.decisions, self.rewards = bootstrap, decisions, rewards
        self.seen: set[bytes] = set()
        self.sent = 0
        # Request → decision, ms: each decision's log time (CreateTime) less
        # its request's created_at (the driver's scheduled send time).
        self.latencies_ms: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        from app.stream.kafka_io import assign_from_start, partitions_of

        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            client_id="llmopt-bench-rewarder",
            **kafka_security(),
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            linger_ms=2,
            max_batch_size=512 * 1024,
            client_id="llmopt-bench-rewarder",
            **kafka_security(),
        )
        await self.consumer.start()
        await self.producer.start()
        assign_from_start(self.consumer, partitions_of(self.consumer, self.decisions))
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loads, dumps = orjson.loads, orjson.dumps
        while True:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.time_ns() // 1_000_000
            for msgs in batch.values():
                for m in msgs:
                    if m.key in self.seen:
                        continue  # a decision made twice is rewarded once
                    self.seen.add(m.key)
                    d = loads(m.value)
                    self.latencies_ms.append(m.timestamp - d["requested_at"])
                    reward = {
                        "schema_version": 1,
                        "request_id": d["request_id"],
                        "tenant_id": d["tenant_id"],
                        "sent_at": now,
                        "quality": 0.9 if d["arm"] < "m" else 0.6,
                        "cost_usd": 0.001,
                        "latency_ms": 500.0,
                    }
                    await self.producer.send(self.rewards, dumps(reward), key=m.key)
                    self.sent += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.producer.stop()
        with contextlib.suppress(Exception):
            await self.consumer.stop()


def scrape(port: int) -> dict[str, Any]:
    """The worker's counters this bench reads, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, Any] = {
        "outcomes": 0.0,
        "updates": 0.0,
        "lag_buckets": {},
        "lag_count": 0.0,
        "stall_buckets": {},
    }
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "llmopt_outcomes_total":
                out["outcomes"] += s.value
            elif s.name == "llmopt_policy_updates_total":
                out["updates"] += s.value
            elif s.name == "llmopt_learning_lag_seconds_bucket":
                le = float(s.labels["le"])
                out["lag_buckets"][le] = out["lag_buckets"].get(le, 0.0) + s.value
            elif s.name == "llmopt_learning_lag_seconds_count":
                out["lag_count"] += s.value
            elif s.name == "llmopt_event_loop_stall_seconds_bucket":
                out["stall_buckets"][float(s.labels["le"])] = s.value
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` (cumulative
    bucket counts by upper bound); None without observations.

    >>> histogram_quantile(0.99, {0.5: 90.0, 1.0: 99.0, float("inf"): 100.0})
    1.0
    """
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return le
    return None


def diff_buckets(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: v - before.get(le, 0.0) for le, v in after.items()}


async def _drive(
    bootstrap: str, topic: str, rate: float, seconds: float, seed: int, out: Path
) -> None:
    """The paced producer (benchmarks/e2e/driver.py) in its own process."""
    spec = {
        "bootstrap": bootstrap,
        "topic": topic,
        "rate": rate,
        "duration": seconds,
        "seed": seed,
        "out": str(out),
        "burst_ms": 2,
    }
    driver = await start_driver(spec)
    try:
        await asyncio.wait_for(driver.wait(), seconds + 120)
    finally:
        if driver.returncode is None:
            driver.kill()
            await driver.wait()
    if driver.returncode != 0:
        raise BenchError(f"driver exited with {driver.returncode}")


def sharded_policies(workdir: Path) -> Path:
    """config/policies.yaml with learning: sharded on every policy whose shards merge."""
    import yaml

    from app.policies.sharding import order_dependence

    doc = yaml.safe_load((ROOT / "config" / "policies.yaml").read_text())
    for p in doc["policies"].values():
        if order_dependence(p["algorithm"], p.get("hyperparameters") or {}) is None:
            p["learning"] = "sharded"
    path = workdir / "policies-sharded.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def _worker(
    bootstrap: str,
    topics: dict[str, str],
    workdir: Path,
    name: str,
    env: dict[str, str] | None = None,
) -> Processor:
    proc = Processor("all", bootstrap, workdir / name, extra_env={**WORKER_ENV, **(env or {})})
    (workdir / name).mkdir(parents=True, exist_ok=True)
    proc.start(topics["requests"], topics["decisions"])
    await proc.wait_ready()
    return proc


async def measure_saturation(
    n: int, seed: int, workdir: Path, timeout_s: float, policies: Path | None = None
) -> dict[str, Any]:
    """Outcomes/s and updates/s of an all-roles worker through ``n``
    pre-filled requests, every decision rewarded as it comes out
    (``policies``: another policies file)."""
    name = "learning-saturation" + ("-" + policies.stem if policies else "")
    env = {"LLMOPT_POLICIES_PATH": str(policies)} if policies else {}
    async with fresh_broker() as (bootstrap, topics):
        await produce_all(bootstrap, topics["requests"], make_requests(n, seed))
        rewarder = Rewarder(bootstrap, topics["decisions"], topics["rewards"])
        await rewarder.start()
        proc = await _worker(bootstrap, topics, workdir, name, env)
        try:
            assert proc.web_port is not None
            samples: list[tuple[float, dict[str, Any]]] = []
            cpu: list[float] = []  # the worker's CPU seconds at each sample
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout_s:
                await asyncio.sleep(1.0)
                proc.check_alive()
                s = await asyncio.to_thread(scrape, proc.web_port)
                samples.append((time.monotonic(), s))
                cpu.append(proc_cpu_seconds(proc.pid))
                if s["updates"] >= n:
                    break
                recent = [x for _, x in samples[-15:]]
                if len(recent) == 15 and recent[-1]["updates"] == recent[0]["updates"]:
                    break  # no progress for 15 s
            return {
                "n": n,
                "rewards_sent": rewarder.sent,
                "outcomes": samples[-1][1]["outcomes"] if samples else 0,
                "updates": samples[-1][1]["updates"] if samples else 0,
                "outcomes_per_s": await outcome_rate(bootstrap, topics["outcomes"], n),
                "outcomes_per_s_scraped": _rate(samples, "outcomes", n),
                "updates_per_s": _rate(samples, "updates", n),
                "worker_cpu_us_per_request": _cpu_per_request(samples, cpu),
                # How late the worker's loop ran its 100 ms probe over the
                # run: what a decision on the same loop waited at worst.
                "loop_stall_p99_s": _stall_p99(samples),
            }
        finally:
            await rewarder.stop()
            proc.stop()


async def outcome_rate(bootstrap: str, topic: str, n: int) -> float | None:
    """Outcomes/s from the outcomes' own times (the join's CreateTime, in
    ms), from the first outcome to the one at 95% of ``n``, as the echo's
    rate comes from its outputs' times: the worker's counters, scraped once a
    second, give a drain of a few seconds two or three intervals."""
    from aiokafka import AIOKafkaConsumer

    from app.stream.kafka_io import assign_from_start, partitions_of

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        client_id="llmopt-bench-outcome-times",
        **kafka_security(),
    )
    await consumer.start()
    times: list[int] = []
    try:
        assign_from_start(consumer, partitions_of(consumer, topic))
        idle = 0
        while idle < 3:  # the topic is read once three fetches bring nothing
            batch = await consumer.getmany(timeout_ms=300, max_records=20_000)
            got = [m.timestamp for msgs in batch.values() for m in msgs]
            times += got
            idle = 0 if got else idle + 1
    finally:
        await consumer.stop()
    times.sort()
    k = min(len(times), math.ceil(0.95 * n))
    if k < 2 or times[k - 1] <= times[0]:
        return None
    return round((k - 1) / ((times[k - 1] - times[0]) / 1000), 1)


def _stall_p99(samples: list[tuple[float, dict[str, Any]]]) -> float | None:
    if not samples:
        return None
    p99 = histogram_quantile(0.99, samples[-1][1]["stall_buckets"])
    return None if p99 is None else round(p99, 3)


def _cpu_per_request(samples: list[tuple[float, dict[str, Any]]], cpu: list[float]) -> float | None:
    """The worker's CPU per rewarded request (decided, joined and learned),
    from the first sample with an update to the last: unlike the rates, it
    does not move with other load on the machine."""
    started = [i for i, (_, s) in enumerate(samples) if s["updates"] > 0]
    if len(started) < 2:
        return None
    first, last = started[0], started[-1]
    done = samples[last][1]["updates"] - samples[first][1]["updates"]
    return round((cpu[last] - cpu[first]) / done * 1e6, 1) if done > 0 else None


def _rate(samples: list[tuple[float, dict[str, Any]]], key: str, n: int) -> float | None:
    """From the first sample with any to the first at 95% of ``n`` (or the last)."""
    started = [(t, s[key]) for t, s in samples if s[key] > 0]
    if len(started) < 2:
        return None
    t1, v1 = next(((t, v) for t, v in started if v >= 0.95 * n), started[-1])
    t0, v0 = started[0]
    return round((v1 - v0) / (t1 - t0), 1) if t1 > t0 else None


async def measure_rates(
    lag_rate: float,
    lag_seconds: float,
    step_rates: list[float],
    step_seconds: float,
    seed: int,
    workdir: Path,
) -> dict[str, Any]:
    """Reward→decision lag at ``lag_rate``, then the steps, on one worker."""
    async with fresh_broker() as (bootstrap, topics):
        rewarder = Rewarder(bootstrap, topics["decisions"], topics["rewards"])
        await rewarder.start()
        proc = await _worker(bootstrap, topics, workdir, "learning-rates")
        assert proc.web_port is not None
        port = proc.web_port
        result: dict[str, Any] = {}
        try:
            before = await asyncio.to_thread(scrape, port)
            seen_before = len(rewarder.latencies_ms)
            log(f"learning: {lag_rate:,.0f} requests/s for {lag_seconds:.0f} s, rewarded")
            await _drive(
                bootstrap,
                topics["requests"],
                lag_rate,
                lag_seconds,
                seed + 1,
                workdir / "learning-lag.json",
            )
            await asyncio.sleep(3.0)  # the last snapshots
            after = await asyncio.to_thread(scrape, port)
            buckets = diff_buckets(after["lag_buckets"], before["lag_buckets"])
            result["lag"] = {
                "rate_per_s": lag_rate,
                "seconds": lag_seconds,
                "snapshots": after["lag_count"] - before["lag_count"],
                "p50_s": histogram_quantile(0.5, buckets),
                "p99_s": histogram_quantile(0.99, buckets),
                "buckets": {str(k): v for k, v in sorted(buckets.items())},
                # The deciders' side of the same run: request → decision while
                # the worker joins and learns on the same event loop.
                "decision_ms": latency_summary(sorted(rewarder.latencies_ms[seen_before:])),
            }
            steps = []
            for i, rate in enumerate(step_rates):
                log(f"learning: step at {rate:,.0f} requests/s for {step_seconds:.0f} s")
                sent_before, seen_before = rewarder.sent, len(rewarder.latencies_ms)
                await _drive(
                    bootstrap,
                    topics["requests"],
                    rate,
                    step_seconds,
                    seed + 10 + i,
                    workdir / f"learning-step-{int(rate)}.json",
                )
                decided = len(rewarder.seen)
                joined = await group_committed(
                    bootstrap, join_group(proc.app_id), topics["decisions"]
                )
                s = await asyncio.to_thread(scrape, port)
                join_lag = max(0, decided - joined)
                steps.append(
                    {
                        "rate_per_s": rate,
                        "seconds": step_seconds,
                        "decided_in_step": rewarder.sent - sent_before,
                        "join_lag_decisions": join_lag,
                        "join_lag_seconds_of_traffic": round(join_lag / rate, 2),
                        "learner_lag_outcomes": max(0, int(s["outcomes"] - s["updates"])),
                        "decision_ms": latency_summary(sorted(rewarder.latencies_ms[seen_before:])),
                    }
                )
                log(
                    f"learning: after {rate:,.0f}/s the join is {join_lag:,} decisions "
                    f"({join_lag / rate:.1f} s of traffic) behind"
                )
            result["steps"] = steps
            return result
        finally:
            await rewarder.stop()
            proc.stop()


async def measure_learning(
    n: int,
    lag_rate: float,
    lag_seconds: float,
    step_rates: list[float],
    step_seconds: float,
    seed: int,
    workdir: Path,
) -> dict[str, Any]:
    timeout_s = max(120.0, n / 200)
    log(f"learning: saturation through {n:,} rewarded requests")
    saturation = await measure_saturation(n, seed, workdir, timeout_s)
    log(
        f"learning: {saturation['outcomes_per_s'] or 0:,.0f} outcomes/s, "
        f"{saturation['updates_per_s'] or 0:,.0f} updates/s"
    )
    log("learning: the same with learning: sharded")
    workdir.mkdir(parents=True, exist_ok=True)
    sharded = await measure_saturation(n, seed, workdir, timeout_s, sharded_policies(workdir))
    log(
        f"learning: sharded {sharded['outcomes_per_s'] or 0:,.0f} outcomes/s, "
        f"{sharded['updates_per_s'] or 0:,.0f} updates/s"
    )
    rates = await measure_rates(lag_rate, lag_seconds, step_rates, step_seconds, seed, workdir)
    return {"saturation": saturation, "saturation_sharded": sharded, **rates}
