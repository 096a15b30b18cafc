"""UCB1-Tuned (Auer, Cesa-Bianchi & Fischer, 2002)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from app.policies._bandit_base import MeanIndexPolicy


class UCBTuned(MeanIndexPolicy):
    """UCB1-Tuned: play each arm once, then the arm of highest
    mean + sqrt(ln t / n · min(R²/4, V + R²·sqrt(2 ln t / n))), V the arm's
    empirical variance and R = ``reward_range`` (R²/4 bounds the variance of
    a reward spread over R; the paper has R = 1). Any finite reward is
    accepted; ``reward_range`` should bound its spread.

    Deterministic (propensity 1; ties by a seeded priority): off-policy
    evaluation needs exploration logged elsewhere.

    >>> ucb = UCBTuned(["a", "b"], seed=0)
    >>> for r in [0.9, 0.7] * 20:
    ...     ucb.update("a", r); ucb.update("b", 0.5)
    >>> [round(float(u), 3) for u in ucb.upper_bounds()]
    [0.965, 0.665]
    >>> ucb.select().arm
    'a'
    """

    algorithm = "ucb_tuned"
    example_params: ClassVar[dict[str, Any]] = {}
    _learned = ("_n", "_mean", "_m2")
    _keeps_m2 = True

    def __init__(
        self, arms: Sequence[str], seed: int | None = None, reward_range: float = 1.0
    ) -> None:
        super().__init__(arms, seed)
        self.reward_range = reward_range
        self._allocate()

    def _check(self) -> None:
        if not (self.reward_range > 0.0 and math.isfinite(self.reward_range)):
            raise ValueError(f"reward_range must be positive, got {self.reward_range}")

    def _ucb(self, idx: list[int], counts: list[float]) -> list[float]:
        t = self._t
        log_t = math.log(t if t > 1 else 1)
        r2 = self.reward_range**2
        sqrt = math.sqrt
        return [
            m + sqrt(log_t / n * min(r2 / 4.0, m2 / n + r2 * sqrt(2.0 * log_t / n)))
            for m, m2, n in zip(
                self._view(self._mean, idx), self._view(self._m2, idx), counts, strict=False
            )
        ]
