"""ε-greedy with decaying or value-difference-adaptive exploration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, ClassVar

from app.policies._bandit_base import BanditPolicy
from app.policies.base import Selection

DECAYS = ("none", "linear", "exponential", "logarithmic")


class EpsilonGreedy(BanditPolicy):
    """ε-greedy: each allowed arm gets ε/K, the greedy arm (highest sample
    mean; untried arms count 0, tied greedy arms share) gets the other 1 - ε.

    ε after ``t`` updates, floored at ``min_epsilon``: ``none`` ε;
    ``linear`` from ``epsilon`` down to ``min_epsilon`` over ``horizon``
    updates; ``exponential`` ε·exp(-decay_rate·t); ``logarithmic``
    ε / (1 + decay_rate·ln(1 + t)). ``adaptive=True`` is VDBE (Tokic, 2010):
    after a reward moves an arm's mean by Δ, ε ← δ·f + (1 - δ)·ε with
    f = tanh(|Δ| / 2σ) (σ = ``sigma``) and δ = 1/K, so exploration falls as the
    estimates settle and rises when they move. Any finite reward is accepted.

    >>> eg = EpsilonGreedy(["a", "b", "c"], seed=7, epsilon=0.3, decay="exponential",
    ...                    decay_rate=0.01)
    >>> for _ in range(100):
    ...     eg.update("a", 0.9); eg.update("b", 0.4)
    >>> round(eg.current_epsilon, 4)
    0.0406
    >>> [round(float(p), 4) for p in eg.probabilities()]
    [0.9729, 0.0135, 0.0135]
    >>> eg.select().arm
    'a'
    """

    algorithm = "epsilon_greedy"
    example_params: ClassVar[dict[str, Any]] = {"epsilon": 0.2}
    _learned = ("_n", "_mean")

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        epsilon: float = 0.1,
        decay: str = "none",
        min_epsilon: float = 0.0,
        decay_rate: float = 0.001,
        horizon: int = 10_000,
        adaptive: bool = False,
        sigma: float = 0.05,
    ) -> None:
        super().__init__(arms, seed)
        self.epsilon = epsilon
        self.decay = decay
        self.min_epsilon = min_epsilon
        self.decay_rate = decay_rate
        self.horizon = horizon
        self.adaptive = adaptive
        self.sigma = sigma
        self._allocate()
        self._epsilon = float(epsilon)  # VDBE's running ε
        self._lead: tuple[list[float], list[float], int] | None = None

    def _check(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not 0.0 <= self.min_epsilon <= self.epsilon:
            raise ValueError(f"min_epsilon must be in [0, epsilon], got {self.min_epsilon}")
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {self.decay!r}")
        if not (self.decay_rate >= 0.0 and math.isfinite(self.decay_rate)):
            raise ValueError(f"decay_rate must be finite and >= 0, got {self.decay_rate}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {self.horizon}")
        if self.adaptive and self.decay != "none":
            raise ValueError("adaptive (VDBE) exploration replaces decay: use decay='none'")
        if not self.sigma > 0.0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")

    @property
    def current_epsilon(self) -> float:
        """The exploration rate the next selection uses."""
        if self.adaptive:
            return max(self.min_epsilon, min(1.0, self._epsilon))
        decay = self.decay
        if decay == "none":
            eps = self.epsilon
            return eps if eps >= self.min_epsilon else self.min_epsilon
        t = self._t
        if decay == "linear":
            return self.epsilon + (self.min_epsilon - self.epsilon) * min(1.0, t / self.horizon)
        if decay == "exponential":
            eps = self.epsilon * math.exp(-self.decay_rate * t)
        else:  # logarithmic
            eps = self.epsilon / (1.0 + self.decay_rate * math.log1p(t))
        return max(self.min_epsilon, eps)

    def _scores(self, idx: list[int]) -> list[float]:
        return self._at(self._mean, idx)

    def _probabilities(self, idx: list[int]) -> list[float]:
        return self._exploring(self._at(self._mean, idx))

    # With ε fixed, the probabilities over every arm change only when another
    # arm takes the lead. While one arm leads alone, ``_lead`` keeps them (with
    # their running sums and the leader's position), a reward checks that it
    # still does, and a selection over every arm needs only the current means.
    def _decision(self, idx: list[int]) -> tuple[list[float], list[float], list[float], int]:
        means = self._at(self._mean, idx)
        probs = self._exploring(means)
        cum, first = list(accumulate(probs)), means.index(max(means))
        if idx is self._all and not self.adaptive and self.decay == "none":
            self._lead = (probs, cum, first) if means.count(means[first]) == 1 else None
        return means, probs, cum, first

    def select(
        self, context: Any = None, allowed: Sequence[str] | None = None, explore: bool = True
    ) -> Selection:
        lead = self._lead
        if lead is None or not explore or not (allowed is None or allowed is self._arms):
            return super().select(context, allowed, explore)
        probs, cum, first = lead
        return self._pick(self._names, self._mean[:], probs, cum, first)

    def _changed(self) -> None:
        super()._changed()
        self._lead = None

    def _exploring(self, means: list[float]) -> list[float]:
        """ε/K for each arm, plus an equal share of 1 - ε for the greedy ones."""
        best = max(means)
        eps = self.current_epsilon
        explore = eps / len(means)
        greedy = explore + (1.0 - eps) / means.count(best)
        return [greedy if m == best else explore for m in means]

    def _update(self, index: int, reward: float, context: Any) -> None:
        change = self._welford(index, reward)
        if self.adaptive:
            delta = 1.0 / len(self._arms)
            f = math.tanh(abs(change) / (2.0 * self.sigma))
            self._epsilon = delta * f + (1.0 - delta) * self._epsilon
        lead = self._lead
        self._record(index, reward)  # forgets the lead with everything cached
        if lead is not None:
            means, first = self._mean, lead[2]
            if index != first:
                still = means[index] < means[first]
            else:  # the leader gained, or still beats the best of the others
                still = change >= 0.0 or means[first] > max(means[:first] + means[first + 1 :])
            if still:
                self._lead = lead

    def _arm_stats(self, index: int) -> dict[str, float]:
        return {"value": self._mean[index], "count": self._n[index]}

    def shrink_evidence(self, arm: str, factor: float) -> bool:
        """Also rewinds the ε decay by ``factor`` (and lifts VDBE's ε back to
        at least ``epsilon``), so that every arm is explored again."""
        super().shrink_evidence(arm, factor)
        self._t = int(self._t * factor)
        self._epsilon = max(self._epsilon, self.epsilon)
        self._changed()
        return True

    def _extra_state(self) -> dict[str, Any]:
        return {"epsilon": self._epsilon}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self._epsilon = float(state["epsilon"])
