"""Shadow versions: registry versions that learn from a policy's live
outcomes beside it, never served, with their value estimated off-policy as
they go (pure).

A shadow sees every outcome of the policy it shadows. Before learning from
one, it says how likely it would have been to choose the logged arm among
the same available arms (its probability with its state at that moment:
progressive validation, as Vowpal Wabbit's and Open Bandit Pipeline's
online evaluation do); the ratio to the logged propensity weighs the
reward. The estimates are IPS (unbiased, wide) and self-normalised IPS
(biased, far narrower), each with a normal-approximation interval, beside
the serving policy's own mean reward on the same outcomes. Running sums
only: a shadow's estimate costs a few additions per outcome and keeps in a
few numbers, so it survives restarts in the policy's state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from statistics import NormalDist
from typing import Any

Z95 = NormalDist().inv_cdf(0.975)


@dataclass
class OffPolicyValue:
    """Running sums over (w = target probability / logged propensity, r)."""

    n: int = 0
    sw: float = 0.0
    swr: float = 0.0
    sw2: float = 0.0
    sw2r: float = 0.0
    sw2r2: float = 0.0
    sr: float = 0.0
    sr2: float = 0.0

    def add(self, target_probability: float, logged_propensity: float, reward: float) -> None:
        w = target_probability / logged_propensity
        self.n += 1
        self.sw += w
        self.swr += w * reward
        self.sw2 += w * w
        self.sw2r += w * w * reward
        self.sw2r2 += w * w * reward * reward
        self.sr += reward
        self.sr2 += reward * reward

    def ips(self) -> tuple[float, float, float]:
        """Mean of w·r, with its interval."""
        if self.n < 2:
            return math.nan, math.nan, math.nan
        mean = self.swr / self.n
        var = max(0.0, (self.sw2r2 / self.n - mean * mean)) * self.n / (self.n - 1)
        half = Z95 * math.sqrt(var / self.n)
        return mean, mean - half, mean + half

    def snips(self) -> tuple[float, float, float]:
        """Σ w·r / Σ w, with a delta-method interval."""
        if self.n < 2 or self.sw <= 0:
            return math.nan, math.nan, math.nan
        value = self.swr / self.sw
        # Σ w²(r − value)², expanded over the running sums.
        spread = self.sw2r2 - 2 * value * self.sw2r + value * value * self.sw2
        mean_w = self.sw / self.n
        var = max(0.0, spread / self.n) / (mean_w * mean_w)
        half = Z95 * math.sqrt(var / self.n)
        return value, value - half, value + half

    def on_policy(self) -> tuple[float, float, float]:
        """The serving policy's mean reward on the same outcomes."""
        if self.n < 2:
            return math.nan, math.nan, math.nan
        mean = self.sr / self.n
        var = max(0.0, self.sr2 / self.n - mean * mean) * self.n / (self.n - 1)
        half = Z95 * math.sqrt(var / self.n)
        return mean, mean - half, mean + half

    def effective_sample_size(self) -> float:
        """(Σ w)² / Σ w²: how many on-policy outcomes the weighted ones are worth."""
        return self.sw * self.sw / self.sw2 if self.sw2 > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcomes": self.n, "ess": self.effective_sample_size()}
        for name, (v, lo, hi) in (
            ("ips", self.ips()),
            ("snips", self.snips()),
            ("on_policy", self.on_policy()),
        ):
            out[name] = None if math.isnan(v) else {"value": v, "low": lo, "high": hi}
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OffPolicyValue:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
