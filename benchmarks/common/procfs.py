"""What a process holds, from /proc: resident memory and open file handles.

Both read another process by its id (a broker, a worker), so a benchmark can
watch the processes it started without their cooperation. None when the
process is gone or /proc cannot be read (not Linux).
"""

from __future__ import annotations

import os
from pathlib import Path


def rss_mb(pid: int | None) -> float | None:
    """Resident set size in MB (VmRSS), to 0.1 MB."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def open_fds(pid: int | None) -> int | None:
    """Open file handles (sockets, files, pipes): the entries of /proc/PID/fd."""
    if pid is None:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
