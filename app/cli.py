"""``llmopt``: run the loop, a worker, the simulator, or manage topics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from app.settings import Settings


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    for name in Settings.unknown_variables():
        print(f"llmopt: warning: {name} is not a setting and is ignored", file=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"llmopt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmopt",
        description="LLM Auto-Optimizer: learns online which LLM and parameters each request "
        "should get. Without LLMOPT_KAFKA_BOOTSTRAP, `run` starts an embedded broker.",
    )
    sub = p.add_subparsers(metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="broker (embedded unless configured) + topics + worker + "
        "simulator, with a live summary; Ctrl-C stops all of it",
    )
    run.add_argument("--rate", type=float, default=300.0, help="simulated requests per second")
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--drift", action="store_true", help="enable the scenario's scheduled drift")
    run.add_argument(
        "--daily-pattern",
        action="store_true",
        help="modulate the rate by the scenario's hour-of-day pattern",
    )
    run.add_argument("--summary-every", type=float, default=5.0, metavar="SECONDS")
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser("worker", help="start a worker (join the consumer groups)")
    worker.add_argument(
        "--roles",
        default=None,
        help="comma-separated subset of decide,join,learn,features,archive "
        "(default: decide,join,learn)",
    )
    worker.add_argument("--web-port", type=int, default=None, help="port for /metrics, /health")
    worker.set_defaults(func=cmd_worker)

    sim = sub.add_parser("simulate", help="drive simulated traffic against a running pipeline")
    sim.add_argument("--rate", type=float, default=300.0)
    sim.add_argument("--duration", type=float, default=60.0)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--drift", action="store_true")
    sim.add_argument("--daily-pattern", action="store_true")
    sim.add_argument("--summary-every", type=float, default=5.0, metavar="SECONDS")
    sim.set_defaults(func=cmd_simulate)

    mon = sub.add_parser(
        "monitor", help="live figures in the terminal, read from the metrics topic"
    )
    mon.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    mon.add_argument(
        "--once",
        type=float,
        default=None,
        metavar="SECONDS",
        help="read for this many seconds, print one frame and exit",
    )
    mon.set_defaults(func=cmd_monitor)

    topics = sub.add_parser("topics", help="create or check the topics of topics.yaml")
    topics.add_argument("action", choices=["apply", "check"])
    topics.set_defaults(func=cmd_topics)

    broker = sub.add_parser("broker", help="run the embedded broker in the foreground")
    broker.add_argument("--port", type=int, default=None)
    broker.set_defaults(func=cmd_broker)

    from app.backtest_cli import add_commands as add_backtest_commands

    add_backtest_commands(sub)
    return p


# -- commands -----------------------------------------------------------------
def cmd_topics(args: argparse.Namespace) -> int:
    from app.topics import TopicCatalog, TopicMismatch, apply_topics, check_topics

    settings = _configured()
    catalog = TopicCatalog.for_settings(settings)
    try:
        if args.action == "apply":
            created = asyncio.run(apply_topics(settings.bootstrap, catalog))
            names = ", ".join(created) or "-"
            print(f"created {len(created)} topic(s): {names}; all match topics.yaml")
        else:
            asyncio.run(check_topics(settings.bootstrap, catalog))
            print(f"all {len(catalog.topics)} topics match topics.yaml")
    except TopicMismatch as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError(f"cannot reach Kafka at {settings.bootstrap}: {exc}") from None
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.roles:
        overrides["worker_roles"] = args.roles
    if args.web_port:
        overrides["web_port"] = args.web_port
    settings = _configured(**overrides)
    unknown = settings.roles - {"decide", "join", "learn", "features", "archive"}
    if unknown or not settings.roles:
        raise CliError(
            "--roles takes a subset of decide,join,learn,features,archive, "
            f"got {args.roles or settings.worker_roles!r}"
        )
    run_worker(settings)
    return 0


def run_worker(settings: Settings) -> None:
    import faust

    from app.faust_app import create_app
    from app.policies.config import PolicyConfigError

    _one_torch_thread()
    try:
        app = create_app(settings)
    except PolicyConfigError as exc:
        raise CliError(str(exc)) from None
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()


def _one_torch_thread() -> None:
    """Torch's default thread pool makes small-network steps ~10x slower on a
    few cores shared with the broker and the event loop."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def cmd_simulate(args: argparse.Namespace) -> int:
    settings = _configured()
    asyncio.run(_simulate(settings, args))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    with _cluster(settings) as settings:
        from app.topics import TopicCatalog, apply_topics

        asyncio.run(apply_topics(settings.bootstrap, TopicCatalog.for_settings(settings)))
        print(
            f"topics ready on {settings.bootstrap}; starting a worker "
            f"(metrics: http://{settings.web_host}:{settings.web_port}/metrics, "
            f"dashboard: http://{settings.web_host}:{settings.web_port}/dashboard)",
            flush=True,
        )
        with _worker_process(settings) as proc:
            _wait_ready(settings, proc)
            asyncio.run(_simulate(settings, args))
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from app.monitor import MonitorError, run_monitor

    settings = _configured()
    if args.interval <= 0 or (args.once is not None and args.once < 0):
        raise CliError("--interval must be positive and --once not negative")
    try:
        view = asyncio.run(run_monitor(settings, args.interval, args.once))
    except MonitorError as exc:
        raise CliError(str(exc)) from None
    if args.once is not None and not view["points"]:
        raise CliError(
            f"no metrics read in {args.once:g}s: is a worker running against "
            f"{settings.bootstrap} (LLMOPT_METRICS_PUBLISH_SECONDS > 0)?"
        )
    return 0


class _StopSignal(Exception):
    """SIGTERM, SIGINT or SIGHUP reached `llmopt broker`."""


def cmd_broker(args: argparse.Namespace) -> int:
    from app.broker import EmbeddedBroker

    def stop(signum: int, frame: Any) -> None:
        raise _StopSignal(signum)

    # The broker runs in a session of its own (a terminal's Ctrl-C does not
    # reach it): whatever signal stops this command must stop it too.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    broker = EmbeddedBroker(port=args.port)
    try:
        try:
            broker.start()
        except (OSError, RuntimeError) as exc:
            raise CliError(f"the embedded broker did not start: {exc}") from None
        assert broker.proc is not None
        print(
            f"embedded broker on {broker.bootstrap}; "
            f"export LLMOPT_KAFKA_BOOTSTRAP={broker.bootstrap}",
            flush=True,
        )
        code = broker.proc.wait()
    except _StopSignal:
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        broker.stop()
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    print(
        f"llmopt: error: the embedded broker on {broker.bootstrap} exited ({how}); "
        "its topics are gone",
        file=sys.stderr,
    )
    return 1


# -- helpers ------------------------------------------------------------------
def _configured(**overrides: Any) -> Settings:
    settings = Settings.from_env(**overrides)
    if not settings.kafka_bootstrap:
        raise CliError(
            "no Kafka cluster configured: set LLMOPT_KAFKA_BOOTSTRAP=host:port "
            "(or use `llmopt run`, which starts the embedded broker, or "
            "`llmopt broker` to run one)"
        )
    return settings


@contextlib.contextmanager
def _cluster(settings: Settings) -> Iterator[Settings]:
    """The configured cluster, or an embedded broker for the duration."""
    if settings.kafka_bootstrap:
        yield settings
        return
    from app.broker import EmbeddedBroker

    # The embedded broker starts empty: local table state from an earlier run
    # would not match it.
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    with EmbeddedBroker() as broker:
        print(f"embedded broker on {broker.bootstrap}", flush=True)
        os.environ["LLMOPT_KAFKA_BOOTSTRAP"] = broker.bootstrap
        os.environ["LLMOPT_EMBEDDED_BROKER"] = "1"
        yield Settings.from_env()


@contextlib.contextmanager
def _worker_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    log = Path(settings.data_dir) / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(settings: Settings, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Poll the worker's /health until it holds its partitions."""
    import urllib.error
    import urllib.request

    url = f"http://{settings.web_host}:{settings.web_port}/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(
                f"the worker exited with {proc.returncode}; see {settings.data_dir}/worker.log"
            )
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=1) as resp,
        ):
            if resp.status == 200:
                print("worker ready", flush=True)
                return
        time.sleep(0.5)
    raise CliError(
        f"the worker was not ready after {timeout:.0f}s; see {settings.data_dir}/worker.log"
    )


async def _simulate(settings: Settings, args: argparse.Namespace) -> None:
    from app.evaluation.simulator import ArmSpec, SimulatorConfig, TrafficSimulator
    from app.policies.config import PoliciesConfig
    from app.topics import TopicCatalog
    from app.traffic import TrafficDriver

    policies = PoliciesConfig.load(settings.policies_path)
    pc = policies.get(None)
    assert pc is not None
    config = SimulatorConfig.from_yaml(settings.simulator_path).with_drift(args.drift)
    arms = [ArmSpec(a.name, a.model, dict(a.parameters)) for a in pc.arms]
    sim = TrafficSimulator(config, arms, pc.reward, seed=args.seed)
    driver = TrafficDriver(
        settings.bootstrap,
        TopicCatalog.for_settings(settings),
        sim,
        args.rate,
        daily_pattern=args.daily_pattern,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, driver.stop)
    loop.add_signal_handler(signal.SIGTERM, driver.stop)

    async def report() -> None:
        while True:
            await asyncio.sleep(args.summary_every)
            print(_format_summary(driver.summary()), flush=True)

    reporter = asyncio.create_task(report())
    try:
        await driver.run(args.duration)
    finally:
        reporter.cancel()
    print("final: " + _format_summary(driver.summary()), flush=True)


def _format_summary(s: dict[str, Any]) -> str:
    shares = "  ".join(f"{a} {v:.0%}" for a, v in list(s["arm_shares"].items())[:6])
    return (
        f"[{s['elapsed_s']:>6.1f}s] decisions {s['decided']:>7} ({s['decisions_per_s']:.0f}/s)  "
        f"p50 {s['latency_p50_ms']:.0f} ms p99 {s['latency_p99_ms']:.0f} ms  "
        f"avg reward {s['avg_reward']:.3f}  true regret {s['true_regret']:.1f} "
        f"({s['mean_regret']:.4f}/decision)\n          shares (last 2k): {shares}   "
        f"best arm by truth: {s['best_arm']}"
    )


if __name__ == "__main__":
    sys.exit(main())
