"""Group-less reading set-up (app/stream/kafka_io.py): explicit offsets,
never the embedded broker's EARLIEST lookup."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from app.stream.kafka_io import assign_from, assign_from_start, partitions_of


class FakeConsumer:
    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self.partitions = partitions
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int] = {}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)
        self.positions = {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        assert tp in self.assigned, "seek on a partition not assigned"
        self.positions[tp] = offset


def _consumer(partitions: dict[str, set[int]]) -> Any:
    return FakeConsumer(partitions)


def test_partitions_of_topics_in_order_none_for_a_missing_topic() -> None:
    c = _consumer({"a": {2, 0, 1}, "b": {0}})
    assert partitions_of(c, "a", "missing", "b") == [
        TopicPartition("a", 0),
        TopicPartition("a", 1),
        TopicPartition("a", 2),
        TopicPartition("b", 0),
    ]
    assert partitions_of(c, "missing") == []


def test_every_partition_is_read_from_an_explicit_offset() -> None:
    c = _consumer({"a": {0, 1}})
    tps = partitions_of(c, "a")
    assign_from_start(c, tps)
    assert c.assigned == tps and c.positions == dict.fromkeys(tps, 0)
    starts = {tps[0]: 7, TopicPartition("b", 0): 3}
    assign_from(c, starts)
    assert c.assigned == list(starts) and c.positions == starts
