"""A read-only copy of a whole changelog on every worker (as a Kafka Streams
global table): every partition is followed with a group-less consumer, kept
in local RocksDB databases (a :class:`ChangelogStore`, so a restart reads
only the changelog's tail) and handed record by record to an in-memory view.

The windowed features need it: a decision reads the windows of its tenant
and its task type, which another worker's partitions may aggregate (the
observations are keyed by entity, the decisions by request), so every
worker that decides holds every window.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from app.kafka_security import kafka_security
from app.settings import Settings
from app.stream.changelog_store import ChangelogStore
from app.stream.cluster_watcher import rewind_restarted_logs

log = logging.getLogger(__name__)
# key, value (None: deleted)
Apply = Callable[[bytes, bytes | None], None]


class ChangelogReplica(Service):
    """Follows ``changelog`` (``partitions`` of it, created compacted if the
    cluster lacks it). ``load(items)`` gets the whole recovered state once
    at the start (and again after a new cluster); ``apply(key, value)`` gets
    each later record; ``on_lag(records)`` how far behind the copy is.
    ``caught_up`` is set once the copy holds the changelog up to where it
    ended at the start."""

    def __init__(
        self,
        settings: Settings,
        changelog: str,
        partitions: int,
        replication_factor: int,
        directory: Path,
        load: Callable[[Iterator[tuple[bytes, bytes]]], None],
        apply: Apply,
        on_lag: Callable[[int], None] = lambda n: None,
        cluster_id: Callable[[], str | None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings, self.changelog = settings, changelog
        self.partition_count, self.replication_factor = partitions, replication_factor
        self.store = ChangelogStore(
            settings.bootstrap, changelog, directory, settings.embedded_broker
        )
        self.load, self.apply, self.on_lag, self.cluster_id = load, apply, on_lag, cluster_id
        self.caught_up = False
        self.temporary = False  # a directory of this process's own, deleted at the stop
        self.cluster: str | None = None
        self.consumer: AIOKafkaConsumer | None = None

    def _items(self) -> Iterator[tuple[bytes, bytes]]:
        for p in sorted(self.store.partitions):
            yield from self.store.items(p)

    @Service.task
    async def _follow(self) -> None:
        await self.store.ensure_topic(self.partition_count, self.replication_factor)
        everything = set(range(self.partition_count))
        try:
            recovered = await self.store.assign(everything)
        except Exception as exc:  # RocksDB's lock: another worker shares this data directory
            self.store.close()
            directory = self.store.directory.with_name(f"{self.store.directory.name}-{os.getpid()}")
            log.warning(
                "%s: local copy in use (%s); this worker keeps its own in %s",
                self.changelog,
                exc,
                directory,
            )
            self.store.directory, self.temporary = directory, True
            recovered = await self.store.assign(everything)
        self.load(self._items())
        self.caught_up = True
        log.info(
            "%s: local copy caught up (%d records read)", self.changelog, sum(recovered.values())
        )
        s = self.settings
        self.consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            client_id=f"{self.changelog}-replica",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=1 << 20,
            **kafka_security(s),
        )
        await consumer.start()
        tps = [TopicPartition(self.changelog, p) for p in range(self.partition_count)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, self.store.offset(tp.partition))
        while not self.should_stop:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            await self._check_cluster(consumer)
            await rewind_restarted_logs(consumer, self.changelog)
            for tp, records in batch.items():
                self.store.apply(tp.partition, records)
                for m in records:
                    if m.key is not None:
                        self.apply(m.key, m.value)
            self.on_lag(self._lag(consumer, tps))

    def _lag(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
        lag = 0
        for tp in tps:
            high = consumer.highwater(tp)
            if high is not None:
                lag += max(0, high - self.store.offset(tp.partition))
        return lag

    async def _check_cluster(self, consumer: AIOKafkaConsumer) -> None:
        """A new cluster holds none of the old logs: the local copy is kept
        (its owners write every key they change again) and the new logs are
        read from their beginning."""
        cluster = self.cluster_id()
        if cluster is None:
            return
        if self.cluster not in (None, cluster):
            await self.store.ensure_topic(self.partition_count, self.replication_factor)
            self.store.forget_offsets()
            for tp in consumer.assignment():
                consumer.seek(tp, 0)
            log.warning("%s: a new cluster; reading its changelog from the start", self.changelog)
        self.cluster = cluster

    async def on_stop(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
        if self.temporary:
            self.store.destroy()
        else:
            self.store.close()
