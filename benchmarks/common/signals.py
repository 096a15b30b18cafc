"""Termination signals end a benchmark as Ctrl-C does."""

from __future__ import annotations

import contextlib
import signal


def stop_on_termination_signals() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so that a benchmark's
    cleanup (brokers, workers) runs."""

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    with contextlib.suppress(AttributeError, ValueError):
        signal.signal(signal.SIGHUP, terminate)
