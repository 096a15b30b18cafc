"""Discounted UCB (Garivier & Moulines, 2011) for rewards that drift."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from app.policies._bandit_base import IndexPolicy


class DiscountedUCB(IndexPolicy):
    """D-UCB: every update multiplies all arms' counts N and reward sums S by
    γ before adding the new reward, so old evidence fades (memory ≈ 1/(1-γ)
    updates). Index: S/N + c·sqrt(ln(ΣN) / N); an arm whose count is 0 (never
    pulled, or faded to nothing) is played first. ``c`` is 2B·sqrt(ξ) in the
    paper (B bounds the rewards); any finite reward is accepted.

    Deterministic (propensity 1; ties by a seeded priority): off-policy
    evaluation needs exploration logged elsewhere.

    >>> ucb = DiscountedUCB(["a", "b"], seed=0, gamma=0.9)
    >>> for _ in range(20):
    ...     ucb.update("a", 1.0); ucb.update("b", 0.5)
    >>> for _ in range(10):
    ...     ucb.update("a", 0.0)  # a degrades; its old rewards fade
    >>> round(ucb.stats()["a"]["value"], 3), round(ucb.stats()["a"]["mean_reward"], 3)
    (0.2, 0.667)
    >>> ucb.select().arm
    'b'
    """

    algorithm = "discounted_ucb"
    example_params: ClassVar[dict[str, Any]] = {"gamma": 0.95}
    _learned = ("_dn", "_ds")
    _dn: list[float]  # discounted counts
    _ds: list[float]  # discounted reward sums

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        gamma: float = 0.998,
        c: float = 0.4,
    ) -> None:
        super().__init__(arms, seed)
        self.gamma = gamma
        self.c = c
        self._allocate()

    def _check(self) -> None:
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if not (self.c >= 0.0 and math.isfinite(self.c)):
            raise ValueError(f"c must be finite and >= 0, got {self.c}")

    def _counts(self) -> list[float]:
        return self._dn

    def _ucb(self, idx: list[int], counts: list[float]) -> list[float]:
        log_n, c, sqrt = math.log(max(math.fsum(self._dn), 1.0)), self.c, math.sqrt
        return [
            s / n + c * sqrt(log_n / n)
            for s, n in zip(self._view(self._ds, idx), counts, strict=False)
        ]

    def _scores(self, idx: list[int]) -> list[float]:
        return [
            s / n if n > 0.0 else 0.0
            for s, n in zip(self._view(self._ds, idx), self._view(self._dn, idx), strict=False)
        ]

    def _update(self, index: int, reward: float, context: Any) -> None:
        g = self.gamma
        if g < 1.0:
            self._dn = [n * g for n in self._dn]
            self._ds = [s * g for s in self._ds]
        self._dn[index] += 1.0
        self._ds[index] += reward
        self._record(index, reward)

    def _arm_stats(self, index: int) -> dict[str, float]:
        n = self._dn[index]
        return {
            "value": self._ds[index] / n if n > 0.0 else 0.0,
            "discounted_count": n,
        }
