"""Cold start: a new task type started from similar known ones, against the target.

    scripts/bench-coldstart            # 10 seeds, every task type as the new one
    scripts/bench-coldstart --quick    # 10 seeds, the judged task type only

On the simulator's default scenario (``config/simulator.yaml``, no drift;
its truth has a best arm per task type) with the default policy's arms, two
``per_task_type`` policies over Thompson sampling (one state per task type)
decide the same request stream, each against its own simulator of the same
seed (same requests, own outcomes), learning from every outcome at once:

* **transferred**: ``cold_start: {similar: auto}`` — a new task type starts
  from its two nearest task types by mean request features, pooled and shrunk
  to the default ``prior_strength``, 50 pulls per arm;
* **fresh**: ``cold_start: {similar: none}`` — it starts from the prior.

First ``known`` requests of the other task types only (the new type's are
skipped), then the whole mix until ``new`` requests of the new task type
have been decided. The figure is the true regret (the best arm's expected
reward minus the chosen arm's, from the simulator's exact means) summed
over those ``new`` requests. Target: on the judged task type (``chat``, the
scenario's new type), the median regret over the seeds with the transferred
prior > 30% below the median with a fresh prior. The other task types as
the new one are reported, not judged (``creative`` has no similar task type
in this scenario: its best arm is nobody else's).

Results: a table on stdout and ``benchmarks/results/coldstart-<sha>[-quick].json``;
the last line is ``overall: PASS|FAIL``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from app.evaluation.simulator import TASK_TYPES, TrafficSimulator
from app.features.request_vector import RequestVectorizer
from app.policies.config import PoliciesConfig, PolicyConfig
from app.policies.per_task_type import PerTaskType
from benchmarks.common import progress_logger, report, result_path, run_header

TARGET_REDUCTION = 0.30
JUDGED = "chat"
VARIANTS = {"transferred": "auto", "fresh": "none"}
log = progress_logger("bench-coldstart")


def config(similar: str, seed: int) -> PolicyConfig:
    """The default policy's arms under Thompson sampling, one state per task type."""
    arms = TrafficSimulator.default(seed=0, start_ms=0, drift=False).arms.values()
    doc = {
        "policies": {
            "p": {
                "algorithm": "thompson_sampling",
                "arms": [
                    {"name": a.name, "model": a.model, "parameters": a.parameters} for a in arms
                ],
                "seed": seed,
                "cold_start": {"similar": similar},
            }
        }
    }
    return PoliciesConfig.from_dict(doc, source="bench-coldstart").policies["p"]


def run(similar: str, new_task: str, seed: int, known: int, new: int) -> dict[str, Any]:
    """One policy on one seed: the regret over the first ``new`` requests of ``new_task``."""
    sim = TrafficSimulator.default(seed=seed, start_ms=0, drift=False)
    policy = config(similar, seed).build()
    vectorizer = RequestVectorizer()
    regret, seen_known, seen_new, now = 0.0, 0, 0, 0
    while seen_new < new:
        now += 50
        req = sim.next_request(now)
        is_new = req.task_type == new_task
        if seen_known < known and is_new:
            continue  # the new task type has not appeared yet
        x = vectorizer.row(req)
        choice = policy.select(x)
        expected = sim.expected_rewards(req, None, now)
        if is_new:
            regret += max(expected.values()) - expected[choice.arm]
            seen_new += 1
        else:
            seen_known += 1
        reward = sim.reward_spec.scalar(**_components(sim.outcome(req, choice.arm, now)))
        policy.update(choice.arm, reward, x, propensity=choice.propensity)
    assert isinstance(policy, PerTaskType)
    return {"regret": regret, "started_from": policy.origins().get(new_task, [])}


def _components(reward: Any) -> dict[str, Any]:
    return {
        "quality": reward.quality,
        "cost_usd": reward.cost_usd,
        "latency_ms": reward.latency_ms,
        "error": reward.error,
    }


def bench(new_task: str, seeds: list[int], known: int, new: int) -> dict[str, Any]:
    per_seed: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for seed in seeds:
        for variant, similar in VARIANTS.items():
            per_seed[variant].append(run(similar, new_task, seed, known, new))
    medians = {v: statistics.median(r["regret"] for r in rs) for v, rs in per_seed.items()}
    reduction = 1.0 - medians["transferred"] / medians["fresh"] if medians["fresh"] else 0.0
    paired = [
        1.0 - t["regret"] / f["regret"] if f["regret"] else 0.0
        for t, f in zip(per_seed["transferred"], per_seed["fresh"], strict=True)
    ]
    return {
        "new_task": new_task,
        "seeds": seeds,
        "regret": {v: [round(r["regret"], 3) for r in rs] for v, rs in per_seed.items()},
        "started_from": [r["started_from"] for r in per_seed["transferred"]],
        "median_regret": medians,
        "reduction": reduction,
        "paired_reductions": [round(x, 3) for x in paired],
        "seeds_better": sum(x > 0 for x in paired),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/bench-coldstart", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="the judged task type only")
    p.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    p.add_argument("--seeds", type=int, default=10, help="seeds (default: %(default)s)")
    p.add_argument("--known", type=int, default=4_000, help="requests before the new type")
    p.add_argument("--new", type=int, default=1_000, help="requests of the new type judged")
    args = p.parse_args(argv)
    seeds = list(range(1, args.seeds + 1))
    tasks = [JUDGED] if args.quick else [JUDGED, *(t for t in TASK_TYPES if t != JUDGED)]
    out = run_header("coldstart", "numpy")
    out.update(
        quick=args.quick,
        known_requests=args.known,
        new_requests=args.new,
        target_reduction=TARGET_REDUCTION,
        judged=JUDGED,
        policy="per_task_type over thompson_sampling, defaults (prior_strength 50, neighbours 2)",
    )
    out["tasks"] = {}
    for task in tasks:
        log(f"new task type {task}: {len(seeds)} seeds × {len(VARIANTS)} variants")
        out["tasks"][task] = bench(task, seeds, args.known, args.new)
    judged = out["tasks"][JUDGED]
    passed = judged["reduction"] > TARGET_REDUCTION
    lines = [
        f"true regret over the first {args.new} requests of a new task type, after "
        f"{args.known} requests of the others; median over {len(seeds)} seeds",
        f"{'new task type':<15} {'fresh prior':>12} {'transferred':>12} {'reduction':>10} "
        f"{'seeds better':>13}  started from (first seed)",
    ]
    for task, r in out["tasks"].items():
        mark = " (judged)" if task == JUDGED else ""
        lines.append(
            f"{task + mark:<15} {r['median_regret']['fresh']:>12.2f} "
            f"{r['median_regret']['transferred']:>12.2f} {r['reduction']:>10.1%} "
            f"{r['seeds_better']:>6}/{len(seeds):<6}  {', '.join(r['started_from'][0]) or '-'}"
        )
    lines.append(f"target: {JUDGED}: transferred > {TARGET_REDUCTION:.0%} below fresh (median)")
    saved = None if args.no_save else result_path("coldstart", out["commit"], args.quick)
    report(out, "\n".join(lines), passed, saved, json_stdout=args.json)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
