"""Min-heaps of (threshold, key) per group: what becomes ready once a
group's clock or position reaches a threshold (join entries due at a time,
or waiting until a partition is read to an offset).

Stale items are harmless: whoever pops a key looks its state up and decides.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

G = TypeVar("G", bound=Hashable)


class KeyHeaps(Generic[G]):
    """``G``: what the heaps are grouped by."""

    def __init__(self) -> None:
        self.heaps: dict[G, list[tuple[int, bytes]]] = {}

    def push(self, group: G, threshold: int, key: bytes) -> None:
        heapq.heappush(self.heaps.setdefault(group, []), (threshold, key))

    def ready(self, group: G, reached: int | None) -> bool:
        """Whether ``group`` holds a key whose threshold ``reached`` is at."""
        heap = self.heaps.get(group)
        return heap is not None and len(heap) > 0 and reached is not None and heap[0][0] <= reached

    def pop_ready(self, group: G, reached: int, limit: int | None = None) -> list[bytes]:
        """Pop the keys with threshold ≤ ``reached``, lowest first (at most
        ``limit``)."""
        heap = self.heaps.get(group, [])
        keys: list[bytes] = []
        while heap and heap[0][0] <= reached and (limit is None or len(keys) < limit):
            keys.append(heapq.heappop(heap)[1])
        return keys

    def size(self) -> int:
        return sum(len(h) for h in self.heaps.values())

    def drop(self, group: G) -> None:
        self.heaps.pop(group, None)

    def clear(self) -> None:
        self.heaps.clear()
