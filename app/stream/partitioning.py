"""Kafka's default key → partition (murmur2), for a whole batch of keys at once.

``aiokafka.partitioner.murmur2`` is pure Python (~3-4 µs per 32-byte key); this
is the same function as uint32 numpy operations over all keys of one length.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

_SEED = 0x9747B28C
_M = np.uint32(0x5BD1E995)


def murmur2_many(keys: list[bytes]) -> np.ndarray:
    """``[aiokafka.partitioner.murmur2(k) for k in keys]`` as a uint32 array."""
    out = np.empty(len(keys), dtype=np.uint32)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        by_len[len(k)].append(i)
    with np.errstate(over="ignore"):
        for length, idx in by_len.items():
            raw = np.frombuffer(b"".join(keys[i] for i in idx), dtype=np.uint8)
            raw = raw.reshape(len(idx), length)
            h = np.full(len(idx), _SEED ^ length, dtype=np.uint32)
            n4 = length // 4
            if n4:
                words = np.ascontiguousarray(raw[:, : n4 * 4]).view("<u4")
                for j in range(n4):
                    w = words[:, j] * _M
                    w ^= w >> np.uint32(24)
                    w *= _M
                    h *= _M
                    h ^= w
            extra = length % 4
            base = length & ~3
            if extra >= 3:
                h ^= raw[:, base + 2].astype(np.uint32) << np.uint32(16)
            if extra >= 2:
                h ^= raw[:, base + 1].astype(np.uint32) << np.uint32(8)
            if extra >= 1:
                h ^= raw[:, base].astype(np.uint32)
                h *= _M
            h ^= h >> np.uint32(13)
            h *= _M
            h ^= h >> np.uint32(15)
            out[idx] = h
    return out


def partitions_for(keys: list[bytes], n_partitions: int) -> list[int]:
    """The partition Kafka's default partitioner gives each key."""
    h = murmur2_many(keys) & np.uint32(0x7FFFFFFF)
    return (h % np.uint32(n_partitions)).tolist()
