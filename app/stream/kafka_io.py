"""Reading topics without a consumer group: every partition of a topic, from
an offset (or a time) to the end it has now.

The embedded broker's quirks (docs/architecture.md#the-embedded-broker) are handled here, once:

- its ``ListOffsets(EARLIEST)`` is unreliable, and it applies no retention,
  so every log starts at 0: partitions are read from offset 0 explicitly
  (:func:`assign_from_start`), never from an ``earliest`` reset;
- its ``ListOffsets(LATEST)`` is short of the end whenever the last batch
  written holds more than one record: the end is the high-water mark of a
  fetch (:func:`~app.stream.partition_ends.fetched_end_offsets`);
- ``offsets_for_times`` past the end answers offset 0: records are kept by
  their time, not by the offset it answered (:func:`read_topic_range`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.kafka_security import kafka_security
from app.stream.partition_ends import fetched_end_offsets

if TYPE_CHECKING:  # the evaluation side (numpy, pyarrow) is loaded only when asked for
    from app.evaluation.logged_data import LoggedData

READ_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """A record read by :func:`read_topic_range`, kept without its consumer."""

    key: bytes | None
    value: bytes | None
    timestamp: int
    partition: int
    offset: int


def partitions_of(consumer: AIOKafkaConsumer, *topics: str) -> list[TopicPartition]:
    """The partitions of ``topics`` in the consumer's metadata, in order
    (none for a topic the cluster does not have)."""
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]


def assign_from(consumer: AIOKafkaConsumer, starts: Mapping[TopicPartition, int]) -> None:
    """Assign exactly the partitions of ``starts`` to a group-less consumer,
    each read from the offset given (an explicit offset: never the
    embedded broker's EARLIEST lookup)."""
    consumer.assign(list(starts))
    for tp, offset in starts.items():
        consumer.seek(tp, offset)


def assign_from_start(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> None:
    """Assign ``partitions``, each read from offset 0: the embedded broker's
    EARLIEST lookup is unreliable."""
    assign_from(consumer, dict.fromkeys(partitions, 0))


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer. aiokafka's group-less coordinator can raise the
    CancelledError of its own background task from ``stop()`` when nothing
    was ever assigned; only a cancellation of this task is passed on."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def read_to_end(
    bootstrap: str,
    topic: str,
    client_id: str,
    timeout_s: float = READ_TIMEOUT_S,
    max_partition_fetch_bytes: int = 8 << 20,
) -> AsyncIterator[list[Any]]:
    """Every record of every partition of ``topic``, from offset 0 to the
    end each partition has now (fetched, see
    :func:`~app.stream.partition_ends.fetched_end_offsets`), a fetched batch
    of one partition at a time. Raises TimeoutError if the end is not
    reached within ``timeout_s``; a missing topic has no records."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=max_partition_fetch_bytes,
        **kafka_security(),
    )
    await consumer.start()
    try:
        tps = partitions_of(consumer, topic)
        ends = await fetched_end_offsets(bootstrap, tps)
        assign_from_start(consumer, tps)
        left = {tp for tp in tps if ends[(tp.topic, tp.partition)] > 0}
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end in {timeout_s} s")
            batch = await consumer.getmany(*left, timeout_ms=500)
            for tp, msgs in batch.items():
                yield msgs
                if msgs and msgs[-1].offset + 1 >= ends[(tp.topic, tp.partition)]:
                    left.discard(tp)
    finally:
        await consumer.stop()


async def read_topic_range(
    bootstrap: str,
    topic: str,
    start_ms: int,
    end_ms: int,
    idle_timeout_s: float = 5.0,
    on_progress: Any = None,
) -> list[KafkaRecord]:
    """Every record of ``topic`` with Kafka time in ``[start_ms, end_ms)``,
    read without a consumer group, in time order.

    Each partition starts at ``offsets_for_times(start_ms)`` and stops at the
    high-water mark seen in fetch responses or at the first record at or
    after ``end_ms``. On the embedded broker a start past the end returns
    offset 0 and ``end_offsets`` is too low (docs/architecture.md#the-embedded-broker), so the
    record-time filter, not the offsets, decides what is in range, and the end
    comes from the fetch high-water mark.
    """
    from app.evaluation.logged_data import LoggedDataError

    if end_ms <= start_ms:
        raise LoggedDataError(f"empty time range: end {end_ms} is not after start {start_ms}")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=4 << 20,
        **kafka_security(),
    )
    await consumer.start()
    out: list[KafkaRecord] = []
    try:
        tps = partitions_of(consumer, topic)
        if not tps:
            raise LoggedDataError(f"topic {topic!r} does not exist on {bootstrap}")
        consumer.assign(tps)
        found = await consumer.offsets_for_times(dict.fromkeys(tps, start_ms))
        pending = set()
        first: dict[Any, int] = {}  # the offset offsets_for_times answered, per partition
        for tp in tps:
            ot = found.get(tp)
            if ot is None:
                continue  # nothing written at or after start_ms
            consumer.seek(tp, ot.offset)
            pending.add(tp)
            first[tp] = ot.offset
        last = time.monotonic()
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            got = False
            for tp, msgs in batch.items():
                got = got or bool(msgs)
                for m in msgs:
                    if m.offset == first.get(tp) and m.timestamp < start_ms:
                        # The record offsets_for_times pointed at is older than
                        # the start: the embedded broker's answer for "past the
                        # end". Nothing in this partition is in range.
                        pending.discard(tp)
                        break
                    if m.timestamp >= end_ms:
                        pending.discard(tp)
                        break
                    if m.timestamp >= start_ms:
                        out.append(KafkaRecord(m.key, m.value, m.timestamp, m.partition, m.offset))
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    pending.discard(tp)
            if got:
                last = time.monotonic()
                if on_progress is not None:
                    on_progress(len(out))
            elif time.monotonic() - last > idle_timeout_s:
                break  # no fetch brought a high-water mark: take it as the end
    finally:
        await stop_consumer(consumer)
    out.sort(key=lambda m: (m.timestamp, m.partition, m.offset))
    return out


async def read_outcomes_topic(
    bootstrap: str,
    topic: str,
    start_ms: int,
    end_ms: int,
    policy_id: str | None = None,
    arm_names: Sequence[str] | None = None,
    idle_timeout_s: float = 5.0,
    on_progress: Any = None,
) -> LoggedData:
    """Outcomes written to ``topic`` in ``[start_ms, end_ms)`` (Kafka record
    time; see :func:`read_topic_range`) as logged data (see
    :func:`app.evaluation.logged_data.outcomes_from_values`)."""
    from app.evaluation.logged_data import outcomes_from_values

    records = await read_topic_range(
        bootstrap, topic, start_ms, end_ms, idle_timeout_s, on_progress
    )
    return outcomes_from_values(
        (m.value for m in records),
        f"on {topic!r} between {start_ms} and {end_ms}",
        arm_names,
        policy_id,
    )
