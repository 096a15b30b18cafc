"""CPU used by given processes and by the rest of the machine, from /proc.

The machine may be small (2 cores) and shared with tests and other
benchmarks, so every measurement says how much CPU everything else took.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common.progress import progress_logger

_TICK = os.sysconf("SC_CLK_TCK")
_log = progress_logger()


def proc_cpu_seconds(pid: int | None) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields_ = stat[stat.rindex(")") + 2 :].split()
    return (int(fields_[11]) + int(fields_[12])) / _TICK


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [int(x) for x in parts]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / _TICK


def this_process() -> dict[str, int | None]:
    """The pids argument that names only the benchmark's own process."""
    return {"benchmark": os.getpid()}


@dataclass
class CpuSample:
    t: float  # monotonic seconds
    machine: float
    procs: dict[str, float]
    wall_ns: int = 0

    @classmethod
    def take(cls, pids: dict[str, int | None]) -> CpuSample:
        return cls(
            time.monotonic(),
            machine_busy_seconds(),
            {name: proc_cpu_seconds(pid) for name, pid in pids.items()},
            time.time_ns(),
        )


def cpu_between(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """Cores used per process over [a, b], and by everything else."""
    wall = max(1e-9, b.t - a.t)
    out = {name: round((b.procs[name] - a.procs[name]) / wall, 2) for name in a.procs}
    ours = sum(b.procs[n] - a.procs[n] for n in a.procs)
    out["other"] = round(max(0.0, (b.machine - a.machine) - ours) / wall, 2)
    out["machine"] = round((b.machine - a.machine) / wall, 2)
    return out


class CpuSpan:
    """CPU used since the span was opened, per named process and by the rest."""

    def __init__(self, pids: dict[str, int | None] | None = None) -> None:
        self.pids = this_process() if pids is None else pids
        self.start = CpuSample.take(self.pids)

    def cores(self) -> dict[str, float]:
        return cpu_between(self.start, CpuSample.take(self.pids))

    def other_cores(self) -> float:
        """Cores used by processes not named in ``pids``."""
        return self.cores()["other"]


class CpuRecorder:
    """Samples CPU every ``interval`` s, so that a window known only
    afterwards (first output produced → last output received) can be cut out."""

    def __init__(self, pids: dict[str, int | None], interval: float = 0.025) -> None:
        self.pids, self.interval = pids, interval
        self.samples: list[CpuSample] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.samples.append(CpuSample.take(self.pids))
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.samples.append(CpuSample.take(self.pids))

    def window(self, start_ns: int, end_ns: int) -> tuple[CpuSample, CpuSample] | None:
        """The last sample at or before ``start_ns`` and the first at or after ``end_ns``."""
        before = [x for x in self.samples if x.wall_ns <= start_ns]
        after = [x for x in self.samples if x.wall_ns >= end_ns]
        if not before or not after:
            return None
        return before[-1], after[0]


def wait_for_quiet(
    max_wait: float,
    threshold: float = 0.3,
    pids: dict[str, int | None] | None = None,
    log: Callable[[str], None] = _log,
) -> float:
    """Background CPU (cores used by processes other than ``pids``) over a 1 s
    window, after waiting up to ``max_wait`` seconds for it to drop to
    ``threshold``. Blocks; from asyncio code run it with ``asyncio.to_thread``
    so that the event loop's tasks go on."""
    deadline = time.monotonic() + max_wait
    announced = False
    while True:
        span = CpuSpan(pids)
        time.sleep(1.0)
        bg = span.other_cores()
        if bg <= threshold or time.monotonic() >= deadline:
            if announced or bg > threshold:
                gave_up = " (gave up waiting)" if bg > threshold else ""
                log(f"background load {bg:.2f} cores{gave_up}")
            return bg
        if not announced:
            log(f"background load {bg:.2f} cores > {threshold}; waiting up to {max_wait:.0f}s")
            announced = True
