"""Starting and stopping ``llmopt worker`` processes (app/stream/worker_process.py),
without a broker: a worker that cannot start says why."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from app.stream.broker import free_port
from app.stream.worker_process import WorkerNotReady, WorkerProcess

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    """This process's environment without settings: no cluster configured."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LLMOPT_")}


def test_a_worker_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "w" / "worker.log"
    url = f"http://127.0.0.1:{free_port()}/health"
    with WorkerProcess(log, url, env=_env(), cwd=ROOT) as worker:
        with pytest.raises(WorkerNotReady, match="exited with 2") as raised:
            worker.wait_ready(timeout=60)
        assert not worker.alive()
    assert "LLMOPT_KAFKA_BOOTSTRAP" in str(raised.value)  # the log's tail
    assert "LLMOPT_KAFKA_BOOTSTRAP" in worker.tail()


class Sleeper(WorkerProcess):
    """Stands for a worker that never gets ready (no /health at all)."""

    command = (sys.executable, "-c", "import time; time.sleep(120)")


class Stubborn(WorkerProcess):
    """Stands for a worker whose shutdown hangs."""

    command = (
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring SIGTERM', flush=True); time.sleep(120)",
    )


def test_not_ready_in_time_is_reported_and_stop_ends_the_worker(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    with Sleeper(tmp_path / "worker.log", url, env=_env()) as worker:
        started = time.monotonic()
        with pytest.raises(WorkerNotReady, match="not ready after 1s"):
            worker.wait_ready(timeout=1, poll_s=0.1)
        assert 1 <= time.monotonic() - started < 10
        assert worker.alive()
    assert not worker.alive()
    assert worker.proc.returncode == -signal.SIGTERM


def test_a_worker_that_does_not_stop_in_its_grace_period_is_killed(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    worker = Stubborn(tmp_path / "worker.log", url, env=_env(), grace_s=0.5)
    deadline = time.monotonic() + 30
    while "ignoring SIGTERM" not in worker.tail():
        assert time.monotonic() < deadline and worker.alive()
        time.sleep(0.05)
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 10
    assert not worker.alive()
    assert worker.proc.returncode == -signal.SIGKILL
