"""select_arm: requests → decisions, from the latest policy snapshots.

The decision hot path does not go through a Faust stream: it is a
:class:`~app.stream.batched_service.BatchedService` (consumer group
``<app_id>-select-arm``) whose batches the pure
:class:`~app.decider.Decider` decides with a few vector operations; the
decisions are sent a partition batch at a time and the batch's offsets
committed once they are acknowledged.

Policy snapshots are read by a second consumer over every partition of the
snapshots topic (a global view on every worker), from offset 0; the decider
never mutates policy state. The same consumer reads the experiments topic
from offset 0: which requests an experiment's variants decide
(app/experiments/live.py).

The same decider decides the requests of POST /decide
(app/stream/decide_endpoint.py) through :meth:`SelectArm.decide_direct`,
reachable as ``runtime.direct_decisions`` once the snapshots are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer

from app import metrics
from app.decider import Decider
from app.experiments.events import EXPERIMENT_MAX_BYTES
from app.ingress import accept_request_message
from app.kafka_security import kafka_security
from app.records import ExperimentEvent, InvalidEvent, PolicySnapshot, Request, now_ms
from app.stream.batched_service import Batch, BatchedService
from app.stream.cluster_watcher import (
    current_cluster_id,
    rewind_restarted_logs,
    rewind_to_start,
)
from app.stream.dead_letter import internal_error
from app.stream.kafka_io import assign_from_start, partitions_of
from app.stream.reply_topics import ReplyTopics
from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
AGENT = "select_arm"
SNAPSHOT_MAX_BYTES = 32 * 1024 * 1024  # a LinUCB state of many arms is tens of MB at most


class SelectArm:
    """The decisions of one batch of requests (a
    :class:`~app.stream.batched_service.BatchHandler`), with the policy
    snapshots followed beside them."""

    def __init__(self, runtime: Runtime, cluster_id: Callable[[], str | None]) -> None:
        self.rt = runtime
        self.cluster_id = cluster_id  # of the cluster last reached
        self._cluster: str | None = None
        self.decider = Decider(
            runtime.policies,
            extractor=runtime.feature_extractor,
            reward_token_secret=runtime.settings.reward_token_secret,
            deadline_ms=runtime.settings.decision_deadline_ms,
        )
        runtime.on_policies_changed.append(self.decider.reconfigure)
        t = runtime.topics
        self.decisions_topic = t.name("decisions")
        self.snapshots_topic = t.name("policy_snapshots")
        self.experiments_topic = t.name("experiments")
        self._latency_phase = 0
        self.reply_topics = ReplyTopics(runtime.settings.bootstrap)
        self.producer: Any = None

    async def start(self, service: BatchedService) -> None:
        s = self.rt.settings
        self.snapshots = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            client_id=f"{s.app_id}-snapshot-follower",
            enable_auto_commit=False,
            # A position the log no longer has (a broker that lost it) goes
            # back to its start, never to its end: no snapshot is skipped.
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            **kafka_security(s),
        )
        await self.reply_topics.start()
        await service.partition_count(self.decisions_topic)
        await self.snapshots.start()
        tps = partitions_of(self.snapshots, self.snapshots_topic)
        if not tps:
            await self.snapshots.stop()
            raise RuntimeError(
                f"topic {self.snapshots_topic} is missing: run `llmopt topics apply`"
            )
        # Experiments beside the snapshots (none while the topic is missing).
        tps += partitions_of(self.snapshots, self.experiments_topic)
        assign_from_start(self.snapshots, tps)
        await self._catch_up_snapshots()
        self.producer = service.producer
        self.rt.direct_decisions = self

    async def stop(self) -> None:
        self.rt.direct_decisions = None
        with contextlib.suppress(Exception):
            await self.snapshots.stop()
        with contextlib.suppress(Exception):
            await self.reply_topics.stop()

    # -- snapshots -----------------------------------------------------------
    async def _catch_up_snapshots(self) -> None:
        """Read the snapshots there are before deciding anything, so a
        restarted worker does not decide from priors."""
        while True:
            batch = await self.snapshots.getmany(timeout_ms=300)
            if not batch:
                return
            self._apply_snapshots(batch, live=False)

    def _apply_snapshots(self, batch: Batch, live: bool = True) -> None:
        """``live``: snapshots as they come (not the catch-up at start),
        whose reward→decision lag is measured."""
        for tp, msgs in batch.items():
            if tp.topic == self.experiments_topic:
                self._apply_experiments(msgs)
                continue
            for m in msgs:
                try:
                    snap = PolicySnapshot.loads(m.value, SNAPSHOT_MAX_BYTES)
                    if snap.shard is None and self.decider.is_newer(snap):
                        # A served registry version brings its configuration
                        # to every worker (app/versions.py) before its state.
                        self.rt.follow_serving(snap.policy_id, snap.serving)
                    applied = self.decider.apply_snapshot(snap)
                except Exception as exc:  # a poisoned snapshot is skipped, never fatal
                    metrics.POISONED_STATE.labels("policy-snapshots").inc()
                    log.warning(
                        "ignoring unreadable snapshot at %s:%s: %s",
                        m.partition,
                        m.offset,
                        str(exc)[:200],
                    )
                    continue
                if applied:
                    metrics.POLICY_VERSION.labels(snap.policy_id).set(snap.version)
                    if live:  # not on the catch-up: ~2 ms a snapshot
                        front = self.decider.front(snap.policy_id)
                        metrics.set_tradeoff_front(snap.policy_id, front)
                    if live and snap.oldest_reward_at is not None:
                        lag = max(0, now_ms() - snap.oldest_reward_at) / 1000
                        metrics.LEARNING_LAG_SECONDS.observe(lag)

    def _apply_experiments(self, msgs: list[Any]) -> None:
        for m in msgs:
            try:
                ev = ExperimentEvent.loads(m.value, EXPERIMENT_MAX_BYTES)
            except InvalidEvent as exc:  # never fatal: the experiment is not run
                metrics.POISONED_STATE.labels("experiments").inc()
                log.warning("ignoring unreadable experiment event at offset %s: %s", m.offset, exc)
                continue
            exp = self.decider.experiments.apply(ev)
            if exp is not None:
                routing = (
                    exp.routes and self.decider.experiments.routing(exp.definition.policy) is exp
                )
                for variant, share in exp.shares.items():
                    shown = share if routing else 0.0
                    metrics.EXPERIMENT_SHARE.labels(exp.experiment_id, variant).set(shown)

    async def background(self, service: BatchedService) -> None:
        """Follow the snapshots."""
        while not service.should_stop:
            batch = await self.snapshots.getmany(timeout_ms=200)
            cluster = self.cluster_id()
            if cluster is not None and self._cluster not in (None, cluster):
                await rewind_to_start(self.snapshots, "snapshot_follower")
            else:
                await rewind_restarted_logs(self.snapshots, "snapshot_follower")
            self._cluster = cluster or self._cluster
            self._apply_snapshots(batch)

    # -- decisions -----------------------------------------------------------
    async def handle(self, service: BatchedService, batch: Batch) -> list[asyncio.Future[Any]]:
        started = time.perf_counter()
        send = service.producer.send
        requests: list[Request] = []
        sources: list[Any] = []
        futures: list[asyncio.Future[Any]] = []
        for msgs in batch.values():
            for m in msgs:
                try:
                    requests.append(accept_request_message(m, self.rt.settings))
                    sources.append(m)
                except InvalidEvent as exc:
                    futures.append(await service.dead(m, exc))
                except Exception as exc:  # one message never stops the decisions
                    futures.append(await service.dead(m, internal_error(exc, AGENT)))
        now = now_ms()
        tally: Tally[tuple[str, str]] = Tally()
        fallbacks: Tally[tuple[str, str]] = Tally()
        decided = self._decide_all(requests, now)
        keys: list[bytes] = []
        values: list[bytes] = []
        for req, m, out in zip(requests, sources, decided, strict=True):
            if isinstance(out, InvalidEvent):
                futures.append(await service.dead(m, out))
                continue
            value = orjson.dumps(out)
            key = req.request_id.encode()
            keys.append(key)
            values.append(value)
            if req.reply_to:
                if await self.reply_topics.exists(req.reply_to):
                    futures.append(await send(req.reply_to, value, key=key))
                else:
                    metrics.REPLIES_DROPPED.labels("missing_topic").inc()
            tally[(out["policy_id"], out["arm"])] += 1
            if out["fallback"]:
                fallbacks[(out["policy_id"], out.get("fallback_reason", "other"))] += 1
        futures += await service.send_batches(self.decisions_topic, keys, values, now)
        self._count(tally, fallbacks, AGENT)
        metrics.DECIDE_BATCH_SIZE.observe(len(requests))
        self._observe_latency(requests, now)
        metrics.DECIDE_BATCH_SECONDS.observe(time.perf_counter() - started)
        return futures

    async def decide_direct(
        self, requests: list[Request], agent: str
    ) -> tuple[list[Any], list[asyncio.Future[Any] | None]]:
        """Requests that did not come through the requests topic (accepted
        already), decided as a batch of it is: the same decider, each
        decision to the decisions topic keyed by its request id, counted
        under ``agent``; not to ``reply_to`` (the caller has the answer).
        Per request, in order: its decision or error, and its send's future
        (None for an error)."""
        now = now_ms()
        decided = self._decide_all(requests, now)
        tally: Tally[tuple[str, str]] = Tally()
        fallbacks: Tally[tuple[str, str]] = Tally()
        futures: list[asyncio.Future[Any] | None] = []
        send = self.producer.send
        for req, out in zip(requests, decided, strict=True):
            if isinstance(out, InvalidEvent):
                futures.append(None)
                continue
            key = req.request_id.encode()
            futures.append(
                await send(self.decisions_topic, orjson.dumps(out), key=key, timestamp_ms=now)
            )
            tally[(out["policy_id"], out["arm"])] += 1
            if out["fallback"]:
                fallbacks[(out["policy_id"], out.get("fallback_reason", "other"))] += 1
        self._count(tally, fallbacks, agent)
        self._observe_latency(requests, now)
        return decided, futures

    @staticmethod
    def _count(
        tally: Tally[tuple[str, str]], fallbacks: Tally[tuple[str, str]], agent: str
    ) -> None:
        """Decisions by (policy, arm), and the fallbacks among them by (policy, reason)."""
        for (pid, arm), n in tally.items():
            metrics.DECISIONS.labels(pid, arm).inc(n)
        for (pid, reason), n in fallbacks.items():
            metrics.DECISIONS_FALLBACK.labels(pid, reason).inc(n)
        metrics.EVENTS.labels(agent, "ok").inc(sum(tally.values()))

    def _decide_all(self, requests: list[Request], now: int) -> list[Any]:
        """The batch in one pass; if that fails, each request alone, so a
        request that breaks the decider is dead-lettered and only it."""
        try:
            return self.decider.decide(requests, now)
        except Exception:
            log.exception("a batch failed; deciding its %d requests one by one", len(requests))
        out: list[Any] = []
        for req in requests:
            try:
                out.extend(self.decider.decide([req], now))
            except Exception as exc:
                out.append(internal_error(exc, AGENT))
        return out

    def _observe_latency(self, requests: list[Request], now: int) -> None:
        """Request creation → decision for one request in every
        DECISION_LATENCY_SAMPLE_EVERY, counted across batches."""
        every = metrics.DECISION_LATENCY_SAMPLE_EVERY
        observe = metrics.DECISION_LATENCY_SECONDS.observe
        for req in requests[self._latency_phase :: every]:
            observe(max(0, now - req.created_at) / 1000)
        self._latency_phase = (self._latency_phase - len(requests)) % every


def register(app: faust.App, runtime: Runtime) -> None:
    s, t = runtime.settings, runtime.topics

    # Started with the app, not once Faust's own group has its partitions:
    # the decider needs neither Faust's tables nor its group, so a restarted
    # worker decides again while Faust's group is still joining.
    app.add_dependency(
        BatchedService(
            s,
            AGENT,
            source=t.name("requests"),
            source_role="requests",
            dead_letter_topic=t.name("dead_letter"),
            handler=SelectArm(runtime, lambda: current_cluster_id(app)),
            fetch_wait_ms=s.decide_fetch_wait,
            batch_max=s.decide_batch_max,
            on_fetch=runtime.holding(AGENT),
            loop=app.loop,
        )
    )
