"""UCB1 (Auer, Cesa-Bianchi & Fischer, 2002)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from app.policies._bandit_base import MeanIndexPolicy
from app.policies.base import InvalidRewardError


class UCB1(MeanIndexPolicy):
    """UCB1: play each arm once, then the arm of highest
    mean + c·sqrt(ln t / n) (t updates in all, n of the arm; c = √2 is the
    paper's). Rewards must be in [0, 1].

    Deterministic: the chosen arm has probability 1 (ties and the order of
    untried arms follow a seeded per-arm priority), so its logs carry no
    exploration of their own; off-policy evaluation of other policies needs
    logs from a randomised policy (or an exploration budget elsewhere).

    >>> ucb = UCB1(["a", "b"], seed=0)
    >>> for _ in range(30):
    ...     ucb.update("a", 0.9); ucb.update("b", 0.3)
    >>> s = ucb.select()
    >>> s.arm, s.propensity
    ('a', 1.0)
    >>> [round(float(u), 3) for u in ucb.upper_bounds()]
    [1.422, 0.822]
    """

    algorithm = "ucb1"
    example_params: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, arms: Sequence[str], seed: int | None = None, c: float = math.sqrt(2)
    ) -> None:
        super().__init__(arms, seed)
        self.c = c
        self._allocate()

    def _check(self) -> None:
        if not (self.c >= 0.0 and math.isfinite(self.c)):
            raise ValueError(f"c must be finite and >= 0, got {self.c}")

    def _ucb(self, idx: list[int], counts: list[float]) -> list[float]:
        t = self._t
        log_t, c, sqrt = math.log(t if t > 1 else 1), self.c, math.sqrt
        means = self._mean if idx is self._all else [self._mean[i] for i in idx]
        return [m + c * sqrt(log_t / n) for m, n in zip(means, counts, strict=False)]

    def _update(self, index: int, reward: float, context: Any) -> None:
        if not 0.0 <= reward <= 1.0:
            raise InvalidRewardError(f"UCB1 needs rewards in [0, 1], got {reward}")
        self._welford(index, reward)
        self._record(index, reward)
