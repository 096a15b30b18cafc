"""Feature pipeline benchmarks, against their targets.

    scripts/bench-features            # full
    scripts/bench-features --quick    # fewer events

* **extraction**: µs per request for the engineered vector plus the spec's
  features (``config/features.yaml``, window features served from a
  populated store) — what ``select_arm`` adds per decision. Target ≤ 20 µs.
* **store writes**: observations applied per second *by a worker* (the
  ``aggregate_features`` agent: RocksDB table + changelog) on the embedded
  broker, from the first to the last applied, read from its ``/metrics``.
  The observations are pre-produced, as ``featurize_*`` send them (one
  message per route and batch). Target ≥ 10,000/s. Also the pure store's rate.
* **online reads**: ``GET /features`` on the worker's web server, one
  entity, all 20 features, sequential over one keep-alive connection;
  p50/p99 ms. Target p99 ≤ 10 ms.
* **archiving**: outcome documents → Parquet (``OutcomeArchive.write``),
  rows/s. Target ≥ 100,000/s.
* For the record: the latency quantile sketch's update cost beside river's
  ``stats.Quantile`` (P²), which it replaces because P² cannot be merged.

Results: a table on stdout and ``benchmarks/results/features-<sha>[-quick].json``;
the last line is ``overall: PASS|FAIL`` against the four targets.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from app.features.archive import OutcomeArchive
from app.features.extraction import FeatureExtractor
from app.features.quantile_sketch import QuantileSketch
from app.features.spec import FeatureSpec
from app.features.store import FeatureStore
from app.records import Outcome, Request, now_ms
from app.settings import Settings
from app.stream.broker import EmbeddedBroker, free_port
from app.stream.worker_process import WorkerProcess
from app.topics import TopicCatalog, apply_topics
from benchmarks.common import ROOT, report, result_path, run_header

SPEC = ROOT / "config" / "features.yaml"
TARGETS = {
    "extraction_us": ("≤", 20.0),
    "store_writes_per_s": ("≥", 10_000.0),
    "online_read_p99_ms": ("≤", 10.0),
    "archive_rows_per_s": ("≥", 100_000.0),
}


def bench_extraction(n: int) -> dict[str, float]:
    spec = FeatureSpec.load(SPEC)
    store = FeatureStore.for_spec(spec)
    for t in range(0, 900_000, 200):
        store.observe(
            "tenant=acme", {"k": "o", "t": t, "reward": 0.7, "latency_ms": 900.0 + t % 700}
        )
        store.observe("tenant=acme", {"k": "r", "t": t, "input_tokens": 800})
    x = FeatureExtractor(spec, lookup=store.get_feature)
    rng = random.Random(0)
    reqs = [
        Request(
            request_id=f"r{i}",
            tenant_id="acme",
            task_type="qa",
            created_at=900_000 + i,
            input_tokens=rng.randint(0, 9000),
            metadata={
                "tier": rng.choice(["free", "pro"]),
                "context_docs": rng.randint(0, 50),
                "region": rng.choice(["eu", "us", "ap"]),
            },
        )
        for i in range(n)
    ]
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for r in reqs:
            x.row(r)
            x.values(r)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    docs: list[Any] = [{"arm": "a"} for _ in reqs]
    t0 = time.perf_counter()
    x.annotate(reqs, docs)  # the decider's call: vectors, values, lineage, summaries
    annotate_us = (time.perf_counter() - t0) / n * 1e6
    return {"extraction_us": statistics.median(runs), "annotate_us": annotate_us}


def bench_pure_store(n: int) -> float:
    store = FeatureStore()
    obs = [{"k": "o", "t": i * 10, "reward": 0.5, "latency_ms": 100.0 + i % 900} for i in range(n)]
    t0 = time.perf_counter()
    for i, o in enumerate(obs):
        store.observe(f"tenant={i % 50}", o, i)
    return n / (time.perf_counter() - t0)


def bench_sketch(n: int) -> dict[str, float]:
    from river import stats

    xs = [random.Random(1).lognormvariate(6, 1) for _ in range(n)]
    s = QuantileSketch()
    t0 = time.perf_counter()
    for v in xs:
        s.add(v)
    ours = (time.perf_counter() - t0) / n * 1e9
    q50, q95 = stats.Quantile(0.5), stats.Quantile(0.95)
    t0 = time.perf_counter()
    for v in xs:
        q50.update(v)
        q95.update(v)
    theirs = (time.perf_counter() - t0) / n * 1e9
    return {"sketch_add_ns": ours, "river_p2_two_quantiles_ns": theirs}


def outcome_docs(n: int) -> list[dict[str, Any]]:
    rng = random.Random(2)
    t0 = now_ms()
    return [
        Outcome(
            request_id=f"req-{i}",
            tenant_id=f"tenant-{i % 20}",
            policy_id=f"p{i % 3}",
            policy_version=i // 100,
            arm=f"arm-{i % 5}",
            available_arms=[f"arm-{k}" for k in range(5)],
            propensity=rng.random(),
            explored=rng.random() < 0.2,
            reward=rng.random(),
            defaulted=False,
            decided_at=t0 + i,
            outcome_at=t0 + i + 900,
            components={
                "quality": rng.random(),
                "cost_usd": 0.001,
                "latency_ms": 850.0,
                "error": False,
            },
            features=[rng.random() for _ in range(13)],
            spec_features={"name": "s", "version": 1, "hash": "h", "values": [0.1] * 12},
        ).to_dict()
        for i in range(n)
    ]


def bench_archive(n: int) -> float:
    docs = outcome_docs(n)
    root = Path(tempfile.mkdtemp(prefix="llmopt-archive-"))
    try:
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            OutcomeArchive(root).write(docs)
            runs.append(n / (time.perf_counter() - t0))
        return statistics.median(runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def bench_worker(n_obs: int, reads: int) -> dict[str, float]:
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        ns = f"b{os.getpid()}"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPT_")}
        env.update(
            LLMOPT_KAFKA_BOOTSTRAP=broker.bootstrap,
            LLMOPT_EMBEDDED_BROKER="1",
            LLMOPT_APP_ID=f"llmopt-{ns}",
            LLMOPT_TOPIC_NAMESPACE=ns,
            LLMOPT_DATA_DIR=tmp,
            LLMOPT_WORKER_ROLES="features",
            LLMOPT_FEATURE_SPEC_PATH=str(SPEC),
            LLMOPT_WEB_PORT=str(port),
            LLMOPT_LOG_LEVEL="warning",
        )
        settings = Settings.from_env(env)
        topics = TopicCatalog.for_settings(settings)
        asyncio.run(apply_topics(broker.bootstrap, topics))
        # 40 tenants (+ their arms), one minute of event time per 6,000 observations.
        per_msg = 200
        msgs = []
        t0 = now_ms() - n_obs * 10
        for m in range(n_obs // per_msg):
            tenant = f"t{m % 40}"
            batch = [
                {
                    "e": f"tenant={tenant}" if i % 2 else f"tenant={tenant},arm=a{i % 4}",
                    "k": "o",
                    "t": t0 + (m * per_msg + i) * 10,
                    "reward": 0.5,
                    "latency_ms": 100.0 + i,
                }
                for i in range(per_msg)
            ]
            msgs.append((tenant.encode(), orjson.dumps(batch)))
        with WorkerProcess(
            Path(tmp) / "worker.log",
            f"http://127.0.0.1:{port}/health",
            env=env,
            cwd=ROOT,
            new_session=False,
            grace_s=20,
        ) as worker:
            worker.wait_ready(timeout=90)
            from tests.kafka_io import produce

            asyncio.run(produce(broker.bootstrap, topics.name("feature_observations"), msgs))
            name = 'llmopt_feature_observations_total{result="applied"}'
            first = last = None
            total = len(msgs) * per_msg
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                done = metric(port, name.split("{")[0] + '{result="applied"}')
                now = time.monotonic()
                if done > 0 and first is None:
                    first = (now, done)
                if done >= total:
                    last = (now, done)
                    break
                time.sleep(0.05)
            if first is None or last is None:
                raise RuntimeError("not every observation was applied in time")
            writes = (last[1] - first[1]) / max(last[0] - first[0], 1e-9)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            lat = []
            for i in range(reads):
                t = time.perf_counter()
                conn.request("GET", f"/features?entity=tenant%3Dt{i % 40}")
                body = conn.getresponse().read()
                lat.append((time.perf_counter() - t) * 1000)
            assert orjson.loads(body)["features"], body
            lat.sort()
            return {
                "store_writes_per_s": writes,
                "online_read_p50_ms": lat[len(lat) // 2],
                "online_read_p99_ms": lat[int(len(lat) * 0.99) - 1],
            }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench-features", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer events (a fast check)")
    p.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    args = p.parse_args(argv)
    out = run_header("features", "pyarrow", "river", "faust")
    k = 0.25 if args.quick else 1.0
    res: dict[str, float] = {}
    res.update(bench_extraction(int(20_000 * k)))
    res["pure_store_writes_per_s"] = bench_pure_store(int(200_000 * k))
    res.update(bench_sketch(int(100_000 * k)))
    res["archive_rows_per_s"] = bench_archive(int(200_000 * k))
    res.update(bench_worker(int(200_000 * k), int(2_000 * k)))
    rows = []
    verdicts = {}
    for key, value in res.items():
        target = TARGETS.get(key)
        verdict = ""
        if target:
            op, bound = target
            ok = value <= bound if op == "≤" else value >= bound
            verdict = f"{'PASS' if ok else 'FAIL'} ({op} {bound:g})"
            verdicts[key] = ok
        rows.append((key, value, verdict))
    lines = [f"{'figure':<28} {'value':>14}  target"]
    lines += [f"{key:<28} {value:>14,.2f}  {verdict}" for key, value, verdict in rows]
    # cpus and loadavg (at the end): the names earlier results have.
    out["machine"] |= {"cpus": os.cpu_count(), "loadavg": os.getloadavg()}
    out |= {
        "quick": args.quick,
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "results": res,
        "targets": {
            k: {"op": op, "bound": b, "pass": verdicts.get(k)} for k, (op, b) in TARGETS.items()
        },
    }
    passed = all(verdicts.values())
    saved = None if args.no_save else result_path("features", out["commit"], args.quick)
    report(out, "\n".join(lines), passed, saved, json_stdout=args.json)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
