"""Progress lines of a benchmark, on stderr: stdout carries its table or JSON."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def progress_logger(tag: str | None = None) -> Callable[[str], None]:
    """A ``log(msg)`` writing one line to stderr, prefixed ``[tag HH:MM:SS]``
    when tagged (for long runs, where the time of each step matters)."""

    def log(msg: str) -> None:
        prefix = f"[{tag} {time.strftime('%H:%M:%S')}] " if tag else ""
        print(prefix + msg, file=sys.stderr, flush=True)

    return log
