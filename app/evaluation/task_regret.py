"""True regret and arm choices per task type, in total and over a trailing window.

What the traffic simulator knows of a run's choices, kept per task type so a
policy that routes per task shows where it gains: the decisions and regret
since the start, the regret per decision over the last ``window_seconds``
(the figure a demo converges on), and each task type's arm shares over its
last ``share_window`` decisions.

>>> tr = TaskRegret(["code", "qa"], window_seconds=60)
>>> tr.record("code", "a", 0.2, now_ms=0)
>>> tr.record("qa", "b", 0.0, now_ms=30_000)
>>> tr.record("code", "b", 0.1, now_ms=70_000)
>>> tr.recent(now_ms=70_000)["code"]
{'decisions': 1, 'regret': 0.1, 'regret_per_decision': 0.1}
>>> tr.recent_overall(now_ms=70_000)["regret_per_decision"]
0.05
>>> tr.totals()["code"]["decisions"], tr.shares()["code"]
(2, {'a': 0.5, 'b': 0.5})
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

__all__ = ["TaskRegret"]


class TaskRegret:
    """Per task type: decisions and true regret, in total and in a trailing
    window; arm shares over the latest decisions. A task type not declared
    raises ``KeyError`` (the label set stays the scenario's, closed)."""

    def __init__(
        self, task_types: Sequence[str], window_seconds: float = 60.0, share_window: int = 2_000
    ) -> None:
        self.task_types = tuple(task_types)
        self.window_ms = round(window_seconds * 1000)
        self._decisions = dict.fromkeys(self.task_types, 0)
        self._regret = dict.fromkeys(self.task_types, 0.0)
        self._window: deque[tuple[int, str, float]] = deque()
        self._win_n = dict.fromkeys(self.task_types, 0)
        self._win_regret = dict.fromkeys(self.task_types, 0.0)
        self._arms = {t: deque[str](maxlen=share_window) for t in self.task_types}

    def record(self, task_type: str, arm: str, regret: float, now_ms: int) -> None:
        """One decision of ``task_type`` for ``arm`` with its true regret, at ``now_ms``."""
        self._decisions[task_type] += 1
        self._regret[task_type] += regret
        self._arms[task_type].append(arm)
        self._window.append((now_ms, task_type, regret))
        self._win_n[task_type] += 1
        self._win_regret[task_type] += regret
        self._expire(now_ms)

    def _expire(self, now_ms: int) -> None:
        w = self._window
        while w and w[0][0] <= now_ms - self.window_ms:
            _, task, regret = w.popleft()
            self._win_n[task] -= 1
            self._win_regret[task] -= regret

    def totals(self) -> dict[str, dict[str, Any]]:
        """Per task type since the start: decisions, regret, regret per decision."""
        return {t: _figures(self._decisions[t], self._regret[t]) for t in self.task_types}

    def recent(self, now_ms: int) -> dict[str, dict[str, Any]]:
        """Per task type over the trailing window ending at ``now_ms``."""
        self._expire(now_ms)
        return {t: _figures(self._win_n[t], self._win_regret[t]) for t in self.task_types}

    def recent_overall(self, now_ms: int) -> dict[str, Any]:
        """All task types together over the trailing window."""
        self._expire(now_ms)
        return _figures(sum(self._win_n.values()), sum(self._win_regret.values()))

    def shares(self) -> dict[str, dict[str, float]]:
        """Per task type, each arm's share of its latest decisions, largest first."""
        out = {}
        for t, arms in self._arms.items():
            n = len(arms) or 1
            out[t] = {a: c / n for a, c in Counter(arms).most_common()}
        return out


def _figures(n: int, regret: float) -> dict[str, Any]:
    regret = max(0.0, regret)  # a window's running sum may dip below 0 by rounding
    return {
        "decisions": n,
        "regret": round(regret, 6),
        "regret_per_decision": round(regret / n, 6) if n else None,
    }
