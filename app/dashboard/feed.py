"""Reads the metrics topic (and the drift and alert topics, where they exist)
into a :class:`~app.dashboard.history.MetricsHistory`.

Every reader sees every partition, without a consumer group (a global view,
like the policy-snapshot follower): any worker can serve the dashboard, and
``llmopt monitor`` reads the same way. On start it reads back the last
``backfill`` messages per partition, so a new reader shows history at once.
A message it cannot use is counted and skipped — every reader sees it, so a
dead letter per reader would only multiply it; the publisher is where a bad
snapshot would have to be fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app import metrics
from app.dashboard.history import MetricsHistory
from app.kafka_security import kafka_security
from app.records import InvalidEvent, MetricsSnapshot, decode
from app.stream.kafka_io import assign_from, partitions_of
from app.topics import TopicCatalog

log = logging.getLogger(__name__)
MAX_SNAPSHOT_BYTES = 4 * 1024 * 1024
EVENT_TOPICS = {"drift": "llmopt.drift.", "alerts": "llmopt.alerts."}


def feed_topics(catalog: TopicCatalog) -> dict[str, str]:
    """Topic name → what it feeds (``metrics``, ``drift``, ``alerts``); the
    drift and alert topics only when topics.yaml has them."""
    out = {catalog.name("metrics"): "metrics"}
    for spec in catalog.topics.values():
        for kind, prefix in EVENT_TOPICS.items():
            if spec.name.startswith(prefix):
                out[spec.name] = kind
    return out


class MetricsFeed:
    """Follows the ops topics until cancelled; :meth:`take` is the pure part."""

    def __init__(
        self,
        bootstrap: str,
        catalog: TopicCatalog,
        history: MetricsHistory,
        backfill: int = 600,
        client_id: str = "llmopt-metrics-feed",
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = feed_topics(catalog)
        self.history = history
        self.backfill = backfill
        self.client_id = client_id
        self.assigned: set[str] = set()
        self.ready = asyncio.Event()

    def take(self, kind: str, raw: bytes | None) -> bool:
        """One message into the history; False (and counted) if unusable."""
        try:
            if kind == "metrics":
                self.history.add(MetricsSnapshot.loads(raw, MAX_SNAPSHOT_BYTES))
            else:
                self.history.add_event(kind, decode(raw, MAX_SNAPSHOT_BYTES))
        except InvalidEvent as exc:
            metrics.DASHBOARD_EVENTS.labels(kind, "invalid").inc()
            log.warning("ignoring an unusable %s message: %s", kind, exc)
            return False
        metrics.DASHBOARD_EVENTS.labels(kind, "ok").inc()
        return True

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=200,
            max_partition_fetch_bytes=MAX_SNAPSHOT_BYTES,
            **kafka_security(),
        )
        try:
            await consumer.start()
            await self._assign(consumer)
            checked = time.monotonic()
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, msgs in batch.items():
                    kind = self.topics[tp.topic]
                    for m in msgs:
                        self.take(kind, m.value)
                self.ready.set()
                # The drift and alert topics may be created after this reader started.
                if len(self.assigned) < len(self.topics) and time.monotonic() - checked > 10:
                    checked = time.monotonic()
                    await self._assign(consumer)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        with contextlib.suppress(Exception):
            await consumer._client.force_metadata_update()  # topics created since start
        tps = partitions_of(consumer, *self.topics)
        if not tps:
            return
        new = [tp for tp in tps if tp.topic not in self.assigned]
        if not new:
            return
        ends: dict[TopicPartition, Any] = await consumer.end_offsets(new)
        # assign() replaces the whole assignment: keep the positions already reached.
        kept = {tp: await consumer.position(tp) for tp in consumer.assignment()}
        starts = {tp: kept.get(tp, 0) for tp in tps}
        starts.update({tp: max(0, int(ends.get(tp) or 0) - self.backfill) for tp in new})
        assign_from(consumer, starts)
        self.assigned |= {tp.topic for tp in new}
        missing = set(self.topics) - self.assigned
        if missing:
            log.info("not (yet) on the cluster, will look again: %s", sorted(missing))
