"""How a policy adapts to a drift on one of its arms. Pure: the learner calls
:func:`adapt` on the policy it owns and publishes the result.

Each action is a method of the policy contract (app/policies/base.py), which
every policy answers in its own way:

``reset`` — ``reset_arm(arm)``: forget the arm's estimates. A policy that can
puts them back to the prior in place (Thompson sampling); the others rebuild
the arm, ``remove_arm`` then ``add_arm`` (contextual and RL ones included).
The rebuilt arm moves to the end of the policy's arm list; decisions address
arms by name, so only tie-breaking order can change.

``discount`` — ``discount_evidence(arm, factor)``: keep ``factor`` of the
evidence, pulled toward the prior: for the context-free bandits whose
per-arm state is evidence (Beta counts; counts, sums and squared deviations
beside a mean), each evidence array becomes ``prior + factor · (value −
prior)``; means are kept (they have no prior, and the smaller count lets new
rewards move them faster).

``explore`` — ``shrink_evidence(arm, factor)``: keep ``factor`` of the
evidence but not less uncertainty than the prior, and leave the estimate
where it is: a Beta posterior keeps its mean and loses ``1 - factor`` of its
weight (down to the prior's), counts shrink as for ``discount``; ε-greedy
also rewinds its ε decay by the same factor. The arm's value is unchanged
but far less certain, so the policy explores it (and, for ε-greedy,
everything) again.

Policies without such evidence (Exp3's log-weights, sliding windows,
contextual and RL models) fall back to ``reset`` for ``discount`` and
``explore``; the returned ``applied`` says what was really done.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.policies.base import Policy


@dataclass(frozen=True, slots=True)
class Adaptation:
    """What was done: ``reset_arm``, ``rebuild_arm``, ``discount_evidence``,
    ``shrink_evidence`` or ``none``."""

    applied: str
    detail: str


def reset(policy: Policy, arm: str) -> Adaptation:
    """Forget what the policy learnt about ``arm``."""
    if policy.reset_arm(arm):
        return Adaptation("reset_arm", f"{arm}: estimates back to the prior")
    return Adaptation("rebuild_arm", f"{arm}: removed and added again (estimates from the prior)")


def discount(policy: Policy, arm: str, factor: float) -> Adaptation:
    """Keep ``factor`` of the evidence about ``arm``, pulled toward the prior."""
    if not policy.discount_evidence(arm, factor):
        return _fallback(policy, arm, "discount")
    kept = tuple(policy.arm_evidence(arm))
    return Adaptation("discount_evidence", f"{arm}: kept {factor:g} of the evidence {kept}")


def explore(policy: Policy, arm: str, factor: float) -> Adaptation:
    """Make ``arm`` uncertain again without moving its estimate."""
    if not policy.shrink_evidence(arm, factor):
        return _fallback(policy, arm, "explore")
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
