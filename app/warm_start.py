"""Warm start: a policy learned from logged outcomes before it decides (pure).

The log is replayed in time order into a fresh policy of the configured
algorithm, each row weighted by how likely the policy being built would have
been to make the logged choice: ``w = min(clip, π(a | x) / μ(a | x))``, with
``π`` the policy's probability of the logged arm among the row's available
arms (as it stands when it reaches the row) and ``μ`` the logged propensity.
The weighted log is then, in expectation, the log the new policy would have
collected itself: arms the logger over-played count for less, arms it
rarely tried for more. A policy's ``update`` takes no weight, so a row of
weight ``w`` is applied ``⌊w⌋`` times and once more with probability
``w − ⌊w⌋`` (a seeded draw): unbiased, and the same log, policy and seed
give the same state. ``clip`` bounds how often one row can repeat (its
certainty beyond its data).

Loading is the backtest loaders' (:mod:`app.evaluation.logged_data`):
rows they drop (bad propensity, reward, arm) are counted in the data's
quality; rows whose arm the policy does not have are skipped here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.evaluation.logged_data import LoggedData
from app.policies.base import Policy, PolicyError

__all__ = ["DEFAULT_CLIP", "WarmStart", "WarmStartError", "warm_start"]

DEFAULT_CLIP = 10.0


class WarmStartError(ValueError):
    """A log that cannot warm-start the policy (no usable row, wrong contexts, a bad reward)."""


@dataclass
class WarmStart:
    """What a warm start did: the rows it read, used and skipped (by
    reason), the updates it applied and a summary of the weights."""

    rows: int = 0
    used: int = 0
    updates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    weight_sum: float = 0.0
    weight_sq_sum: float = 0.0
    weight_max: float = 0.0
    clipped: int = 0

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        ess = self.weight_sum**2 / self.weight_sq_sum if self.weight_sq_sum else 0.0
        return {
            "rows": self.rows,
            "used": self.used,
            "updates": self.updates,
            "skipped": dict(self.skipped),
            "weights": {
                "mean": self.weight_sum / self.used if self.used else 0.0,
                "max": self.weight_max,
                "clipped": self.clipped,
                "effective_rows": ess,
            },
        }


def warm_start(
    policy: Policy, data: LoggedData, clip: float = DEFAULT_CLIP, seed: int = 0
) -> WarmStart:
    """Replay ``data`` into ``policy`` (in place) with clipped importance
    weights; what was done comes back.

    >>> from app.policies.thompson_sampling import ThompsonSampling
    >>> log = LoggedData(actions=np.array([0] * 90 + [1] * 10),
    ...                  rewards=np.array([0.2] * 90 + [0.9] * 10),
    ...                  propensities=np.array([0.9] * 90 + [0.1] * 10), arm_names=("a", "b"))
    >>> ts = ThompsonSampling(["a", "b"], seed=0)
    >>> done = warm_start(ts, log, clip=5.0)
    >>> done.used, done.clipped, ts.select(explore=False).arm
    (100, 10, 'b')
    """
    if not clip > 0:
        raise WarmStartError(f"clip must be above 0, got {clip}")
    data = data.time_ordered()
    contexts = _contexts(policy, data)
    rng = np.random.default_rng(seed)
    names = data.arm_names
    mask = data.allowed_mask()
    done = WarmStart(rows=data.n_events)
    for i in range(data.n_events):
        arm = names[data.actions[i]]
        if not policy.has_arm(arm):
            done.skip("arm_not_in_policy")
            continue
        allowed = [names[j] for j in np.flatnonzero(mask[i]) if policy.has_arm(names[j])]
        x = None if contexts is None else contexts[i]
        logged = float(data.propensities[i])
        target = float(policy.probabilities(allowed, x)[allowed.index(arm)])
        weight = target / logged
        if weight > clip:
            weight = clip
            done.clipped += 1
        repeats = math.floor(weight) + int(rng.random() < weight - math.floor(weight))
        try:
            for _ in range(repeats):
                policy.update(arm, float(data.rewards[i]), x, propensity=logged)
        except PolicyError as exc:
            raise WarmStartError(f"row {i} cannot be learnt: {exc}") from None
        done.used += 1
        done.updates += repeats
        done.weight_sum += weight
        done.weight_sq_sum += weight * weight
        done.weight_max = max(done.weight_max, weight)
    if not done.used:
        raise WarmStartError(
            f"none of the {data.n_events} logged rows names an arm of the policy "
            f"(policy arms: {', '.join(policy.arms)}; logged: {', '.join(names)})"
        )
    return done


def _contexts(policy: Policy, data: LoggedData) -> np.ndarray | None:
    """The rows' contexts for a contextual policy (checked), else None."""
    if not policy.contextual:
        return None
    dim = getattr(policy, "context_dim", None)
    if data.contexts is None:
        raise WarmStartError(
            f"{policy.algorithm} decides on a context of {dim} values and the log has none "
            "(outcomes carry their features; a file names its context columns)"
        )
    if data.context_dim != dim:
        raise WarmStartError(
            f"{policy.algorithm} decides on a context of {dim} values; "
            f"the log's have {data.context_dim}"
        )
    return data.contexts
