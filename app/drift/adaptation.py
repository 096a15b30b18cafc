"""How a policy adapts to a drift on one of its arms. Pure: the learner calls
:func:`adapt` on the policy it owns and publishes the result.

Policies differ in what they can do, so each action has a specific path
where the policy offers one and a generic one otherwise:

``reset`` — forget the arm's estimates. ``reset_arm(arm)`` where the policy
has it (Thompson sampling); otherwise the arm is rebuilt through the policy
contract, ``remove_arm`` then ``add_arm``, which every policy implements
(contextual and RL ones included). The rebuilt arm moves to the end of the
policy's arm list; decisions address arms by name, so only tie-breaking
order can change. A policy's only arm is rebuilt the same way, with a
placeholder arm held for the moment in between.

``discount`` — keep ``factor`` of the evidence, pulled toward the prior:
for the context-free bandits whose per-arm state is evidence (Beta counts;
counts, sums and squared deviations beside a mean), each evidence array
becomes ``prior + factor · (value − prior)``; means are kept (they have no
prior, and the smaller count lets new rewards move them faster).

``explore`` — keep ``factor`` of the evidence but not less uncertainty than
the prior, and leave the estimate where it is: a Beta posterior keeps its
mean and loses ``1 - factor`` of its weight (down to the prior's), counts
shrink as for ``discount``; ε-greedy also rewinds its ε decay by the same
factor. The arm's value is unchanged but far less certain, so the policy
explores it (and, for ε-greedy, everything) again.

Policies without such evidence arrays (Exp3's log-weights, sliding windows,
contextual and RL models) fall back to ``reset`` for ``discount`` and
``explore``; the returned ``applied`` says what was really done.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.policies._bandit_base import BanditPolicy
from app.policies.base import Policy
from app.policies.epsilon_greedy import EpsilonGreedy

# Per-arm arrays that hold evidence (shrinkable) and those that hold estimates (kept).
_EVIDENCE = frozenset({"_alpha", "_beta", "_n", "_m2", "_dn", "_ds"})
_ESTIMATES = frozenset({"_mean"})
_PLACEHOLDER = "\x00adapting"


@dataclass(frozen=True, slots=True)
class Adaptation:
    """What was done: ``reset_arm``, ``rebuild_arm``, ``discount_evidence``,
    ``shrink_evidence`` or ``none``."""

    applied: str
    detail: str


def _evidence_arrays(policy: Policy) -> tuple[str, ...] | None:
    if not isinstance(policy, BanditPolicy):
        return None
    learned = set(type(policy)._learned)
    if not learned or not learned <= _EVIDENCE | _ESTIMATES:
        return None
    return tuple(sorted(learned & _EVIDENCE))


def reset(policy: Policy, arm: str) -> Adaptation:
    """Forget what the policy learnt about ``arm``."""
    policy.index_of(arm)  # unknown arm: UnknownArmError before anything changes
    reset_arm = getattr(policy, "reset_arm", None)
    if callable(reset_arm):
        reset_arm(arm)
        return Adaptation("reset_arm", f"{arm}: estimates back to the prior")
    lone = len(policy.arms) == 1
    if lone:
        policy.add_arm(_PLACEHOLDER)
    policy.remove_arm(arm)
    policy.add_arm(arm)
    if lone:
        policy.remove_arm(_PLACEHOLDER)
    return Adaptation("rebuild_arm", f"{arm}: removed and added again (estimates from the prior)")


def discount(policy: Policy, arm: str, factor: float) -> Adaptation:
    """Keep ``factor`` of the evidence about ``arm``, pulled toward the prior."""
    arrays = _evidence_arrays(policy)
    if arrays is None:
        return _fallback(policy, arm, "discount")
    assert isinstance(policy, BanditPolicy)
    i = policy.index_of(arm)
    for name in arrays:
        arr = getattr(policy, name)
        fresh = policy._fresh(name)
        arr[i] = fresh + factor * (arr[i] - fresh)
    policy._changed()
    return Adaptation("discount_evidence", f"{arm}: kept {factor:g} of the evidence {arrays}")


def explore(policy: Policy, arm: str, factor: float) -> Adaptation:
    """Make ``arm`` uncertain again without moving its estimate."""
    arrays = _evidence_arrays(policy)
    if arrays is None:
        return _fallback(policy, arm, "explore")
    assert isinstance(policy, BanditPolicy)
    i = policy.index_of(arm)
    if {"_alpha", "_beta"} <= set(arrays):
        alpha, beta = getattr(policy, "_alpha"), getattr(policy, "_beta")  # noqa: B009
        a, b = float(alpha[i]), float(beta[i])
        floor = policy._fresh("_alpha") + policy._fresh("_beta")
        total = max(factor * (a + b), min(floor, a + b))
        alpha[i], beta[i] = a / (a + b) * total, b / (a + b) * total
    for name in set(arrays) - {"_alpha", "_beta"}:
        arr: np.ndarray = getattr(policy, name)
        arr[i] *= factor
    if isinstance(policy, EpsilonGreedy):
        policy._t = int(policy._t * factor)  # restart the ε decay
        policy._epsilon = max(policy._epsilon, policy.epsilon)
    policy._changed()
    return Adaptation("shrink_evidence", f"{arm}: kept {factor:g} of the evidence, estimate kept")


def _fallback(policy: Policy, arm: str, action: str) -> Adaptation:
    done = reset(policy, arm)
    return Adaptation(
        done.applied, f"{done.detail}; {policy.algorithm} has no per-arm evidence to {action}"
    )


def adapt(policy: Policy, arm: str, action: str, factor: float = 0.2) -> Adaptation:
    """Apply ``action`` (reset, discount, explore or none) to ``arm``, in place.

    >>> from app.policies.thompson_sampling import ThompsonSampling
    >>> ts = ThompsonSampling(["a", "b"], seed=0, propensity_samples=1000)
    >>> for _ in range(100):
    ...     ts.update("a", 1.0)
    >>> adapt(ts, "a", "discount", 0.1).applied, ts.stats()["a"]["alpha"]
    ('discount_evidence', 11.0)
    >>> adapt(ts, "a", "explore", 0.5).applied, ts.stats()["a"]["alpha"], ts.stats()["a"]["beta"]
    ('shrink_evidence', 5.5, 0.5)
    >>> adapt(ts, "a", "reset").applied, ts.stats()["a"]["alpha"]
    ('reset_arm', 1.0)
    """
    if not 0.0 <= factor <= 1.0:
        raise ValueError(f"factor must be in [0, 1], got {factor}")
    if action == "reset":
        return reset(policy, arm)
    if action == "discount":
        return discount(policy, arm, factor)
    if action == "explore":
        return explore(policy, arm, factor)
    if action == "none":
        policy.index_of(arm)
        return Adaptation("none", f"{arm}: left as it is (action none)")
    raise ValueError(f"unknown action {action!r}")
