"""Our bandit policies against river, MABWiser and Vowpal Wabbit, in one process.

    scripts/bench-policies              # full: 3 seeds, 100k / 50k rounds
    scripts/bench-policies --quick      # 10% of the rounds, 1 seed
    scripts/bench-policies --json       # JSON on stdout (the tables go to stderr)
    scripts/bench-policies --only lin   # policies whose label contains "lin"

Workloads (every one seeded; the seed also seeds the policies):

* **A** — 5 Bernoulli arms, means 0.85 / 0.75 / 0.65 / 0.60 / 0.50, 100k rounds.
* **B** — linear contextual: x ~ N(0, I₁₀), every learner sees the same
  11 features x̃ = [1, x] (the constant is the bias; VW runs ``--noconstant``
  so that it has exactly these). 4 arms, expected reward θ_kᵀx̃ (θ_k drawn per
  seed: intercept ~ N(0, 0.25²), slopes ~ N(0, 1/10)), observed with N(0, 0.1²)
  noise (σ = 0.1); 50k rounds.
* **C** — A, but the best arm's mean drops to 0.55 at round 50k (100k rounds).
  C's first 50k rounds are A's (common random numbers), so a policy that can
  be ``copy.deepcopy``-ed is run once to 50k and forked there; the others
  (VW) run C from scratch.

Per (workload, policy), the median over seeds of: throughput (rounds / Σ
(select + update) time — the library calls only, each timed with
``time.perf_counter_ns``; building a library's input format — river's dict,
VW's text, MABWiser's 2-D row — is done outside the timers), select and
update p50/p99 (µs), cumulative pseudo-regret at 1k / 10k / end (against the
best arm's expected reward, per context for B, per phase for C), and for C
the rounds after the change until the new best arm has > 80% of the last
1,000 picks ("never" if it does not happen by the end).

Also: snapshot + restore of a 20-arm d=10 LinUCB, and LinUCB.select_batch.

Policies slower than ``--budget`` seconds per workload group run fewer seeds
(reported in the ``seeds`` column). Background CPU use of other processes
is sampled from /proc around each run: the machine may be small and shared.

Results: tables on stdout (stderr with ``--json``) and JSON in
``benchmarks/results/policies-<git short sha>[-quick].json``; the last line
is ``overall: PASS|FAIL`` against the targets (``targets``).

Modules: ``cli`` (options, the run, the output), ``workloads`` (A, B, C),
``runners`` (each library's select/update loop), ``roster`` (every policy
run), ``running`` (seeds, budget, forking C), ``summary`` (per-run figures
and medians), ``resume`` (checkpoints), ``lin_ucb_extras`` (snapshot +
restore, select_batch), ``targets``, ``report``.
"""

from __future__ import annotations

from benchmarks.common import progress_logger

# The libraries whose versions every policies result records.
PACKAGES = ("numpy", "river", "mabwiser", "vowpalwabbit", "orjson")

log = progress_logger()
