"""Reward components → one scalar reward in [0, 1], by a policy's weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class RewardSpec:
    """How a policy scores an outcome. Terms whose component is absent are
    left out and the remaining weights renormalised, so a reward carrying only
    user feedback still yields a scalar."""

    quality_weight: float = 0.6
    cost_weight: float = 0.25
    latency_weight: float = 0.15
    feedback_weight: float = 0.0
    cost_scale_usd: float = 0.02
    latency_scale_ms: float = 8000.0
    error_reward: float = 0.0
    wait_seconds: float = 30.0
    default_reward: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if not math.isfinite(getattr(self, f.name)):
                # NaN passes every comparison below and would silently score 0.
                raise ValueError(f"{f.name} must be a finite number, got {getattr(self, f.name)}")
        weights = (self.quality_weight, self.cost_weight, self.latency_weight, self.feedback_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("reward weights must be non-negative and not all zero")
        if self.cost_scale_usd <= 0 or self.latency_scale_ms <= 0:
            raise ValueError("cost_scale_usd and latency_scale_ms must be positive")
        for name in ("error_reward", "default_reward"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.wait_seconds <= 0:
            raise ValueError("wait_seconds must be positive")

    def scalar(
        self,
        quality: float | None = None,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
        error: bool | None = None,
        feedback: float | None = None,
    ) -> float:
        if error:
            return self.error_reward
        total = weight = 0.0
        if quality is not None:
            total += self.quality_weight * quality
            weight += self.quality_weight
        if cost_usd is not None:
            total += self.cost_weight * max(0.0, 1.0 - cost_usd / self.cost_scale_usd)
            weight += self.cost_weight
        if latency_ms is not None:
            total += self.latency_weight * max(0.0, 1.0 - latency_ms / self.latency_scale_ms)
            weight += self.latency_weight
        if feedback is not None:
            total += self.feedback_weight * (feedback + 1.0) / 2.0
            weight += self.feedback_weight
        if weight == 0.0:
            return self.default_reward
        return min(1.0, max(0.0, total / weight))
