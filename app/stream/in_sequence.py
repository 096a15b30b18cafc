"""Keeps a Faust agent's records in offset order (see app/stream/offset_sequence.py):
records a stream skipped are read straight from the partition and handled
before the record after the gap, so nothing is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app import metrics
from app.stream.offset_sequence import OffsetSequence
from app.stream.partition_ends import RangeReader, committed_offsets

log = logging.getLogger(__name__)
LOOKUP_TIMEOUT_S = 5.0


class InSequence:
    def __init__(self, app: Any, agent: str, topics: set[str]) -> None:
        self.app, self.agent, self.topics = app, agent, topics
        self.seq = OffsetSequence()
        url = app.conf.broker_consumer[0]
        self.bootstrap = f"{url.host}:{url.port}"
        self.reader = RangeReader(self.bootstrap, f"{app.conf.id}-{agent}-gaps")

    async def handle(self, msg: Any, handle: Callable[[Any], Awaitable[None]]) -> None:
        """``handle(msg)``, after handling what a gap before it skipped."""
        if msg.topic in self.topics:
            key = (msg.topic, msg.partition)
            if self.seq.check(key, msg.offset) == "gap":
                await self._fill(msg, self.seq.expected(key), handle)
                self.seq.advance(key, msg.offset)
        await handle(msg)

    async def _fill(self, msg: Any, start: int, handle: Callable[[Any], Awaitable[None]]) -> None:
        metrics.STREAM_GAPS.labels(self.agent).inc()
        log.warning(
            "%s: %s[%d] skipped from offset %d to %d; reading the %d records in between",
            self.agent,
            msg.topic,
            msg.partition,
            start,
            msg.offset,
            msg.offset - start,
        )
        try:
            async for records in self.reader.read(msg.topic, msg.partition, start, msg.offset):
                for record in records:
                    await handle(record)
        except Exception as exc:
            log.error("%s: could not read the skipped records: %s", self.agent, exc)

    async def expect_committed(self, assigned: Any) -> None:
        """After an assignment: expect each partition to start where the
        group's commit stands (a skipped head record is then seen)."""
        self.seq.forget()
        tps = [tp for tp in assigned if tp.topic in self.topics]
        try:
            found = await asyncio.wait_for(
                committed_offsets(self.bootstrap, self.app.conf.id, tps), LOOKUP_TIMEOUT_S
            )
        except Exception as exc:  # the first records are then taken as they come
            log.warning("%s: committed offsets unknown after assignment: %s", self.agent, exc)
            return
        for tp, offset in found.items():
            self.seq.expect(tp, offset)

    def forget(self) -> None:
        self.seq.forget()
