"""The mergeable aggregate of one pane or window of feature observations."""

from __future__ import annotations

from typing import Any

from app.features.quantile_sketch import QuantileSketch

JSON = dict[str, Any]
LATENCY_ACCURACY = 0.01  # latency quantiles within 1 % (relative)

# What a window reports (suffixed with the window's name, e.g. ``mean_reward_5m``).
METRICS = (
    "request_count",
    "request_rate",
    "mean_input_tokens",
    "outcome_count",
    "mean_reward",
    "latency_p50_ms",
    "latency_p95_ms",
    "mean_cost_usd",
    "cost_usd",
    "error_rate",
)


class WindowAggregate:
    """Counts, sums and a latency sketch over the observations of a pane;
    ``merge`` combines panes into a window exactly.

    Observations are dicts: requests ``{"k": "r", "t": ms, "input_tokens": n}``,
    outcomes ``{"k": "o", "t": ms, "reward": r, "cost_usd"?, "latency_ms"?, "error"?}``.

    >>> a = WindowAggregate()
    >>> a.add({"k": "r", "t": 5, "input_tokens": 100})
    >>> a.add({"k": "o", "t": 9, "reward": 0.5, "latency_ms": 800.0, "error": True})
    >>> m = a.metrics(size_seconds=10.0)
    >>> m["request_rate"], m["mean_reward"], m["error_rate"], m["mean_cost_usd"]
    (0.1, 0.5, 1.0, None)
    """

    __slots__ = (
        "cost_n",
        "cost_sum",
        "errors",
        "input_tokens",
        "latency",
        "max_t",
        "outcomes",
        "pos",
        "requests",
        "reward_sum",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.input_tokens = 0.0
        self.outcomes = 0
        self.reward_sum = 0.0
        self.cost_n = 0
        self.cost_sum = 0.0
        self.errors = 0
        self.latency = QuantileSketch(LATENCY_ACCURACY)
        self.max_t = -1  # latest event time seen: recovers the watermark after a restart
        # Position (source offset and index) of the last observation applied:
        # a pane's observations all come from one partition, in order, so a
        # redelivered observation is recognised and not counted twice.
        self.pos = -1

    def add(self, obs: JSON) -> None:
        t = obs["t"]
        if t > self.max_t:
            self.max_t = t
        if obs["k"] == "r":
            self.requests += 1
            self.input_tokens += obs.get("input_tokens", 0)
            return
        self.outcomes += 1
        self.reward_sum += obs["reward"]
        cost = obs.get("cost_usd")
        if cost is not None:
            self.cost_n += 1
            self.cost_sum += cost
        if obs.get("error"):
            self.errors += 1
        latency = obs.get("latency_ms")
        if latency is not None:
            self.latency.add(latency)

    def merge(self, other: WindowAggregate) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.outcomes += other.outcomes
        self.reward_sum += other.reward_sum
        self.cost_n += other.cost_n
        self.cost_sum += other.cost_sum
        self.errors += other.errors
        self.latency.merge(other.latency)
        self.max_t = max(self.max_t, other.max_t)

    def metrics(self, size_seconds: float) -> dict[str, float | None]:
        """The window's features; means over nothing are ``None`` (missing)."""
        n, m = self.requests, self.outcomes
        return {
            "request_count": float(n),
            "request_rate": n / size_seconds,
            "mean_input_tokens": self.input_tokens / n if n else None,
            "outcome_count": float(m),
            "mean_reward": self.reward_sum / m if m else None,
            "latency_p50_ms": self.latency.quantile(0.5),
            "latency_p95_ms": self.latency.quantile(0.95),
            "mean_cost_usd": self.cost_sum / self.cost_n if self.cost_n else None,
            "cost_usd": self.cost_sum,
            "error_rate": self.errors / m if m else None,
        }

    def to_list(self) -> list[Any]:
        return [
            self.requests,
            self.input_tokens,
            self.outcomes,
            self.reward_sum,
            self.cost_n,
            self.cost_sum,
            self.errors,
            self.max_t,
            self.latency.to_list(),
            self.pos,
        ]

    @classmethod
    def from_list(cls, d: list[Any]) -> WindowAggregate:
        a = cls()
        (
            a.requests,
            a.input_tokens,
            a.outcomes,
            a.reward_sum,
            a.cost_n,
            a.cost_sum,
            a.errors,
            a.max_t,
        ) = d[:8]
        a.latency = QuantileSketch.from_list(d[8], LATENCY_ACCURACY)
        a.pos = d[9] if len(d) > 9 else -1
        return a
