"""An ``llmopt worker`` in a process of its own: started with the settings
given as environment variables, ready once its ``/health`` answers 200,
stopped with SIGTERM (its clean shutdown: final commits), killed if it does
not stop within a grace period."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

READY_TIMEOUT_S = 90.0
STOP_GRACE_S = 20.0


class WorkerNotReady(RuntimeError):
    """The worker exited, or its /health did not answer 200 in time; the
    message ends with the last lines of its log."""


class WorkerProcess:
    """``python -m app.cli worker``, its output appended to ``log``.

    ``env``: the whole environment (None: this process's); ``health_url``:
    the worker's ``/health``; ``new_session``: out of this process's session,
    so a terminal's Ctrl-C reaches this process only, which stops the worker;
    ``grace_s``: how long :meth:`stop` waits after SIGTERM.
    """

    command: tuple[str, ...] = (sys.executable, "-m", "app.cli", "worker")

    def __init__(
        self,
        log: Path,
        health_url: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        new_session: bool = True,
        grace_s: float = STOP_GRACE_S,
    ) -> None:
        self.log, self.health_url, self.grace_s = Path(log), health_url, grace_s
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                list(self.command),
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, poll_s: float = 0.3) -> None:
        """Poll ``/health`` until it answers 200 (the worker holds its
        partitions); raise :class:`WorkerNotReady` if the worker exits first
        or ``timeout`` passes (the worker is left running: stop it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WorkerNotReady(
                    f"the worker exited with {self.proc.returncode}; {self.log}:\n{self.tail()}"
                )
            try:
                with urllib.request.urlopen(self.health_url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:  # not listening yet, or 503 (urllib's HTTPError)
                pass
            time.sleep(poll_s)
        raise WorkerNotReady(
            f"the worker was not ready after {timeout:.0f}s; {self.log}:\n{self.tail()}"
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``grace_s``."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commits."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the worker's log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
