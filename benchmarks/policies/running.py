"""Running each policy on its workloads, seed by seed, within the budget."""

from __future__ import annotations

import copy
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import CpuSpan, wait_for_quiet
from benchmarks.policies import log
from benchmarks.policies.roster import Spec
from benchmarks.policies.runners import Runner, Trace
from benchmarks.policies.summary import median_of, summarise
from benchmarks.policies.workloads import CHANGE_FRACTION, ROUNDS, Bernoulli, Linear


def run_group(spec: Spec, seed: int, scale: float) -> dict[str, dict[str, Any]]:
    """One seed of one policy on its workloads: {workload: summary}."""
    results: dict[str, dict[str, Any]] = {}
    runner: Runner | None = None
    if spec.workloads == ("B",):
        rounds = int(ROUNDS["B"] * scale)
        env_b = Linear.make(seed, rounds)
        meter, tr = CpuSpan(), Trace()
        try:
            runner = spec.make(seed)
            runner.linear(env_b, 0, rounds, tr)
            results["B"] = summarise(tr, env_b, rounds)
        except Exception as exc:
            results["B"] = {"error": _err(exc, len(tr.arms))}
        finally:
            if runner is not None:
                runner.close()
        results["B"]["other_cores"] = meter.other_cores()
        return results

    rounds = int(ROUNDS["A"] * scale)
    change = int(rounds * CHANGE_FRACTION)
    env_a = Bernoulli.make(seed, rounds, None)
    env_c = Bernoulli.make(seed, rounds, change)
    assert env_a.u == env_c.u
    meter = CpuSpan()
    tr_a = Trace()
    try:
        runner = spec.make(seed)
        if not runner.forkable:
            runner.close()
            return _run_unforkable(spec, seed, rounds, env_a, env_c)
        runner.bern(env_a, env_a.means_before, 0, change, tr_a)
    except Exception as exc:
        err = {"error": _err(exc, len(tr_a.arms)), "other_cores": meter.other_cores()}
        return {"A": err, "C": dict(err)}
    fork, tr_c = copy.deepcopy(runner), tr_a.copy()
    for name, r, env, tr in (("A", runner, env_a, tr_a), ("C", fork, env_c, tr_c)):
        try:
            r.bern(env, env.means_after, change, rounds, tr)
            results[name] = summarise(tr, env, rounds)
        except Exception as exc:
            results[name] = {"error": _err(exc, len(tr.arms))}
        finally:
            r.close()
        results[name]["other_cores"] = meter.other_cores()
    return results


def _run_unforkable(
    spec: Spec, seed: int, rounds: int, *envs: Bernoulli
) -> dict[str, dict[str, Any]]:
    """A then C, each from scratch (a policy that cannot be deep-copied)."""
    results: dict[str, dict[str, Any]] = {}
    for name, env in zip(("A", "C"), envs, strict=True):
        tr, meter, r = Trace(), CpuSpan(), None
        try:
            r = spec.make(seed)
            r.bern(env, env.means_before, 0, env.change, tr)
            r.bern(env, env.means_after, env.change, rounds, tr)
            results[name] = summarise(tr, env, rounds)
        except Exception as exc:
            results[name] = {"error": _err(exc, len(tr.arms))}
        finally:
            if r is not None:
                r.close()
        results[name]["other_cores"] = meter.other_cores()
    return results


def _err(exc: BaseException, at: int) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return (
        f"{type(exc).__name__}: {str(exc)[:160]} (round {at}, "
        f"{Path(frame.filename).name}:{frame.lineno})"
    )


def run_all(
    specs: list[Spec],
    seeds: Sequence[int],
    scale: float,
    budget: float,
    quiet_wait: float = 0.0,
    done: dict[str, dict[str, Any]] | None = None,
    checkpoint: Callable[[dict[str, dict[str, Any]]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """{workload: {"lib label": median summary with per-seed runs}}.

    Policies found in ``done`` (a table of an earlier run) are taken from it;
    ``checkpoint`` is called with the table after each policy."""
    table: dict[str, dict[str, Any]] = {"A": {}, "B": {}, "C": {}}
    for spec in specs:
        key = f"{spec.lib}: {spec.label}"
        if done and all(key in done.get(w, {}) for w in spec.workloads):
            for w in spec.workloads:
                table[w][key] = done[w][key]
            log(f"  {key}: resumed")
            continue
        if quiet_wait > 0:
            wait_for_quiet(quiet_wait)
        per: dict[str, list[dict[str, Any]]] = {w: [] for w in spec.workloads}
        spent = 0.0
        for i, seed in enumerate(seeds):
            if i and spent / i * (i + 1) > budget:
                log(
                    f"  {key}: {spent:.0f}s for {i} seed(s); budget {budget:.0f}s: "
                    f"skipping seeds {list(seeds[i:])}"
                )
                break
            t0 = time.perf_counter()
            res = run_group(spec, seed, scale)
            dt_ = time.perf_counter() - t0
            spent += dt_
            for w, r in res.items():
                r["seed"] = seed
                per[w].append(r)
            brief = ", ".join(
                f"{w} {r['throughput_rps']:,.0f} r/s regret {list(r['regret'].values())[-1]:,.1f}"
                if "error" not in r
                else f"{w} ERROR"
                for w, r in res.items()
            )
            log(f"  {key} seed {seed}: {dt_:.1f}s  {brief}")
        for w in spec.workloads:
            m = median_of(per[w])
            m["runs"] = per[w]
            m["lib"], m["label"] = spec.lib, spec.label
            if w == "C" and spec.stationary:
                m["stationary"] = f"{spec.lib}: {spec.stationary}"
            table[w][key] = m
        if checkpoint is not None:
            checkpoint(table)
    return table
