"""Faust's Kafka transport, with two corrections the worker's state relies on.

1. **A flush that drains.** Faust commits source offsets right after
   ``producer.flush()``, counting on every table write made so far (its
   changelog record, queued in the producer's send buffer) being durable.
   But the buffer's ``flush`` stops waiting as soon as 0.1 s pass without a
   send, leaving records queued behind a slow send (a busy machine, a full
   accumulator). A crash then keeps the committed offsets and loses the
   state writes: policy updates vanished after kills under load. Here
   ``flush`` repeats until everything queued before it has been sent (not
   until the buffer is empty: other agents keep writing). Used on every
   broker.
2. **Changelog ends from fetches** (embedded broker only). Table recovery
   reads each changelog up to the end ``ListOffsets(LATEST)`` reports; the
   embedded broker reports the base offset + 1 of the last written batch
   (docs/data-safety.md), so recovery stopped before the last
   records of a changelog whose last batch held more than one. The fetch
   high-water mark is right (:mod:`app.stream.partition_ends`). Its
   ``ListOffsets(EARLIEST)`` is occasionally wrong too; it applies
   no retention, so every log starts at 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from app.stream.partition_ends import fetched_end_offsets

log = logging.getLogger(__name__)
FLUSH_WARN_S = 30.0


class Producer(faust_aiokafka.Producer):
    # Records ever queued in the send buffer (send_soon): with the buffer's
    # size this tells how many have left it, as it sends in order.
    queued = 0

    def send_soon(self, fut: Any) -> None:
        self.queued += 1
        super().send_soon(fut)

    async def flush(self) -> None:
        """Send everything queued before this call, and wait for the
        broker's acks (what is queued meanwhile need not wait for it: other
        agents keep writing)."""
        target = self.queued
        started = time.monotonic()
        warned = False
        while True:
            await super().flush()
            if self.should_stop or self.buffer.should_stop:
                return  # nothing drains the buffer any more (shutting down)
            if self.queued - self.buffer.size >= target:
                # The last one taken from the buffer may still be on its way
                # into the client's batches: one more flush covers it.
                await super().flush()
                return
            if not warned and time.monotonic() - started > FLUSH_WARN_S:
                warned = True
                log.warning(
                    "producer flush still waiting after %.0f s (%d records queued)",
                    FLUSH_WARN_S,
                    self.buffer.size,
                )


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with changelog ends from fetches and
    earliest offsets at 0 (the embedded broker; see the module docstring)."""

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        reported = await super().highwaters(*partitions)
        url = self.app.conf.broker_consumer[0]
        ends = await fetched_end_offsets(f"{url.host}:{url.port}", partitions, dict(reported))
        # Never below what the broker reported: a fetch cannot see less.
        return {tp: max(ends[(tp.topic, tp.partition)], reported.get(tp) or 0) for tp in partitions}

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]:
        return {tp: 0 for tp in partitions}


class Transport(faust_aiokafka.Transport):
    Producer = Producer


class EmbeddedBrokerTransport(Transport):
    Consumer = Consumer


def install(app: Any, embedded_broker: bool) -> None:
    """Give ``app`` these transports (before it starts)."""
    consumer_side = EmbeddedBrokerTransport if embedded_broker else Transport
    app.transport = consumer_side(app.conf.broker_consumer, app)
    app.producer_transport = Transport(app.conf.broker_producer, app)


__all__ = ["Consumer", "EmbeddedBrokerTransport", "Producer", "Transport", "install"]
