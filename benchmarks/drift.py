"""Drift detection on seeded degradations, and the drift loop on the simulator.

    scripts/bench-drift              # full: 500 trials per (signal, detector), 3 loop seeds
    scripts/bench-drift --quick      # 40 trials, 1 loop seed
    scripts/bench-drift --json       # JSON on stdout (the tables go to stderr)

**Part 1 — detectors.** Four seeded degradations, each trial a stream of
``--stable`` values (default 5,000) from the healthy law, then up to
``--horizon`` (default 5,000) from the degraded one:

* reward: Bernoulli 0.8 → 0.6;
* latency: lognormal, median 800 ms, log-sd 0.5 → ×2;
* cost: lognormal, median $0.004, log-sd 0.7 → ×1.5;
* error: Bernoulli 1% → 5%.

Values reach the detectors as ``DriftMonitor`` gives them (latency and cost
on a log scale, error as 0/1). Per (signal, detector): detected = a drift
within the horizon after the change; delay = values after the change until
the first drift (median, p90); false alarms = drifts among the stable values,
per 100,000 of them (detectors restart after each). Detectors: river's ADWIN
(defaults) and Page-Hinkley (defaults), and each signal's detector from
config/drift.yaml (CUSUM for reward, latency and cost; ADWIN for error).
PASS: the configured detector of every signal detects ≥ 95%.

**Part 2 — the loop.** The default simulator scenario with its scheduled
drift (claude-3-5-haiku, the best arm, loses 20% quality, gets 1.5× slower
and fails 5% of calls 600 s in), the default policy (Thompson sampling)
driven in process through :class:`app.decider.Decider` and
:class:`app.learner.Learner` (snapshots at the configured cadence, rewards at
once). N = outcomes after the drift until the degraded arm's share of the
last 500 decisions is below 20%, without and with the drift loop
(``DriftMonitor`` → ``Learner.adapt`` per config/drift.yaml), same seed.
PASS: with the loop, N is reached and smaller than without.

**Part 3 — cost.** The CPU ``detect_drift`` spends per outcome: parsing it
and ``DriftMonitor.observe`` with the configured drift and anomaly
detectors and the input-drift windows, over 30,000 outcomes of five arms
(best of three passes, a fresh monitor each). Reported, not judged.

Results: tables and ``benchmarks/results/drift-<git short sha>[-quick].json``;
the last line is ``overall: PASS|FAIL`` (every part run passes).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from river import drift
from river.base import DriftDetector

from app.decider import Decider
from app.drift.config import DRIFT_DETECTORS, DriftConfig
from app.drift.monitor import DriftMonitor
from app.evaluation.simulator import TrafficSimulator
from app.learner import Learner
from app.policies.config import PoliciesConfig
from app.records import Outcome, Request
from benchmarks.common import ROOT, progress_logger, report, result_path, run_header

DETECTION_TARGET = 0.95
SHARE_TARGET = 0.20
SHARE_WINDOW = 500
DEGRADED_ARM = "claude-haiku"


log = progress_logger()


# ----------------------------------------------------------------------- part 1: detectors


def _bernoulli(p0: float, p1: float) -> Callable[[random.Random, bool], float]:
    return lambda rng, after: 1.0 if rng.random() < (p1 if after else p0) else 0.0


def _log_normal(
    median: float, sigma: float, factor: float
) -> Callable[[random.Random, bool], float]:
    mu = math.log(median)
    return lambda rng, after: rng.gauss(mu, sigma) + (math.log(factor) if after else 0.0)


SCENARIOS: dict[str, tuple[str, Callable[[random.Random, bool], float]]] = {
    "reward": ("Bernoulli 0.8 → 0.6", _bernoulli(0.8, 0.6)),
    "latency": ("lognormal latency × 2", _log_normal(800.0, 0.5, 2.0)),
    "cost": ("lognormal cost × 1.5", _log_normal(0.004, 0.7, 1.5)),
    "error": ("error rate 1% → 5%", _bernoulli(0.01, 0.05)),
}


def detectors_for(signal: str, config: DriftConfig) -> dict[str, Callable[[], DriftDetector]]:
    spec = config.signals[signal]
    out: dict[str, Callable[[], DriftDetector]] = {
        "adwin (river defaults)": drift.ADWIN,
        "page_hinkley (river defaults)": drift.PageHinkley,
    }
    out[f"{spec.name} (configured)"] = lambda: spec.build(DRIFT_DETECTORS)
    return out


def run_trials(
    make: Callable[[], DriftDetector],
    sample: Callable[[random.Random, bool], float],
    trials: int,
    stable: int,
    horizon: int,
    seed0: int,
) -> dict[str, Any]:
    delays: list[int] = []
    false_alarms = 0
    for trial in range(trials):
        rng = random.Random(seed0 * 1_000_003 + trial)  # same streams for every detector
        det = make()
        for _ in range(stable):
            det.update(sample(rng, False))
            if det.drift_detected:
                false_alarms += 1
        for i in range(horizon):
            det.update(sample(rng, True))
            if det.drift_detected:
                delays.append(i + 1)
                break
    delays.sort()
    return {
        "trials": trials,
        "detected": len(delays) / trials,
        "delay_median": statistics.median(delays) if delays else None,
        "delay_p90": delays[min(len(delays) - 1, int(0.9 * len(delays)))] if delays else None,
        "stable_values": trials * stable,
        "false_alarms": false_alarms,
        "false_alarms_per_100k": false_alarms * 100_000 / (trials * stable),
    }


def part_detectors(args: argparse.Namespace, config: DriftConfig) -> list[dict[str, Any]]:
    rows = []
    for s_i, (signal, (label, sample)) in enumerate(SCENARIOS.items()):
        for name, make in detectors_for(signal, config).items():
            t0 = time.perf_counter()
            r = run_trials(make, sample, args.trials, args.stable, args.horizon, seed0=s_i)
            r.update(
                signal=signal, degradation=label, detector=name, seconds=time.perf_counter() - t0
            )
            rows.append(r)
            log(
                f"  {signal:8s} {name:32s} detected {r['detected']:6.1%}  "
                f"delay p50 {r['delay_median']}  false alarms/100k {r['false_alarms_per_100k']:.1f}"
            )
    return rows


# ----------------------------------------------------------------------- part 2: the loop


def run_loop(
    seed: int, with_loop: bool, max_after: int, drift_config: DriftConfig
) -> dict[str, Any]:
    """Drive the default policy through the default scenario's drift; return
    the outcomes after the drift until the degraded arm's share falls below 20%."""
    policies = PoliciesConfig.load(ROOT / "config" / "policies.yaml")
    pid = policies.default_policy
    sim = TrafficSimulator.default(seed=seed, start_ms=0, drift=True)
    drift_ms = round(sim.config.drift_events[0].at_seconds * 1000)
    decider = Decider(policies, seed=seed)
    learner = Learner(policies)
    learner.load(pid, None, 0)
    spec = policies.policies[pid].reward
    adapt_spec = drift_config.adaptation_for(pid)
    recent: deque[bool] = deque(maxlen=SHARE_WINDOW)
    now, offset, drift_offset, after = 0, 0, 0, 0
    share_at_drift = None
    events: list[dict[str, Any]] = []
    ids = iter(range(10**9))
    monitor = DriftMonitor(drift_config, clock=lambda: now, ids=lambda: f"d{next(ids)}")
    while True:
        now = sim.next_arrival_ms(now)
        req: Request = sim.next_request(now, policy_id=pid)
        doc = decider.decide([req], now)[0]
        assert isinstance(doc, dict), doc
        arm = doc["arm"]
        reward = sim.outcome(req, arm, now)
        outcome = Outcome(
            request_id=req.request_id,
            tenant_id=req.tenant_id,
            policy_id=pid,
            policy_version=doc["policy_version"],
            arm=arm,
            available_arms=doc["available_arms"],
            propensity=doc["propensity"],
            explored=doc["explored"],
            reward=spec.scalar(reward.quality, reward.cost_usd, reward.latency_ms, reward.error),
            defaulted=False,
            decided_at=now,
            outcome_at=now,
            components={
                k: v
                for k in ("quality", "cost_usd", "latency_ms", "error")
                if (v := getattr(reward, k)) is not None
            },
        )
        learner.apply(outcome, 0, offset)
        offset += 1
        recent.append(arm == DEGRADED_ARM)
        if with_loop:
            for e in monitor.observe(outcome):
                if e.kind != "drift":
                    continue
                done = learner.adapt(e, adapt_spec, 0, drift_offset, now)
                drift_offset += 1
                events.append(
                    {
                        "after": after if now >= drift_ms else -(offset),
                        "arm": e.arm,
                        "signal": e.signal,
                        "direction": e.direction,
                        "adapted": done.applied if done else None,
                    }
                )
        for due in learner.due_snapshots(now):
            decider.apply_snapshot(learner.snapshot(due, now))
        if now < drift_ms:
            continue
        if share_at_drift is None:
            share_at_drift = sum(recent) / len(recent)
        after += 1
        share = sum(recent) / len(recent)
        if share < SHARE_TARGET and after >= 1:
            return {
                "seed": seed,
                "loop": with_loop,
                "outcomes_before_drift": offset - after,
                "share_at_drift": share_at_drift,
                "n": after,
                "events": [e for e in events if e["arm"] == DEGRADED_ARM][:10],
                "drifts_before": sum(1 for e in events if e["after"] < 0),
            }
        if after >= max_after:
            return {
                "seed": seed,
                "loop": with_loop,
                "outcomes_before_drift": offset - after,
                "share_at_drift": share_at_drift,
                "n": None,
                "share_at_end": share,
                "events": [e for e in events if e["arm"] == DEGRADED_ARM][:10],
                "drifts_before": sum(1 for e in events if e["after"] < 0),
            }


def part_loop(args: argparse.Namespace, config: DriftConfig) -> list[dict[str, Any]]:
    rows = []
    for seed in args.loop_seeds:
        for with_loop in (False, True):
            t0 = time.perf_counter()
            r = run_loop(seed, with_loop, args.max_after, config)
            r["seconds"] = time.perf_counter() - t0
            rows.append(r)
            log(
                f"  seed {seed} loop {'on ' if with_loop else 'off'}  share at drift "
                f"{r['share_at_drift']:.0%}  N = {r['n'] if r['n'] is not None else 'never'}"
                f"  ({r['seconds']:.0f} s)"
            )
    return rows


# ----------------------------------------------------------------------- report


# ----------------------------------------------------------------------- part 3: cost


def part_cost(config: DriftConfig, n: int = 30_000, repeats: int = 3) -> dict[str, Any]:
    """µs per outcome to parse it, and to parse and observe it (best of ``repeats``)."""
    rng = random.Random(5)
    arms = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku", "llama-70b"]
    t0 = 1_700_000_000_000
    raws = [
        Outcome(
            request_id=f"cost-{i}",
            tenant_id="acme",
            policy_id="default",
            policy_version=1,
            arm=rng.choice(arms),
            available_arms=arms,
            propensity=0.2,
            explored=False,
            reward=rng.uniform(0.7, 0.9),
            defaulted=False,
            decided_at=t0 + i,
            outcome_at=t0 + i + 5,
            components={
                "latency_ms": rng.lognormvariate(6.5, 0.3),
                "error": rng.random() < 0.01,
                "quality": rng.betavariate(9, 1),
                "cost_usd": rng.uniform(0.001, 0.003),
            },
            features=[rng.random() for _ in range(12)],
        ).dumps()
        for i in range(n)
    ]
    parse = observe = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for raw in raws:
            Outcome.loads(raw)
        parse = min(parse, time.perf_counter() - started)
        monitor = DriftMonitor(config)
        started = time.perf_counter()
        for raw in raws:
            monitor.observe(Outcome.loads(raw))
        observe = min(observe, time.perf_counter() - started)
    return {
        "outcomes": n,
        "arms": len(arms),
        "parse_us": round(parse / n * 1e6, 2),
        "parse_and_observe_us": round(observe / n * 1e6, 2),
    }


def verdicts(detectors: list[dict[str, Any]], loop: list[dict[str, Any]]) -> dict[str, Any]:
    configured = [r for r in detectors if r["detector"].endswith("(configured)")]
    detection_ok = all(r["detected"] >= DETECTION_TARGET for r in configured)
    by_seed: dict[int, dict[bool, Any]] = {}
    for r in loop:
        by_seed.setdefault(r["seed"], {})[r["loop"]] = r["n"]
    loop_ok = all(
        on is not None and (off is None or on < off)
        for on, off in ((v.get(True), v.get(False)) for v in by_seed.values())
    )
    return {
        "detection": ("PASS" if detection_ok else "FAIL") if configured else "not run",
        "loop": ("PASS" if loop_ok else "FAIL") if by_seed else "not run",
    }


def tables(result: dict[str, Any]) -> str:
    lines: list[str] = []
    lines.append(
        "\nDetectors on seeded degradations "
        f"({result['params']['trials']} trials; {result['params']['stable']} stable values, "
        f"then up to {result['params']['horizon']} degraded)"
    )
    lines.append(
        f"{'signal':8s} {'detector':32s} {'detected':>9s} {'delay p50':>10s} {'delay p90':>10s} "
        f"{'FA/100k':>8s}"
    )
    for r in result["detectors"]:
        lines.append(
            f"{r['signal']:8s} {r['detector']:32s} {r['detected']:9.1%} "
            f"{r['delay_median'] if r['delay_median'] is not None else '-':>10} "
            f"{r['delay_p90'] if r['delay_p90'] is not None else '-':>10} "
            f"{r['false_alarms_per_100k']:8.1f}"
        )
    lines.append(
        f"\nSimulator: outcomes after the drift until {DEGRADED_ARM}'s share of the last "
        f"{SHARE_WINDOW} decisions < {SHARE_TARGET:.0%}"
    )
    lines.append(f"{'seed':>4s} {'loop':>5s} {'share at drift':>15s} {'N':>8s}")
    for r in result["loop"]:
        n = r["n"] if r["n"] is not None else f">{result['params']['max_after']}"
        lines.append(
            f"{r['seed']:4d} {'on' if r['loop'] else 'off':>5s} {r['share_at_drift']:15.0%} "
            f"{n!s:>8s}"
        )
    cost = result.get("cost")
    if cost:
        lines.append(
            f"\ndetect_drift's work per outcome ({cost['outcomes']:,} outcomes, {cost['arms']} "
            f"arms, best of 3): parse {cost['parse_us']:.1f} µs, parse + observe "
            f"{cost['parse_and_observe_us']:.1f} µs"
        )
    v = result["verdicts"]
    lines.append(f"\ndetection ≥ {DETECTION_TARGET:.0%} (configured detectors): {v['detection']}")
    lines.append(f"loop: share < {SHARE_TARGET:.0%}, sooner with the drift loop: {v['loop']}")
    lines.append(
        f"machine: {result['machine']['cpu_model']} ×{result['machine']['nproc']}, "
        f"commit {result['commit']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench-drift", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 trials, one loop seed")
    ap.add_argument("--trials", type=int, default=None, help="trials per (signal, detector)")
    ap.add_argument("--stable", type=int, default=5000, help="healthy values per trial")
    ap.add_argument("--horizon", type=int, default=5000, help="degraded values per trial")
    ap.add_argument("--loop-seeds", type=int, nargs="+", default=None)
    ap.add_argument("--max-after", type=int, default=40_000, help="loop: give up after")
    ap.add_argument("--only", choices=("detectors", "loop", "cost"), default=None)
    ap.add_argument("--json", action="store_true", help="JSON on stdout, tables on stderr")
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    ap.add_argument("--drift-config", type=Path, default=ROOT / "config" / "drift.yaml")
    args = ap.parse_args(argv)
    args.trials = args.trials or (40 if args.quick else 500)
    args.loop_seeds = args.loop_seeds or ([0] if args.quick else [0, 1, 2])
    config = DriftConfig.load(args.drift_config)
    result = run_header("drift", "river")
    # Also at the top of the machine record, where earlier results have it.
    result["machine"]["river"] = result["machine"]["packages"]["river"]
    log("part 1: detectors")
    detectors = [] if args.only in ("loop", "cost") else part_detectors(args, config)
    log("part 2: the loop on the simulator")
    loop = [] if args.only in ("detectors", "cost") else part_loop(args, config)
    log("part 3: cost per outcome")
    cost = part_cost(config) if args.only in (None, "cost") else None
    result |= {
        "quick": args.quick,
        "params": {
            "trials": args.trials,
            "stable": args.stable,
            "horizon": args.horizon,
            "loop_seeds": args.loop_seeds,
            "max_after": args.max_after,
            "share_window": SHARE_WINDOW,
            "drift_config": {s: [d.name, d.params] for s, d in config.signals.items()},
            "adaptation": config.adaptation.__dict__ | {"signals": list(config.adaptation.signals)},
        },
        "detectors": detectors,
        "loop": loop,
        "cost": cost,
    }
    result["verdicts"] = verdicts(detectors, loop)
    ran = [v for v in result["verdicts"].values() if v != "not run"]
    passed = all(v == "PASS" for v in ran) if ran else None
    saved = None if args.no_save else result_path("drift", result["commit"], args.quick)
    report(result, tables(result), passed, saved, json_stdout=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
