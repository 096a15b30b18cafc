"""Where a benchmark ran: the machine and the commit."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# Distribution names of the packages known by their import name.
DISTRIBUTIONS = {"faust": "faust-streaming"}


def package_version(name: str) -> str | None:
    """The installed version of ``name`` (an import or distribution name), None if absent."""
    try:
        from importlib.metadata import version

        return version(DISTRIBUTIONS.get(name, name))
    except Exception:
        return None


def machine_info(*packages: str) -> dict[str, Any]:
    """CPU model and cores, memory, Python, OS, the versions of ``packages``
    and the load average now (``loadavg_start``): the machine may be small
    and shared, so every result says what it ran on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_gb": mem_gb,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "packages": {name: package_version(name) for name in packages},
        "loadavg_start": list(os.getloadavg()),
    }


def git_commit(root: Path = ROOT) -> str | None:
    """HEAD's commit id, read from .git without running git."""
    gitdir = root / ".git"
    try:
        if gitdir.is_file():  # a worktree: "gitdir: <path>"
            gitdir = Path(gitdir.read_text().split(":", 1)[1].strip())
        head = (gitdir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        common = gitdir
        if (gitdir / "commondir").exists():
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        for base in (gitdir, common):
            if (base / ref).exists():
                return (base / ref).read_text().strip()
        for base in (gitdir, common):
            packed = base / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0]
    except OSError:
        pass
    return None


def short_commit(sha: str | None) -> str:
    """The 7-character id that names result files ("nogit" outside a checkout)."""
    return sha[:7] if sha else "nogit"
