"""The embedded broker's memory: what it cannot free, and the watch that says so."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.errors import KafkaError

from app.stream.broker import EmbeddedBroker
from app.stream.broker_memory import (
    BrokerMemoryWatch,
    MemoryAlarm,
    memory_warning,
    process_rss_bytes,
)


def test_alarm_reports_the_threshold_then_each_doubling_once() -> None:
    alarm = MemoryAlarm(100)
    seen = [alarm.passed(size) for size in (99, 100, 150, 199, 200, 250, 900, 1000, 100)]
    assert seen == [None, 100, None, None, 200, None, 800, None, None]


def test_alarm_refuses_a_threshold_that_is_not_positive() -> None:
    with pytest.raises(ValueError):
        MemoryAlarm(0)


def test_rss_of_a_live_and_of_a_missing_process() -> None:
    rss = process_rss_bytes(os.getpid())
    assert rss is not None and rss > 1_000_000
    assert process_rss_bytes(2**22 + 1) is None  # above the kernel's pid limit


def test_warning_names_the_broker_the_size_and_the_way_out() -> None:
    text = memory_warning("127.0.0.1:9092", 1_500_000_000, 120.0)
    assert "127.0.0.1:9092" in text and "1,500 MB" in text and "120 MB/min" in text
    assert "LLMOPT_KAFKA_BOOTSTRAP" in text


@pytest.mark.integration
def test_watch_warns_when_the_broker_passes_the_threshold() -> None:
    warnings: list[str] = []
    got = threading.Event()

    def warn(text: str) -> None:
        warnings.append(text)
        got.set()

    with EmbeddedBroker(rss_warn_bytes=None) as broker:
        assert broker.proc is not None
        watch = BrokerMemoryWatch(broker.proc.pid, broker.bootstrap, 1, 0.05, warn).start()
        try:
            assert got.wait(10), "no warning although the broker holds more than 1 byte"
        finally:
            watch.stop()
    assert broker.bootstrap in warnings[0]
    assert len(warnings) < 40  # once per doubling, not once per sample


@pytest.mark.integration
async def test_embedded_broker_frees_no_record() -> None:
    """Neither retention.ms nor DeleteRecords removes anything: if a newer
    broker does, the pipeline could trim the logs it has read instead of
    warning (app/stream/broker_memory.py)."""
    with EmbeddedBroker(rss_warn_bytes=None) as broker:
        boot = broker.bootstrap
        admin = AIOKafkaAdminClient(bootstrap_servers=boot)
        producer = AIOKafkaProducer(bootstrap_servers=boot, linger_ms=5)
        consumer = AIOKafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False)
        await admin.start()
        await producer.start()
        try:
            await admin.create_topics([NewTopic("t", 1, 1, topic_configs={"retention.ms": "100"})])
            for _ in range(200):
                await producer.send("t", b"x" * 100)
            await producer.flush()
            tp = TopicPartition("t", 0)
            with pytest.raises(KafkaError):  # the handler panics; the connection closes
                await admin.delete_records({tp: RecordsToDelete(150)}, timeout_ms=5000)
            await asyncio.sleep(1.0)  # well past retention.ms
            assert broker.proc is not None and broker.proc.poll() is None
            await consumer.start()
            consumer.assign([tp])
            consumer.seek(tp, 0)
            batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
            assert [m.offset for m in batch.get(tp, [])] == [0]
        finally:
            await consumer.stop()
            await producer.stop()
            await admin.close()
