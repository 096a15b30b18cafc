"""Off-policy estimators on a million logged events, beside Open Bandit Pipeline.

    scripts/bench-ope              # 1,000,000 events, 5 arms, d = 10, 3 repeats
    scripts/bench-ope --quick      # 100,000 events, 1 repeat
    scripts/bench-ope --json       # JSON on stdout (the table goes to stderr)

Data (seeded): contexts x ~ N(0, I₁₀); the logging policy is a softmax of
``x·W_log`` mixed 80/20 with uniform (so every propensity ≥ 0.04); actions are
drawn from it; rewards are Bernoulli(sigmoid(x·θ_a)). The evaluation policy is
a softmax of ``x·W_eval``. The reward model is our numpy ridge per arm
(:class:`~app.evaluation.estimators.RidgeRewardModel`), fitted once; the DR
family gets its ``[n, k]`` predictions, and OBP gets the very same arrays
(``action_dist[:, :, None]``, positions 0).

Per estimator, the median over repeats of: events/s = n / wall time of one
``estimate`` call (arrays already in memory), and the peak memory it allocates
(tracemalloc, which numpy reports to). Also: the reward model's fit, DR
including that fit, and a 95% bootstrap interval (200 resamples). OBP's
value must equal ours (same formulas) — a cross-check of both.

Targets: ≥ 200,000 events/s for IPS, SNIPS and DR; OBP's values equal ours.
Results: a table and ``benchmarks/results/ope-<git short sha>[-quick].json``;
the last line is ``overall: PASS|FAIL``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from app.evaluation.estimators import (
    IPS,
    SNIPS,
    DirectMethod,
    DoublyRobust,
    Replay,
    RidgeRewardModel,
    SelfNormalizedDoublyRobust,
    SwitchDoublyRobust,
)
from app.evaluation.logged_data import LoggedData
from benchmarks.common import progress_logger, report, result_path, run_header

TARGET_EVENTS_PER_S = 200_000
TARGETS = ("ips", "snips", "dr")
TAU = 10.0


log = progress_logger()


# -- data -------------------------------------------------------------------------------------


def make_data(n: int, k: int, d: int, seed: int) -> tuple[LoggedData, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w_log, w_eval, theta = (rng.normal(0, 0.3, (d, k)) for _ in range(3))

    def softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    p_log = 0.8 * softmax(x @ w_log) + 0.2 / k
    cum = p_log.cumsum(axis=1)
    a = (rng.random((n, 1)) > cum).sum(axis=1).clip(0, k - 1)
    mean = 1.0 / (1.0 + np.exp(-(x * theta.T[a]).sum(axis=1)))
    r = (rng.random(n) < mean).astype(np.float64)
    data = LoggedData(
        actions=a,
        rewards=r,
        propensities=p_log[np.arange(n), a],
        arm_names=tuple(f"arm{j}" for j in range(k)),
        contexts=x,
    )
    return data, softmax(x @ w_eval)


# -- timing -----------------------------------------------------------------------------------


def measure(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, int]:
    """(result, median seconds, peak traced bytes of one call)."""
    times = []
    value = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return value, statistics.median(times), peak


def run(n: int, k: int, d: int, repeats: int, seed: int) -> dict[str, Any]:
    log(f"generating {n:,} events, {k} arms, d={d} ...")
    data, pi = make_data(n, k, d, seed)
    rows: list[dict[str, Any]] = []

    def add(lib: str, name: str, value: float, seconds: float, peak: int, note: str = "") -> None:
        rows.append(
            {
                "library": lib,
                "estimator": name,
                "value": float(value),
                "seconds": seconds,
                "events_per_s": n / seconds if seconds > 0 else None,
                "peak_mib": peak / 2**20,
                "note": note,
            }
        )
        log(f"  {lib:>4} {name:<22} {n / seconds:>14,.0f} events/s  {peak / 2**20:8.1f} MiB")

    model = RidgeRewardModel(alpha=1.0)
    q, t_fit, peak_fit = measure(lambda: model.fit(data).predict(data), repeats)
    add("ours", "ridge reward model", float("nan"), t_fit, peak_fit, "fit + predict [n, k]")
    ours = {
        "replay": Replay(seed=seed),
        "ips": IPS(),
        "snips": SNIPS(),
        "dm": DirectMethod(),
        "dr": DoublyRobust(),
        "sndr": SelfNormalizedDoublyRobust(),
        "switch-dr": SwitchDoublyRobust(tau=TAU),
    }
    values: dict[str, float] = {}
    for name, est in ours.items():

        def call(est: Any = est) -> float:
            return float(est.estimate(data, pi, q))

        v, t, peak = measure(call, repeats)
        values[name] = v
        add("ours", name, v, t, peak)
    v, t, peak = measure(
        lambda: DoublyRobust().estimate(data, pi, model.fit(data).predict(data)), repeats
    )
    add("ours", "dr + reward model fit", v, t, peak)
    n_boot = 200
    est_ci, t, peak = measure(
        lambda: SNIPS().interval(data, pi, n_bootstrap=n_boot, seed=seed), max(1, repeats // 3)
    )
    add("ours", f"snips + {n_boot} bootstrap", est_ci.value, t, peak, "95% percentile interval")

    skipped: dict[str, str] = {}
    try:
        obp_rows = run_obp(data, pi, q, repeats, values)
        for r in obp_rows:
            add("obp", r["estimator"], r["value"], r["seconds"], r["peak"], r["note"])
    except ImportError as exc:
        skipped["obp"] = f"not importable: {exc}"
        log(f"  obp skipped: {exc}")

    results = {r["estimator"]: r for r in rows if r["library"] == "ours"}
    checks = []
    for name in TARGETS:
        eps = results[name]["events_per_s"]
        checks.append(
            {
                "target": f"{name} >= {TARGET_EVENTS_PER_S:,} events/s",
                "measured": eps,
                "pass": eps is not None and eps >= TARGET_EVENTS_PER_S,
            }
        )
    for r in rows:
        if r["library"] == "obp" and r["estimator"] in values:
            diff = abs(r["value"] - values[r["estimator"]])
            checks.append(
                {
                    "target": f"obp {r['estimator']} equals ours (|diff| < 1e-9)",
                    "measured": diff,
                    "pass": diff < 1e-9,
                }
            )
    return {
        "n_events": n,
        "n_arms": k,
        "context_dim": d,
        "repeats": repeats,
        "seed": seed,
        "rows": rows,
        "checks": checks,
        "skipped": skipped,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_obp(
    data: LoggedData, pi: np.ndarray, q: np.ndarray, repeats: int, ours: dict[str, float]
) -> list[dict[str, Any]]:
    from obp.ope import DirectMethod as ObpDM
    from obp.ope import DoublyRobust as ObpDR
    from obp.ope import InverseProbabilityWeighting as ObpIPW
    from obp.ope import SelfNormalizedDoublyRobust as ObpSNDR
    from obp.ope import SelfNormalizedInverseProbabilityWeighting as ObpSNIPW
    from obp.ope import SwitchDoublyRobust as ObpSwitch

    kw: dict[str, Any] = {
        "reward": data.rewards,
        "action": data.actions,
        "pscore": data.propensities,
        "action_dist": pi[:, :, None],
        "position": np.zeros(data.n_events, dtype=int),
    }
    q3 = q[:, :, None]
    out = []
    for name, est, needs_q in (
        ("ips", ObpIPW(), False),
        ("snips", ObpSNIPW(), False),
        ("dm", ObpDM(), True),
        ("dr", ObpDR(), True),
        ("sndr", ObpSNDR(), True),
        ("switch-dr", _obp_switch(ObpSwitch), True),
    ):
        args = dict(kw)
        if needs_q:
            args["estimated_rewards_by_reg_model"] = q3

        def call_obp(est: Any = est, args: dict[str, Any] = args) -> float:
            return float(est.estimate_policy_value(**args))

        v, t, peak = measure(call_obp, repeats)
        out.append({"estimator": name, "value": float(v), "seconds": t, "peak": peak, "note": ""})
    return out


def _obp_switch(cls: type) -> Any:
    """OBP's switch threshold is ``tau`` in 0.4 and ``lambda_`` in 0.5."""
    import inspect

    params = inspect.signature(cls).parameters
    return cls(tau=TAU) if "tau" in params else cls(lambda_=TAU)


# -- output -----------------------------------------------------------------------------------


def table(doc: dict[str, Any]) -> str:
    lines = [
        f"OPE benchmark: {doc['n_events']:,} events, {doc['n_arms']} arms, "
        f"d={doc['context_dim']}, median of {doc['repeats']}",
        f"{'library':<8}{'estimator':<24}{'events/s':>14}{'seconds':>10}{'peak MiB':>10}"
        f"{'value':>12}",
    ]
    for r in doc["rows"]:
        eps = f"{r['events_per_s']:,.0f}" if r["events_per_s"] else "-"
        val = "-" if r["value"] != r["value"] else f"{r['value']:.6f}"
        lines.append(
            f"{r['library']:<8}{r['estimator']:<24}{eps:>14}{r['seconds']:>10.4f}"
            f"{r['peak_mib']:>10.1f}{val:>12}"
        )
    lines.append("")
    for c in doc["checks"]:
        m = c["measured"]
        shown = f"{m:,.0f}" if isinstance(m, float) and m > 1 else f"{m:.2e}"
        lines.append(f"{'PASS' if c['pass'] else 'FAIL'}  {c['target']}  (measured {shown})")
    for lib, why in doc["skipped"].items():
        lines.append(f"SKIPPED  {lib}: {why}")
    lines.append(f"max RSS of the process: {doc['max_rss_mib']:.0f} MiB")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/bench-ope", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--quick", action="store_true", help="100,000 events, 1 repeat")
    p.add_argument("--n", type=int, default=None, help="events (default 1,000,000)")
    p.add_argument("--arms", type=int, default=5)
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    n = args.n or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 3)
    doc = run_header("ope", "numpy", "obp", "scikit-learn", "torch")
    doc |= {"quick": args.quick, **run(n, args.arms, args.dim, repeats, args.seed)}
    doc["loadavg_end"] = list(os.getloadavg())
    saved = None if args.no_save else result_path("ope", doc["commit"], args.quick)
    passed = all(c["pass"] for c in doc["checks"])
    report(doc, table(doc), passed, saved, json_stdout=args.json)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
