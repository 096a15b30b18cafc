"""Online parameter tuning on the simulator: how fast, and at what regret.

    scripts/bench-tuning              # 20 seeds, 40 evaluations, 30,000 requests
    scripts/bench-tuning --quick      # 10 seeds, 30 evaluations, 10,000 requests
    scripts/bench-tuning --json       # JSON on stdout (the table goes to stderr)

Ground truth is the simulator's (``config/simulator.yaml``): its parameter
effects (temperature helps creative, hurts code; top_p; max_tokens truncates
long answers and caps their cost) and its exact expected rewards under the
default reward weights. The space is the tuner's default: temperature
0–1.5, top_p 0.7–1.0, max_tokens 256–4096 (log scale).

1. **Evaluations to 95%.** Per task type, the parameters of the task's best
   model: one evaluation serves a setting to ``EVALUATION_SIZE`` requests
   of the task and observes their mean sampled reward. After each
   evaluation a method recommends a setting (Bayesian optimisation: the
   best posterior mean among the evaluated settings; random and grid
   search: the best observed mean); the count is the first evaluation
   whose recommendation's true reward is at least 95% of the best
   achievable (``reach_95``), and, stricter, within 5% of the space's
   range from the best (``reach_95_range``: the worst setting is 0%, the
   best 100%). A run that never gets there counts budget + 1. Median over
   seeds. BO: :class:`~app.tuning.gp_optimizer.GPOptimizer` (EI, 2 Sobol
   points, one setting per evaluation); random: uniform in the unit cube;
   grid: 4 levels per parameter (bounds included) in a random order.
   ``--libraries`` adds Optuna's GPSampler and TPESampler (best observed
   trial) when Optuna is installed: the measurement behind the choice of
   BoTorch (docs/tuning.md).
2. **Online regret.** A stream from the simulator's traffic mix; each
   request gets an arm and parameters, and its sampled reward comes back at
   once. The regret of a decision is the true expected reward of the task's
   best (model, setting) — the best over all models on a grid of the space
   that includes its bounds, where the simulator's linear effects put the
   optimum — minus the chosen one's, for that request.
   :class:`~app.policies.parameter_tuner.ParameterTuner` (per model, EI)
   against Thompson sampling per task type over a fixed hand-picked grid:
   each model at temperature 0.2, 0.7 or 1.0 and max_tokens 512 or 2048,
   top_p 1.0 (30 arms). Median over seeds of the mean regret per decision,
   over the whole run and its last fifth.

Targets: summed over task types, the median evaluations to 95% of BO fewer
than random search's and grid search's; the tuner's median regret per
decision over the run below the grid's. Results: a table and
``benchmarks/results/tuning-<git short sha>[-quick].json``; the last line
is ``overall: PASS|FAIL``.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from app.evaluation.simulator import SimulatorConfig, TrafficSimulator
from app.features.request_vector import RequestVectorizer
from app.policies.config import Arm
from app.policies.parameter_tuner import ParameterTuner
from app.policies.thompson_sampling import ThompsonSampling
from app.records import Request
from app.rewards import RewardSpec
from app.tuning import DEFAULT_SPACE, GPOptimizer, ParameterSpace
from benchmarks.common import progress_logger, report, result_path, run_header

EVALUATION_SIZE = 32
INPUT_SAMPLE = 48  # requests whose mean true reward is a setting's value for a task
GRID_LEVELS = 4
# Sobol points before the first GP: 2 needed fewer evaluations than 3 or 4 here
# (20 seeds, code / creative / qa / chat; docs/tuning.md).
BO_INITIAL_POINTS = 2
TRUTH_GRID = (7, 4, 9)  # temperature, top_p, max_tokens levels for the optimum (bounds included)
HAND_PICKED = [
    {"temperature": t, "top_p": 1.0, "max_tokens": m} for t in (0.2, 0.7, 1.0) for m in (512, 2048)
]

log = progress_logger()
SPACE = ParameterSpace.from_config(DEFAULT_SPACE)


class Truth:
    """The simulator's exact expected rewards and sampled outcomes for any
    (model, parameters), one single-arm simulator per setting."""

    def __init__(self, seed: int = 0) -> None:
        self.config = SimulatorConfig.from_yaml()
        self.spec = RewardSpec()
        self.seed = seed
        self._sims: dict[tuple[str, tuple[Any, ...]], TrafficSimulator] = {}

    def sim(self, model: str, parameters: dict[str, Any]) -> TrafficSimulator:
        key = (model, tuple(parameters.values()))
        s = self._sims.get(key)
        if s is None:
            arm = Arm(name="x", model=model, parameters=dict(parameters))
            s = TrafficSimulator(
                self.config, [arm], self.spec, seed=self.seed + len(self._sims), start_ms=0
            )
            self._sims[key] = s
        return s

    def expected(self, task: str, n_in: int, model: str, parameters: dict[str, Any]) -> float:
        req = Request(
            request_id="r", tenant_id="t", task_type=task, created_at=0, input_tokens=n_in
        )
        return self.sim(model, parameters).expected_reward(req, "x", 0)

    def sample(
        self, task: str, n_in: int, model: str, parameters: dict[str, Any]
    ) -> tuple[float, float | None]:
        """A sampled reward and its cost."""
        req = Request(
            request_id="r", tenant_id="t", task_type=task, created_at=0, input_tokens=n_in
        )
        w = self.sim(model, parameters).outcome(req, "x", 0)
        return self.spec.scalar(w.quality, w.cost_usd, w.latency_ms, w.error), w.cost_usd

    def input_lengths(self, task: str, n: int, rng: random.Random) -> list[int]:
        s = self.config.input_tokens[task]
        return [max(1, round(rng.lognormvariate(math.log(s.median), s.sigma))) for _ in range(n)]


def truth_grid() -> np.ndarray:
    axes = [np.linspace(0.0, 1.0, k) for k in TRUTH_GRID]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(TRUTH_GRID))


class TaskObjective:
    """One task type's parameters for one model, as an optimiser sees them."""

    def __init__(self, truth: Truth, task: str, model: str, seed: int) -> None:
        self.truth, self.task, self.model = truth, task, model
        self.inputs = truth.input_lengths(task, INPUT_SAMPLE, random.Random(0))
        self.rng = random.Random(seed)
        self._values: dict[tuple[float, ...], float] = {}

    def value(self, point: Sequence[float]) -> float:
        """The setting's true reward: its mean over the task's input sample."""
        key = tuple(float(v) for v in point)
        v = self._values.get(key)
        if v is None:
            p = SPACE.decode(point)
            v = statistics.fmean(
                self.truth.expected(self.task, n, self.model, p) for n in self.inputs
            )
            self._values[key] = v
        return v

    def evaluate(self, point: Sequence[float] | np.ndarray) -> tuple[float, float]:
        """The mean of ``EVALUATION_SIZE`` sampled rewards and its variance."""
        p = SPACE.decode(point)
        n_ins = self.truth.input_lengths(self.task, EVALUATION_SIZE, self.rng)
        rewards = [self.truth.sample(self.task, n, self.model, p)[0] for n in n_ins]
        return statistics.fmean(rewards), statistics.variance(rewards) / len(rewards)


def optimum(truth: Truth, task: str) -> tuple[str, np.ndarray, float, float]:
    """The task's best model and setting on the truth grid, its value, and
    the worst setting's value for that model."""
    best: tuple[str, np.ndarray, float, float] | None = None
    for model in truth.config.models:
        obj = TaskObjective(truth, task, model, seed=0)
        values = [obj.value(u) for u in truth_grid()]
        i = int(np.argmax(values))
        if best is None or values[i] > best[2]:
            best = (model, truth_grid()[i], values[i], min(values))
    assert best is not None
    return best


# -- 1. evaluations to 95% ---------------------------------------------------------


def _reach(trace: list[float], target: float, budget: int) -> int:
    for k, v in enumerate(trace):
        if v >= target:
            return k + 1
    return budget + 1


def trace_bo(obj: TaskObjective, seed: int, budget: int) -> list[float]:
    """The true value of the recommendation after each evaluation."""
    opt = GPOptimizer(SPACE.dim, acquisition="ei", initial_points=BO_INITIAL_POINTS)
    x = np.empty((0, SPACE.dim))
    y: list[float] = []
    v: list[float] = []
    trace = []
    for k in range(budget + 1):
        plan = opt.plan(x, np.array(y), np.array(v), n=1, seed=seed * 1000 + k)
        if k:
            trace.append(obj.value(x[plan.incumbent]))
        if k == budget:
            break
        u = np.array(SPACE.snap(plan.proposals[0]))
        mean, var = obj.evaluate(u)
        x = np.vstack([x, u])
        y.append(mean)
        v.append(var)
    return trace


def trace_search(obj: TaskObjective, seed: int, budget: int, grid: bool) -> list[float]:
    rng = np.random.default_rng(seed)
    if grid:
        axes = [np.linspace(0.0, 1.0, GRID_LEVELS)] * SPACE.dim
        points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, SPACE.dim)
        points = points[rng.permutation(len(points))][:budget]
    else:
        points = rng.random((budget, SPACE.dim))
    best, best_point, trace = -math.inf, points[0], []
    for u in points:
        mean, _ = obj.evaluate(u)
        if mean > best:
            best, best_point = mean, u
        trace.append(obj.value(best_point))
    return trace


def trace_optuna(obj: TaskObjective, seed: int, budget: int, sampler_name: str) -> list[float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (
        optuna.samplers.GPSampler(seed=seed, deterministic_objective=False)
        if sampler_name == "gp"
        else optuna.samplers.TPESampler(seed=seed)
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    names = [f"u{i}" for i in range(SPACE.dim)]
    trace = []
    for _ in range(budget):
        trial = study.ask()
        u = [trial.suggest_float(n, 0.0, 1.0) for n in names]
        study.tell(trial, obj.evaluate(u)[0])
        best = study.best_trial
        trace.append(obj.value([best.params[n] for n in names]))
    return trace


def _evaluations_job(args: tuple[str, str, int, int, list[str]]) -> dict[str, list[float]]:
    task, model, seed, budget, methods = args
    out = {}
    for method in methods:
        # Each method its own draws: a method's figures do not depend on which others ran.
        obj = TaskObjective(Truth(seed=seed), task, model, seed=10_000 + seed)
        if method == "bo":
            out[method] = trace_bo(obj, seed, budget)
        elif method in ("random", "grid"):
            out[method] = trace_search(obj, seed, budget, grid=method == "grid")
        else:
            out[method] = trace_optuna(obj, seed, budget, method.removeprefix("optuna-"))
    return out


def evaluations(
    tasks: dict[str, tuple[str, np.ndarray, float, float]],
    seeds: int,
    budget: int,
    methods: list[str],
    pool: ProcessPoolExecutor,
) -> list[dict[str, Any]]:
    jobs = [(t, best[0], s, budget, methods) for t, best in tasks.items() for s in range(seeds)]
    results = list(pool.map(_evaluations_job, jobs))
    rows = []
    for task, (model, _, best, worst) in tasks.items():
        runs = [r for j, r in zip(jobs, results, strict=True) if j[0] == task]
        for method in methods:
            traces = [r[method] for r in runs]
            reach = [_reach(t, 0.95 * best, budget) for t in traces]
            strict = [_reach(t, best - 0.05 * (best - worst), budget) for t in traces]
            rows.append(
                {
                    "task": task,
                    "model": model,
                    "method": method,
                    "reach_95": statistics.median(reach),
                    "reach_95_range": statistics.median(strict),
                    "runs_95": reach,
                    "runs_95_range": strict,
                    "best": best,
                    "worst": worst,
                }
            )
    return rows


# -- 2. online regret --------------------------------------------------------------------


def _online_job(args: tuple[int, int]) -> dict[str, Any]:
    seed, requests = args
    truth = Truth(seed=seed)
    models = list(truth.config.models)
    stream = TrafficSimulator(
        truth.config, [Arm("x", models[0])], truth.spec, seed=seed, start_ms=0
    )
    vectorizer = RequestVectorizer()
    tuner = ParameterTuner(models, seed=seed)
    grid_arms = {f"{m}|{i}": (m, p) for m in models for i, p in enumerate(HAND_PICKED)}
    grid = {t: ThompsonSampling(list(grid_arms), seed=seed) for t in truth.config.task_names}
    regrets: dict[str, list[float]] = {"tuner": [], "grid": []}
    t0 = time.perf_counter()
    for k in range(requests):
        req = stream.next_request(k * 50)
        task, n_in = req.task_type, req.input_tokens
        model_opt, params_opt = _OPTIMA[task]
        top = truth.expected(task, n_in, model_opt, params_opt)
        row = vectorizer.row(req)
        c = tuner.choose(row)
        regrets["tuner"].append(top - truth.expected(task, n_in, c.arm, c.parameters))
        r, cost = truth.sample(task, n_in, c.arm, c.parameters)
        tuner.update(c.arm, r, row, parameters=c.parameters, cost_usd=cost)
        s = grid[task].select()
        model, params = grid_arms[s.arm]
        regrets["grid"].append(top - truth.expected(task, n_in, model, params))
        grid[task].update(s.arm, truth.sample(task, n_in, model, params)[0])
    tail = requests - requests // 5
    return {
        "seed": seed,
        "seconds": time.perf_counter() - t0,
        **{f"{p}_mean": statistics.fmean(v) for p, v in regrets.items()},
        **{f"{p}_last_fifth": statistics.fmean(v[tail:]) for p, v in regrets.items()},
        "tuner_incumbents": {
            t: {m: tuner.incumbent(m, t) for m in models} for t in truth.config.task_names
        },
        "tuner_arm_shares": {a: s["pulls"] / requests for a, s in tuner.stats().items()},
    }


_OPTIMA: dict[str, tuple[str, dict[str, Any]]] = {}  # per task: the best (model, parameters)


def _init_worker(optima: dict[str, tuple[str, dict[str, Any]]]) -> None:
    _OPTIMA.update(optima)
    import torch

    torch.set_num_threads(1)


def online(seeds: int, requests: int, pool: ProcessPoolExecutor) -> dict[str, Any]:
    runs = list(pool.map(_online_job, [(s, requests) for s in range(seeds)]))
    summary = {
        f"{p}_{w}": statistics.median(r[f"{p}_{w}"] for r in runs)
        for p in ("tuner", "grid")
        for w in ("mean", "last_fifth")
    }
    return {"requests": requests, "seeds": seeds, **summary, "runs": runs}


# -- report ----------------------------------------------------------------------------


def table(doc: dict[str, Any]) -> str:
    lines = []
    if "evaluations" in doc:
        lines += _evaluations_table(doc)
    if "online" in doc:
        lines += _online_table(doc["online"])
    lines += [
        f"{'PASS' if c['pass'] else 'FAIL'}  {c['target']}: {c['measured']}"
        for c in doc.get("checks", [])
    ]
    return "\n".join(lines)


def _evaluations_table(doc: dict[str, Any]) -> list[str]:
    methods = doc["methods"]
    lines = [
        f"evaluations to 95% of the best reward (median over {doc['seeds']} seeds, "
        f"{EVALUATION_SIZE} requests per evaluation, budget {doc['budget']}; "
        "in brackets: to 95% of the space's range)",
        f"{'task':<14} {'model':<18} " + " ".join(f"{m:>16}" for m in methods),
    ]
    by = {(r["task"], r["method"]): r for r in doc["evaluations"]}
    for task, (model, *_rest) in doc["optima"].items():
        cells = [
            f"{by[task, m]['reach_95']:>6g} ({by[task, m]['reach_95_range']:>5g})" for m in methods
        ]
        lines.append(f"{task:<14} {model:<18} " + " ".join(f"{c:>16}" for c in cells))
    totals = _totals(doc["evaluations"], methods)
    lines.append(
        f"{'sum':<14} {'':<18} "
        + " ".join(f"{f'{totals[m][0]:g} ({totals[m][1]:g})':>16}" for m in methods)
    )
    return [*lines, ""]


def _online_table(o: dict[str, Any]) -> list[str]:
    return [
        f"online regret per decision ({o['requests']:,} requests, median over {o['seeds']} seeds)",
        f"{'policy':<44} {'whole run':>10} {'last fifth':>11}",
        f"{'parameter_tuner (per model, EI)':<44} {o['tuner_mean']:>10.4f} "
        f"{o['tuner_last_fifth']:>11.4f}",
        f"{'thompson_sampling per task, hand-picked grid':<44} {o['grid_mean']:>10.4f} "
        f"{o['grid_last_fifth']:>11.4f}",
        "",
    ]


def _totals(rows: list[dict[str, Any]], methods: list[str]) -> dict[str, tuple[float, float]]:
    """Per method, the sums over task types of the medians (to 95%, to 95% of the range)."""
    return {
        m: (
            sum(r["reach_95"] for r in rows if r["method"] == m),
            sum(r["reach_95_range"] for r in rows if r["method"] == m),
        )
        for m in methods
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 seeds, 30 evaluations, 10,000 requests")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--requests", type=int, default=None, help="online run length")
    p.add_argument("--libraries", action="store_true", help="add Optuna's GP and TPE samplers")
    p.add_argument(
        "--only", choices=("evaluations", "online"), help="run one of the two parts (no verdict)"
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    p.add_argument("--no-save", action="store_true", help="do not write the result file")
    args = p.parse_args(argv)
    seeds = args.seeds or (10 if args.quick else 20)
    budget = 30 if args.quick else 40
    requests = args.requests or (10_000 if args.quick else 30_000)
    methods = ["bo", "random", "grid"]
    if args.libraries:
        methods += ["optuna-gp", "optuna-tpe"]
    doc = run_header("tuning", "numpy", "torch", "botorch", "optuna")
    doc.update(
        {
            "quick": args.quick,
            "seeds": seeds,
            "budget": budget,
            "methods": methods,
            "evaluation_size": EVALUATION_SIZE,
        }
    )
    started = time.perf_counter()
    truth = Truth()
    tasks = {t: optimum(truth, t) for t in truth.config.task_names}
    optima = {t: (m, SPACE.decode(u)) for t, (m, u, _, _) in tasks.items()}
    doc["optima"] = {
        t: [m, SPACE.decode(u), best, worst] for t, (m, u, best, worst) in tasks.items()
    }
    log(f"optima: {optima}")
    with ProcessPoolExecutor(args.workers, initializer=_init_worker, initargs=(optima,)) as pool:
        if args.only != "online":
            log(f"evaluations to 95%: {len(tasks)} task types x {seeds} seeds x {methods}")
            doc["evaluations"] = evaluations(tasks, seeds, budget, methods, pool)
        if args.only != "evaluations":
            log(f"online regret: {seeds} seeds x {requests:,} requests")
            doc["online"] = online(seeds, requests, pool)
    if args.only:  # a part alone is a measurement, not the benchmark's verdict
        doc["seconds"] = time.perf_counter() - started
        report(doc, table(doc), None, None, json_stdout=args.json)
        return 0
    totals = doc["totals"] = _totals(doc["evaluations"], methods)
    o = doc["online"]
    doc["checks"] = [
        {
            "target": "BO needs fewer evaluations to 95% than random search (sum of medians)",
            "measured": f"{totals['bo'][0]:g} vs {totals['random'][0]:g}",
            "pass": totals["bo"][0] < totals["random"][0],
        },
        {
            "target": "BO needs fewer evaluations to 95% than grid search (sum of medians)",
            "measured": f"{totals['bo'][0]:g} vs {totals['grid'][0]:g}",
            "pass": totals["bo"][0] < totals["grid"][0],
        },
        {
            "target": "online regret per decision below Thompson sampling on a hand-picked grid",
            "measured": f"{o['tuner_mean']:.4f} vs {o['grid_mean']:.4f}",
            "pass": o["tuner_mean"] < o["grid_mean"],
        },
    ]
    doc["seconds"] = time.perf_counter() - started
    passed = all(c["pass"] for c in doc["checks"])
    saved = None if args.no_save else result_path("tuning", doc["commit"], args.quick)
    report(doc, table(doc), passed, saved, json_stdout=args.json)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
