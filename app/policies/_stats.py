"""What :meth:`~app.policies.base.Policy.stats` reports of each arm, from its
pulls and reward sum (private: the registry skips modules whose name starts
with ``_``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def arm_stats(
    arms: Sequence[str], pulls: Any, reward_sum: Any, /, **figures: Any
) -> dict[str, dict[str, float]]:
    """Per arm: its pulls, its mean reward (0 before any pull) and the
    algorithm's own ``figures`` (each one number per arm, in arm order).

    >>> stats = arm_stats(["a", "b"], [2.0, 0.0], [1.0, 0.0], alpha=[2.0, 1.0])
    >>> stats["a"], stats["b"]["mean_reward"]
    ({'pulls': 2.0, 'mean_reward': 0.5, 'alpha': 2.0}, 0.0)
    """
    return {
        arm: {
            "pulls": float(pulls[i]),
            "mean_reward": float(reward_sum[i] / pulls[i]) if pulls[i] else 0.0,
            **{name: float(values[i]) for name, values in figures.items()},
        }
        for i, arm in enumerate(arms)
    }
