"""``scripts/bench-policies``: options, the run and its output."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import policies
from benchmarks.common import CpuSpan, report, result_path, run_header
from benchmarks.policies import PACKAGES, log
from benchmarks.policies.lin_ucb_extras import batch_bench, snapshot_bench
from benchmarks.policies.report import render, render_extras
from benchmarks.policies.resume import load_done, write_checkpoint
from benchmarks.policies.roster import roster
from benchmarks.policies.running import run_all
from benchmarks.policies.targets import verdicts
from benchmarks.policies.workloads import (
    ARMS_B,
    CHANGE_FRACTION,
    DIM,
    DROP_TO,
    MEANS_A,
    NOISE_SD,
    RECOVERY_SHARE,
    RECOVERY_WINDOW,
    ROUNDS,
    SEEDS,
)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/bench-policies",
        description=(policies.__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="10%% of the rounds, 1 seed")
    ap.add_argument("--json", action="store_true", help="JSON on stdout, tables on stderr")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3, quick 1)")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only policies whose 'lib: label' contains this (repeatable)",
    )
    ap.add_argument(
        "--exclude",
        action="append",
        default=[],
        help="skip policies whose 'lib: label' contains this (repeatable)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds per policy and workload group beyond which "
        "further seeds are skipped (default 300)",
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each policy, wait up to this many seconds for other "
        "processes to use < 0.3 cores (default 20, quick 0)",
    )
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    ap.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="write the results so far to PATH after each policy (for --resume)",
    )
    ap.add_argument(
        "--resume",
        metavar="PATH",
        action="append",
        default=[],
        help="take the policies already in PATH (a checkpoint or a results JSON of the "
        "same mode and seeds) from it instead of running them (repeatable)",
    )
    args = ap.parse_args(argv)

    scale = 0.1 if args.quick else 1.0
    seeds = list(range(args.seeds)) if args.seeds else list(SEEDS[: 1 if args.quick else 3])
    rounds = {w: int(n * scale) for w, n in ROUNDS.items()}
    specs, skipped = roster()
    if args.only:
        specs = [
            s for s in specs if any(o.lower() in f"{s.lib}: {s.label}".lower() for o in args.only)
        ]
    if args.exclude:
        specs = [
            s
            for s in specs
            if not any(e.lower() in f"{s.lib}: {s.label}".lower() for e in args.exclude)
        ]
    doc: dict[str, Any] = run_header("policies", *PACKAGES)
    info, commit = doc["machine"], doc["commit"]
    log(
        f"policies benchmark: {'quick' if args.quick else 'full'}, seeds {list(seeds)}, "
        f"{len(specs)} policies, {info['nproc']} cores ({info['cpu_model']}), "
        f"load {info['loadavg_start']}"
    )
    started = time.time()
    meter = CpuSpan()
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 20.0)
    mode = "quick" if args.quick else "full"
    done = load_done(args.resume, mode, seeds) if args.resume else None

    def checkpoint(table: dict[str, dict[str, Any]]) -> None:
        if args.checkpoint:
            write_checkpoint(Path(args.checkpoint), mode, seeds, commit, table)

    table = run_all(specs, seeds, scale, args.budget, quiet_wait, done, checkpoint)
    snap = snapshot_bench()
    batch = batch_bench()
    info["loadavg_end"] = list(os.getloadavg())
    info["other_cores_mean"] = meter.other_cores()
    verdict = verdicts(table, snap)

    doc |= {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "seeds": list(seeds),
        "rounds": rounds,
        "change_at": int(rounds["C"] * CHANGE_FRACTION),
        "duration_s": round(time.time() - started, 1),
        "skipped": skipped,
        "settings": {
            "means_a": MEANS_A,
            "drop_to": DROP_TO,
            "dim": DIM,
            "bias": True,
            "arms_b": ARMS_B,
            "noise_sd": NOISE_SD,
            "recovery": {"window": RECOVERY_WINDOW, "share": RECOVERY_SHARE},
            "budget_s": args.budget,
        },
        "results": table,
        "snapshot_restore": snap,
        "select_batch": batch,
        "targets": verdict,
    }
    text = render(table, rounds) + "\n" + render_extras(snap, batch, verdict, skipped)
    text += (
        f"\n\nmachine: {info['nproc']} cores, {info['cpu_model']}, python "
        f"{info['python']}, numpy {info['packages']['numpy']}; other processes used "
        f"{info['other_cores_mean']:.2f} cores on average; commit {(commit or 'none')[:7]}"
    )
    saved = None if args.no_save else result_path("policies", commit, args.quick)
    report(doc, text, all(v["pass"] for v in verdict), saved, json_stdout=args.json)
    return 0
