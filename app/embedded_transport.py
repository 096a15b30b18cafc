"""Faust's Kafka transport with the embedded broker's offset lookups corrected.

Table recovery reads each changelog partition from the offset RocksDB kept up
to the partition's end as ``ListOffsets(LATEST)`` reports it. The embedded
broker reports the base offset + 1 of the last written batch
(EMBEDDED_BROKER.md, defect 1), so recovery stopped before the last records
of every changelog whose last batch held more than one: table state went
backwards after a restart (policy updates lost, join entries forgotten). The
high-water mark carried in Fetch responses is right, so the end is read from
one fetch per partition instead. ``ListOffsets(EARLIEST)`` is occasionally
wrong too (defect 2); the embedded broker applies no retention, so every log
starts at 0.

Used only with the embedded-broker profile; on Kafka, Faust's own transport runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from app.partition_ends import fetched_end_offsets


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with end offsets from fetches and earliest
    offsets at 0 (see the module docstring)."""

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        reported = await super().highwaters(*partitions)
        url = self.app.conf.broker_consumer[0]
        ends = await fetched_end_offsets(f"{url.host}:{url.port}", partitions, dict(reported))
        # Never below what the broker reported: a fetch cannot see less.
        return {tp: max(ends[(tp.topic, tp.partition)], reported.get(tp) or 0) for tp in partitions}

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]:
        return {tp: 0 for tp in partitions}


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def install(app: Any) -> None:
    """Give ``app`` this transport (before it starts)."""
    app.transport = Transport(app.conf.broker_consumer, app)


__all__ = ["Consumer", "Transport", "install"]
