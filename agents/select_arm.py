"""select_arm: requests → decisions, from the latest policy snapshots.

The decision hot path does not go through a Faust stream: a Faust agent
spends more per event on its own bookkeeping (event objects, acks, per-event
sends) than the whole decision costs, which caps it at a fraction of what the
broker can move. Here one aiokafka consumer fetches batches, the pure
:class:`~app.decider.Decider` decides a whole batch with a few vector
operations, the decisions are enqueued without awaiting each send, and the
batch's offsets are committed once its sends are acknowledged
(at-least-once). It runs inside the Faust worker as a service, so it starts,
stops and scales out with it; its consumer group is ``<app_id>-select-arm``.

Policy snapshots are read by a second consumer over every partition of the
snapshots topic (a global view on every worker); the decider never mutates
policy state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from mode import Service

from agents.watch_cluster import rewind_restarted_logs
from app import metrics
from app.dead_letter import dead_letter, dead_letter_key, internal_error
from app.decider import Decider
from app.faust_app import Runtime
from app.ingress import accept_request_message
from app.partitioning import partitions_for
from app.records import InvalidEvent, PolicySnapshot, Request, now_ms

log = logging.getLogger(__name__)
AGENT = "select_arm"
SNAPSHOT_MAX_BYTES = 32 * 1024 * 1024  # a LinUCB state of many arms is tens of MB at most


class SelectArm(Service):
    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rt = runtime
        self.decider = Decider(
            runtime.policies,
            extractor=runtime.feature_extractor,
            reward_token_secret=runtime.settings.reward_token_secret,
        )
        runtime.on_policies_changed.append(self.decider.reconfigure)
        t = runtime.topics
        self.requests_topic = t.name("requests")
        self.decisions_topic = t.name("decisions")
        self.snapshots_topic = t.name("policy_snapshots")
        self.dead_letter_topic = t.name("dead_letter")
        self._pending_commits: asyncio.Queue[tuple[asyncio.Future[Any], dict[TopicPartition, int]]]
        self._pending_commits = asyncio.Queue(maxsize=64)
        self._lag: dict[TopicPartition, int] = {}
        self._latency_phase = 0
        self.reply_topics = ReplyTopics(runtime.settings.bootstrap)

    async def on_start(self) -> None:
        s = self.rt.settings
        profile = s.broker_profile()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap,
            client_id=f"{s.app_id}-select-arm",
            linger_ms=s.producer_linger_ms,
            max_batch_size=512 * 1024,
            acks=1,
        )
        self.consumer = AIOKafkaConsumer(
            self.requests_topic,
            bootstrap_servers=s.bootstrap,
            group_id=f"{s.app_id}-select-arm",
            client_id=f"{s.app_id}-select-arm",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=s.decide_fetch_wait,
            max_poll_records=s.decide_batch_max,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=int(profile["session_timeout"] * 1000),
            heartbeat_interval_ms=int(profile["heartbeat_interval"] * 1000),
            rebalance_timeout_ms=int(profile["rebalance_timeout"] * 1000),
        )
        self.snapshots = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            client_id=f"{s.app_id}-snapshot-follower",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        await self.producer.start()
        await self.reply_topics.start()
        self._decision_partitions = len(await self.producer.partitions_for(self.decisions_topic))
        await self.snapshots.start()
        parts = self.snapshots.partitions_for_topic(self.snapshots_topic)
        if not parts:
            await self.snapshots.stop()
            raise RuntimeError(
                f"topic {self.snapshots_topic} is missing: run `llmopt topics apply`"
            )
        tps = [TopicPartition(self.snapshots_topic, p) for p in sorted(parts)]
        self.snapshots.assign(tps)
        for tp in tps:  # from offset 0: the embedded broker's EARLIEST lookup is unreliable
            self.snapshots.seek(tp, 0)
        await self._catch_up_snapshots()
        await self.consumer.start()

    async def on_stop(self) -> None:
        for client in (self.consumer, self.snapshots):
            with contextlib.suppress(Exception):
                await client.stop()
        with contextlib.suppress(Exception):
            await self.producer.stop()
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
            self._apply_snapshots(batch)

    def _apply_snapshots(self, batch: dict[TopicPartition, list[Any]]) -> None:
        for msgs in batch.values():
            for m in msgs:
                try:
                    snap = PolicySnapshot.loads(m.value, SNAPSHOT_MAX_BYTES)
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

    @Service.task
    async def _follow_snapshots(self) -> None:
        while not self.should_stop:
            batch = await self.snapshots.getmany(timeout_ms=200)
            await rewind_restarted_logs(self.snapshots, "snapshot_follower")
            self._apply_snapshots(batch)

    # -- decisions -----------------------------------------------------------
    @Service.task
    async def _decide(self) -> None:
        limit = self.rt.settings.decide_batch_max
        while not self.should_stop:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=limit)
            self.rt.decide_ready = bool(self.consumer.assignment())
            await rewind_restarted_logs(self.consumer, AGENT)
            if batch:
                await self._decide_batch(batch)

    async def _decide_batch(self, batch: dict[TopicPartition, list[Any]]) -> None:
        started = time.perf_counter()
        send = self.producer.send
        requests: list[Request] = []
        sources: list[Any] = []
        futures: list[asyncio.Future[Any]] = []
        offsets: dict[TopicPartition, int] = {}
        for tp, msgs in batch.items():
            offsets[tp] = msgs[-1].offset + 1
            for m in msgs:
                try:
                    requests.append(accept_request_message(m, self.rt.settings))
                    sources.append(m)
                except InvalidEvent as exc:
                    futures.append(await self._dead(m, exc))
                except Exception as exc:  # one message never stops the decisions
                    futures.append(await self._dead(m, internal_error(exc, AGENT)))
        now = now_ms()
        tally: Tally[tuple[str, str]] = Tally()
        decided = self._decide_all(requests, now)
        keys: list[bytes] = []
        values: list[bytes] = []
        for req, m, out in zip(requests, sources, decided, strict=True):
            if isinstance(out, InvalidEvent):
                futures.append(await self._dead(m, out))
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
        futures += await self._send_decisions(keys, values, now)
        for (pid, arm), n in tally.items():
            metrics.DECISIONS.labels(pid, arm).inc(n)
        metrics.EVENTS.labels(AGENT, "ok").inc(sum(tally.values()))
        metrics.DECIDE_BATCH_SIZE.observe(len(requests))
        self._observe_latency(requests, now)
        elapsed = time.perf_counter() - started
        metrics.DECIDE_BATCH_SECONDS.observe(elapsed)
        metrics.AGENT_PROCESSING_SECONDS.labels(AGENT).observe(elapsed)
        await self._pending_commits.put((asyncio.gather(*futures), offsets))

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

    async def _send_decisions(
        self, keys: list[bytes], values: list[bytes], ts: int
    ) -> list[asyncio.Future[Any]]:
        """One BatchBuilder per partition, one future per batch: producer.send()
        costs a future, a gather callback and a pure-Python murmur2 per record.
        Partitions are Kafka's default (murmur2 of the key), as send() picks."""
        topic, producer = self.decisions_topic, self.producer
        futures: list[asyncio.Future[Any]] = []
        builders: dict[int, Any] = {}
        for key, value, p in zip(
            keys, values, partitions_for(keys, self._decision_partitions), strict=True
        ):
            b = builders.get(p)
            if b is None:
                b = builders[p] = producer.create_batch()
            if b.append(key=key, value=value, timestamp=ts) is None:  # full
                futures.append(await producer.send_batch(b, topic, partition=p))
                b = builders[p] = producer.create_batch()
                b.append(key=key, value=value, timestamp=ts)
        for p, b in builders.items():
            futures.append(await producer.send_batch(b, topic, partition=p))
        return futures

    @Service.task
    async def _commit(self) -> None:
        """Commit each batch's offsets once all its sends are acknowledged."""
        while not self.should_stop:
            done, offsets = await self._pending_commits.get()
            await done
            latest = dict(offsets)
            while not self._pending_commits.empty():
                done, offsets = self._pending_commits.get_nowait()
                await done
                latest.update(offsets)
            try:
                await self.consumer.commit(latest)
            except Exception as exc:  # a rebalance took the partitions: their new owner redoes them
                log.warning("offset commit failed (will be redone by the new owner): %s", exc)
            self._record_lag(latest)

    def _record_lag(self, committed: dict[TopicPartition, int]) -> None:
        assigned = self.consumer.assignment()
        for tp, offset in committed.items():
            high = self.consumer.highwater(tp)
            if high is not None:
                self._lag[tp] = high - offset
        lag = sum(v for tp, v in self._lag.items() if tp in assigned)
        metrics.set_consumer_lag(AGENT, {"requests": lag})

    async def _dead(self, m: Any, exc: InvalidEvent) -> asyncio.Future[Any]:
        metrics.DEAD_LETTERS.labels(AGENT, exc.code).inc()
        metrics.EVENTS.labels(AGENT, "dead_letter").inc()
        doc = dead_letter(m.topic, m.partition, m.offset, m.key, m.value, exc)
        return await self.producer.send(self.dead_letter_topic, doc, key=dead_letter_key(m.key))


class ReplyTopics:
    """Which reply topics exist. Producing to a missing topic would create it
    on a cluster that auto-creates topics, so replies go only to topics that
    are listed; the list is re-read at most every REFRESH_S on a miss."""

    REFRESH_S = 2.0

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.known: set[str] = set()
        self._read_at = -self.REFRESH_S

    async def start(self) -> None:
        self.admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id="llmopt-replies"
        )
        await self.admin.start()

    async def stop(self) -> None:
        await self.admin.close()

    async def exists(self, topic: str) -> bool:
        if topic in self.known:
            return True
        if time.monotonic() - self._read_at >= self.REFRESH_S:
            self._read_at = time.monotonic()
            try:
                self.known = set(await self.admin.list_topics())
            except Exception as exc:
                log.warning("could not list topics for replies: %s", exc)
        return topic in self.known


def register(app: faust.App, runtime: Runtime) -> None:
    @app.task
    async def start_select_arm() -> None:
        await app.add_runtime_dependency(SelectArm(runtime, loop=app.loop))
