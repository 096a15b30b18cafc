"""UCB-V (Audibert, Munos & Szepesvári, 2009): UCB with empirical variances."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from app.policies._bandit_base import MeanIndexPolicy


class UCBV(MeanIndexPolicy):
    """UCB-V: play each arm once, then the arm of highest
    mean + sqrt(2·V·E / n) + c·3·b·E / n with E = ζ·ln t (V the arm's empirical
    variance, n its count, b = ``reward_range``, t updates in all). A
    low-variance arm needs fewer pulls to be ruled out than in UCB1. Any
    finite reward is accepted; ``reward_range`` should bound its spread.

    Deterministic (propensity 1; ties by a seeded priority): off-policy
    evaluation needs exploration logged elsewhere.

    >>> ucb = UCBV(["a", "b"], seed=0)
    >>> for r in [0.9, 0.7] * 20:
    ...     ucb.update("a", r); ucb.update("b", 0.5)
    >>> round(ucb.stats()["a"]["variance"], 6), ucb.stats()["b"]["variance"]
    (0.01, 0.0)
    >>> [round(float(u), 3) for u in ucb.upper_bounds()]
    [1.246, 0.894]
    >>> ucb.select().arm
    'a'
    """

    algorithm = "ucb_v"
    example_params: ClassVar[dict[str, Any]] = {}
    _learned = ("_n", "_mean", "_m2")
    _keeps_m2 = True

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        c: float = 1.0,
        zeta: float = 1.2,
        reward_range: float = 1.0,
    ) -> None:
        super().__init__(arms, seed)
        self.c = c
        self.zeta = zeta
        self.reward_range = reward_range
        self._allocate()

    def _check(self) -> None:
        if not (self.c >= 0.0 and math.isfinite(self.c)):
            raise ValueError(f"c must be finite and >= 0, got {self.c}")
        if not (self.zeta > 0.0 and math.isfinite(self.zeta)):
            raise ValueError(f"zeta must be positive, got {self.zeta}")
        if not (self.reward_range > 0.0 and math.isfinite(self.reward_range)):
            raise ValueError(f"reward_range must be positive, got {self.reward_range}")

    def _ucb(self, idx: list[int], counts: list[float]) -> list[float]:
        t = self._t
        e = self.zeta * math.log(t if t > 1 else 1)
        b = 3.0 * self.c * self.reward_range * e
        sqrt = math.sqrt
        return [
            m + sqrt(2.0 * (m2 / n) * e / n) + b / n
            for m, m2, n in zip(
                self._view(self._mean, idx), self._view(self._m2, idx), counts, strict=False
            )
        ]
