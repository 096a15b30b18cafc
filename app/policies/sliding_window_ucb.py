"""Sliding-window UCB (Garivier & Moulines, 2011) for rewards that drift."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from app.policies._bandit_base import IndexPolicy


class SlidingWindowUCB(IndexPolicy):
    """SW-UCB: only the last ``window`` updates count. A ring buffer holds
    their (arm, reward); each arm's window count N and sum S follow it.
    Index: S/N + c·sqrt(ln(min(t, window)) / N); an arm absent from the
    window is played first. ``c`` is B·sqrt(ξ) in the paper (B bounds the
    rewards); any finite reward is accepted.

    ``add_arm(prior_from=...)`` gives the new arm echoes of the source's
    entries in the window: they count for it until the source's expire.
    Deterministic (propensity 1; ties by a seeded priority): off-policy
    evaluation needs exploration logged elsewhere.

    >>> ucb = SlidingWindowUCB(["a", "b"], seed=0, window=20)
    >>> for _ in range(20):
    ...     ucb.update("a", 1.0); ucb.update("b", 0.5)
    >>> for _ in range(10):
    ...     ucb.update("a", 0.0)  # a degrades; the window forgets its past
    >>> s = ucb.stats()["a"]
    >>> s["window_count"], round(s["value"], 3), round(s["mean_reward"], 3)
    (15.0, 0.333, 0.667)
    >>> ucb.select().arm
    'b'
    """

    algorithm = "sliding_window_ucb"
    example_params: ClassVar[dict[str, Any]] = {"window": 50}
    _learned = ("_wn", "_ws")
    _wn: list[float]  # counts in the window
    _ws: list[float]  # reward sums in the window

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        window: int = 1000,
        c: float = 0.4,
    ) -> None:
        super().__init__(arms, seed)
        self.window = window
        self.c = c
        self._allocate()
        self._buf_arm: list[int] = [-1] * window  # -1: an empty slot
        self._buf_reward: list[float] = [0.0] * window
        # Copies of a source arm's window entries given to arms added with
        # prior_from, as (update number, arm, reward), oldest first.
        self._echoes: deque[tuple[int, int, float]] = deque()

    def _check(self) -> None:
        if not (isinstance(self.window, int) and self.window >= 1):
            raise ValueError(f"window must be an integer >= 1, got {self.window!r}")
        if not (self.c >= 0.0 and math.isfinite(self.c)):
            raise ValueError(f"c must be finite and >= 0, got {self.c}")

    # -- the window ----------------------------------------------------------------------------
    def _entries(self) -> list[tuple[int, int, float]]:
        """(update number, arm, reward) of every ring entry, oldest first."""
        t, w = self._t, len(self._buf_arm)
        out = []
        for u in range(max(0, t - w), t):
            arm = self._buf_arm[u % w]
            if arm >= 0:
                out.append((u, arm, self._buf_reward[u % w]))
        return out

    def _resum(self) -> None:
        """Recompute the window counts and sums exactly (rounding never builds up)."""
        k = len(self._arms)
        arms = [a for _, a, _ in self._echoes] + [a for a in self._buf_arm if a >= 0]
        rewards = [r for _, _, r in self._echoes] + [
            r for a, r in zip(self._buf_arm, self._buf_reward, strict=True) if a >= 0
        ]
        positions = np.asarray(arms, dtype=np.intp)
        self._wn = np.bincount(positions, minlength=k).astype(float).tolist()
        ws = np.bincount(positions, weights=rewards, minlength=k)
        self._ws = ws.astype(float).tolist()

    def _update(self, index: int, reward: float, context: Any) -> None:
        t, w = self._t, self.window
        slot = t % w
        old = self._buf_arm[slot]
        wn, ws = self._wn, self._ws
        if old >= 0:
            wn[old] -= 1.0
            ws[old] -= self._buf_reward[slot]
        self._buf_arm[slot] = index
        self._buf_reward[slot] = reward
        wn[index] += 1.0
        ws[index] += reward
        echoes = self._echoes
        while echoes and echoes[0][0] + w <= t:
            _, arm, r = echoes.popleft()
            wn[arm] -= 1.0
            ws[arm] -= r
        self._record(index, reward)
        if slot == w - 1:
            self._resum()

    # -- the index -----------------------------------------------------------------------------
    def _counts(self) -> list[float]:
        return self._wn

    def _ucb(self, idx: list[int], counts: list[float]) -> list[float]:
        log_n, c, sqrt = math.log(max(min(self._t, self.window), 1)), self.c, math.sqrt
        return [
            s / n + c * sqrt(log_n / n)
            for s, n in zip(self._view(self._ws, idx), counts, strict=False)
        ]

    def _scores(self, idx: list[int]) -> list[float]:
        return [
            s / n if n > 0.0 else 0.0
            for s, n in zip(self._view(self._ws, idx), self._view(self._wn, idx), strict=False)
        ]

    # -- arms and hyperparameters --------------------------------------------------------------
    def _grow(self, prior_from: int | None) -> None:
        super()._grow(prior_from)
        if prior_from is not None:
            new = len(self._arms) - 1
            copies = [(u, new, r) for u, a, r in self._entries() if a == prior_from]
            copies += [(u, new, r) for u, a, r in self._echoes if a == prior_from]
            self._echoes = deque(sorted([*self._echoes, *copies], key=lambda e: e[0]))

    def _shrink(self, index: int) -> None:
        super()._shrink(index)

        def renumber(a: int) -> int:
            return -1 if a == index else a - (a > index)

        self._buf_arm = [renumber(a) if a >= 0 else -1 for a in self._buf_arm]
        self._echoes = deque((u, renumber(a), r) for u, a, r in self._echoes if a != index)

    def _params_changed(self) -> None:
        super()._params_changed()
        if self.window != len(self._buf_arm):
            # Keep the most recent entries that fit the new window.
            entries = [e for e in self._entries() if e[0] + self.window >= self._t]
            self._buf_arm = [-1] * self.window
            self._buf_reward = [0.0] * self.window
            for u, arm, r in entries:
                self._buf_arm[u % self.window] = arm
                self._buf_reward[u % self.window] = r
            self._echoes = deque(e for e in self._echoes if e[0] + self.window >= self._t)
            self._resum()

    def _extra_state(self) -> dict[str, Any]:
        return super()._extra_state() | {
            "buffer_arm": self._buf_arm,
            "buffer_reward": self._buf_reward,
            "echoes": [list(e) for e in self._echoes],
        }

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        super()._set_extra_state(state)
        self._buf_arm = [int(a) for a in state["buffer_arm"]]
        self._buf_reward = [float(r) for r in state["buffer_reward"]]
        self._echoes = deque((int(u), int(a), float(r)) for u, a, r in state["echoes"])

    def _arm_stats(self, index: int) -> dict[str, float]:
        n = self._wn[index]
        return {"value": self._ws[index] / n if n > 0.0 else 0.0, "window_count": n}
