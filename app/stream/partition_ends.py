"""Where partitions end right now.

A consumer that processes a partition cannot be asked: while it is paused
(a full buffer behind a backlog) its own high-water mark goes stale. On
Kafka, ``ListOffsets(LATEST)`` answers. The embedded broker answers it with
the base offset + 1 of the last written batch (docs/data-safety.md),
short of the end whenever that batch holds more than one record, so there
the end is the high-water mark of a fetch made from the last end seen.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from app.kafka_security import kafka_security

LOOKUP_TIMEOUT_S = 15.0


class PartitionEnds:
    """A group-less consumer that fetches at most one batch per partition
    per :meth:`refresh`, from just before the end it last saw."""

    def __init__(
        self, bootstrap: str, client_id: str = "llmopt-partition-ends", fetch: bool = True
    ) -> None:
        self.bootstrap, self.client_id = bootstrap, client_id
        # False: trust ListOffsets (a real Kafka cluster).
        self.fetch = fetch
        self.ends: dict[tuple[str, int], int] = {}

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
            max_partition_fetch_bytes=1,  # the broker still sends one batch: the mark is enough
            **kafka_security(),
        )
        await self.consumer.start()

    async def stop(self) -> None:
        from app.stream.kafka_io import stop_consumer  # it imports this module

        await stop_consumer(self.consumer)

    async def refresh(
        self,
        partitions: Iterable[Any],
        hints: dict[Any, int] | None = None,
        timeout_s: float = LOOKUP_TIMEOUT_S,
    ) -> dict[tuple[str, int], int]:
        """The end offset (next offset to be written) of each partition
        (anything with ``topic`` and ``partition``), fetched now; ``hints``
        are lower bounds to start from. Raises TimeoutError if a partition's
        fetch does not answer within ``timeout_s``."""
        given = list(partitions)
        wanted = [TopicPartition(p.topic, p.partition) for p in given]
        if not wanted:
            return {}
        hints = hints or {}
        if not self.fetch:
            listed = await self.consumer.end_offsets(wanted)
            return {(tp.topic, tp.partition): int(listed[tp]) for tp in wanted}
        if set(self.consumer.assignment()) != set(wanted):
            self.consumer.assign(wanted)
        for tp, p in zip(wanted, given, strict=True):
            known = self.ends.get((tp.topic, tp.partition))
            # From the end seen last time (nothing new: an empty answer), or
            # from the last record below a hint (ListOffsets' lower bound).
            start = known if known is not None else max(int(hints.get(p) or 0) - 1, 0)
            self.consumer.seek(tp, start)
        asked_at = int(time.time() * 1000)
        found: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + timeout_s
        while len(found) < len(wanted):
            if time.monotonic() > deadline:
                missing = sorted(f"{t}:{p}" for t, p in self._keys(wanted) if (t, p) not in found)
                raise TimeoutError(f"no fetch answered for {missing}")
            await self.consumer.getmany(*wanted, timeout_ms=50)
            for tp in wanted:
                # Only a mark fetched after this call began counts.
                polled = self.consumer.last_poll_timestamp(tp)
                high = self.consumer.highwater(tp)
                if high is not None and polled is not None and polled >= asked_at:
                    # Never backwards: the embedded broker has answered a
                    # fetch with a mark of 0 for a moment. A log that really
                    # restarted comes with a new cluster: call forget().
                    key = (tp.topic, tp.partition)
                    found[key] = max(high, self.ends.get(key, 0))
        self.ends.update(found)
        return found

    def forget(self) -> None:
        """Drop the ends seen so far (the cluster lost its logs)."""
        self.ends.clear()

    @staticmethod
    def _keys(tps: list[TopicPartition]) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in tps]


async def fetched_end_offsets(
    bootstrap: str, partitions: Iterable[Any], hints: dict[Any, int] | None = None
) -> dict[tuple[str, int], int]:
    """One-off :meth:`PartitionEnds.refresh`, asked twice (the higher answer
    of two fetches, see :meth:`PartitionEnds.refresh`)."""
    ends = PartitionEnds(bootstrap)
    await ends.start()
    try:
        given = list(partitions)
        await ends.refresh(given, hints)
        return await ends.refresh(given)
    finally:
        await ends.stop()


async def committed_offsets(
    bootstrap: str, group_id: str, partitions: Iterable[Any]
) -> dict[tuple[str, int], int]:
    """The offsets ``group_id`` has committed for ``partitions`` (those it
    has committed nothing for are left out)."""
    from aiokafka.admin import AIOKafkaAdminClient

    tps = [TopicPartition(p.topic, p.partition) for p in partitions]
    if not tps:
        return {}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id=f"{group_id}-offsets", **kafka_security()
    )
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group_id, partitions=tps)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): m.offset for tp, m in found.items() if m.offset >= 0}


class RangeReader:
    """Reads given offset ranges of partitions with a group-less consumer
    (a changelog's tail, in app/stream/changelog_store.py)."""

    def __init__(self, bootstrap: str, client_id: str) -> None:
        self.bootstrap, self.client_id = bootstrap, client_id
        self.consumer: AIOKafkaConsumer | None = None

    async def read(
        self, topic: str, partition: int, start: int, end: int, timeout_s: float = 15.0
    ) -> AsyncIterator[list[Any]]:
        """The records at offsets ``start`` up to (not including) ``end``,
        a fetched batch at a time (a long range is never held whole)."""
        if self.consumer is None:
            self.consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                client_id=self.client_id,
                enable_auto_commit=False,
                fetch_max_wait_ms=10,
                max_partition_fetch_bytes=1 << 20,
                **kafka_security(),
            )
            await self.consumer.start()
        tp = TopicPartition(topic, partition)
        self.consumer.assign([tp])
        self.consumer.seek(tp, start)
        last = start - 1
        deadline = time.monotonic() + timeout_s
        while last < end - 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}] {start}..{end} not read in {timeout_s} s")
            batch = await self.consumer.getmany(tp, timeout_ms=100, max_records=1000)
            records = [m for m in batch.get(tp, []) if start <= m.offset < end]
            if records:
                last = records[-1].offset
                deadline = time.monotonic() + timeout_s  # progress: the time is per batch
                yield records
            elif any(m.offset >= end for m in batch.get(tp, [])):
                return  # past the range (offsets the log does not hold)

    async def stop(self) -> None:
        if self.consumer is not None:
            from app.stream.kafka_io import stop_consumer  # it imports this module

            await stop_consumer(self.consumer)
            self.consumer = None
