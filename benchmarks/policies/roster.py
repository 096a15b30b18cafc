"""Every policy the benchmark runs: ours and the peers that import."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.policies.registry import algorithms
from benchmarks.policies.runners import Mab, Ours, River, Runner, Vw
from benchmarks.policies.workloads import ARMS_B, DIM, MEANS_A


@dataclass
class Spec:
    label: str
    lib: str
    make: Callable[[int], Runner]
    workloads: tuple[str, ...]
    stationary: str | None = None  # on C: the stationary version it should beat


def roster() -> tuple[list[Spec], dict[str, str]]:
    """Every policy to run, and why any library is missing."""
    algs = algorithms()
    arms_a = [f"arm{i}" for i in range(len(MEANS_A))]
    arms_b = [f"arm{i}" for i in range(ARMS_B)]
    d = DIM + 1
    skipped: dict[str, str] = {}

    def ours(name: str, **params: Any) -> Callable[[int], Runner]:
        cls: Any = algs[name]
        if cls.contextual:
            hybrid = name == "hybrid_lin_ucb"
            dim = d + 1 if hybrid else d
            return lambda s: Ours(cls(arms_b, seed=s, context_dim=dim, **params), hybrid)
        return lambda s: Ours(cls(arms_a, seed=s, **params))

    ac = ("A", "C")
    specs = [
        Spec("ThompsonSampling", "ours", ours("thompson_sampling"), ac),
        Spec(
            "ThompsonSampling(discount=.998)",
            "ours",
            ours("thompson_sampling", discount=0.998),
            ac,
            "ThompsonSampling",
        ),
        Spec("GaussianThompson", "ours", ours("gaussian_thompson"), ac),
        Spec("UCB1", "ours", ours("ucb1"), ac),
        Spec("UCBTuned", "ours", ours("ucb_tuned"), ac),
        Spec("DiscountedUCB(γ=.998)", "ours", ours("discounted_ucb"), ac, "UCB1"),
        Spec("SlidingWindowUCB(w=1000)", "ours", ours("sliding_window_ucb"), ac, "UCB1"),
        Spec("EpsilonGreedy(ε=.1)", "ours", ours("epsilon_greedy", epsilon=0.1), ac),
        Spec("Exp3(γ=.1)", "ours", ours("exp3", gamma=0.1), ac),
        # α = .3 is our default; α = 1 is the peers' LinUCB default, for a
        # like-for-like row (the noise here is σ = 0.1, so α = 1 over-explores).
        Spec("LinUCB(α=.3)", "ours", ours("lin_ucb"), ("B",)),
        Spec("LinUCB(α=1)", "ours", ours("lin_ucb", alpha=1.0), ("B",)),
        Spec("LinearThompson(v=.5)", "ours", ours("linear_thompson"), ("B",)),
        Spec(
            "HybridLinUCB(α=1,shared=1)",
            "ours",
            ours("hybrid_lin_ucb", shared_dim=1, alpha=1.0),
            ("B",),
        ),
    ]
    try:
        from river import bandit as rb
        from river import proba

        k = len(MEANS_A)
        specs += [
            Spec(
                "EpsilonGreedy(ε=.1)",
                "river",
                lambda s: River(rb.EpsilonGreedy(epsilon=0.1, seed=s), k),
                ac,
            ),
            Spec("UCB(δ=1)", "river", lambda s: River(rb.UCB(delta=1.0, seed=s), k), ac),
            Spec(
                "ThompsonSampling",
                "river",
                lambda s: River(rb.ThompsonSampling(reward_obj=proba.Beta(), seed=s), k),
                ac,
            ),
            Spec("Exp3(γ=.1)", "river", lambda s: River(rb.Exp3(gamma=0.1, seed=s), k), ac),
            Spec(
                "LinUCBDisjoint(α=1,β=1)",
                "river",
                lambda s: River(rb.LinUCBDisjoint(alpha=1.0, beta=1.0, seed=s), ARMS_B),
                ("B",),
            ),
        ]
    except ImportError as exc:
        skipped["river"] = f"not importable: {exc}"
    try:
        from mabwiser.mab import MAB, LearningPolicy

        ka, kb = list(range(len(MEANS_A))), list(range(ARMS_B))
        specs += [
            Spec(
                "ThompsonSampling",
                "mabwiser",
                lambda s: Mab(MAB(ka, LearningPolicy.ThompsonSampling(), seed=s)),
                ac,
            ),
            Spec(
                "UCB1(α=1)",
                "mabwiser",
                lambda s: Mab(MAB(ka, LearningPolicy.UCB1(alpha=1.0), seed=s)),
                ac,
            ),
            Spec(
                "EpsilonGreedy(ε=.1)",
                "mabwiser",
                lambda s: Mab(MAB(ka, LearningPolicy.EpsilonGreedy(epsilon=0.1), seed=s)),
                ac,
            ),
            Spec(
                "LinUCB(α=1)",
                "mabwiser",
                lambda s: Mab(
                    MAB(kb, LearningPolicy.LinUCB(alpha=1.0, l2_lambda=1.0), seed=s), dim=d
                ),
                ("B",),
            ),
        ]
    except ImportError as exc:
        skipped["mabwiser"] = f"not importable: {exc}"
    try:
        import vowpalwabbit  # noqa: F401

        ka_n = len(MEANS_A)
        specs += [
            Spec("cb_explore(ε=.05)", "vw", lambda s: Vw(f"--cb_explore {ka_n}", ka_n, s), ac),
            Spec(
                "cb_explore_adf(ε=.05)",
                "vw",
                lambda s: Vw("--cb_explore_adf --noconstant -q sa", ARMS_B, s),
                ("B",),
            ),
            Spec(
                "cb_explore_adf --squarecb",
                "vw",
                lambda s: Vw("--cb_explore_adf --squarecb --noconstant -q sa", ARMS_B, s),
                ("B",),
            ),
        ]
    except ImportError as exc:
        skipped["vowpalwabbit"] = f"not importable: {exc}"
    return specs, skipped
