"""The default demo against the context-free policy, on the live loop.

    scripts/bench-demo                  # 180 s each, the run's default rate
    scripts/bench-demo --duration 60    # shorter (not the target's horizon)

Runs ``llmopt run`` (embedded broker, topics, one worker, the traffic
simulator) twice with the same seed and rate: once with the default policy
(``default`` in ``config/policies.yaml``: a model per task type, call
parameters tuned), once with ``--policy context-free`` (Thompson sampling
over the same arms at their configured parameters). Each run writes its
final summary (``--summary-json``); the figure compared is the true regret
per decision in the run's last minute, against the best model at its best
call parameters for each request (``TrafficSimulator.optimum``). Target: the
default's below a third of the context-free policy's. Per task type the
regret per decision in the last minute and the arm shares are reported too.

Results: a table on stdout and ``benchmarks/results/demo-<sha>[-quick].json``;
the last line is ``overall: PASS|FAIL``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import progress_logger, report, result_path, run_header
from benchmarks.common.machine import ROOT

TARGET_RATIO = 1 / 3  # default / context-free, regret per decision in the last minute
POLICIES = {"default": None, "context-free": "context-free"}  # name -> --policy
log = progress_logger("bench-demo")


def run_once(policy: str | None, seed: int, rate: float, duration: float, port: int) -> Any:
    """One ``llmopt run``; its final summary."""
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        summary = Path(tmp) / "summary.json"
        cmd = [
            str(ROOT / ".venv" / "bin" / "llmopt"),
            "run",
            "--seed",
            str(seed),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--summary-every",
            "30",
            "--summary-json",
            str(summary),
        ]
        if policy is not None:
            cmd += ["--policy", policy]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LLMOPT_") or k == "LLMOPT_LOG_LEVEL"
        }
        env.update(LLMOPT_DATA_DIR=str(Path(tmp) / "data"), LLMOPT_WEB_PORT=str(port))
        t0 = time.monotonic()
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=duration + 300
        )
        if proc.returncode != 0 or not summary.exists():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise SystemExit(f"llmopt run failed ({proc.returncode}):\n{tail}")
        out = orjson.loads(summary.read_bytes())
        out["wall_s"] = round(time.monotonic() - t0, 1)
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=180.0, help="seconds per run")
    p.add_argument("--rate", type=float, default=300.0, help="requests per second (run's default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated traffic")
    p.add_argument("--port", type=int, default=6077, help="the worker's web port during the runs")
    p.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    args = p.parse_args(argv)
    quick = args.duration < 180
    out = run_header("demo", "torch", "botorch")
    out.update(duration_s=args.duration, rate=args.rate, seed=args.seed, target_ratio=TARGET_RATIO)
    runs = {}
    for name, flag in POLICIES.items():
        log(f"{name}: llmopt run {args.duration:g} s at {args.rate:g}/s, seed {args.seed}")
        runs[name] = run_once(flag, args.seed, args.rate, args.duration, args.port)
    out["runs"] = runs
    new = runs["default"]["last_minute"]["regret_per_decision"]
    old = runs["context-free"]["last_minute"]["regret_per_decision"]
    ratio = new / old if new is not None and old else None
    out["ratio"] = ratio
    passed = ratio is not None and ratio < TARGET_RATIO
    lines = [
        f"llmopt run, {args.duration:g} s at {args.rate:g} requests/s, seed {args.seed}: "
        "true regret per decision in the last minute (best model at its best parameters)",
        f"{'task type':<15} {'default':>9} {'ctx-free':>9}   top arms (default | context-free)",
    ]
    for task in runs["default"]["tasks"]:
        d, c = runs["default"]["tasks"][task], runs["context-free"]["tasks"][task]
        top = [", ".join(f"{a} {s:.0%}" for a, s in list(r["shares"].items())[:2]) for r in (d, c)]
        lines.append(
            f"{task:<15} {_fmt(d['regret_per_decision']):>9} "
            f"{_fmt(c['regret_per_decision']):>9}   {top[0]} | {top[1]}"
        )
    lines.append(f"{'all':<15} {_fmt(new):>9} {_fmt(old):>9}")
    lines.append(
        f"decisions: default {runs['default']['decided']}, context-free "
        f"{runs['context-free']['decided']}; decision latency p99: default "
        f"{runs['default']['latency_p99_ms']:.0f} ms, context-free "
        f"{runs['context-free']['latency_p99_ms']:.0f} ms"
    )
    lines.append(f"default / context-free = {_fmt(ratio, 3)}; target < {TARGET_RATIO:.3f}")
    saved = None if args.no_save else result_path("demo", out["commit"], quick)
    report(out, "\n".join(lines), passed, saved, json_stdout=args.json)
    return 0 if passed else 1


def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
