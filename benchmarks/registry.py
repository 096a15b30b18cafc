"""The policy registry on the embedded broker with two workers: 100 versions
of a learning policy registered, then versions picked at random served again
(rollback), timed from the request to every worker deciding from it, and
checked to restore the version's learned state exactly.

    scripts/bench-registry            100 versions, 20 rollbacks
    scripts/bench-registry --quick    30 versions, 8 rollbacks

Targets: every rollback on every worker within 5 s (p99), every restored
state equal to its version's, at least 100 versions kept (the full run).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import re
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from app.evaluation.simulator import TrafficSimulator
from app.kafka_security import kafka_security
from app.policies.registry import algorithms
from app.records import Decision, PolicySnapshot, RegistryEvent, now_ms
from app.registry_cli import learner_reply, read_registry, write_records
from app.stream.broker import EmbeddedBroker, free_port
from app.stream.kafka_io import assign_from_start, partitions_of
from app.stream.worker_process import WorkerProcess
from app.topics import TopicCatalog, apply_topics
from app.versions import new_event_id
from benchmarks.common import ROOT, report, result_path, run_header

ROLLBACK_TARGET_S = 5.0
POLICY = "default"


class Worker(WorkerProcess):
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = int(env["LLMOPT_WEB_PORT"])
        super().__init__(log, f"http://127.0.0.1:{self.port}/health", env=env, cwd=ROOT)

    def updates(self) -> float:
        """Outcomes this worker's learner applied so far."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            text = r.read().decode()
        return sum(
            float(v)
            for v in re.findall(r"^llmopt_policy_updates_total\{[^}]*\} (\S+)$", text, re.M)
        )

    def decider_version(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
            text = r.read().decode()
        found = re.search(
            rf'^llmopt_decider_policy_version\{{policy_id="{POLICY}"\}} (\S+)$', text, re.M
        )
        return int(float(found.group(1))) if found else -1


async def traffic(bootstrap: str, names: dict[str, str], sim: TrafficSimulator, n: int) -> None:
    """n requests, their decisions, their rewards."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    reqs = {r.request_id: r for r in (sim.next_request(now_ms()) for _ in range(n))}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **kafka_security())
    await producer.start()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **kafka_security()
    )
    await consumer.start()
    try:
        assign_from_start(consumer, partitions_of(consumer, names["decisions"]))
        for r in reqs.values():
            await producer.send(names["requests"], r.dumps(), key=r.tenant_id.encode())
        await producer.flush()
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while len(seen) < n and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                for m in msgs:
                    d = Decision.loads(m.value)
                    if d.request_id in reqs and d.request_id not in seen:
                        seen.add(d.request_id)
                        o = sim.outcome(reqs[d.request_id], d.arm, now_ms())
                        await producer.send(names["rewards"], o.dumps(), key=m.key)
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()


async def reply(bootstrap: str, topic: str, request: RegistryEvent) -> RegistryEvent:
    """The learner's record for ``request`` (within 30 s)."""
    found = await learner_reply(bootstrap, topic, request, 30.0)
    if found is None:
        raise TimeoutError(f"no answer to the {request.kind} request on {topic} within 30 s")
    return found


async def latest_snapshot(bootstrap: str, topic: str, version: int) -> PolicySnapshot:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=1 << 24,
        **kafka_security(),
    )
    await consumer.start()
    try:
        assign_from_start(consumer, partitions_of(consumer, topic))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=100)).values():
                for m in msgs:
                    s = PolicySnapshot.loads(m.value, 1 << 24)
                    if s.policy_id == POLICY and s.version >= version:
                        return s
    finally:
        await consumer.stop()
    raise TimeoutError(f"no snapshot at version {version}")


async def settled(workers: list[Worker], quiet_s: float = 1.5) -> None:
    """Until no learner has applied an outcome for ``quiet_s``: the state a
    rollback replaces has taken in every reward sent so far."""
    last, since = -1.0, time.monotonic()
    while time.monotonic() - since < quiet_s:
        now = sum(w.updates() for w in workers)
        if now != last:
            last, since = now, time.monotonic()
        await asyncio.sleep(0.1)


def arm_pulls(algorithm: str, state_b64: str) -> dict[str, float]:
    policy = algorithms()[algorithm].restore(base64.b64decode(state_b64))
    return {arm: s.get("pulls", 0.0) for arm, s in policy.stats().items()}


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    broker = EmbeddedBroker().start()
    workers: list[Worker] = []
    try:
        bootstrap = broker.bootstrap
        catalog = TopicCatalog.load(ROOT / "topics.yaml")
        await apply_topics(bootstrap, catalog)
        names = {role: catalog.name(role) for role in catalog.topics}
        policies = workdir / "policies.yaml"
        doc = yaml.safe_load((ROOT / "tests" / "fixtures" / "policies.yaml").read_text())
        policies.write_text(yaml.safe_dump(doc))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPT_")}
        env.update(
            LLMOPT_KAFKA_BOOTSTRAP=bootstrap,
            LLMOPT_EMBEDDED_BROKER="1",
            LLMOPT_DATA_DIR=str(workdir / "data"),
            LLMOPT_POLICIES_PATH=str(policies),
            LLMOPT_LOG_LEVEL="warning",
        )
        for i in range(2):
            w_env = dict(env, LLMOPT_WEB_PORT=str(free_port()))
            workers.append(Worker(w_env, workdir / f"worker-{i}.log"))
        for w in workers:
            w.wait_ready()
        sim = TrafficSimulator.default(seed=args.seed)
        topic = names["registry"]

        # Versions: learn a little, register, n times (each one a different state).
        started = time.monotonic()
        registered: list[RegistryEvent] = []
        for _ in range(args.versions):
            await traffic(bootstrap, names, sim, args.requests_per_version)
            request = RegistryEvent(
                event_id=new_event_id(),
                kind="register",
                policy_id=POLICY,
                created_at=now_ms(),
                created_by="bench",
            )
            await write_records(bootstrap, topic, [request])
            registered.append(await reply(bootstrap, topic, request))
        register_s = time.monotonic() - started
        view = await read_registry(bootstrap, topic)
        kept = len(view.policy(POLICY).versions)

        # Rollbacks to versions picked at random.
        rng = random.Random(args.seed)
        rollbacks: list[dict[str, Any]] = []
        for _ in range(args.rollbacks):
            target = rng.choice(registered)
            await settled(workers)
            serve = RegistryEvent(
                event_id=new_event_id(),
                kind="serve",
                policy_id=POLICY,
                created_at=now_ms(),
                created_by="bench",
                version=target.version,
                config=target.config,
                state=target.state,
                reason="bench rollback",
            )
            t0 = time.monotonic()
            await write_records(bootstrap, topic, [serve])
            champion = await reply(bootstrap, topic, serve)
            applied_s = time.monotonic() - t0
            at = int((champion.lineage or {})["snapshot_version"])
            while not all(w.decider_version() >= at for w in workers):
                if time.monotonic() - t0 > 30:
                    break
                await asyncio.sleep(0.01)
            everywhere_s = time.monotonic() - t0
            snap = await latest_snapshot(bootstrap, names["policy_snapshots"], at)
            assert target.state is not None
            exact = (
                arm_pulls(snap.algorithm, snap.state)
                == arm_pulls(target.state["algorithm"], target.state["policy"])
                and snap.updates == target.state["updates"]
            )
            rollbacks.append(
                {
                    "version": target.version,
                    "snapshot_updates": snap.updates,
                    "version_updates": target.state["updates"],
                    "learner_s": applied_s,
                    "every_worker_s": everywhere_s,
                    "exact": exact,
                }
            )
            await traffic(bootstrap, names, sim, 50)  # it learns on between rollbacks
        return {"register_s": register_s, "versions_kept": kept, "rollbacks": rollbacks}
    finally:
        for w in workers:
            w.stop()
        broker.stop()


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="30 versions, 8 rollbacks")
    ap.add_argument("--versions", type=int, default=None, help="versions to register")
    ap.add_argument("--rollbacks", type=int, default=None, help="rollbacks to time")
    ap.add_argument("--requests-per-version", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    args.versions = args.versions or (30 if args.quick else 100)
    args.rollbacks = args.rollbacks or (8 if args.quick else 20)
    doc = run_header("registry", "aiokafka", "faust-streaming")
    with tempfile.TemporaryDirectory(prefix="llmopt-bench-registry-") as tmp:
        found = asyncio.run(run(args, Path(tmp)))
    everywhere = [r["every_worker_s"] for r in found["rollbacks"]]
    learner = [r["learner_s"] for r in found["rollbacks"]]
    exact = all(r["exact"] for r in found["rollbacks"])
    p99 = quantile(everywhere, 0.99)
    doc.update(found)
    doc["summary"] = {
        "versions_registered": args.versions,
        "register_per_version_ms": 1000 * found["register_s"] / args.versions,
        "rollback_learner_p50_s": statistics.median(learner),
        "rollback_every_worker_p50_s": statistics.median(everywhere),
        "rollback_every_worker_p99_s": p99,
        "rollback_every_worker_max_s": max(everywhere),
        "restored_exactly": exact,
    }
    checks = {
        f"rollback on every worker p99 <= {ROLLBACK_TARGET_S:g} s": p99 <= ROLLBACK_TARGET_S,
        "every restored state equals its version's": exact,
        f"all {args.versions} versions kept": found["versions_kept"] >= args.versions,
    }
    passed = all(checks.values())
    s = doc["summary"]
    lines = [
        "policy registry, embedded broker, 2 workers",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| versions registered (learning between) | {args.versions} |",
        f"| versions kept on the topic | {found['versions_kept']} |",
        f"| per registration (learn {args.requests_per_version} requests, register, "
        f"wait) | {s['register_per_version_ms']:.0f} ms |",
        f"| rollbacks | {len(everywhere)} |",
        f"| request → learner served it, p50 | {s['rollback_learner_p50_s'] * 1000:.0f} ms |",
        f"| request → every worker decides from it, p50 | "
        f"{s['rollback_every_worker_p50_s'] * 1000:.0f} ms |",
        f"| request → every worker, p99 / max | {p99 * 1000:.0f} / "
        f"{s['rollback_every_worker_max_s'] * 1000:.0f} ms |",
        f"| restored state equals the version's | {'all' if exact else 'NOT all'} |",
        "",
        *(f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in checks.items()),
    ]
    doc["checks"] = checks
    report(doc, "\n".join(lines), passed, result_path("registry", doc["commit"], args.quick))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
