"""Softmax (Boltzmann) exploration over the arms' sample means."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from app.policies._bandit_base import BanditPolicy


class Softmax(BanditPolicy):
    """Boltzmann exploration: P(arm) ∝ exp(mean / τ), computed as
    exp((mean - max mean) / τ) so nothing overflows. τ after ``t`` updates is
    max(``min_temperature``, ``temperature``·exp(-``decay_rate``·t)). While
    some allowed arm is untried, the untried ones are chosen uniformly (an
    untried arm has no mean to weigh). τ is on the reward's scale; any finite
    reward is accepted.

    >>> sm = Softmax(["a", "b", "c"], seed=3, temperature=0.1)
    >>> for _ in range(50):
    ...     sm.update("a", 0.8); sm.update("b", 0.6); sm.update("c", 0.2)
    >>> [round(float(p), 3) for p in sm.probabilities()]
    [0.879, 0.119, 0.002]
    >>> sm.select().arm
    'a'
    """

    algorithm = "softmax"
    example_params: ClassVar[dict[str, Any]] = {"temperature": 0.2}
    _learned = ("_n", "_mean")

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        temperature: float = 0.1,
        decay_rate: float = 0.0,
        min_temperature: float = 1e-3,
    ) -> None:
        super().__init__(arms, seed)
        self.temperature = temperature
        self.decay_rate = decay_rate
        self.min_temperature = min_temperature
        self._allocate()

    def _check(self) -> None:
        if not (self.temperature > 0.0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 < self.min_temperature <= self.temperature:
            raise ValueError(
                f"min_temperature must be in (0, temperature], got {self.min_temperature}"
            )
        if not (self.decay_rate >= 0.0 and math.isfinite(self.decay_rate)):
            raise ValueError(f"decay_rate must be finite and >= 0, got {self.decay_rate}")

    @property
    def current_temperature(self) -> float:
        """The temperature the next selection uses."""
        if not self.decay_rate:
            return float(self.temperature)
        return max(self.min_temperature, self.temperature * math.exp(-self.decay_rate * self._t))

    def _scores(self, idx: list[int]) -> list[float]:
        return self._at(self._mean, idx)

    def _probabilities(self, idx: list[int]) -> list[float]:
        n = self._at(self._n, idx)
        if min(n) == 0.0:
            untried = n.count(0.0)
            return [1.0 / untried if c == 0.0 else 0.0 for c in n]
        # numpy's exp, whose last bit can differ from math.exp's: the same
        # probabilities as ever, so the same choices for a seed.
        means = np.array(self._at(self._mean, idx))
        w = np.exp((means - means[means.argmax()]) / self.current_temperature)
        return (w / math.fsum(w.tolist())).tolist()

    def _update(self, index: int, reward: float, context: Any) -> None:
        self._welford(index, reward)
        self._record(index, reward)

    def _arm_stats(self, index: int) -> dict[str, float]:
        return {"value": self._mean[index], "count": self._n[index]}
