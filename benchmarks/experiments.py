"""Anytime-valid experiment statistics on thousands of simulated experiments.

    scripts/bench-experiments            # 10,000 experiments per A/A scenario, 4,000 per A/B
    scripts/bench-experiments --quick    # 2,000 A/A, 1,000 A/B
    scripts/bench-experiments --json     # JSON on stdout (the tables go to stderr)

Every simulated experiment feeds outcomes in batches (``--batch`` units per
look, split between the variants by their shares) and is looked at after
every batch, up to ``--looks`` looks; it stops at the first conclusive look.
The confidence sequences are those of :class:`app.experiments.Comparison`,
computed for all experiments at once through the same functions
(:mod:`app.experiments.confidence_sequence`); the first experiments of each
scenario are also run through ``Comparison`` itself, which must decide
identically. Every test is tuned (``tuning_n``) by :func:`app.experiments.plan`
for the A/B quality scenario, as an operator would.

**A/A** (no difference): the false-positive rate — experiments ever declared
better or worse — of the sequential test, beside a Welch t-test (scipy)
peeked at the same looks and the same t-test looked at once, at the end.
Scenarios: quality scores (the simulator's law: Beta with mean 0.70,
concentration 12), 0/1 successes at 10%, log-normal latencies (median
800 ms, log-sd 0.5) and costs (median $0.004, log-sd 1.0: skewed, where
an asymptotic method is weakest), quality with a 10% / 90% split (a rollout stage), and
four variants (three comparisons with the control, Bonferroni; any one
wrongly decided counts). PASS: each sequential rate ≤ α plus two Monte-Carlo
standard errors; the peeked t-test's rate > 2α (the peeking problem is
reproduced, so the check can see it).

**A/B** (mean quality 0.70 → 0.72, a 2-point difference, as quality scores
and as 0/1 outcomes): the power of the sequential test (the share of
experiments declared better within the looks), the share declared worse,
the units per variant to a decision (mean, median, p90; undecided runs
count the horizon), and the plan's fixed-horizon sample size with the power
a t-test at exactly that size has on the same law. PASS: sequential power
≥ the planned 80%; no more than α/2 declared worse; the fixed-horizon test's
power within three standard errors of 80%.

Results: tables and ``benchmarks/results/experiments-<git short sha>[-quick].json``;
the last line is ``overall: PASS|FAIL``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from app.experiments import Comparison, Moments, half_width, mixture_rho, plan
from benchmarks.common import progress_logger, report, result_path, run_header

ALPHA = 0.05
POWER = 0.8
QUALITY = 0.70
EFFECT = 0.02
CONCENTRATION = 12.0  # the simulator's quality_concentration
MIN_SAMPLES = 100
CROSS_CHECKED = 20  # experiments per scenario also run through Comparison

log = progress_logger()

Draw = Callable[[np.random.Generator, int, int, int], tuple[np.ndarray, np.ndarray]]
"""(rng, variant, experiments, units) → per-experiment count-sum and sum of squares."""


def _beta(mean: float) -> Draw:
    a, b = mean * CONCENTRATION, (1 - mean) * CONCENTRATION

    def draw(rng: np.random.Generator, _v: int, e: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.beta(a, b, size=(e, m))
        return x.sum(axis=1), (x * x).sum(axis=1)

    return draw


def _bernoulli(p: float) -> Draw:
    def draw(rng: np.random.Generator, _v: int, e: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        s = rng.binomial(m, p, size=e).astype(np.float64)  # 0/1: the sum is the sum of squares
        return s, s.copy()

    return draw


def _lognormal(median: float, sigma: float) -> Draw:
    mu = math.log(median)

    def draw(rng: np.random.Generator, _v: int, e: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.lognormal(mu, sigma, size=(e, m))
        return x.sum(axis=1), (x * x).sum(axis=1)

    return draw


@dataclass(frozen=True)
class Scenario:
    name: str
    law: str
    draws: tuple[Draw, ...]  # one per variant, the control first
    shares: tuple[float, ...]  # of each look's units, per variant


def aa_scenarios() -> list[Scenario]:
    q = _beta(QUALITY)
    return [
        Scenario("quality", f"Beta, mean {QUALITY}, concentration 12", (q, q), (0.5, 0.5)),
        Scenario("success", "0/1, p = 0.10", (_bernoulli(0.1),) * 2, (0.5, 0.5)),
        Scenario(
            "latency",
            "log-normal, median 800 ms, log-sd 0.5",
            (_lognormal(800, 0.5),) * 2,
            (0.5, 0.5),
        ),
        Scenario(
            "cost",
            "log-normal, median $0.004, log-sd 1.0",
            (_lognormal(0.004, 1.0),) * 2,
            (0.5, 0.5),
        ),
        Scenario("quality 10/90", "quality, 10% to the treatment", (q, q), (0.9, 0.1)),
        Scenario("quality ×4", "quality, 4 variants, Bonferroni", (q,) * 4, (0.25,) * 4),
    ]


def ab_scenarios() -> list[Scenario]:
    return [
        Scenario(
            "quality +2 pt",
            f"Beta, mean {QUALITY} → {QUALITY + EFFECT}",
            (_beta(QUALITY), _beta(QUALITY + EFFECT)),
            (0.5, 0.5),
        ),
        Scenario(
            "success +2 pt",
            f"0/1, p {QUALITY} → {QUALITY + EFFECT}",
            (_bernoulli(QUALITY), _bernoulli(QUALITY + EFFECT)),
            (0.5, 0.5),
        ),
    ]


class Cells:
    """Per-experiment count, mean and M2 of one variant (Chan's merge, as
    :class:`app.experiments.Moments` does for one)."""

    def __init__(self, e: int) -> None:
        self.n = np.zeros(e)
        self.mean = np.zeros(e)
        self.m2 = np.zeros(e)

    def add(self, m: int, s: np.ndarray, ss: np.ndarray) -> None:
        bmean = s / m
        bm2 = np.maximum(ss - s * bmean, 0.0)
        total = self.n + m
        delta = bmean - self.mean
        self.mean += delta * m / total
        self.m2 += bm2 + delta * delta * self.n * m / total
        self.n = total

    def var(self) -> np.ndarray:
        return self.m2 / np.maximum(self.n - 1, 1)


def simulate(
    sc: Scenario, e: int, looks: int, batch: int, tuning_n: float, seed: int
) -> dict[str, Any]:
    """Runs ``e`` experiments of ``sc``; per comparison with the control: the
    look of the first sequential decision (+1 better, −1 worse, 0 none) and
    the peeked and final t-tests' rejections."""
    rng = np.random.default_rng(seed)
    k = len(sc.draws)
    alpha = ALPHA / (k - 1)
    rho = mixture_rho(alpha, tuning_n)
    per_look = [round(batch * s) for s in sc.shares]
    cells = [Cells(e) for _ in range(k)]
    decision = np.zeros((k - 1, e), dtype=np.int8)
    decided_at = np.full((k - 1, e), -1)
    peeked = np.zeros((k - 1, e), dtype=bool)
    for look in range(looks):
        for v in range(k):
            s, ss = sc.draws[v](rng, v, e, per_look[v])
            cells[v].add(per_look[v], s, ss)
        a = cells[0]
        if a.n[0] < MIN_SAMPLES or min(c.n[0] for c in cells[1:]) < MIN_SAMPLES:
            continue
        for j, b in enumerate(cells[1:]):
            var = a.var() / a.n + b.var() / b.n
            est = b.mean - a.mean
            hw = half_width(var, a.n + b.n, alpha, rho)
            open_ = decision[j] == 0
            up, down = open_ & (est - hw > 0), open_ & (est + hw < 0)
            decision[j, up], decision[j, down] = 1, -1
            decided_at[j, up | down] = look
            _t, p = stats.ttest_ind_from_stats(
                b.mean, np.sqrt(b.var()), b.n, a.mean, np.sqrt(a.var()), a.n, equal_var=False
            )
            peeked[j] |= p < alpha
    final = np.zeros((k - 1, e), dtype=bool)
    for j, b in enumerate(cells[1:]):
        a = cells[0]
        _t, p = stats.ttest_ind_from_stats(
            b.mean, np.sqrt(b.var()), b.n, a.mean, np.sqrt(a.var()), a.n, equal_var=False
        )
        final[j] = p < alpha
    return {
        "decision": decision,
        "decided_at": decided_at,
        "peeked": peeked,
        "final": final,
        "per_look": per_look,
        "alpha": alpha,
    }


def cross_check(
    sc: Scenario, looks: int, batch: int, tuning_n: float, seed: int, vector: dict[str, Any]
) -> int:
    """Re-runs the first experiments of ``sc`` through ``Comparison`` (same
    seed, so the same outcomes) and returns how many decided differently
    from the vectorised run."""
    k = len(sc.draws)
    e = CROSS_CHECKED
    rng = np.random.default_rng(seed)
    per_look = vector["per_look"]
    # Drawing for fewer experiments would change the stream: draw for all, as
    # simulate() did, and keep the first e.
    full_e = vector["decision"].shape[1]
    controls = [Moments() for _ in range(e)]
    comps = [  # one control shared by an experiment's comparisons, as Experiment does
        [
            Comparison(
                alpha=vector["alpha"],
                tuning_n=tuning_n,
                min_samples=MIN_SAMPLES,
                control=controls[i],
            )
            for _ in range(k - 1)
        ]
        for i in range(e)
    ]
    mismatches = 0
    decided: list[list[tuple[str, int] | None]] = [[None] * (k - 1) for _ in range(e)]
    for look in range(looks):
        draws = [sc.draws[v](rng, v, full_e, per_look[v]) for v in range(k)]
        for i in range(e):
            controls[i].add_sums(per_look[0], float(draws[0][0][i]), float(draws[0][1][i]))
            for j in range(k - 1):
                comps[i][j].add_sums(
                    "treatment",
                    per_look[j + 1],
                    float(draws[j + 1][0][i]),
                    float(draws[j + 1][1][i]),
                )
            for j in range(k - 1):
                r = comps[i][j].check()
                if decided[i][j] is None and r.decision != "inconclusive":
                    decided[i][j] = (r.decision, look)
    for i in range(e):
        for j in range(k - 1):
            code = int(vector["decision"][j, i])
            want = (
                None
                if code == 0
                else ("better" if code > 0 else "worse", int(vector["decided_at"][j, i]))
            )
            mismatches += decided[i][j] != want
    return mismatches


def part_aa(args: argparse.Namespace, tuning_n: float) -> list[dict[str, Any]]:
    rows = []
    for s_i, sc in enumerate(aa_scenarios()):
        t0 = time.perf_counter()
        seed = args.seed * 1_000 + s_i
        r = simulate(sc, args.aa_experiments, args.looks, args.batch, tuning_n, seed)
        mism = cross_check(sc, args.looks, args.batch, tuning_n, seed, r)
        e = args.aa_experiments
        any_seq = (r["decision"] != 0).any(axis=0)
        fpr = float(any_seq.mean())
        se = math.sqrt(ALPHA * (1 - ALPHA) / e)
        row = {
            "scenario": sc.name,
            "law": sc.law,
            "experiments": e,
            "looks": args.looks,
            "units_per_look": r["per_look"],
            "comparisons": len(sc.draws) - 1,
            "comparison_alpha": r["alpha"],
            "sequential_fpr": fpr,
            "sequential_fpr_se": math.sqrt(max(fpr * (1 - fpr), 1e-12) / e),
            "fpr_bound": ALPHA + 2 * se,
            "peeked_t_fpr": float(r["peeked"].any(axis=0).mean()),
            "final_t_fpr": float(r["final"].any(axis=0).mean()),
            "cross_check_mismatches": mism,
            "seconds": time.perf_counter() - t0,
        }
        row["pass"] = (
            row["sequential_fpr"] <= row["fpr_bound"]
            and row["peeked_t_fpr"] > 2 * ALPHA
            and mism == 0
        )
        rows.append(row)
        log(
            f"  A/A {sc.name:14s} sequential {fpr:6.2%}  peeked t {row['peeked_t_fpr']:6.2%}  "
            f"final t {row['final_t_fpr']:6.2%}  ({row['seconds']:.1f} s)"
        )
    return rows


def part_ab(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for s_i, sc in enumerate(ab_scenarios()):
        t0 = time.perf_counter()
        sd = math.sqrt(QUALITY * (1 - QUALITY) / (CONCENTRATION + 1)) if "Beta" in sc.law else None
        p = plan(QUALITY, EFFECT, ALPHA, POWER, 2, sd=sd)
        # Enough looks for the plan's sequential sample size twice over.
        looks = max(args.looks, math.ceil(2 * p.sequential_n_per_variant / (args.batch / 2)))
        seed = args.seed * 1_000 + 100 + s_i
        e = args.ab_experiments
        r = simulate(sc, e, looks, args.batch, p.tuning_n, seed)
        mism = cross_check(sc, min(looks, 60), args.batch, p.tuning_n, seed, _head(r, looks, 60))
        dec, at = r["decision"][0], r["decided_at"][0]
        per = r["per_look"][1]
        n_to = np.where(dec != 0, (at + 1) * per, looks * per)
        power = float((dec > 0).mean())
        by_plan = float(((dec > 0) & ((at + 1) * per <= p.sequential_n_per_variant)).mean())
        fixed_power = _fixed_power(sc, e, p.fixed_n_per_variant, seed + 7)
        se80 = math.sqrt(POWER * (1 - POWER) / e)
        row = {
            "scenario": sc.name,
            "law": sc.law,
            "experiments": e,
            "looks": looks,
            "units_per_look": r["per_look"],
            "sequential_power": power,
            "sequential_power_at_plan_n": by_plan,
            "declared_worse": float((dec < 0).mean()),
            "n_to_decision_mean": float(n_to.mean()),
            "n_to_decision_median": float(np.median(n_to)),
            "n_to_decision_p90": float(np.quantile(n_to, 0.9)),
            "horizon_per_variant": looks * per,
            "plan": p.to_dict(),
            "fixed_n_per_variant": p.fixed_n_per_variant,
            "fixed_t_power": fixed_power,
            "fixed_t_power_se": se80,
            "cross_check_mismatches": mism,
            "seconds": time.perf_counter() - t0,
        }
        row["pass"] = (
            power >= POWER
            and row["declared_worse"] <= ALPHA / 2
            and abs(fixed_power - POWER) <= 3 * se80
            and mism == 0
        )
        rows.append(row)
        log(
            f"  A/B {sc.name:14s} power {power:6.1%}  mean n {row['n_to_decision_mean']:,.0f}  "
            f"fixed n {p.fixed_n_per_variant:,} (power {fixed_power:.1%})  ({row['seconds']:.1f} s)"
        )
    return rows


def _head(r: dict[str, Any], looks: int, upto: int) -> dict[str, Any]:
    """The vectorised decisions as they stood after the first ``upto`` looks."""
    if looks <= upto:
        return r
    late = r["decided_at"] >= upto
    out = dict(r)
    out["decision"] = np.where(late, 0, r["decision"])
    out["decided_at"] = np.where(late, -1, r["decided_at"])
    return out


def _fixed_power(sc: Scenario, e: int, n: int, seed: int) -> float:
    """The power of one Welch t-test at exactly ``n`` units per variant."""
    rng = np.random.default_rng(seed)
    moments = []
    for v in range(2):
        s, ss = sc.draws[v](rng, v, e, n)
        mean = s / n
        moments.append((mean, np.sqrt(np.maximum(ss - s * mean, 0.0) / (n - 1))))
    (ma, sa), (mb, sb) = moments
    t, p = stats.ttest_ind_from_stats(mb, sb, n, ma, sa, n, equal_var=False)
    return float(((p < ALPHA) & (t > 0)).mean())


def tables(result: dict[str, Any]) -> str:
    lines: list[str] = []
    prm = result["params"]
    if result["aa"]:
        lines.append(
            f"\nA/A: false positives over {prm['aa_experiments']:,} experiments, looked at after "
            f"every batch of {prm['batch']} units (≤ {prm['looks']} looks), α = {ALPHA}"
        )
        lines.append(
            f"{'scenario':15s} {'sequential':>11s} {'± MC se':>8s} {'bound':>7s} "
            f"{'peeked t':>9s} {'final t':>8s} {'class':>6s} {'':>5s}"
        )
        for r in result["aa"]:
            lines.append(
                f"{r['scenario']:15s} {r['sequential_fpr']:11.2%} {r['sequential_fpr_se']:8.2%} "
                f"{r['fpr_bound']:7.2%} {r['peeked_t_fpr']:9.2%} {r['final_t_fpr']:8.2%} "
                f"{'same' if r['cross_check_mismatches'] == 0 else 'DIFF':>6s} "
                f"{'PASS' if r['pass'] else 'FAIL':>5s}"
            )
    if result["ab"]:
        lines.append(
            f"\nA/B: mean quality {QUALITY} → {QUALITY + EFFECT}, {prm['ab_experiments']:,} "
            f"experiments, α = {ALPHA}, planned power {POWER:.0%}; n = units per variant"
        )
        lines.append(
            f"{'scenario':15s} {'power':>6s} {'@plan n':>8s} {'worse':>6s} {'mean n':>7s} "
            f"{'median':>7s} {'p90':>7s} {'horizon':>8s} {'plan seq':>9s} {'fixed n':>8s} "
            f"{'fixed pw':>9s} {'':>5s}"
        )
        for r in result["ab"]:
            lines.append(
                f"{r['scenario']:15s} {r['sequential_power']:6.1%} "
                f"{r['sequential_power_at_plan_n']:8.1%} {r['declared_worse']:6.2%} "
                f"{r['n_to_decision_mean']:7,.0f} {r['n_to_decision_median']:7,.0f} "
                f"{r['n_to_decision_p90']:7,.0f} {r['horizon_per_variant']:8,} "
                f"{r['plan']['sequential_n_per_variant']:9,} {r['fixed_n_per_variant']:8,} "
                f"{r['fixed_t_power']:9.1%} {'PASS' if r['pass'] else 'FAIL':>5s}"
            )
    lines.append(
        f"\nrun time {result['seconds']:.0f} s; machine: {result['machine']['cpu_model']} "
        f"×{result['machine']['nproc']}, commit {result['commit']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/bench-experiments", description=(__doc__ or "").split("\n\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="2,000 A/A and 1,000 A/B experiments")
    ap.add_argument("--aa-experiments", type=int, default=None, help="per A/A scenario")
    ap.add_argument("--ab-experiments", type=int, default=None, help="per A/B scenario")
    ap.add_argument("--looks", type=int, default=100, help="A/A looks (A/B: at least this)")
    ap.add_argument("--batch", type=int, default=100, help="units per look, all variants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("aa", "ab"), default=None)
    ap.add_argument("--json", action="store_true", help="JSON on stdout, tables on stderr")
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    args = ap.parse_args(argv)
    args.aa_experiments = args.aa_experiments or (2_000 if args.quick else 10_000)
    args.ab_experiments = args.ab_experiments or (1_000 if args.quick else 4_000)
    t0 = time.perf_counter()
    result = run_header("experiments", "numpy", "scipy")
    sd = math.sqrt(QUALITY * (1 - QUALITY) / (CONCENTRATION + 1))
    tuning_n = plan(QUALITY, EFFECT, ALPHA, POWER, 2, sd=sd).tuning_n
    log("A/A")
    aa = [] if args.only == "ab" else part_aa(args, tuning_n)
    log("A/B")
    ab = [] if args.only == "aa" else part_ab(args)
    result |= {
        "quick": args.quick,
        "params": {
            "alpha": ALPHA,
            "power": POWER,
            "aa_experiments": args.aa_experiments,
            "ab_experiments": args.ab_experiments,
            "looks": args.looks,
            "batch": args.batch,
            "min_samples": MIN_SAMPLES,
            "tuning_n": tuning_n,
            "seed": args.seed,
        },
        "aa": aa,
        "ab": ab,
        "seconds": time.perf_counter() - t0,
    }
    ran = [r["pass"] for r in aa + ab]
    passed = all(ran) if ran else None
    saved = None if args.no_save else result_path("experiments", result["commit"], args.quick)
    report(result, tables(result), passed, saved, json_stdout=args.json)
    return 0 if passed or passed is None else 1


if __name__ == "__main__":
    sys.exit(main())
