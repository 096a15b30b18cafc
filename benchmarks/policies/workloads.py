"""The workloads: A (Bernoulli arms), B (linear contextual), C (A with a
change half-way), every draw made up front from the seed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MEANS_A = (0.85, 0.75, 0.65, 0.60, 0.50)
DROP_TO = 0.55  # the best arm's mean in C after the change
ROUNDS = {"A": 100_000, "B": 50_000, "C": 100_000}
CHANGE_FRACTION = 0.5  # C changes half-way
RECOVERY_WINDOW = 1_000
RECOVERY_SHARE = 0.8
DIM = 10  # B's context dimension (the learners see DIM + 1 with the bias)
ARMS_B = 4
NOISE_SD = 0.1
SEEDS = (0, 1, 2)


@dataclass
class Bernoulli:
    """A and C: a uniform draw per round, common to every arm and policy,
    so that reward = u_t < mean(arm)."""

    u: list[float]
    means_before: list[float]
    means_after: list[float]  # == means_before for A
    change: int  # first round of the new means (== rounds for A)
    rounds: int

    @classmethod
    def make(cls, seed: int, rounds: int, change: int | None) -> Bernoulli:
        rng = np.random.default_rng([seed, 0xA])
        # The arms in a seeded order: tie-breaking by arm order (first arm
        # first) must not favour the best arm.
        before = [MEANS_A[i] for i in rng.permutation(len(MEANS_A))]
        after = list(before)
        if change is not None:
            after[before.index(max(before))] = DROP_TO
        return cls(
            rng.random(rounds).tolist(), before, after, rounds if change is None else change, rounds
        )

    def expected(self, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(best expected reward, expected reward of the chosen arm) per round."""
        n = len(arms)
        before, after = np.asarray(self.means_before), np.asarray(self.means_after)
        t = np.arange(n)
        new = t >= self.change
        best = np.where(new, after.max(), before.max())
        got = np.where(new, after[arms], before[arms])
        return best, got


@dataclass
class Linear:
    """B: contexts, expected rewards and noise, all drawn up front."""

    X: np.ndarray  # (rounds, DIM + 1), column 0 is the bias
    mu: np.ndarray  # (rounds, arms) expected rewards
    rewards: list[list[float]]  # mu + noise (the noise is shared by the arms)
    rounds: int
    _dicts: list[dict[str, float]] | None = None
    _vw: list[str] | None = None
    _hybrid: np.ndarray | None = None

    @classmethod
    def make(cls, seed: int, rounds: int) -> Linear:
        rng = np.random.default_rng([seed, 0xB])
        theta = np.empty((ARMS_B, DIM + 1))
        theta[:, 0] = rng.normal(0.0, 0.25, ARMS_B)
        theta[:, 1:] = rng.normal(0.0, 1.0 / math.sqrt(DIM), (ARMS_B, DIM))
        X = np.empty((rounds, DIM + 1))
        X[:, 0] = 1.0
        X[:, 1:] = rng.normal(size=(rounds, DIM))
        mu = X @ theta.T
        noise = rng.normal(0.0, NOISE_SD, rounds)
        return cls(X, mu, (mu + noise[:, None]).tolist(), rounds)

    def dicts(self) -> list[dict[str, float]]:
        if self._dicts is None:
            keys = ["bias"] + [f"x{i}" for i in range(DIM)]
            self._dicts = [dict(zip(keys, row, strict=True)) for row in self.X.tolist()]
        return self._dicts

    def vw_shared(self) -> list[str]:
        if self._vw is None:
            self._vw = [
                "shared |s bias:1 " + " ".join(f"x{i}:{v:.6g}" for i, v in enumerate(row[1:]))
                for row in self.X.tolist()
            ]
        return self._vw

    def hybrid(self) -> np.ndarray:
        """[1 | 1, x]: HybridLinUCB needs ≥ 1 shared feature; a shared constant."""
        if self._hybrid is None:
            self._hybrid = np.ascontiguousarray(np.hstack([np.ones((self.rounds, 1)), self.X]))
        return self._hybrid

    def expected(self, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(arms)
        mu = self.mu[:n]
        return mu.max(axis=1), mu[np.arange(n), arms]
