"""Profiling a processor's drain with py-spy (``--profile-dir``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

from benchmarks.e2e import log


def start_py_spy(pid: int | None, out: Path) -> subprocess.Popen[bytes] | None:
    binary = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not binary or pid is None:
        log("py-spy not found (set PY_SPY=/path/to/py-spy); not profiling")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=20)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def summarize_profile(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's raw output."""
    self_: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = [
            f
            for f in stack.split(";")
            if f and not f.startswith("process ") and not f.startswith("thread ")
        ]
        total += c
        if frames:
            self_[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    if not total:
        return f"{path}: no samples"
    rows = [f"{path.name}: {total} samples"]
    rows.append("  self%  function")
    rows += [f"  {100 * c / total:5.1f}  {f}" for f, c in self_.most_common(top)]
    rows.append("  incl%  function")
    rows += [f"  {100 * c / total:5.1f}  {f}" for f, c in incl.most_common(top)]
    return "\n".join(rows)
