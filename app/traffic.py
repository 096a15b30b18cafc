"""Drives the simulator against a running pipeline: produces requests at a
rate, reads the decisions like a gateway would, answers each with the
simulator's reward, and keeps the true regret."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.evaluation.simulator import TrafficSimulator
from app.evaluation.task_regret import TaskRegret
from app.kafka_security import kafka_security
from app.records import Request, now_ms
from app.stream.kafka_io import partitions_of
from app.topics import TopicCatalog

METRICS_EVERY_SECONDS = 2.0


class SimulatorMetrics:
    """What only the simulator knows (the true regret), as Prometheus metrics
    in a registry of their own, published to the metrics topic like a worker's.
    ``task_type`` is one of the scenario's task types (a closed set)."""

    def __init__(self, task_types: tuple[str, ...] = ()) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "llmopt_simulator_decisions_total",
            "Decisions the simulator received, by task type and chosen arm.",
            ["task_type", "arm"],
            registry=r,
        )
        self.regret = Counter(
            "llmopt_simulator_true_regret_total",
            "True regret of those decisions, by task type: the best expected reward "
            "(best arm at its best call parameters) minus the chosen arm's at the served ones.",
            ["task_type"],
            registry=r,
        )
        for task in task_types:
            self.regret.labels(task)
        self.reward = Counter(
            "llmopt_simulator_reward_total", "Sum of the scalar rewards sent back.", registry=r
        )
        self.best_arm = Gauge(
            "llmopt_simulator_best_arm", "1 for the best arm by ground truth.", ["arm"], registry=r
        )
        self.latency = Histogram(
            "llmopt_simulator_decision_latency_seconds",
            "Request sent to decision received, as the gateway sees it.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )


@dataclass
class TrafficStats:
    sent: int = 0
    decided: int = 0
    rewarded: int = 0
    fallback: int = 0
    reward_sum: float = 0.0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    recent_arms: deque[str] = field(default_factory=lambda: deque(maxlen=2_000))
    started: float = field(default_factory=time.monotonic)

    def shares(self) -> dict[str, float]:
        n = len(self.recent_arms) or 1
        return {a: c / n for a, c in Counter(self.recent_arms).most_common()}


class TrafficDriver:
    def __init__(
        self,
        bootstrap: str,
        topics: TopicCatalog,
        simulator: TrafficSimulator,
        rate_per_second: float,
        policy_id: str | None = None,
        max_requests: int | None = None,
        daily_pattern: bool = False,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.sim = simulator
        self.rate = rate_per_second
        self.policy_id = policy_id
        self.max_requests = max_requests
        self.daily_pattern = daily_pattern
        self.stats = TrafficStats()
        self.metrics = SimulatorMetrics(simulator.config.task_names)
        self.tasks = TaskRegret(simulator.config.task_names)
        self._pending: dict[str, Request] = {}
        self._stop = asyncio.Event()
        # Request ids are unique per run: the simulator's seeded ids repeat
        # across runs, and a second run against the same deployment would
        # otherwise be all duplicates.
        self.run_id = uuid.uuid4().hex[:8]

    async def run(self, duration_seconds: float | None = None) -> TrafficStats:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=2, **kafka_security()
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            fetch_max_wait_ms=20,
            enable_auto_commit=False,
            **kafka_security(),
        )
        await self.producer.start()
        await self.consumer.start()
        try:
            topic = self.topics.name("decisions")
            tps = partitions_of(self.consumer, topic)
            if not tps:
                raise RuntimeError(f"topic {topic} is missing: run `llmopt topics apply`")
            self.consumer.assign(tps)
            await self.consumer.seek_to_end(*tps)
            tasks = [asyncio.create_task(self._produce()), asyncio.create_task(self._consume())]
            if "metrics" in self.topics.topics:
                tasks.append(asyncio.create_task(self._publish_metrics()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), duration_seconds)
            self._stop.set()
            for t in tasks:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        finally:
            await self.consumer.stop()
            await self.producer.stop()
        return self.stats

    def stop(self) -> None:
        self._stop.set()

    async def _produce(self) -> None:
        topic = self.topics.name("requests")
        owed = 0.0
        last = time.monotonic()
        while not self._stop.is_set():
            now = now_ms()
            t = time.monotonic()
            factor = self.sim.rate_multiplier(now) if self.daily_pattern else 1.0
            owed += self.rate * factor * (t - last)
            last = t
            while owed >= 1.0:
                owed -= 1.0
                if self.max_requests is not None and self.stats.sent >= self.max_requests:
                    break
                req = self.sim.next_request(now, policy_id=self.policy_id)
                req.request_id = f"{self.run_id}-{req.request_id}"
                self._pending[req.request_id] = req
                await self.producer.send(topic, req.dumps(), key=req.tenant_id.encode())
                self.stats.sent += 1
            await asyncio.sleep(0.005)

    async def _consume(self) -> None:
        rewards = self.topics.name("rewards")
        while not self._stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=100)
            now = now_ms()
            for msgs in batch.values():
                for m in msgs:
                    d = orjson.loads(m.value)
                    req = self._pending.pop(d["request_id"], None)
                    if req is None:
                        continue  # someone else's traffic
                    self._observe(req, d, now)
                    reward = self.sim.outcome(req, d["arm"], now, d.get("parameters"))
                    reward.reward_token = d.get("reward_token")
                    await self.producer.send(rewards, reward.dumps(), key=m.key)
                    self.stats.rewarded += 1
                    scalar = self.sim.reward_spec.scalar(
                        reward.quality, reward.cost_usd, reward.latency_ms, reward.error
                    )
                    self.stats.reward_sum += scalar
                    self.metrics.reward.inc(scalar)
            if self.max_requests is not None and self.stats.decided >= self.max_requests:
                self._stop.set()

    def _observe(self, req: Request, decision: dict[str, Any], now: int) -> None:
        self.stats.decided += 1
        self.stats.fallback += decision.get("fallback", False)
        self.stats.latencies_ms.append(now - req.created_at)
        self.stats.recent_arms.append(decision["arm"])
        arm, task = decision["arm"], req.task_type
        regret = max(0.0, self.sim.record_choice(req, arm, now, decision.get("parameters")))
        self.tasks.record(task, arm, regret, now)
        self.metrics.decisions.labels(task, arm).inc()
        self.metrics.regret.labels(task).inc(regret)
        self.metrics.latency.observe(max(0, now - req.created_at) / 1000)

    async def _publish_metrics(self) -> None:
        """The simulator's figures to the metrics topic, for the dashboard."""
        from app.metrics_snapshot import build_snapshot, process_id

        topic = self.topics.name("metrics")
        source_id = "simulator:" + process_id()
        best = None
        while not self._stop.is_set():
            now = now_ms()
            arm = self.sim.overall_best_arm(now)
            if arm != best:
                if best is not None:
                    self.metrics.best_arm.labels(best).set(0)
                self.metrics.best_arm.labels(arm).set(1)
                best = arm
            snap = build_snapshot(
                self.metrics.registry,
                "simulator",
                source_id,
                now,
                int(METRICS_EVERY_SECONDS * 1000),
            )
            await self.producer.send(topic, snap.dumps(), key=source_id.encode())
            await asyncio.sleep(METRICS_EVERY_SECONDS)

    def summary(self) -> dict[str, Any]:
        s = self.stats
        elapsed = max(1e-9, time.monotonic() - s.started)
        lat = sorted(s.latencies_ms)

        def p(q):
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0

        return {
            "elapsed_s": round(elapsed, 1),
            "sent": s.sent,
            "decided": s.decided,
            "decisions_per_s": round(s.decided / elapsed, 1),
            "latency_p50_ms": p(0.5),
            "latency_p99_ms": p(0.99),
            "avg_reward": round(s.reward_sum / s.rewarded, 4) if s.rewarded else 0.0,
            "true_regret": round(self.sim.regret, 2),
            "mean_regret": round(self.sim.regret / max(1, self.sim.rounds), 4),
            "arm_shares": {a: round(v, 3) for a, v in s.shares().items()},
            "best_arm": self.sim.overall_best_arm(now_ms()),
            "last_minute": self.tasks.recent_overall(now_ms()),
            "tasks": self.task_summary(),
        }

    def task_summary(self) -> dict[str, dict[str, Any]]:
        """Per task type: decisions in total, regret per decision in the last
        minute, and arm shares of its latest decisions."""
        recent = self.tasks.recent(now_ms())
        totals = self.tasks.totals()
        shares = self.tasks.shares()
        return {
            t: {
                "decisions": totals[t]["decisions"],
                "regret_per_decision": recent[t]["regret_per_decision"],
                "shares": {a: round(v, 3) for a, v in shares[t].items()},
            }
            for t in self.tasks.task_types
        }
