"""RL agents on the multi-step LLM workflow environment.

    scripts/bench-rl            # 3 seeds, ~1 minute on 2 cores
    scripts/bench-rl --quick    # 1 seed, a third of the episodes
    scripts/bench-rl --json     # JSON on stdout (the table goes to stderr)

Trains DQN, Double-DQN, REINFORCE and actor-critic on
:class:`~app.evaluation.workflow_env.LLMWorkflowEnv` for each seed, then
evaluates each greedily on the same held-out episodes as the baselines: the
best fixed strategy ("call the best single arm, accept", chosen with
hindsight) and the uniformly random policy. Also times one DQN training step
(batch 64, default 64-64 network; median of 50).

Targets: every agent beats the random policy by at least
``MIN_GAIN_OVER_RANDOM``; the best agent is within ``MAX_GAP_TO_BEST_FIXED`` of
the best fixed strategy; a DQN training step takes at most
``MAX_TRAIN_STEP_MS`` (docs/benchmarks.md gives the figures they come from).

Results: the table on stdout (stderr with ``--json``, the JSON on stdout) and
``benchmarks/results/rl-<git short sha>[-quick].json``; the last line is
``overall: PASS|FAIL``. Progress on stderr. Torch runs with ``--threads``
intra-op threads (default 1: these networks are tiny).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

from app.evaluation.environment import average_return, run_episode
from app.evaluation.workflow_env import LLMWorkflowEnv
from app.policies.actor_critic import ActorCritic
from app.policies.dqn import DQN
from app.policies.reinforce import Reinforce
from benchmarks.common import progress_logger, report, result_path, run_header

DQN_SETTINGS: dict[str, Any] = {
    "hidden": (32, 32),
    "gamma": 1.0,
    "learning_starts": 200,
    "epsilon_decay_steps": 2_000,
    "target_update": 100,
    "train_every": 2,
}
AGENTS: dict[str, tuple[type, dict[str, Any], int]] = {
    "dqn": (DQN, DQN_SETTINGS, 1_500),
    "double_dqn": (DQN, DQN_SETTINGS | {"double": True}, 1_500),
    "reinforce": (Reinforce, {"hidden": (32,), "learning_rate": 0.01}, 1_500),
    "actor_critic": (ActorCritic, {"hidden": (32,), "learning_rate": 0.003, "gamma": 1.0}, 1_500),
}
EVAL_SEED = 999

MIN_GAIN_OVER_RANDOM = 0.10
MAX_GAP_TO_BEST_FIXED = 0.01
MAX_TRAIN_STEP_MS = 5.0

log = progress_logger()


def train_step_ms(env: LLMWorkflowEnv, steps: int = 50) -> float:
    agent = DQN(env.actions, seed=0, context_dim=env.state_dim, learning_starts=10**9)
    rng = np.random.default_rng(0)
    for _ in range(1_000):
        a = env.actions[int(rng.integers(len(env.actions)))]
        agent.observe(rng.random(env.state_dim), a, 0.5, rng.random(env.state_dim), False)
    for _ in range(5):
        agent.train_step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        agent.train_step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def run(seeds: list[int], scale: float, eval_episodes: int) -> dict[str, Any]:
    env = LLMWorkflowEnv(seed=0)
    fixed = env.fixed_policy_values(eval_episodes, EVAL_SEED)
    best_arm = max(fixed, key=fixed.__getitem__)
    random_value = env.random_policy_value(eval_episodes, EVAL_SEED)
    results: dict[str, Any] = {}
    for name, (cls, params, episodes) in AGENTS.items():
        n = max(1, round(episodes * scale))
        values, seconds = [], []
        for seed in seeds:
            agent = cls(env.actions, seed=seed, context_dim=env.state_dim, **params)
            train_env = LLMWorkflowEnv(seed=seed)
            t0 = time.perf_counter()
            for i in range(n):
                run_episode(train_env, agent, seed=seed if i == 0 else None)
            seconds.append(time.perf_counter() - t0)
            values.append(average_return(env.copy(), agent, eval_episodes, seed=EVAL_SEED))
            log(f"  {name} seed {seed}: {values[-1]:.4f} after {n} episodes ({seconds[-1]:.1f} s)")
        results[name] = {
            "episodes": n,
            "values": values,
            "mean": float(np.mean(values)),
            "train_seconds": seconds,
        }
    return {
        "seeds": seeds,
        "eval_episodes": eval_episodes,
        "best_fixed": {"arm": best_arm, "value": fixed[best_arm]},
        "fixed": fixed,
        "random": random_value,
        "agents": results,
        "dqn_train_step_ms": train_step_ms(env),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def evaluate_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    best, rnd = res["best_fixed"]["value"], res["random"]
    targets = [
        {
            "target": f"{name} >= random + {MIN_GAIN_OVER_RANDOM:g}",
            "value": r["mean"],
            "pass": r["mean"] >= rnd + MIN_GAIN_OVER_RANDOM,
        }
        for name, r in res["agents"].items()
    ]
    top = max(res["agents"], key=lambda name: res["agents"][name]["mean"])
    targets.append(
        {
            "target": f"best agent ({top}) >= best fixed - {MAX_GAP_TO_BEST_FIXED:g}",
            "value": res["agents"][top]["mean"],
            "pass": res["agents"][top]["mean"] >= best - MAX_GAP_TO_BEST_FIXED,
        }
    )
    ms = res["dqn_train_step_ms"]
    targets.append(
        {
            "target": f"DQN train step <= {MAX_TRAIN_STEP_MS:g} ms",
            "value": ms,
            "pass": ms <= MAX_TRAIN_STEP_MS,
        }
    )
    return targets


def table(res: dict[str, Any]) -> str:
    best, rnd = res["best_fixed"]["value"], res["random"]
    lines = [
        f"{'policy':<28}{'avg reward':>11}{'vs best fixed':>15}{'per seed':>26}{'train s':>9}",
        f"{'best fixed (' + res['best_fixed']['arm'] + ')':<28}{best:>11.4f}{0.0:>+15.4f}",
        f"{'random':<28}{rnd:>11.4f}{rnd - best:>+15.4f}",
    ]
    for name, r in res["agents"].items():
        per_seed = " ".join(f"{v:.3f}" for v in r["values"])
        lines.append(
            f"{name:<28}{r['mean']:>11.4f}{r['mean'] - best:>+15.4f}{per_seed:>26}"
            f"{np.mean(r['train_seconds']):>9.1f}"
        )
    lines.append(
        f"DQN train step (batch 64, 12-64-64-7): {res['dqn_train_step_ms']:.2f} ms median, "
        f"{res['torch_threads']} torch thread(s); {res['eval_episodes']} evaluation episodes"
    )
    lines.append("")
    for t in res["targets"]:
        lines.append(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench-rl", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="training seeds per agent (default 3)")
    p.add_argument("--quick", action="store_true", help="1 seed, a third of the episodes")
    p.add_argument("--eval-episodes", type=int, default=2_000)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = list(range(1 if args.quick else args.seeds))
    res = run_header("rl", "torch", "numpy")
    res["quick"] = args.quick
    res |= run(seeds, 1 / 3 if args.quick else 1.0, args.eval_episodes)
    res["targets"] = evaluate_targets(res)
    saved = None if args.no_save else result_path("rl", res["commit"], args.quick)
    report(res, table(res), all(t["pass"] for t in res["targets"]), saved, json_stdout=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
