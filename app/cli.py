"""``llmopt``: run the loop, a worker, the simulator, or manage topics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from app.config_schema import ConfigError
from app.log_format import configure_cli_logging
from app.settings import FEATURES_PATH, Settings, SettingsError


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    """Every problem the user can fix (a bad flag, setting or config file, an
    unreachable cluster) is one line on stderr and exit status 2."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        for name in Settings.unknown_variables():
            print(f"llmopt: warning: {name} is not a setting and is ignored", file=sys.stderr)
        configure_cli_logging(Settings.from_env())
        return int(args.func(args) or 0)
    except (CliError, ConfigError, SettingsError) as exc:
        print(f"llmopt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (a :class:`CliError`), not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see `{self.prog} --help`)")


def port_number(text: str) -> int:
    """A ``--*-port`` value: a fixed port, since the CLI polls and prints it."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 1 to 65535")
    return port


def _add_traffic_flags(p: argparse.ArgumentParser) -> None:
    """The simulated traffic of `run` and `simulate`."""
    p.add_argument("--rate", type=float, default=300.0, help="simulated requests per second")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated traffic")
    p.add_argument(
        "--policy",
        default=None,
        metavar="POLICY_ID",
        help="the policy the simulated requests name (default: the config's default_policy; "
        "`context-free` for the same arms without routing or tuning)",
    )
    p.add_argument("--drift", action="store_true", help="enable the scenario's scheduled drift")
    p.add_argument(
        "--daily-pattern",
        action="store_true",
        help="modulate the rate by the scenario's hour-of-day pattern",
    )
    p.add_argument(
        "--summary-every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between summary lines",
    )
    p.add_argument(
        "--summary-json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the final summary to FILE as JSON",
    )


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
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
    _add_traffic_flags(run)
    run.add_argument(
        "--single-worker",
        action="store_true",
        help="one worker for every role (default: the join and the learner in a "
        "second worker, so that learning never delays a decision)",
    )
    run.set_defaults(func=cmd_run)

    worker = sub.add_parser("worker", help="start a worker (join the consumer groups)")
    worker.add_argument(
        "--roles",
        default=None,
        help="comma-separated subset of decide,join,learn,features,archive "
        "(default: decide,join,learn)",
    )
    worker.add_argument(
        "--web-port", type=port_number, default=None, help="port for /metrics, /health"
    )
    worker.set_defaults(func=cmd_worker)

    sim = sub.add_parser("simulate", help="drive simulated traffic against a running pipeline")
    _add_traffic_flags(sim)
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

    config = sub.add_parser(
        "config",
        help="check the config files strictly: policies, drift, features, simulator",
        description="Loads each file as the worker and the simulator would; prints "
        "'file: key.path: problem' per problem and 'ok: file' per good file; exit "
        "status 2 on any problem. A file not named is the configured one (LLMOPT_*_PATH, "
        "else config/).",
    )
    config.add_argument("action", choices=["check"])
    config.add_argument("--policies", type=Path, metavar="FILE", help="a policies YAML")
    config.add_argument("--drift", type=Path, metavar="FILE", help="a drift YAML")
    config.add_argument("--features", type=Path, metavar="FILE", help="a feature spec YAML")
    config.add_argument("--simulator", type=Path, metavar="FILE", help="a simulator scenario")
    config.set_defaults(func=cmd_config)

    broker = sub.add_parser("broker", help="run the embedded broker in the foreground")
    broker.add_argument(
        "--port", type=int, default=None, help="port to listen on (default or 0: any free port)"
    )
    broker.set_defaults(func=cmd_broker)

    from app.backtest_cli import add_commands as add_backtest_commands

    add_backtest_commands(sub)
    from app.registry_cli import add_commands as add_registry_commands

    add_registry_commands(sub)
    from app.experiment_cli import add_commands as add_experiment_commands

    add_experiment_commands(sub)
    from app.explain_cli import add_commands as add_explain_commands

    add_explain_commands(sub)
    from app.warm_start_cli import add_commands as add_warm_start_commands

    add_warm_start_commands(sub)
    return p


# -- commands -----------------------------------------------------------------
def cmd_topics(args: argparse.Namespace) -> int:
    from app.topics import TopicCatalog, TopicMismatch, apply_topics, check_topics

    settings = _configured()
    catalog = TopicCatalog.for_settings(settings)
    try:
        with _kafka(settings):
            if args.action == "apply":
                created = asyncio.run(apply_topics(settings.bootstrap, catalog))
                names = ", ".join(created) or "-"
                print(f"created {len(created)} topic(s): {names}; all match topics.yaml")
            else:
                asyncio.run(check_topics(settings.bootstrap, catalog))
                print(f"all {len(catalog.topics)} topics match topics.yaml")
    except TopicMismatch as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from app.drift.config import DriftConfig
    from app.evaluation.simulator import SimulatorConfig
    from app.features.spec import FeatureSpec
    from app.policies.config import PoliciesConfig

    settings = Settings.from_env()
    files: list[tuple[Path, Any]] = [
        (args.policies or settings.policies_path, PoliciesConfig.load),
        (args.drift or settings.drift_path, DriftConfig.load),
        (args.features or Path(settings.feature_spec_path or FEATURES_PATH), FeatureSpec.load),
        (args.simulator or settings.simulator_path, SimulatorConfig.from_yaml),
    ]
    problems = 0
    for path, load in files:
        shown = _shown(path)
        try:
            load(shown)
        except ConfigError as exc:
            problems += 1
            print(exc, file=sys.stderr)
        else:
            print(f"ok: {shown}")
    return 2 if problems else 0


def cmd_worker(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.roles:
        overrides["worker_roles"] = args.roles
    if args.web_port is not None:
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

    from app.log_format import worker_logging_config
    from app.policies.config import PolicyConfigError
    from app.stream.app import create_app

    _one_torch_thread()
    try:
        app = create_app(settings)
    except PolicyConfigError as exc:
        raise CliError(str(exc)) from None
    _collect_less()
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        logging_config=worker_logging_config(settings),
    )
    worker.execute_from_commandline()


def _collect_less() -> None:
    """The cyclic garbage collector's default thresholds made it a quarter of
    a busy worker's CPU: every batch allocates tens of thousands of short-lived
    records, each allocation run started a young-generation pass, and the
    oldest generation (every module, policy state and pending join entry) was
    walked again and again. What the imports and the app's set-up made is
    frozen out of the passes, and the young generation is collected ~70x
    less often; reference counting still frees everything acyclic at once."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


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
    with _kafka(settings):
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
        from app.stream.worker_process import WorkerNotReady, WorkerProcess

        log = Path(settings.data_dir) / "worker.log"
        url = f"http://{settings.web_host}:{settings.web_port}/health"
        learning = settings.roles & {"join", "learn"}
        split = not args.single_worker and "decide" in settings.roles and learning
        env = dict(os.environ)
        if split:
            env["LLMOPT_WORKER_ROLES"] = ",".join(sorted(settings.roles - learning))
        with contextlib.ExitStack() as workers:
            started = [workers.enter_context(WorkerProcess(log, url, env=env, grace_s=15))]
            if split:
                # Learning (the join, policy updates, the tuner's model fits) in
                # a process of its own: it never holds up the decider's event loop.
                from app.stream.broker import free_port

                port = free_port()
                learner_env = {
                    **os.environ,
                    "LLMOPT_WORKER_ROLES": ",".join(sorted(learning)),
                    "LLMOPT_WEB_PORT": str(port),
                    "LLMOPT_DATA_DIR": str(Path(settings.data_dir) / "learner"),
                }
                learner_url = f"http://{settings.web_host}:{port}/health"
                started.append(
                    workers.enter_context(
                        WorkerProcess(
                            Path(settings.data_dir) / "learner.log",
                            learner_url,
                            env=learner_env,
                            grace_s=15,
                        )
                    )
                )
            try:
                for worker in started:
                    worker.wait_ready(poll_s=0.5)
            except WorkerNotReady as exc:
                raise CliError(str(exc)) from None
            print("worker ready" if not split else "workers ready (deciding, learning)", flush=True)
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
    from app.stream.broker import EmbeddedBroker

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


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it is under it."""
    try:
        return Path(path).resolve().relative_to(Path.cwd())
    except ValueError:
        return Path(path)


@contextlib.contextmanager
def _kafka(settings: Settings) -> Iterator[None]:
    """A cluster that cannot be reached is a one-line error; the Kafka client's
    own log lines about it would only repeat that error."""
    from aiokafka.errors import KafkaConnectionError

    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        yield
    except KafkaConnectionError as exc:
        raise CliError(
            f"cannot reach Kafka at {settings.bootstrap} ({exc}); check "
            "LLMOPT_KAFKA_BOOTSTRAP and that the cluster is up"
        ) from None
    finally:
        client_log.setLevel(level)


@contextlib.contextmanager
def _cluster(settings: Settings) -> Iterator[Settings]:
    """The configured cluster, or an embedded broker for the duration."""
    if settings.kafka_bootstrap:
        yield settings
        return
    from app.stream.broker import EmbeddedBroker

    # The embedded broker starts empty: local table state from an earlier run
    # would not match it.
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    with EmbeddedBroker() as broker:
        print(f"embedded broker on {broker.bootstrap}", flush=True)
        os.environ["LLMOPT_KAFKA_BOOTSTRAP"] = broker.bootstrap
        os.environ["LLMOPT_EMBEDDED_BROKER"] = "1"
        yield Settings.from_env()


async def _simulate(settings: Settings, args: argparse.Namespace) -> None:
    from app.evaluation.simulator import SimulatorConfig, TrafficSimulator
    from app.policies.config import PoliciesConfig
    from app.topics import TopicCatalog
    from app.traffic import TrafficDriver
    from app.tuning.space import DEFAULT_SPACE, ParameterSpace

    policies = PoliciesConfig.load(settings.policies_path)
    policy_id = args.policy or policies.default_policy
    pc = policies.get(policy_id)
    if pc is None:
        raise CliError(
            f"--policy {policy_id}: no such policy in {_shown(settings.policies_path)}; "
            f"known: {', '.join(sorted(policies.policies))}"
        )
    config = SimulatorConfig.from_yaml(settings.simulator_path).with_drift(args.drift)
    # Regret against the best model at its best call parameters, for every policy alike.
    space = ParameterSpace.from_config(DEFAULT_SPACE)
    sim = TrafficSimulator(config, pc.arms, pc.reward, seed=args.seed, parameter_space=space)
    driver = TrafficDriver(
        settings.bootstrap,
        TopicCatalog.for_settings(settings),
        sim,
        args.rate,
        policy_id=args.policy,
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
    final = driver.summary()
    print("final: " + _format_summary(final), flush=True)
    if args.summary_json is not None:
        import orjson

        final["policy_id"] = policy_id
        final["seed"] = args.seed
        args.summary_json.write_bytes(orjson.dumps(final, option=orjson.OPT_INDENT_2))


def _format_summary(s: dict[str, Any]) -> str:
    from app.monitor import task_lines

    shares = "  ".join(f"{a} {v:.0%}" for a, v in list(s["arm_shares"].items())[:6])
    last = s["last_minute"]["regret_per_decision"]
    return (
        f"[{s['elapsed_s']:>6.1f}s] decisions {s['decided']:>7} ({s['decisions_per_s']:.0f}/s)  "
        f"p50 {s['latency_p50_ms']:.0f} ms p99 {s['latency_p99_ms']:.0f} ms  "
        f"avg reward {s['avg_reward']:.3f}  true regret {s['true_regret']:.1f} "
        f"({s['mean_regret']:.4f}/decision; last minute "
        f"{'–' if last is None else f'{last:.4f}'}/decision)\n"
        f"          shares (last 2k): {shares}   best arm by truth: {s['best_arm']}\n"
        + "\n".join(f"          {line}" for line in task_lines(s["tasks"]))
    )


if __name__ == "__main__":
    # Through the package's module, not this __main__ copy: the subcommands'
    # modules raise app.cli.CliError, which this copy's main would not catch.
    from app.cli import main as package_main

    sys.exit(package_main())
