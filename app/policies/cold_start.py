"""Where a new segment's (task type's) policy starts: the most similar known
segments' learned state, pooled and shrunk to a prior (pure; used by
:class:`~app.policies.per_task_type.PerTaskType`, docs/warm-start.md).

* **Similarity** (:func:`nearest`): Euclidean distance between mean feature
  vectors, ties broken by name, so every worker picks the same neighbours.
* **Pooling** (:func:`pooled`): the neighbours' states as if one segment had
  seen all their outcomes — the prior plus each one's change, exactly as
  shards merge (:func:`~app.policies.sharding.merge_snapshots`) — for an
  algorithm whose states merge; otherwise the nearest one's state alone.
* **Shrinkage** (:func:`shrunk`): each arm's evidence is scaled down to at
  most ``prior_strength`` observations with the policy's own
  ``shrink_evidence`` (estimates kept, uncertainty restored), so the new
  segment's own outcomes outweigh the transferred ones after about
  ``prior_strength`` pulls of an arm. A policy that keeps no per-arm
  evidence of that kind (the ridge and neural policies) keeps the pooled
  state as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from app.policies.base import Policy
from app.policies.sharding import merge_snapshots, mergeable

__all__ = ["copy_of", "nearest", "pooled", "shrunk"]


def nearest(target: Sequence[float], means: Mapping[str, Sequence[float]], k: int) -> list[str]:
    """The names of the ``k`` mean vectors closest to ``target``, nearest
    first (equal distances: by name).

    >>> nearest([0.5, 0.5], {"qa": [0.4, 0.5], "code": [0.9, 0.5], "chat": [0.6, 0.5]}, 2)
    ['chat', 'qa']
    """
    x = np.asarray(target, dtype=float)
    ranked = sorted(
        (float(np.linalg.norm(np.asarray(v, dtype=float) - x)), name) for name, v in means.items()
    )
    return [name for _, name in ranked[:k]]


def copy_of(policy: Policy) -> Policy:
    """An independent copy, through the policy's own snapshot."""
    return type(policy).restore(policy.snapshot())


def pooled(fresh: Policy, neighbours: Sequence[Policy]) -> Policy:
    """One state holding the neighbours' evidence together: ``fresh`` (the
    prior they share) plus each neighbour's change from it, when the
    algorithm's states merge; else a copy of the first (nearest) neighbour."""
    if not neighbours:
        return copy_of(fresh)
    if len(neighbours) == 1 or not mergeable(fresh.algorithm, fresh._params()):
        return copy_of(neighbours[0])
    merged = merge_snapshots(fresh.snapshot(), [n.snapshot() for n in neighbours])
    return type(fresh).restore(merged)


def shrunk(policy: Policy, prior_strength: float) -> Policy:
    """``policy`` with each arm's evidence cut to at most ``prior_strength``
    pulls' worth (in place; returned for chaining).

    >>> from app.policies.thompson_sampling import ThompsonSampling
    >>> ts = ThompsonSampling(["a", "b"], seed=0)
    >>> for _ in range(200):
    ...     ts.update("a", 1.0)
    >>> s = shrunk(ts, 20.0).stats()["a"]
    >>> round(s["alpha"] + s["beta"], 6), round(s["posterior_mean"], 3)
    (20.2, 0.995)
    """
    for arm, stats in policy.stats().items():
        pulls = float(stats.get("pulls", 0.0))
        if pulls > prior_strength:
            policy.shrink_evidence(arm, prior_strength / pulls)
    return policy
