"""Trade-off decisions on the simulator: are each preset's choices on the
true Pareto front, how much of the true front the learned one covers, and
what a request without a trade-off pays for the feature.

    scripts/bench-tradeoffs            # 5 seeds × 20,000 requests; batches of 1,000, best of 200
    scripts/bench-tradeoffs --quick    # 2 seeds × 6,000 requests; batches of 200, best of 10

**Learning.** Per seed, Thompson sampling with the arms and reward of the
default policy of ``config/policies.yaml`` (``loop_config``) on the default
scenario (``config/simulator.yaml``): every request carries
one of the presets in turn, the decider (``app/decider.py``) decides it
from the objectives the learner (``app/learner.py``) has shipped in its
snapshots, the simulator rewards it, and a snapshot follows every batch
(``app/evaluation/tradeoff_loop.py``). The truth per task type is each
arm's expected quality, cost and latency over the scenario's traffic.

* **chosen on the front**: per (preset, task type), the arm the preset picks
  when not exploring (the highest utility at the posterior means) is on the
  true Pareto front, or within its uncertainty: no true-front arm dominates
  the optimistic end (mean ± 2 standard errors) of its learned interval.
  Target: every preset, task type and seed. Reported beside it: the share of
  the second half's decisions that went to true-front arms, and how often
  the choice is the preset's true best arm.
* **hypervolume**: per task type, the hypervolume (reference: 10% beyond the
  worst true arm in every objective, objectives scaled by the reward's
  scales) of the learned front's estimated points, and of the true points of
  the arms the learned means call non-dominated, each over the true front's.
  Reported, not judged.

**Hot path.** ``Decider.decide`` on batches without a trade-off, timed
against the same decider with every ``if`` that tests a trade-off taken out
of its syntax tree (the ``scripts/bench-explain`` method), interleaved
round by round, each workload after waiting up to 20 s for the rest of
the machine to use under 0.3 cores; CPU µs per decision, best of the
rounds. Target: within 3%
on every workload. A batch where every request carries a preset is
reported beside it.

Results: a table on stdout and ``benchmarks/results/tradeoffs-<sha>[-quick].json``;
the last line is ``overall: PASS|FAIL``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import inspect
import statistics
import sys
from types import ModuleType
from typing import Any, cast

import numpy as np

import app.decider
from app.decider import Decider
from app.evaluation.simulator import TrafficSimulator
from app.evaluation.tradeoff_loop import (
    greedy_arm,
    loop_config,
    run_loop,
    true_best,
    true_objectives,
)
from app.policies.config import PoliciesConfig
from app.policies.tradeoff import (
    PRESETS,
    dominates,
    hypervolume,
    oriented,
    pareto_front,
    scales_of,
)
from app.settings import POLICIES_PATH
from benchmarks.common import (
    progress_logger,
    report,
    result_path,
    run_header,
    wait_for_quiet,
)
from benchmarks.explain import WORKLOADS, batch, config, time_variants

TARGET_RATIO = 1.03  # decide without a trade-off / the decider without trade-offs
log = progress_logger("bench-tradeoffs")


# -- learning ------------------------------------------------------------------------------------


def learning(seeds: int, requests: int) -> dict[str, Any]:
    cfg = loop_config(PoliciesConfig.load(POLICIES_PATH))
    pc = cfg.policies[cfg.default_policy]
    scales = scales_of(pc.reward.cost_scale_usd, pc.reward.latency_scale_ms)
    arms = list(pc.arm_names)
    truth = true_objectives(TrafficSimulator.default(seed=0, start_ms=0), 0)
    true_fronts = {t: _front(truth[t], arms, scales) for t in truth}
    runs = []
    for seed in range(seeds):
        log(f"seed {seed}: {requests} requests")
        sim = TrafficSimulator.default(seed=seed, start_ms=0)
        res = run_loop(cfg, sim, requests, seed=seed)
        front = res.decider.front(res.policy_id)
        per_task: dict[str, Any] = {}
        for task, t_truth in sorted(truth.items()):
            rows = {r.arm: r for r in front.get(task, [])}
            true_pts = oriented(np.array([t_truth[a] for a in arms]), scales)
            reference = true_pts.min(axis=0) - 0.1 * np.abs(true_pts.min(axis=0))
            reference[0] = 0.0  # quality: nothing below 0
            hv_true = hypervolume(true_pts[[arms.index(a) for a in true_fronts[task]]], reference)
            learned = [a for a in arms if a in rows]
            means = np.array([rows[a].means for a in learned])
            est_pts = oriented(means, scales) if learned else np.zeros((0, 3))
            est_front = [learned[i] for i in pareto_front(est_pts)]
            presets: dict[str, Any] = {}
            for preset in PRESETS:
                arm = greedy_arm(res.decider, res.policy_id, task, preset, arms)
                chosen: dict[str, int] = res.chosen.get((preset, task), {})
                total = sum(chosen.values())
                presets[preset] = {
                    "arm": arm,
                    "on_true_front": arm in true_fronts[task],
                    "within_uncertainty": _within(arm, rows.get(arm), t_truth, arms, scales),
                    "true_best": true_best(t_truth, preset, *scales[1:]),
                    "decisions_second_half": total,
                    "share_on_true_front": (
                        sum(n for a, n in chosen.items() if a in true_fronts[task]) / total
                        if total
                        else None
                    ),
                }
            per_task[task] = {
                "true_front": true_fronts[task],
                "learned_front": [a for a in learned if rows[a].on_front],
                "estimated_front": est_front,
                "hv_true": hv_true,
                "hv_estimated_ratio": hypervolume(est_pts, reference) / hv_true,
                "hv_of_estimated_front_arms_ratio": hypervolume(
                    true_pts[[arms.index(a) for a in est_front]], reference
                )
                / hv_true,
                "presets": presets,
            }
        runs.append({"seed": seed, "decisions": res.decisions, "tasks": per_task})
    cells = [
        p
        for r in runs
        for t in cast(dict[str, Any], r["tasks"]).values()
        for p in t["presets"].values()
    ]
    return {
        "seeds": seeds,
        "requests": requests,
        "truth": {t: {a: v.tolist() for a, v in tt.items()} for t, tt in truth.items()},
        "runs": runs,
        "choices": len(cells),
        "choices_within": sum(c["within_uncertainty"] for c in cells),
        "choices_on_true_front": sum(c["on_true_front"] for c in cells),
        "choices_true_best": sum(c["arm"] == c["true_best"] for c in cells),
        "pass": all(c["within_uncertainty"] for c in cells),
    }


def _front(truth: dict[str, np.ndarray], arms: list[str], scales: np.ndarray) -> list[str]:
    pts = oriented(np.array([truth[a] for a in arms]), scales)
    return [arms[i] for i in pareto_front(pts)]


def _within(
    arm: str, row: Any, truth: dict[str, np.ndarray], arms: list[str], scales: np.ndarray
) -> bool:
    """On the true front, or no true point dominates the optimistic end of its interval."""
    pts = oriented(np.array([truth[a] for a in arms]), scales)
    if not any(dominates(p, pts[arms.index(arm)]) for p in pts):
        return True
    if row is None:
        return False
    hi = oriented(np.array(row.means), scales) + 2.0 * np.array(row.stderrs) / scales
    return not any(dominates(p, hi) for p in pts)


# -- the hot path --------------------------------------------------------------------------------


class _NoTradeoffs(ast.NodeTransformer):
    """Takes out every ``if`` whose test reads ``tradeoff`` (a name or an attribute)."""

    removed = 0

    def visit_If(self, node: ast.If) -> ast.AST | None:
        names = {n.attr for n in ast.walk(node.test) if isinstance(n, ast.Attribute)}
        names |= {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
        if "tradeoff" in names:
            self.removed += 1
            return None
        return self.generic_visit(node)


def plain_decider() -> tuple[ModuleType, int]:
    tree = ast.parse(inspect.getsource(app.decider))
    stripper = _NoTradeoffs()
    tree = ast.fix_missing_locations(stripper.visit(tree))
    name = "decider_without_tradeoffs"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    exec(compile(tree, "app/decider.py (plain)", "exec"), module.__dict__)
    return module, stripper.removed


def hot_path(n: int, rounds: int, plain: ModuleType) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for workload in WORKLOADS:
        log(f"hot path, {workload}: {n} requests, best of {rounds}")
        background = wait_for_quiet(20, log=log)
        requests = batch(workload, n)
        with_preset = [dataclasses.replace(r, tradeoff="balanced") for r in requests]
        deciders: dict[str, Any] = {
            "plain": plain.Decider(config(workload, False), seed=0),
            "current": Decider(config(workload, False), seed=0),
        }
        times = time_variants(deciders, requests, rounds)
        on = time_variants(
            {"tradeoff": Decider(config(workload, False), seed=0)}, with_preset, rounds
        )
        us = {k: min(t) / n * 1e6 for k, t in {**times, **on}.items()}
        med = {k: statistics.median(t) / n * 1e6 for k, t in {**times, **on}.items()}
        ratio = us["current"] / us["plain"]
        out[workload] = {
            "best_us": us,
            "median_us": med,
            "current_vs_plain": ratio,
            "background_cores": background,
            "pass": ratio <= TARGET_RATIO,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/bench-tradeoffs", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="fewer seeds, requests and rounds")
    p.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    args = p.parse_args(argv)
    seeds, requests, n, rounds = (2, 6_000, 200, 10) if args.quick else (5, 20_000, 1_000, 200)
    out = run_header("tradeoffs", "numpy")
    out["quick"] = args.quick
    out["learning"] = learn = learning(seeds, requests)
    plain, removed = plain_decider()
    if removed == 0:
        raise SystemExit("app/decider.py has no trade-off branch to take out")
    out["branches_taken_out"] = removed
    out["hot_path"] = hot = hot_path(n, rounds, plain)
    passed = learn["pass"] and all(w["pass"] for w in hot.values())

    lines = [
        f"Learning: {seeds} seeds × {requests} requests, presets in turn; per task type "
        "(mean over seeds)",
        f"{'task':<14} {'true front':<62} {'HV est/true':>11} {'HV arms/true':>12}  "
        + "  ".join(f"{p:<30}" for p in PRESETS),
    ]
    for task in sorted(learn["truth"]):
        cells = [r["tasks"][task] for r in learn["runs"]]
        hv_est = np.mean([c["hv_estimated_ratio"] for c in cells])
        hv_arms = np.mean([c["hv_of_estimated_front_arms_ratio"] for c in cells])
        picks = []
        for preset in PRESETS:
            arms = {c["presets"][preset]["arm"] for c in cells}
            ok = sum(c["presets"][preset]["within_uncertainty"] for c in cells)
            share = np.mean([c["presets"][preset]["share_on_true_front"] or 0.0 for c in cells])
            picks.append(f"{'/'.join(sorted(arms)):<18} {ok}/{len(cells)} {share:>6.1%}")
        lines.append(
            f"{task:<14} {','.join(cells[0]['true_front']):<62} {hv_est:>11.3f} "
            f"{hv_arms:>12.3f}  " + "  ".join(f"{c:<30}" for c in picks)
        )
    lines.append(
        f"preset choices within the true front's uncertainty: {learn['choices_within']}/"
        f"{learn['choices']} (on it: {learn['choices_on_true_front']}, the true best: "
        f"{learn['choices_true_best']}); cell: greedy arm(s), seeds within, share of decisions "
        "on the true front"
    )
    lines.append(
        f"Hot path: Decider.decide without a trade-off, µs per decision (best of {rounds}, "
        f"batches of {n}); plain = without its {removed} trade-off branches"
    )
    lines.append(f"{'workload':<10} {'plain':>8} {'current':>8} {'ratio':>7} {'with preset':>12}")
    for workload, w in hot.items():
        b = w["best_us"]
        lines.append(
            f"{workload:<10} {b['plain']:>8.2f} {b['current']:>8.2f} "
            f"{w['current_vs_plain']:>7.3f} {b['tradeoff']:>12.2f}"
        )
    lines.append(
        f"targets: every preset's choice within the true front's uncertainty; "
        f"current / plain ≤ {TARGET_RATIO:.2f} on every workload"
    )
    saved = None if args.no_save else result_path("tradeoffs", out["commit"], args.quick)
    report(out, "\n".join(lines), passed, saved, json_stdout=args.json)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
