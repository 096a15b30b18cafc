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

At the same moment the shadow decides: it draws an arm from the same
probabilities, a shadow decision with its exact propensity. The draw is a
hash of the shadow and the request (:func:`shadow_draw`), so it is
reproducible and a batch redone after a crash decides the same.

**Apprentice mode** (:class:`Agreement` with a ``level``): the shadow first
learns to imitate the serving policy — reward 1 when its choice is the
served arm, else 0, on its own choice with its own propensity (Azure
Personalizer's apprentice mode) — until its agreement over the last
``window`` outcomes reaches ``level``; from then on it learns from the real
rewards. Its off-policy value is estimated on the real rewards throughout.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from statistics import NormalDist
from typing import Any

from app.experiments.traffic_split import bucket

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


APPRENTICE_WINDOW = 200
"""Outcomes over which an apprentice's agreement must reach its level."""


def shadow_draw(probabilities: Sequence[float], shadow: str, request: str) -> int:
    """The position of the arm a shadow chooses for a request: a draw from
    ``probabilities`` by the request's hashed point in [0, 1) (``bucket``,
    salted by the shadow), so each arm comes with exactly its probability
    over requests, and the same request gets the same arm again.

    >>> [shadow_draw([0.2, 0.8], "p/7", f"r{i}") for i in range(8)]
    [1, 1, 1, 1, 1, 1, 0, 1]
    """
    cumulative, total = [], 0.0
    for p in probabilities:
        total += p
        cumulative.append(total)
    i = min(bisect_right(cumulative, bucket(request, shadow) * total), len(cumulative) - 1)
    while i > 0 and probabilities[i] <= 0:
        i -= 1  # rounding at the top end: the last arm that can be chosen
    return i


@dataclass
class Agreement:
    """How often a shadow's choices are the served arms: since it started,
    and over the last ``window`` outcomes (bits, newest lowest). With a
    ``level`` (apprentice mode) it imitates until that recent agreement
    reaches the level over a full window; ``graduated_at`` says when.

    >>> a = Agreement(level=0.75, window=4)
    >>> [a.add(x, t) for t, x in enumerate([True, False, False, True, True, True])]
    [False, False, False, False, False, True]
    >>> a.imitating, a.graduated_at, a.recent_rate(), a.rate()
    (False, 5, 0.75, 0.6666666666666666)
    """

    level: float | None = None
    window: int = APPRENTICE_WINDOW
    n: int = 0
    agreed: int = 0
    bits: int = 0
    recent: int = 0
    graduated_at: int | None = None

    @property
    def imitating(self) -> bool:
        return self.level is not None and self.graduated_at is None

    def add(self, agreed: bool, at: int) -> bool:
        """Count one choice; whether it ends the apprenticeship."""
        self.n += 1
        self.agreed += agreed
        self.bits = ((self.bits << 1) | agreed) & ((1 << self.window) - 1)
        self.recent = min(self.recent + 1, self.window)
        if (
            self.imitating
            and self.recent == self.window
            and self.recent_rate() >= (self.level or 0.0)
        ):
            self.graduated_at = at
            return True
        return False

    def rate(self) -> float:
        return self.agreed / self.n if self.n else math.nan

    def recent_rate(self) -> float:
        return self.bits.bit_count() / self.recent if self.recent else math.nan

    def summary(self) -> dict[str, Any]:
        rate, recent = self.rate(), self.recent_rate()
        return {
            "agreement": None if math.isnan(recent) else recent,
            "agreement_total": None if math.isnan(rate) else rate,
            "apprentice": self.level,
            "imitating": self.imitating,
        }

    def to_dict(self) -> dict[str, Any]:
        # The window's bits as hex: JSON numbers stop at 64 bits.
        return asdict(self) | {"bits": format(self.bits, "x")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Agreement:
        names = {f.name for f in fields(cls)}
        a = cls(**{k: v for k, v in d.items() if k in names})
        a.bits = int(str(d.get("bits", "0")), 16)
        return a
