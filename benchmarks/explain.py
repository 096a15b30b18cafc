"""What explanations cost the decider, against the target.

    scripts/bench-explain            # batches of 1,000 requests, best of 60
    scripts/bench-explain --quick    # batches of 200, best of 10

``Decider.decide`` on one batch of requests, timed in three variants,
interleaved round by round on the same requests:

* **plain**: the current ``app/decider.py`` with every ``if`` that tests
  for an explanation (``.explain``, ``explaining``) taken out of its syntax
  tree and compiled beside it: the same decide, with no explanation branch to
  reach (so changes to the decider made at the same time are in both);
* **explain off**: the current decider, no request and no policy asking;
* **explain on**: the current decider, the policy's ``explain: true``.

Three workloads: ``thompson`` (context-free, the vectorised path; one
request in five at a priority that forces the greedy arm), ``lin_ucb``
(contextual, one vectorised ``select_batch`` per group) and ``guarded``
(per-request cost limits: the guardrails' path). The figure is the
process's CPU µs per decision (time descheduled by other load on a shared
machine is not counted), best of the rounds. Target: explain off within 3% of plain on
every workload. Explain on is reported (its cost per explained decision),
not judged.

Results: a table on stdout and ``benchmarks/results/explain-<sha>[-quick].json``;
the last line is ``overall: PASS|FAIL``.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import statistics
import sys
import time
from types import ModuleType
from typing import Any

import app.decider
from app.decider import Decider
from app.policies.config import PoliciesConfig
from app.records import Request
from benchmarks.common import progress_logger, report, result_path, run_header

TARGET_RATIO = 1.03  # explain off / plain, best of the rounds
ARMS = [{"name": f"arm-{i}", "model": f"model-{i}"} for i in range(6)]
WORKLOADS: dict[str, dict[str, Any]] = {
    "thompson": {"algorithm": "thompson_sampling", "guardrails": {"max_explore_priority": 9}},
    "lin_ucb": {"algorithm": "lin_ucb"},
    "guarded": {"algorithm": "thompson_sampling"},
}
log = progress_logger("bench-explain")


class _NoExplanations(ast.NodeTransformer):
    """Takes out every ``if`` whose test reads ``.explain`` or ``explaining``."""

    removed = 0

    def visit_If(self, node: ast.If) -> ast.AST | None:
        names = {n.attr for n in ast.walk(node.test) if isinstance(n, ast.Attribute)}
        names |= {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
        if names & {"explain", "explaining"}:
            self.removed += 1
            return None
        return self.generic_visit(node)


def plain_decider() -> tuple[ModuleType, int]:
    """The current decider module without its explanation branches, and
    how many ``if`` statements were taken out."""
    tree = ast.parse(inspect.getsource(app.decider))
    stripper = _NoExplanations()
    tree = ast.fix_missing_locations(stripper.visit(tree))
    name = "decider_without_explanations"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(tree, "app/decider.py (plain)", "exec"), module.__dict__)
    return module, stripper.removed


def config(workload: str, explain: bool) -> PoliciesConfig:
    doc = {**WORKLOADS[workload], "arms": ARMS}
    if explain:
        doc["explain"] = True
    return PoliciesConfig.from_dict({"policies": {"p": doc}})


def batch(workload: str, n: int) -> list[Request]:
    out = []
    for i in range(n):
        meta = {"max_cost_usd": 0.05} if workload == "guarded" else None
        out.append(
            Request(
                request_id=f"r{i}",
                tenant_id=f"t{i % 7}",
                task_type=("code", "qa", "chat")[i % 3],
                created_at=1_700_000_000_000 + i * 1_000,
                input_tokens=200 + 37 * i,
                priority=9 if i % 5 == 0 else 5,
                metadata=meta,
            )
        )
    return out


def time_variants(
    deciders: dict[str, Any], requests: list[Request], rounds: int
) -> dict[str, list[float]]:
    """CPU seconds of this process per decide() of each variant (time spent
    descheduled on a shared machine is not counted), the variants interleaved
    in a rotating order each round so that drift in the machine's load is shared."""
    names = list(deciders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for d in deciders.values():
        d.decide(requests, 1)  # warm: tables, caches
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.process_time()
            deciders[name].decide(requests, 2 + r)
            times[name].append(time.process_time() - t0)
    return times


def bench(workload: str, n: int, rounds: int, plain: ModuleType) -> dict[str, Any]:
    requests = batch(workload, n)
    deciders: dict[str, Any] = {
        "plain": plain.Decider(config(workload, False), seed=0),
        "explain_off": Decider(config(workload, False), seed=0),
        "explain_on": Decider(config(workload, True), seed=0),
    }
    off = deciders["explain_off"].decide(requests, 1)
    on = deciders["explain_on"].decide(requests, 1)
    assert all(isinstance(d, dict) and "explanation" not in d for d in off)
    assert all(isinstance(d, dict) and "explanation" in d for d in on)
    times = time_variants(deciders, requests, rounds)
    us = {name: {"best_us": min(t) / n * 1e6, "median_us": statistics.median(t) / n * 1e6}
          for name, t in times.items()}  # fmt: skip
    ratio = us["explain_off"]["best_us"] / us["plain"]["best_us"]
    return {
        "requests": n,
        "rounds": rounds,
        "per_decision": us,
        "explain_on_extra_us": us["explain_on"]["best_us"] - us["explain_off"]["best_us"],
        "off_vs_plain": ratio,
        "pass": ratio <= TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench-explain", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller batches, fewer rounds")
    p.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    p.add_argument("--rounds", type=int, default=None, help="rounds per variant (best of)")
    args = p.parse_args(argv)
    n, rounds = (200, 10) if args.quick else (1_000, 60)
    rounds = args.rounds or rounds
    out = run_header("explain", "numpy")
    plain, removed = plain_decider()
    if removed == 0:
        raise SystemExit("app/decider.py has no explanation branch to take out")
    out.update(quick=args.quick, branches_taken_out=removed, target_ratio=TARGET_RATIO)
    out["workloads"] = {}
    for workload in WORKLOADS:
        log(f"{workload}: {n} requests, best of {rounds}")
        out["workloads"][workload] = bench(workload, n, rounds, plain)
    passed = all(w["pass"] for w in out["workloads"].values())
    lines = [
        f"Decider.decide, µs per decision (best / median of {rounds} rounds, batches of {n}); "
        f"plain = the same decider without its {removed} explanation branches",
        f"{'workload':<10} {'plain':>15} {'explain off':>15} {'explain on':>15} "
        f"{'off/plain':>10} {'on - off':>9}",
    ]
    for workload, w in out["workloads"].items():
        cells = [
            f"{w['per_decision'][v]['best_us']:.2f} / {w['per_decision'][v]['median_us']:.2f}"
            for v in ("plain", "explain_off", "explain_on")
        ]
        lines.append(
            f"{workload:<10} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} "
            f"{w['off_vs_plain']:>10.3f} {w['explain_on_extra_us']:>9.1f}"
        )
    lines.append(f"target: explain off / plain ≤ {TARGET_RATIO:.2f} on every workload (best of)")
    saved = None if args.no_save else result_path("explain", out["commit"], args.quick)
    report(out, "\n".join(lines), passed, saved, json_stdout=args.json)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
