"""Where partitions end right now, from the high-water mark of a fetch.

``ListOffsets(LATEST)`` is not used: the embedded broker answers it with the
base offset + 1 of the last written batch (EMBEDDED_BROKER.md, defect 1),
which is short of the end whenever that batch holds more than one record. A
fetch's high-water mark is right on every broker. A consumer that processes
a partition cannot be asked instead: while it is paused (a full buffer
behind a backlog) its own high-water mark goes stale.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

LOOKUP_TIMEOUT_S = 15.0


class PartitionEnds:
    """A group-less consumer that fetches at most one batch per partition
    per :meth:`refresh`, from just before the end it last saw."""

    def __init__(self, bootstrap: str, client_id: str = "llmopt-partition-ends") -> None:
        self.bootstrap, self.client_id = bootstrap, client_id
        self.ends: dict[tuple[str, int], int] = {}

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
            max_partition_fetch_bytes=1,  # the broker still sends one batch: the mark is enough
        )
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

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
        if set(self.consumer.assignment()) != set(wanted):
            self.consumer.assign(wanted)
        for tp, p in zip(wanted, given, strict=True):
            start = max(self.ends.get((tp.topic, tp.partition), 0), int(hints.get(p) or 0))
            self.consumer.seek(tp, max(start - 1, 0))
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
                    found[(tp.topic, tp.partition)] = high
        self.ends.update(found)
        return found

    @staticmethod
    def _keys(tps: list[TopicPartition]) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in tps]


async def fetched_end_offsets(
    bootstrap: str, partitions: Iterable[Any], hints: dict[Any, int] | None = None
) -> dict[tuple[str, int], int]:
    """One-off :meth:`PartitionEnds.refresh`."""
    ends = PartitionEnds(bootstrap)
    await ends.start()
    try:
        return await ends.refresh(list(partitions), hints)
    finally:
        await ends.stop()
