"""aggregate_features: feature observations → windowed aggregates, one store
entry per (entity, pane), in a changelog-backed store (the changelog is
``<app id>-feature-windows-changelog``, as the Faust table it replaces).

A :class:`~app.stream.batched_service.BatchedService` (its own consumer group
over the observations topic): a fetched batch is applied to a private
:class:`~app.features.store.FeatureStore` holding this member's partitions,
each pane the batch changed is written once to the store (local RocksDB and
changelog), and the offsets are committed once the broker has acknowledged
those writes. An observation carries its source position, kept in its pane,
so a batch done again after a crash changes nothing twice. Every worker
reads the windows from its own copy of the whole changelog
(``agents/replicate_features.py``), not from this store: a decision needs
the windows of entities other members aggregate.

The observations topic is internal, but anything may be written to it: a
message that is not a JSON array is dead-lettered; an observation that is
not of the shape :mod:`app.features.observations` makes is skipped and
counted, and so is a stored pane that cannot be read back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import faust
from aiokafka import TopicPartition

from app import metrics
from app.features.observations import parse_observations
from app.features.store import FeatureStore, pane_key, parse_pane_key
from app.records import InvalidEvent
from app.stream.batched_service import Batch, BatchedService, start_with_worker
from app.stream.changelog_store import ChangelogStore
from app.stream.cluster_watcher import current_cluster_id, rewind_to_start
from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
AGENT = "aggregate_features"
EXPIRE_EVERY_S = 10.0
# Source position of an observation: offset × this + index in the message
# (messages hold at most a few thousand observations).
POS_PER_MESSAGE = 1_000_000
BATCH_MAX = 2_000
FETCH_WAIT_MS = 50


def changelog_name(app_id: str) -> str:
    """The changelog of the feature windows (a Faust table's name for it)."""
    return f"{app_id}-feature-windows-changelog"


class AggregateFeatures:
    """The :class:`~app.stream.batched_service.StatefulBatchHandler` of the windows."""

    def __init__(self, runtime: Runtime, cluster_id: Callable[[], str | None]) -> None:
        s, t = runtime.settings, runtime.topics
        self.source = t["feature_observations"]
        self.source_name = t.name("feature_observations")
        self.cluster_id = cluster_id
        spec = runtime.feature_spec
        self.windows = FeatureStore.for_spec(spec) if spec is not None else FeatureStore()
        self.store = ChangelogStore(
            s.bootstrap,
            changelog_name(s.app_id),
            s.data_dir / f"{s.app_id}-feature-windows",
            s.embedded_broker,
        )
        self.partition_of: dict[str, int] = {}  # entity → its source partition
        self.lock = asyncio.Lock()
        self.cluster: str | None = None
        self.expired_at = time.monotonic()

    async def start(self, service: BatchedService) -> None:
        await self.store.ensure_topic(self.source.partitions, self.source.replication_factor)

    async def background(self, service: BatchedService) -> None:
        return None

    async def stop(self) -> None:
        self.store.close()

    async def on_assigned(self, service: BatchedService, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            owned = {tp.partition for tp in assigned if tp.topic == self.source_name}
            for p, n in (await self.store.assign(owned)).items():
                log.info("feature-windows[%d]: %d changelog records recovered", p, n)
            await self._rebuild()

    async def on_revoked(self, service: BatchedService, revoked: set[TopicPartition]) -> None:
        return None

    async def between_batches(self, service: BatchedService) -> None:
        if time.monotonic() - self.expired_at < EXPIRE_EVERY_S:
            return
        async with self.lock:
            self.expired_at = time.monotonic()
            gone: dict[int, dict[bytes, bytes | None]] = {}
            for key in self.windows.expire():
                p = self.partition_of.get(parse_pane_key(key)[0])
                if p is not None:
                    gone.setdefault(p, {})[key] = None
            for entity in set(self.partition_of) - set(self.windows.entities()):
                del self.partition_of[entity]
            # Deletes need no acknowledgement before a commit: one lost
            # expires again on the next owner (a pane past retention).
            await self.store.write(service.producer, gone)

    async def _rebuild(self) -> None:
        """The private windows from the store's partitions (a turn of the
        loop at a time: a rebalance callback)."""
        self.windows.clear()
        self.partition_of.clear()
        n = 0
        for p in self.store.partitions:
            async for key, value in self.store.scan(p):
                try:
                    self.windows.load(key, value)
                except Exception as exc:  # e.g. a record written to the changelog by someone else
                    metrics.POISONED_STATE.labels("feature-windows").inc()
                    log.warning("skipped an unreadable feature pane (%s)", type(exc).__name__)
                    continue
                self.partition_of[parse_pane_key(key)[0]] = p
                n += 1
        log.info("feature windows rebuilt from %d panes", n)

    async def _check_cluster(self, service: BatchedService) -> None:
        """A new cluster holds none of the old logs: read the observations
        from the start; the panes are kept (their positions skip nothing new:
        a new log's offsets start again, so they are forgotten)."""
        cluster = self.cluster_id()
        if cluster is None:
            return
        if self.cluster not in (None, cluster):
            await rewind_to_start(service.consumer, AGENT)
            await self.store.ensure_topic(self.source.partitions, self.source.replication_factor)
            self.store.forget_offsets()
            self.windows.forget_positions()
        self.cluster = cluster

    async def handle(self, service: BatchedService, batch: Batch) -> list[asyncio.Future[Any]]:
        async with self.lock:
            await self._check_cluster(service)
            counts: Counter[str] = Counter()
            changed: dict[int, set[tuple[str, int]]] = {}
            futures: list[asyncio.Future[Any]] = []
            for tp, msgs in batch.items():
                if tp.partition not in self.store.partitions:
                    continue  # revoked since the fetch: its new owner does it
                panes = changed.setdefault(tp.partition, set())
                for m in msgs:
                    try:
                        observations, skipped = parse_observations(m.value)
                    except InvalidEvent as exc:
                        futures.append(await service.dead(m, exc))
                        counts["dead_letter"] += 1
                        continue
                    if skipped:
                        counts["invalid"] += skipped
                        log.warning(
                            "skipped %d invalid observation(s) of %s[%s]@%s",
                            skipped,
                            m.topic,
                            m.partition,
                            m.offset,
                        )
                    base = m.offset * POS_PER_MESSAGE
                    for i, entity, obs in observations:
                        try:
                            start = self.windows.observe(entity, obs, base + i)
                        except Exception:  # one observation must not stop the others
                            counts["internal_error"] += 1
                            log.exception(
                                "observation %d of %s[%s]@%s failed",
                                i,
                                m.topic,
                                m.partition,
                                m.offset,
                            )
                            continue
                        if start is None:
                            counts["late_or_redelivered"] += 1
                            continue
                        counts["applied"] += 1
                        panes.add((entity, start))
                        self.partition_of[entity] = tp.partition
            changes = {
                p: {pane_key(e, s): self.windows.pane_value(e, s) for e, s in panes}
                for p, panes in changed.items()
            }
            futures += await self.store.write(service.producer, changes)
            for result in ("applied", "late_or_redelivered", "invalid", "internal_error"):
                metrics.FEATURE_OBSERVATIONS.labels(result).inc(counts[result])
            n = sum(len(msgs) for msgs in batch.values())
            metrics.EVENTS.labels(AGENT, "ok").inc(n - counts["dead_letter"])
            return futures


def register(app: faust.App, runtime: Runtime) -> None:
    start_with_worker(
        app,
        runtime,
        AGENT,
        ("feature_observations",),
        lambda: AggregateFeatures(runtime, lambda: current_cluster_id(app)),
        FETCH_WAIT_MS,
        BATCH_MAX,
    )
