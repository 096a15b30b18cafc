"""The hashing trick for high-cardinality categorical values."""

from __future__ import annotations

import zlib
from typing import Any


class FeatureHasher:
    """``buckets`` columns; a value sets column ``crc32(value) % buckets`` to
    ±1 (the sign from another bit of the hash when ``signed``, so that
    collisions cancel in expectation). CRC-32, not Python's ``hash()``: the
    same value lands in the same column in every process (``hash()`` of a
    string is salted per process). Not invertible.

    >>> h = FeatureHasher(buckets=4, signed=False)
    >>> h.transform("eu-west-1") == h.transform("eu-west-1"), sum(h.transform("x"))
    (True, 1.0)
    """

    def __init__(self, buckets: int = 8, signed: bool = False) -> None:
        if not isinstance(buckets, int) or buckets < 1:
            raise ValueError(f"buckets must be a positive integer, got {buckets!r}")
        self.buckets = buckets
        self.signed = signed
        self.width = buckets

    def names(self, prefix: str) -> list[str]:
        return [f"{prefix}#{i}" for i in range(self.buckets)]

    def index(self, value: Any) -> tuple[int, float]:
        h = zlib.crc32(str(value).encode())
        sign = -1.0 if self.signed and (h >> 31) & 1 else 1.0
        return h % self.buckets, sign

    def transform(self, value: Any) -> list[float]:
        out = [0.0] * self.buckets
        i, sign = self.index(value)
        out[i] = sign
        return out

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> FeatureHasher:
        return cls(int(c.get("buckets", 8)), bool(c.get("signed", False)))
