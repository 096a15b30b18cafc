"""Why a policy chose an arm: per-decision explanations and a policy's global report.

Pure (no faust, no aiokafka): the decider calls :func:`explain_decision` for
the decisions that ask for one (``explain: true`` on the request or in the
policy's config) and the worker's ``GET /explain/{policy_id}`` calls
:func:`explain_policy`. The format is described in docs/explanations.md.

What is exact and what is not:

- **Estimates.** Per arm, the reward the policy predicts (``mean``) and its
  uncertainty (``sd``), read from the policy's own state: a Beta or
  Normal-Inverse-Gamma posterior (Thompson sampling), a sample mean and its
  standard error (UCB-V, UCB1-Tuned), ``θᵀx`` and ``√(xᵀA⁻¹x)`` (LinUCB;
  times ``v`` for linear Thompson sampling). Where the policy keeps no
  spread, ``sd`` is ``None``. Cost and latency are the running means the
  guardrails keep (``ArmEstimates``); quality is not tracked per arm.
- **Exploration.** ``bonus`` is the term added to the mean before ranking
  (UCB family: the upper bound minus the mean; LinUCB: ``alpha·√(xᵀA⁻¹x)``);
  policies that draw (Thompson, ε-greedy, softmax, Exp3) explore through
  ``probability`` instead, the arm's chance of being drawn.
- **Features.** For policies linear in the context (LinUCB, linear Thompson
  sampling) each feature's contribution to the chosen arm's mean is exactly
  ``θ_i·x_i`` (they sum to the mean). For the other value policies it is an
  occlusion: the chosen arm's score minus its score with that feature set to
  0 (not additive). Other policies: ``n/a``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.policies._contextual import ValuePolicy
from app.policies.base import Policy
from app.policies.guardrails import ArmEstimates

JSON = dict[str, Any]
TOP_FEATURES = 5
_METRICS = ("cost_usd", "latency_ms")
_DIGITS = 6

EXPLORATION = {
    "lin_ucb": "the highest mean + bonus, bonus = alpha·sd (optimism under uncertainty)",
    "hybrid_lin_ucb": "the highest mean + alpha·sd, shared and per-arm parts",
    "ucb1": "untried arms first, then the highest upper bound (mean + bonus)",
    "ucb_v": "untried arms first, then the highest upper bound (mean + bonus)",
    "ucb_tuned": "untried arms first, then the highest upper bound (mean + bonus)",
    "discounted_ucb": "untried arms first, then the highest discounted upper bound",
    "sliding_window_ucb": "untried arms first, then the highest upper bound over the window",
    "thompson_sampling": "probability matching: each arm drawn with its posterior "
    "probability of being the best",
    "gaussian_thompson": "probability matching: each arm drawn with its posterior "
    "probability of being the best",
    "linear_thompson": "probability matching: each arm drawn with its posterior "
    "probability of being the best at this context",
    "epsilon_greedy": "epsilon/K to every arm, the rest to the best mean",
    "softmax": "P(arm) ∝ exp(mean / temperature)",
    "exp3": "(1 - gamma)·weight share + gamma/K",
}


@dataclass(frozen=True, slots=True)
class GuardrailNote:
    """A guardrail that acted on a decision: its name (the last to act),
    all that acted in order, why, and the arms it left."""

    name: str
    acted: Sequence[str]
    reason: str
    kept: Sequence[str]


def _num(value: Any) -> float | None:
    """A JSON-safe rounded float, or ``None`` for a missing or non-finite value."""
    if value is None:
        return None
    v = float(value)
    return round(v, _DIGITS) if math.isfinite(v) else None


def _linear(policy: Policy) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(A⁻¹, θ, scale of the sd) of a policy linear in its context, else ``None``."""
    model = getattr(policy, "ridge_model", None)
    if model is None:
        return None
    ainv, theta = model()
    return ainv, theta, float(getattr(policy, "v", 1.0))


def _weights(policy: Policy, arm: str) -> np.ndarray | None:
    """The coefficients over the whole context of ``arm``'s mean, for a
    policy whose mean is linear in the context, else ``None``."""
    linear = _linear(policy)
    if linear is not None:
        return linear[1][policy.index_of(arm)]
    shared = getattr(policy, "shared_coefficients", None)  # hybrid: zᵀβ + xᵀθ_k
    if shared is not None:
        return np.concatenate([shared(), policy.coefficients()[arm]])  # type: ignore[attr-defined]
    return None


def _spread(stats: Mapping[str, float]) -> float | None:
    """The standard deviation of an arm's reward estimate, from its stats."""
    if "alpha" in stats and "beta" in stats:  # Beta posterior
        a, b = stats["alpha"], stats["beta"]
        return math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
    if "posterior_scale" in stats:  # Student-t posterior of the mean
        df = stats.get("degrees_of_freedom", 0.0)
        return stats["posterior_scale"] * math.sqrt(df / (df - 2.0)) if df > 2.0 else None
    n = stats.get("count", 0.0)
    if "variance" in stats and n > 0:  # the sample mean's standard error
        return math.sqrt(stats["variance"] / n)
    return None


def arm_estimates(
    policy: Policy,
    arms: Sequence[str],
    context: np.ndarray | None,
    estimates: ArmEstimates | None = None,
) -> dict[str, JSON]:
    """Per arm: ``mean`` and ``sd`` of the predicted reward, ``score`` (what
    the policy ranks by), ``bonus`` (its exploration term, when it adds one),
    ``pulls``, and the ``cost_usd`` / ``latency_ms`` estimates when known.

    >>> from app.policies import ThompsonSampling
    >>> ts = ThompsonSampling(["a", "b"], seed=0)
    >>> ts.update("a", 1.0)  # Beta(2, 1): mean 2/3, sd √(2/36)
    >>> arm_estimates(ts, ["a", "b"], None)["a"]
    {'mean': 0.666667, 'sd': 0.235702, 'score': 0.666667, 'bonus': None, 'pulls': 1.0}
    """
    names = list(arms)
    scores = np.asarray(policy.scores(names, context), dtype=float)
    stats = policy.stats()
    means: list[float | None]
    sds: list[float | None]
    bonus: list[float | None] = [None] * len(names)
    linear = _linear(policy) if context is not None else None
    if linear is not None:
        ainv, theta, scale = linear
        idx = policy.allowed_indices(names)
        x = np.asarray(context, dtype=float)
        quad = np.sqrt(np.maximum(np.einsum("kij,i,j->k", ainv[idx], x, x), 0.0))
        means = (theta[idx] @ x).tolist()
        sds = (scale * quad).tolist()
        alpha = getattr(policy, "alpha", None)
        if alpha is not None:
            bonus = (alpha * quad).tolist()
    elif context is not None and _weights(policy, names[0]) is not None:
        # Linear mean, score = mean + alpha·sd (hybrid LinUCB).
        x = np.asarray(context, dtype=float)
        mean_values = [float(_weights(policy, a) @ x) for a in names]
        bonus_values = [float(s - m) for s, m in zip(scores, mean_values, strict=True)]
        alpha = float(getattr(policy, "alpha", 0.0))
        means, bonus = list(mean_values), list(bonus_values)
        sds = [b / alpha if alpha > 0 else None for b in bonus_values]
    elif policy.contextual:
        means, sds = scores.tolist(), [None] * len(names)
    else:
        means, sds = [], []
        for arm in names:
            s = stats[arm]
            means.append(s.get("posterior_mean", s.get("value", s["mean_reward"])))
            sds.append(_spread(s))
        upper = getattr(policy, "upper_bounds", None)
        if upper is not None:
            bonus = (np.asarray(upper(names)) - scores).tolist()
    out: dict[str, JSON] = {}
    for j, arm in enumerate(names):
        entry: JSON = {
            "mean": _num(means[j]),
            "sd": _num(sds[j]),
            "score": _num(scores[j]),
            "bonus": _num(bonus[j]),
            "pulls": _num(stats[arm].get("pulls")),
        }
        out[arm] = _with_costs(entry, arm, estimates)
    return out


def _with_costs(entry: JSON, arm: str, estimates: ArmEstimates | None) -> JSON:
    """``entry`` with the arm's cost and latency estimates, where there are any."""
    if estimates is None:
        return entry
    for metric in _METRICS:
        mean = estimates.mean(arm, metric)
        if mean is not None:
            entry[metric] = {"mean": _num(mean), "n": estimates.count(arm, metric)}
    return entry


def _first(probabilities: Sequence[float], scores: Sequence[float], names: Sequence[str]) -> str:
    """The arm the policy alone would most likely choose: the highest
    probability, ties to the higher score, then to the earlier arm."""
    best = max(range(len(names)), key=lambda j: (probabilities[j], scores[j], -j))
    return names[best]


def feature_contributions(
    policy: Policy,
    arm: str,
    context: np.ndarray,
    names: Sequence[str],
    top: int = TOP_FEATURES,
) -> JSON:
    """The features that weigh most in ``arm``'s prediction at ``context``,
    largest ``|contribution|`` first (see the module docstring for the method)."""
    x = np.asarray(context, dtype=float)
    weights = _weights(policy, arm)
    if weights is not None:
        contributions = weights * x
        method = "exact"
        detail = "theta_i * x_i of the chosen arm's linear model; they sum to its mean"
    elif isinstance(policy, ValuePolicy):
        base = float(policy.scores([arm], x)[0])
        contributions = np.zeros_like(x)
        for i in np.flatnonzero(x):
            occluded = x.copy()
            occluded[i] = 0.0
            contributions[i] = base - float(policy.scores([arm], occluded)[0])
        policy.scores([arm], x)  # leave the value cache on the decided context
        method = "occlusion"
        detail = "the chosen arm's score minus its score with the feature set to 0; not additive"
    else:
        return {
            "method": "n/a",
            "detail": f"{policy.algorithm} has no per-feature attribution",
            "top": [],
        }
    order = np.argsort(-np.abs(contributions), kind="stable")[:top]
    return {
        "method": method,
        "detail": detail,
        "top": [
            {
                "name": _name(names, int(i)),
                "value": _num(x[i]),
                "contribution": _num(contributions[i]),
            }
            for i in order
            if contributions[i] != 0.0
        ],
    }


def _name(names: Sequence[str], i: int) -> str:
    return names[i] if i < len(names) else f"x[{i}]"


def explain_decision(
    policy: Policy,
    *,
    arms: Sequence[str],
    chosen: str,
    explored: bool,
    fallback: bool,
    probabilities: Mapping[str, float],
    context: Sequence[float] | None = None,
    feature_names: Sequence[str] = (),
    estimates: ArmEstimates | None = None,
    guardrail: GuardrailNote | None = None,
) -> JSON:
    """One decision's explanation. ``arms`` are the arms the request
    allowed (before any guardrail), ``probabilities`` the decision's own
    (over the arms it was drawn among; the others had 0)."""
    x = None if context is None else np.asarray(context, dtype=float)
    names = list(arms)
    per_arm = arm_estimates(policy, names, x, estimates)
    for arm, entry in per_arm.items():
        entry["probability"] = _num(probabilities.get(arm, 0.0))
    scores = [per_arm[a]["score"] or 0.0 for a in names]
    greedy = names[max(range(len(names)), key=lambda j: (scores[j], -j))]
    doc: JSON = {
        "rule": "fallback" if fallback else ("explore" if explored else "exploit"),
        "algorithm": policy.algorithm,
        "exploration": EXPLORATION.get(policy.algorithm, "the policy's own probabilities"),
        "greedy_arm": greedy,
        "arms": per_arm,
        "guardrail": None,
        "features": None,
    }
    epsilon = getattr(policy, "current_epsilon", None)
    if epsilon is not None:
        doc["epsilon"] = _num(epsilon)
    temperature = getattr(policy, "current_temperature", None)
    if temperature is not None:
        doc["temperature"] = _num(temperature)
    if guardrail is not None:
        # What the policy alone would have picked among the request's arms.
        own = np.asarray(policy.probabilities(names, x), dtype=float).tolist()
        without = _first(own, scores, names)
        doc["guardrail"] = {
            "name": guardrail.name,
            "acted": list(guardrail.acted),
            "reason": guardrail.reason,
            "dropped": [a for a in names if a not in guardrail.kept],
            "without": without,
            "changed": without != chosen,
        }
    if x is not None:
        doc["features"] = feature_contributions(policy, chosen, x, feature_names)
    return doc


# -- the global report -----------------------------------------------------------------------


def context_moments(
    ainv: np.ndarray, ridge: float, bias: int | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, standard deviation, count) of each feature over the contexts
    the arms learnt from, recovered from ``A_k = ridge·I + Σ x xᵀ``: the
    count and means come from the constant ``bias`` feature's row of ``Σ x
    xᵀ``; without one the means are 0 and the spread is the root mean square."""
    d = ainv.shape[1]
    gram = np.zeros((d, d))
    for block in ainv:
        gram += np.linalg.inv(block) - ridge * np.eye(d)
    if bias is not None:
        n = float(gram[bias, bias])
        if n <= 0.5:  # fewer than one context: nothing observed
            return np.zeros(d), np.zeros(d), 0.0
        mean = gram[bias] / n
        var = np.diag(gram) / n - mean**2
        return mean, np.sqrt(np.maximum(var, 0.0)), n
    n = float(np.trace(gram))  # no count without a constant feature
    rms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    total = max(float(rms.max()), 1e-12)
    return np.zeros(d), rms / total, n


def explain_policy(
    policy: Policy,
    *,
    policy_id: str,
    version: int,
    feature_names: Sequence[str] = (),
    estimates: ArmEstimates | None = None,
) -> JSON:
    """A policy's global report: per arm its estimate and uncertainty, and
    for a policy linear in its context each feature's global importance,
    ``Σ_k w_k·|θ_k,i|·sd_i`` (``w_k`` the arm's share of the pulls, ``sd_i``
    the feature's spread over the contexts learnt from)."""
    arms = policy.arms
    linear = _linear(policy)
    doc: JSON = {
        "policy_id": policy_id,
        "version": version,
        "algorithm": policy.algorithm,
        "exploration": EXPLORATION.get(policy.algorithm, "the policy's own probabilities"),
        "contextual": policy.contextual,
        "arms": {},
        "features": None,
    }
    if linear is None:
        if policy.contextual:
            doc["arms"] = _contextual_arms(policy, estimates)
            doc["features"] = {
                "method": "n/a",
                "detail": f"{policy.algorithm} is not linear in its context: no global "
                "importance; ask a decision for its explanation instead",
                "features": [],
            }
        else:
            doc["arms"] = arm_estimates(policy, arms, None, estimates)
        return doc
    ainv, theta, _ = linear
    names = list(feature_names)
    bias = names.index("bias") if "bias" in names else None
    mean, sd, n = context_moments(ainv, float(getattr(policy, "ridge", 1.0)), bias)
    # Each arm at the average context the policy learnt from.
    x = mean if bias is not None and n > 0 else None
    if x is not None:
        doc["arms"] = arm_estimates(policy, arms, x, estimates)
        doc["arms_at"] = "the mean context learnt from"
    else:
        doc["arms"] = _contextual_arms(policy, estimates)
    pulls = np.array([policy.stats()[a]["pulls"] for a in arms], dtype=float)
    weights = pulls / pulls.sum() if pulls.sum() > 0 else np.full(len(arms), 1.0 / len(arms))
    importance = (weights[:, None] * np.abs(theta)).sum(axis=0) * sd
    order = np.argsort(-importance, kind="stable")
    doc["features"] = {
        "method": "|theta| x spread",
        "detail": "sum over arms of (share of pulls) * |theta_k,i|, times the feature's "
        "standard deviation over the contexts learnt from (recovered from each arm's A)"
        if bias is not None
        else "sum over arms of (share of pulls) * |theta_k,i|, times the feature's root "
        "mean square over the contexts learnt from, relative to the largest",
        "contexts": _num(n),
        "features": [
            {
                "name": _name(names, int(i)),
                "importance": _num(importance[i]),
                "mean": _num(mean[i]),
                "sd": _num(sd[i]),
            }
            for i in order
        ],
    }
    return doc


def _contextual_arms(policy: Policy, estimates: ArmEstimates | None) -> dict[str, JSON]:
    """Per arm, what a contextual policy knows without a context: pulls and
    the mean reward observed."""
    stats = policy.stats()
    out: dict[str, JSON] = {}
    for arm in policy.arms:
        s = stats[arm]
        entry: JSON = {"mean": _num(s["mean_reward"]), "sd": None, "pulls": _num(s["pulls"])}
        out[arm] = _with_costs(entry, arm, estimates)
    return out
