"""The measuring consumer: when each request id's output arrived."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson

from app.kafka_security import kafka_security
from benchmarks.e2e import BenchError
from benchmarks.e2e.processor import Processor


class Meter:
    """Reads an output topic from offset 0 on all partitions (no group) and
    records, per distinct key (= request id), when it was first received."""

    def __init__(self, bootstrap: str, topic: str, fetch_wait_ms: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.fetch_wait_ms = fetch_wait_ms
        self.recv_ns: dict[bytes, int] = {}
        self.produced_ms: dict[bytes, int] = {}
        self.records = 0
        self.duplicates = 0
        self.first_ns = 0
        self.last_new_ns = 0
        self.bad_samples: list[str] = []
        self.timeline: list[tuple[int, int]] = []  # (receive ns, new distinct ids) per fetch
        self.on_first: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from app.stream.kafka_io import assign_from_start, partitions_of

        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_wait_ms,
            max_partition_fetch_bytes=8 << 20,
            client_id="llmopt-bench-meter",
            **kafka_security(),
        )
        await self.consumer.start()
        tps = partitions_of(self.consumer, self.topic)
        if not tps:
            raise BenchError(f"output topic {self.topic} does not exist")
        assign_from_start(self.consumer, tps)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.consumer.stop()

    async def _run(self) -> None:
        recv, produced = self.recv_ns, self.produced_ms
        getmany = self.consumer.getmany
        while True:
            batch = await getmany(timeout_ms=100)
            if not batch:
                continue
            now = time.time_ns()
            before = len(recv)
            for msgs in batch.values():
                self.records += len(msgs)
                for m in msgs:
                    k = m.key
                    if k in recv:
                        self.duplicates += 1
                        continue
                    recv[k] = now
                    produced[k] = m.timestamp
                    if len(recv) % 997 == 1:
                        self._validate(m)
            if len(recv) == before:
                continue
            if not self.first_ns:
                self.first_ns = now
                if self.on_first is not None:
                    self.on_first()
            self.last_new_ns = now
            self.timeline.append((now, len(recv) - before))

    def _validate(self, m: Any) -> None:
        try:
            d = orjson.loads(m.value)
            if d.get("request_id", "").encode() != m.key:
                raise ValueError("key is not the request id")
        except Exception as exc:
            self.bad_samples.append(f"{m.partition}:{m.offset}: {exc}")

    async def wait_for(
        self,
        ids: set[bytes] | int,
        processor: Processor | None,
        idle_timeout: float,
        first_timeout: float = 120.0,
        hard_timeout: float = 900.0,
    ) -> bool:
        """Until every id (or that many distinct ids) is in; False when nothing
        new came for ``idle_timeout`` seconds (``first_timeout`` before the first)."""
        target = ids if isinstance(ids, int) else None
        start = time.monotonic()
        last_count, last_change = -1, start
        while True:
            count = len(self.recv_ns)
            if target is not None and count >= target:
                return True
            if target is None and isinstance(ids, set) and ids.issubset(self.recv_ns.keys()):
                return True
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            limit = first_timeout if count == 0 else idle_timeout
            if now - last_change > limit or now - start > hard_timeout:
                return False
            if processor is not None:
                processor.check_alive()
            await asyncio.sleep(0.05)
