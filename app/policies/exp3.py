"""Exp3 (Auer, Cesa-Bianchi, Freund & Schapire, 2002) for adversarial rewards."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, ClassVar

import numpy as np

from app.policies._bandit_base import BanditPolicy
from app.policies.base import InvalidRewardError

_RESUM_EVERY = 1024  # updates between exact recomputations of the weight total


class Exp3(BanditPolicy):
    """Exp3: P(arm) = (1 - γ)·w / Σw + γ/K over the allowed arms. A reward r
    in [0, 1] of an arm chosen with probability p adds γ·(r/p)/K to its
    log-weight (the importance-weighted estimate keeps it unbiased).

    Weights live as log-weights whose maximum is kept at 0 (subtracting it
    whenever an arm overtakes), so nothing overflows however long it runs.
    Pass the logged ``propensity`` to :meth:`update`; without it the arm's
    current probability among all arms stands in. An arm added without
    ``prior_from`` starts level with the current best. An arm's score is its
    weight relative to the leading arm's (1 for the leader); ``stats``
    reports its importance-weighted gain estimate Σ r/p.

    >>> ex = Exp3(["a", "b", "c"], seed=2, gamma=0.1)
    >>> for _ in range(300):
    ...     arm = ex.select()
    ...     ex.update(arm.arm, {"a": 0.9, "b": 0.5, "c": 0.1}[arm.arm],
    ...               propensity=arm.propensity)
    >>> [round(float(p), 3) for p in ex.probabilities()]
    [0.919, 0.047, 0.034]
    """

    algorithm = "exp3"
    example_params: ClassVar[dict[str, Any]] = {"gamma": 0.3}
    _learned = ("_gain",)
    # Log-weights, maximum 0: a numpy array, as shifting them all and taking
    # their exp (numpy's, whose last bit can differ from math.exp's) are each
    # one vector operation. Stored in the state as "logw", copied by prior_from.
    _logw: np.ndarray
    _gain: list[float]  # importance-weighted reward sums, Σ r/p

    def __init__(self, arms: Sequence[str], seed: int | None = None, gamma: float = 0.1) -> None:
        super().__init__(arms, seed)
        self.gamma = gamma
        self._allocate()
        self._logw = np.zeros(len(self._arms))
        self._top_is_zero = True  # the log-weights' maximum is 0 (as they are kept)
        self._wsum = float(len(self._arms))  # Σ exp(log-weight) over all arms

    def _check(self) -> None:
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")

    def _resum(self) -> None:
        """Shift the log-weights so that their maximum is 0; recompute Σw exactly."""
        top = float(self._logw.max())
        if top != 0.0:
            self._logw -= top
            self._changed()
        self._top_is_zero = True
        self._wsum = float(np.exp(self._logw).sum())

    # -- decisions -----------------------------------------------------------------------------
    def _scores(self, idx: list[int]) -> list[float]:
        return np.exp(self._logw[idx]).tolist()  # the leader's log-weight is 0

    def _probabilities(self, idx: list[int]) -> list[float]:
        return self._decision(idx)[1]

    def _decision(self, idx: list[int]) -> tuple[list[float], list[float], list[float], int]:
        if idx is self._all:
            logw = self._logw
            top = 0.0 if self._top_is_zero else max(logw.tolist())
        else:
            logw = self._logw[idx]
            top = max(logw.tolist())
        scores = np.exp(logw).tolist()
        # The weights relative to the allowed leader's; x - 0 is x, so with the
        # leader among them (its log-weight is kept at 0) they are the scores.
        w = scores if top == 0.0 else np.exp(logw - top).tolist()
        share, floor = (1.0 - self.gamma) / math.fsum(w), self.gamma / len(w)
        probs = [x * share + floor for x in w]
        # With the leader among them its score, exp(0), is the highest: 1.
        greedy = scores.index(1.0 if top == 0.0 else max(scores))
        return scores, probs, list(accumulate(probs)), greedy

    # -- learning ------------------------------------------------------------------------------
    def _update(self, index: int, reward: float, context: Any) -> None:
        if not 0.0 <= reward <= 1.0:
            raise InvalidRewardError(f"Exp3 needs rewards in [0, 1], got {reward}")
        k = len(self._arms)
        logw = self._logw
        old = float(logw[index])
        p = self._logged_propensity
        if p is None:
            p = (1.0 - self.gamma) * math.exp(old) / self._wsum + self.gamma / k
        estimate = reward / p
        self._gain[index] += estimate
        new = old + self.gamma * estimate / k
        self._record(index, reward)
        if new > 0.0:  # a new leader: shift everything down by ``new``
            logw -= new
            logw[index] = 0.0
            self._top_is_zero = True
            self._wsum = (self._wsum - math.exp(old)) * math.exp(-new) + 1.0
            self._changed()
        elif new != old:
            logw[index] = new
            self._wsum += math.exp(new) - math.exp(old)
            self._changed()
        # else no weight moved (a reward of 0): what is cached still holds
        if self._t % _RESUM_EVERY == 0:
            self._resum()

    def _after_update(self, index: int) -> None:
        """Decisions depend on the log-weights alone: ``_update`` drops what
        is cached when they move."""

    # -- arms, state, reporting ----------------------------------------------------------------
    def _grow(self, prior_from: int | None) -> None:
        super()._grow(prior_from)
        # Without a prior, level with the leader.
        start = self._logw[prior_from] if prior_from is not None else 0.0
        self._logw = np.append(self._logw, start)
        self._resum()

    def _shrink(self, index: int) -> None:
        super()._shrink(index)
        self._logw = np.delete(self._logw, index)
        self._resum()

    def _extra_state(self) -> dict[str, Any]:
        return {"logw": self._logw.tolist(), "wsum": self._wsum}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self._logw = np.asarray(state["logw"], dtype=float)
        self._top_is_zero = float(self._logw.max()) == 0.0
        self._wsum = float(state["wsum"])

    def _arm_stats(self, index: int) -> dict[str, float]:
        # Log-weights are shifted when arms come and go; the gain estimate is not.
        return {"estimated_gain": self._gain[index]}
