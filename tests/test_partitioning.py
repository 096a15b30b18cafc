"""The batch partitioner agrees with Kafka's default (aiokafka's murmur2)."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2

from app.stream.partitioning import murmur2_many, partitions_for


def test_same_hash_and_partition_as_the_default_partitioner() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(rng.randrange(0, 300)) for _ in range(3000)]
    keys += [f"{rng.getrandbits(128):032x}".encode() for _ in range(2000)]
    assert murmur2_many(keys).tolist() == [murmur2(k) & 0xFFFFFFFF for k in keys]
    for n in (1, 4, 7):
        assert partitions_for(keys, n) == [(murmur2(k) & 0x7FFFFFFF) % n for k in keys]
