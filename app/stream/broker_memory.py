"""The embedded broker's memory, watched from the process that started it.

The embedded broker (Tansu with memory storage) keeps every record it was
sent and never removes one: it applies no ``retention.ms`` or
``retention.bytes``, and a DeleteRecords request panics its request handler
(the connection closes; ``tests/test_broker_memory.py`` checks both). Its
resident memory therefore grows with everything produced to it, about
1 GB per 5 minutes at 1,000 requests/s. Nothing here trims or recreates a
topic behind the pipeline's back: the watch says so, on stderr beside the
live summary of ``llmopt run`` (and in ``llmopt broker``), when the broker's
memory passes a threshold and again each time it doubles.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

WARN_RSS_BYTES = 1 << 30
WATCH_INTERVAL_SECONDS = 10.0
MB = 1_000_000


def process_rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid`` (None: gone, or no /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class MemoryAlarm:
    """The levels a growing size passes: ``threshold``, then each doubling.

    >>> alarm = MemoryAlarm(1000)
    >>> [alarm.passed(size) for size in (500, 1200, 1500, 2100, 1000, 4500)]
    [None, 1000, None, 2000, None, 4000]
    """

    def __init__(self, threshold: int) -> None:
        if threshold <= 0:
            raise ValueError("threshold must be positive")
        self.threshold = threshold
        self._next = threshold

    def passed(self, size: int) -> int | None:
        """The highest level ``size`` reached that no earlier call reported."""
        if size < self._next:
            return None
        level = self._next
        while level * 2 <= size:
            level *= 2
        self._next = level * 2
        return level


def memory_warning(bootstrap: str, rss_bytes: int, mb_per_minute: float | None) -> str:
    growth = f", growing {mb_per_minute:,.0f} MB/min" if mb_per_minute else ""
    return (
        f"llmopt: warning: the embedded broker on {bootstrap} holds {rss_bytes / MB:,.0f} MB"
        f"{growth}: it keeps every record and applies no retention (docs/ops.md). "
        "Restart it to free the memory (its topics start empty), or set "
        "LLMOPT_KAFKA_BOOTSTRAP to a Kafka cluster."
    )


class BrokerMemoryWatch:
    """Samples the broker's resident memory every ``interval_s`` on a daemon
    thread and hands a warning to ``warn`` (default: a line on stderr) each
    time :class:`MemoryAlarm` reports a level."""

    def __init__(
        self,
        pid: int,
        bootstrap: str,
        threshold_bytes: int = WARN_RSS_BYTES,
        interval_s: float = WATCH_INTERVAL_SECONDS,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.pid = pid
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.alarm = MemoryAlarm(threshold_bytes)
        self.warn = warn or _to_stderr
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="embedded-broker-memory", daemon=True
        )

    def start(self) -> BrokerMemoryWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        first: tuple[float, int] | None = None
        while not self._stopped.wait(self.interval_s):
            rss = process_rss_bytes(self.pid)
            if rss is None:
                return  # the broker is gone
            now = time.monotonic()
            first = first or (now, rss)
            if self.alarm.passed(rss) is None:
                continue
            minutes = (now - first[0]) / 60
            rate = (rss - first[1]) / MB / minutes if minutes > 0 else None
            self.warn(memory_warning(self.bootstrap, rss, rate))


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
