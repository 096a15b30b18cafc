"""Consume → process → produce a batch at a time, outside Faust's streams.

A Faust agent spends more per event on its own bookkeeping (event objects,
acks, per-event sends) than a vectorised step costs, which caps it at a
fraction of what the broker can move. :class:`BatchedService` has its own
aiokafka consumer in a group of its own, fetches batches, hands each to a
:class:`BatchHandler`, which enqueues its sends without awaiting each one,
and commits the batch's offsets once those sends are acknowledged
(at-least-once). When the broker refuses a send, nothing more is committed:
the consumer goes back to the committed offsets and the batches since are
done again (their records may go out twice; none is lost). It runs inside
the Faust worker as a service, so it starts, stops and scales out with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from mode import Service

from app import faults, metrics
from app.kafka_security import kafka_security
from app.records import InvalidEvent
from app.settings import Settings
from app.stream.cluster_watcher import rewind_restarted_logs
from app.stream.dead_letter import dead_letter, dead_letter_key
from app.stream.partitioning import partitions_for

if TYPE_CHECKING:
    from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
Batch = dict[TopicPartition, list[Any]]
# How long a stopping service waits for the batch in hand and its commit.
STOP_SETTLE_S = 15.0
# Within a batch, the other services of the worker get a turn this often:
# when several are busy, a decision waits for a slice of each. At saturation
# the loop's stalls had a p99 of ~230 ms with 50 ms slices, ~90 ms with 10 ms,
# at the same throughput (docs/benchmarks.md).
TURN_EVERY_S = 0.01


class LoopTurns:
    """Within a batch, a turn of the event loop at most every ``every_s`` of
    work: a worker's services share one loop (the deciders, every group's
    heartbeats), and a batch of 4,000 records takes the join ~100 ms.

    >>> turns = LoopTurns(0.0)
    >>> turns.due()
    True
    """

    __slots__ = ("_next", "every_s")

    def __init__(self, every_s: float = TURN_EVERY_S) -> None:
        self.every_s = every_s
        self._next = time.perf_counter() + every_s

    def due(self) -> bool:
        return time.perf_counter() >= self._next

    async def take(self) -> None:
        """Let the loop run what is ready, then count ``every_s`` again."""
        await asyncio.sleep(0)
        self._next = time.perf_counter() + self.every_s


def group_id(app_id: str, name: str) -> str:
    """The consumer group (and client id) of the service called ``name``."""
    return f"{app_id}-{name.replace('_', '-')}"


class BatchHandler(Protocol):
    """What a :class:`BatchedService` does with its batches."""

    async def start(self, service: BatchedService) -> None:
        """Before the first fetch; the service's producer is started."""

    async def background(self, service: BatchedService) -> None:
        """Runs beside the batches until the service stops (may return at once)."""

    async def handle(self, service: BatchedService, batch: Batch) -> list[asyncio.Future[Any]]:
        """Process one fetched batch; the futures of every send made for it
        (its offsets are committed once all are done). A handler that leaves
        a partition's last records for later drops them from ``batch[tp]``
        and seeks the consumer back to the first of them: only the records
        left in ``batch`` are committed."""
        ...

    async def stop(self) -> None:
        """After the consumer stopped, before the producer does."""


class StatefulBatchHandler(BatchHandler, Protocol):
    """A handler with state per source partition: told of rebalances
    (aiokafka runs these in its own task, possibly while a batch is being
    handled: the handler serialises them itself), and called between
    batches for work of its own that must not overlap one."""

    async def on_assigned(self, service: BatchedService, assigned: set[TopicPartition]) -> None:
        """Before any record of ``assigned`` is fetched."""

    async def on_revoked(self, service: BatchedService, revoked: set[TopicPartition]) -> None:
        """Before ``revoked`` go to another member."""

    async def between_batches(self, service: BatchedService) -> None:
        """After every fetch (at least every 100 ms), once its batch is handled."""


class _Rebalances(ConsumerRebalanceListener):
    """Passes rebalances to a stateful handler, and counts the partitions
    held once the handler has made them ready (``llmopt_assigned_partitions``)."""

    def __init__(self, service: BatchedService, handler: BatchHandler) -> None:
        self.service = service
        stateful = hasattr(handler, "on_assigned")
        self.handler: StatefulBatchHandler | None = handler if stateful else None  # type: ignore[assignment]
        self.held: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.held -= set(revoked)
        self._count()
        if self.handler is not None:
            await self.handler.on_revoked(self.service, set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.handler is not None:
            await self.handler.on_assigned(self.service, set(assigned))
        self.held |= set(assigned)
        self._count()

    def _count(self) -> None:
        roles = self.service.source_roles
        counts = dict.fromkeys(roles.values(), 0)
        for tp in self.held:
            counts[roles[tp.topic]] += 1
        metrics.set_per_topic(metrics.ASSIGNED_PARTITIONS, self.service.name, counts)


class BatchedService(Service):
    """``name``: the consumer group is ``<app_id>-<name>``, and the agent
    label of the metrics; ``source``: one topic or several (co-partitioned
    ones: the default range assignor gives each member the same partition
    numbers of each); ``source_role``: the role of each in topics.yaml
    (one name, or topic → role), the label of its consumer lag."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        source: str | tuple[str, ...],
        source_role: str | dict[str, str],
        dead_letter_topic: str,
        handler: BatchHandler | StatefulBatchHandler,
        fetch_wait_ms: int,
        batch_max: int,
        on_fetch: Callable[[bool], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings, self.name = settings, name
        self.sources = (source,) if isinstance(source, str) else source
        self.source_roles = (
            source_role
            if isinstance(source_role, dict)
            else dict.fromkeys(self.sources, source_role)
        )
        self.dead_letter_topic = dead_letter_topic
        self.handler, self.fetch_wait_ms, self.batch_max = handler, fetch_wait_ms, batch_max
        # Called with whether the consumer holds partitions, after every fetch.
        self.on_fetch = on_fetch
        self._pending_commits: asyncio.Queue[tuple[asyncio.Future[Any], dict[TopicPartition, int]]]
        self._pending_commits = asyncio.Queue(maxsize=64)
        # Batches handed to the commit task and not settled yet, and the
        # refused send that stops commits until the consumer has gone back.
        self._unsettled = 0
        self._refused: BaseException | None = None
        self._lag: dict[TopicPartition, int] = {}
        self._partitions: dict[str, int] = {}
        self._between = getattr(handler, "between_batches", None)
        # Held while a fetched batch is handled (and the work between
        # batches done): a stop waits for it before closing what it writes to.
        self._working = asyncio.Lock()

    async def on_start(self) -> None:
        s = self.settings
        profile = s.broker_profile()
        client_id = group_id(s.app_id, self.name)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap,
            client_id=client_id,
            linger_ms=s.producer_linger_ms,
            max_batch_size=512 * 1024,
            acks=1,
            **kafka_security(s),
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            group_id=client_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_wait_ms,
            max_poll_records=self.batch_max,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=int(profile["session_timeout"] * 1000),
            heartbeat_interval_ms=int(profile["heartbeat_interval"] * 1000),
            rebalance_timeout_ms=int(profile["rebalance_timeout"] * 1000),
            **kafka_security(s),
        )
        await self.producer.start()
        await self.handler.start(self)
        await self.consumer.start()
        self.consumer.subscribe(list(self.sources), listener=_Rebalances(self, self.handler))

    async def on_stop(self) -> None:
        # The batch in hand is finished and its commit settled before the
        # consumer, the handler's stores and the producer close: a store
        # closed under a batch would skip its writes while the batch's
        # other sends succeed, and its commit would pass over them.
        try:
            await asyncio.wait_for(self._settle(), STOP_SETTLE_S)
        except TimeoutError:
            log.warning("%s: stopped with a batch unsettled; it is redone", self.name)
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        with contextlib.suppress(Exception):
            await self.handler.stop()
        with contextlib.suppress(Exception):
            await self.producer.stop()

    async def _settle(self) -> None:
        async with self._working:  # the loop sees should_stop and takes no other
            pass
        while self._unsettled:
            await asyncio.sleep(0.01)

    async def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has (asked once)."""
        if topic not in self._partitions:
            self._partitions[topic] = len(await self.producer.partitions_for(topic))
        return self._partitions[topic]

    @Service.task
    async def _background(self) -> None:
        await self.handler.background(self)

    @Service.task
    async def _consume(self) -> None:
        limit = self.batch_max
        while not self.should_stop:
            if self._refused is not None:
                await self._go_back()
            batch = await self.consumer.getmany(timeout_ms=100, max_records=limit)
            async with self._working:
                if self.should_stop:
                    break  # a batch fetched while stopping is not committed: read again
                if self.on_fetch is not None:
                    self.on_fetch(bool(self.consumer.assignment()))
                await rewind_restarted_logs(self.consumer, self.name)
                if batch:
                    await self._process(batch)
                if self._between is not None:
                    await self._between(self)

    async def _process(self, batch: Batch) -> None:
        started = time.perf_counter()
        futures = await self.handler.handle(self, batch)
        # After handle: it may have left a partition's last records for later.
        offsets = {tp: msgs[-1].offset + 1 for tp, msgs in batch.items() if msgs}
        if faults.ACTIVE is not None:  # chaos checks: killed or slowed before the commit
            await faults.ACTIVE.after_batch(self.name)
        metrics.AGENT_PROCESSING_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        self._unsettled += 1
        await self._pending_commits.put((asyncio.gather(*futures), offsets))

    async def _go_back(self) -> None:
        """After a refused send: once every batch handed over is settled
        (none of them committed), read again from the committed offsets."""
        while self._unsettled:
            await asyncio.sleep(0.01)
        for tp in self.consumer.assignment():
            committed = await self.consumer.committed(tp)
            self.consumer.seek(tp, committed if committed is not None else 0)
        metrics.EVENTS.labels(self.name, "batches_redone").inc()
        log.warning(
            "%s: a send was refused (%s); reading again from the committed offsets",
            self.name,
            self._refused,
        )
        self._refused = None

    async def send_batches(
        self, topic: str, keys: list[bytes], values: list[bytes], ts: int
    ) -> list[asyncio.Future[Any]]:
        """One BatchBuilder per partition, one future per batch: producer.send()
        costs a future, a gather callback and a pure-Python murmur2 per record.
        Partitions are Kafka's default (murmur2 of the key), as send() picks;
        ``topic``'s partition count must be known (:meth:`partition_count`)."""
        producer = self.producer
        futures: list[asyncio.Future[Any]] = []
        builders: dict[int, Any] = {}
        for key, value, p in zip(
            keys, values, partitions_for(keys, self._partitions[topic]), strict=True
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

    async def dead(self, m: Any, exc: InvalidEvent) -> asyncio.Future[Any]:
        """Send a dead letter for the consumed record ``m``; its future."""
        metrics.DEAD_LETTERS.labels(self.name, exc.code).inc()
        metrics.EVENTS.labels(self.name, "dead_letter").inc()
        doc = dead_letter(m.topic, m.partition, m.offset, m.key, m.value, exc)
        return await self.producer.send(self.dead_letter_topic, doc, key=dead_letter_key(m.key))

    @Service.task
    async def _commit(self) -> None:
        """Commit each batch's offsets once all its sends are acknowledged
        (while stopping too, until the batches handed over are settled)."""
        while not self.should_stop or self._unsettled:
            ready = [await self._pending_commits.get()]
            while not self._pending_commits.empty():
                ready.append(self._pending_commits.get_nowait())
            latest: dict[TopicPartition, int] = {}
            for done, offsets in ready:
                try:
                    await done
                except Exception as exc:
                    if self._refused is None:
                        self._refused = exc
                finally:
                    self._unsettled -= 1
                if self._refused is None:
                    latest.update(offsets)
            if not latest:
                continue
            try:
                await self.consumer.commit(latest)
            except Exception as exc:  # a rebalance took the partitions: their new owner redoes them
                log.warning("offset commit failed (will be redone by the new owner): %s", exc)
            self._record_lag(latest)

    def _record_lag(self, committed: dict[TopicPartition, int]) -> None:
        assigned = self.consumer.assignment()
        for tp, offset in committed.items():
            if tp not in assigned:  # a rebalance took it since the batch (aiokafka asserts)
                continue
            high = self.consumer.highwater(tp)
            if high is not None:
                self._lag[tp] = high - offset
        lag = dict.fromkeys(self.source_roles.values(), 0)
        for tp, v in self._lag.items():
            if tp in assigned:
                lag[self.source_roles[tp.topic]] += v
        metrics.set_consumer_lag(self.name, lag)


def start_with_worker(
    app: Any,
    runtime: Runtime,
    name: str,
    roles: tuple[str, ...],
    handler: Callable[[], BatchHandler | StatefulBatchHandler],
    fetch_wait_ms: int,
    batch_max: int,
) -> None:
    """Run the batched service ``name`` over the topics of ``roles`` (their
    topics.yaml roles), started once Faust's worker has started and stopped
    with it: a Faust task (one per name) that adds the service as a runtime
    dependency. ``handler`` is made then, in the worker's loop."""
    t = runtime.topics
    sources = {t.name(role): role for role in roles}

    async def start() -> None:
        service = BatchedService(
            runtime.settings,
            name,
            source=tuple(sources),
            source_role=sources,
            dead_letter_topic=t.name("dead_letter"),
            handler=handler(),
            fetch_wait_ms=fetch_wait_ms,
            batch_max=batch_max,
            on_fetch=runtime.holding(name),
            loop=app.loop,
        )
        await app.add_runtime_dependency(service)

    start.__name__ = start.__qualname__ = f"start_{name}"
    app.task(start)
