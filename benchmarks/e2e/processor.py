"""One processor under test (the echo or an ``llmopt worker``) as a process
of its own, and when it is ready (the echo's ready file, the worker's
``/health``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import ROOT
from benchmarks.e2e import BenchError
from benchmarks.e2e.configs import CONFIG_ENV, CONFIGS, ECHO_OUTPUT_TOPIC


def _stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM the process group we started for ``proc``, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: pgid == pid
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Processor:
    """One processor under test (echo or a Faust worker) on one broker."""

    config: str
    bootstrap: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    web_port: int | None = None
    ready_file: Path | None = None
    output_topic: str = ""
    started_at: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)
    app_id: str = ""

    @property
    def joins(self) -> bool:
        return "join" in (CONFIGS[self.config] or "")

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.config}.log"

    def start(self, requests_topic: str, decisions_topic: str) -> None:
        from app.stream.broker import free_port

        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPT_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        app_id = self.app_id = f"bench-{self.config}-{uuid.uuid4().hex[:8]}"
        roles = CONFIGS[self.config]
        if roles is None:
            self.output_topic = ECHO_OUTPUT_TOPIC
            self.ready_file = self.workdir / f"{self.config}.ready"
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.echo_worker",
                "--bootstrap",
                self.bootstrap,
                "--input",
                requests_topic,
                "--output",
                ECHO_OUTPUT_TOPIC,
                "--group",
                app_id,
                "--ready-file",
                str(self.ready_file),
            ]
        else:
            self.output_topic = decisions_topic
            self.web_port = free_port()
            env.update(
                LLMOPT_KAFKA_BOOTSTRAP=self.bootstrap,
                LLMOPT_EMBEDDED_BROKER="1",
                LLMOPT_DATA_DIR=str(self.workdir / f"data-{self.config}"),
                LLMOPT_WEB_PORT=str(self.web_port),
                LLMOPT_APP_ID=app_id,
            )
            env.update(self.extra_env)
            env.update(CONFIG_ENV.get(self.config, {}))
            cmd = [sys.executable, "-m", "app.cli", "worker", "--roles", roles]
        with self.log_path.open("ab") as fh:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"{self.config} exited with {self.proc.returncode}:\n{self.tail()}")

    def is_ready(self) -> bool:
        if self.ready_file is not None:
            return self.ready_file.exists()
        try:
            url = f"http://127.0.0.1:{self.web_port}/health"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def wait_ready(self, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if await asyncio.to_thread(self.is_ready):
                return time.monotonic() - self.started_at
            await asyncio.sleep(0.1)
        raise BenchError(f"{self.config} not ready after {timeout:.0f}s:\n{self.tail()}")

    def stop(self) -> None:
        _stop_process(self.proc)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
