"""``llmopt monitor``: the rendered figures (against hand-computed ones), and
the command against the test broker: reading the metrics topic, and saying
clearly what is wrong when it cannot."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from rich.console import Console

from app.dashboard.history import MetricsHistory
from app.monitor import render, sparkline
from app.records import MetricsSnapshot, now_ms
from tests.conftest import ROOT, Broker, deploy
from tests.kafka_io import produce


def worker_snap(t: int, a: float, b: float, reward: float, outcomes: float) -> MetricsSnapshot:
    samples = [
        {"name": "llmopt_decisions_total", "labels": {"policy_id": "default", "arm": "a"},
         "value": a},
        {"name": "llmopt_decisions_total", "labels": {"policy_id": "default", "arm": "b"},
         "value": b},
        {"name": "llmopt_outcome_reward_total", "labels": {"policy_id": "default"},
         "value": reward},
        {"name": "llmopt_outcomes_total", "labels": {"policy_id": "default", "kind": "rewarded"},
         "value": outcomes},
        {"name": "llmopt_consumer_lag_messages", "labels": {"consumer": "faust",
                                                            "topic": "decisions"}, "value": 7},
    ]  # fmt: skip
    return MetricsSnapshot(uuid.uuid4().hex, "worker", "host:6066:1", t, 2000, samples)


def sim_snap(t: int, n: float, regret: float) -> MetricsSnapshot:
    samples = [
        {"name": "llmopt_simulator_decisions_total", "labels": {}, "value": n},
        {"name": "llmopt_simulator_true_regret_total", "labels": {}, "value": regret},
        {"name": "llmopt_simulator_best_arm", "labels": {"arm": "a"}, "value": 1},
    ]
    return MetricsSnapshot(uuid.uuid4().hex, "simulator", "simulator:host:2", t, 2000, samples)


def scenario(t0: int) -> list[MetricsSnapshot]:
    """Two publishing intervals: 300 then 300 decisions (150/s), 3:1 between
    arms a and b; 200 outcomes with reward 160 (0.8); regret 12 over 600."""
    return [
        worker_snap(t0, 0, 0, 0, 0),
        sim_snap(t0, 0, 0),
        worker_snap(t0 + 2000, 225, 75, 80, 100),
        sim_snap(t0 + 2000, 300, 6),
        worker_snap(t0 + 4000, 450, 150, 160, 200),
        sim_snap(t0 + 4000, 600, 12),
    ]


def rendered(view: dict) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(render(view))
    return console.export_text()


def test_render_shows_the_hand_computed_figures() -> None:
    h = MetricsHistory(bucket_ms=2000)
    for s in scenario(1_000_000):
        h.add(s)
    h.add_event("drift", {"policy_id": "default", "arm": "b", "signal": "reward",
                          "detected_at": 1_004_000})  # fmt: skip
    text = rendered(h.view(now_ms=1_004_000))
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert "150" in lines["decisions/s"]
    assert "0.800" in lines["avg reward · default"]
    assert "12.0 (0.0200/decision)" in lines["true regret"]
    assert "a" in lines["best arm by truth"]
    assert "7" in lines["consumer lag"]
    assert "75.0%" in lines["a"] and "25.0%" in lines["b"]
    assert "drift events (1)" in text and "signal=reward" in text
    assert "alerts (0)" in text and "none yet" in text


def test_render_before_any_metrics_says_it_is_waiting() -> None:
    assert "waiting for metrics" in rendered(MetricsHistory().view(now_ms=0))


def test_sparkline_scales_to_the_largest_value() -> None:
    assert sparkline([0, 7, 14]) == "▁▄█"
    assert sparkline([None, 0]) == " ▁"
    assert len(sparkline(list(range(100)), width=10)) == 10


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "monitor", *args],
        env={**env, "COLUMNS": "120"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_monitor_without_a_cluster_is_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPT_")}
    out = run_cli(env, "--once", "1")
    assert out.returncode == 2
    assert out.stderr.startswith("llmopt: error: no Kafka cluster configured")


def test_monitor_reads_the_metrics_topic(broker: Broker, tmp_path: Path) -> None:
    for d in deploy(broker, tmp_path):
        t0 = now_ms() - 4000
        docs = [(s.worker_id.encode(), s.dumps()) for s in scenario(t0)]
        docs.insert(2, (b"bad", b"{not json"))  # skipped, not fatal
        asyncio.run(produce(broker.bootstrap, d.topics.name("metrics"), docs))
        out = run_cli(d.env, "--once", "3")
        assert out.returncode == 0, out.stderr
        lines = {ln.split("│")[1].strip(): ln for ln in out.stdout.splitlines() if "│" in ln}
        assert "150" in lines["decisions/s"], out.stdout
        assert "75.0%" in lines["a"] and "25.0%" in lines["b"]
        assert "12.0 (0.0200/decision)" in lines["true regret"]

        # Live mode redraws until interrupted, and leaves the last frame behind.
        live = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "monitor", "--interval", "0.5"],
            env={**d.env, "COLUMNS": "120"},
            # A shell that runs the suite in the background ignores SIGINT,
            # and Python keeps a SIGINT ignored at its start: give it Ctrl-C back.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # rich draws to a pipe only at exit: give it time to start and read
        # (seconds on a loaded machine) before interrupting it.
        time.sleep(8)
        live.send_signal(signal.SIGINT)
        stdout, stderr = live.communicate(timeout=60)
        assert live.returncode == 130, stderr
        assert "decisions/s" in stdout and "75.0%" in stdout, stdout


def test_monitor_says_when_nothing_is_published(broker: Broker, tmp_path: Path) -> None:
    for d in deploy(broker, tmp_path):
        out = run_cli(d.env, "--once", "2")
        assert out.returncode == 2
        assert "llmopt: error: no metrics read in 2s" in out.stderr


def test_monitor_says_when_the_topic_is_missing(broker: Broker) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPT_")}
    env.update(LLMOPT_KAFKA_BOOTSTRAP=broker.bootstrap, LLMOPT_TOPIC_NAMESPACE="nothere")
    out = run_cli(env, "--once", "1")
    assert out.returncode == 2
    assert "llmopt.metrics.v1.nothere is missing: run `llmopt topics apply`" in out.stderr
