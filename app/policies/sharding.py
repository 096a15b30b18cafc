"""Merging the learned states of a policy's shards.

Learning can be split by request ("sharded") when what a policy learns is a
sum of per-outcome contributions: every shard starts from the same prior
state and applies only its own outcomes, and the state one policy would hold
after all of them is the prior plus each shard's change. :func:`merge` does
that on snapshot states (the ``"state"`` of a snapshot document),
:func:`merge_snapshots` on whole snapshots.

What is summed, per algorithm (``MERGEABLE``; docs/architecture.md):

- ``thompson_sampling``: each arm's α and β (with ``discount`` 1: a discount
  weighs each reward by how many came after it, an order).
- ``gaussian_thompson``, ``softmax``, ``ucb1``, ``ucb_tuned``, ``ucb_v`` and
  ``epsilon_greedy`` (unless ``adaptive``, whose ε is a running average over
  the order of the rewards): each arm's count, mean (and squared deviations),
  which combine as the count, sum (and Chan's pooled deviations) of the
  shards' rewards; ε decay, temperature decay and the UCB's ln t follow the
  update count t, the sum of the shards'.
- ``exp3``: a reward adds γ·r/(p·K) to its arm's log-weight, p the logged
  propensity: a number the outcome carries, not one the state gives, so the
  log-weights add up (up to the common shift that keeps their maximum at 0).
  This holds when every update carries its propensity, as every outcome
  does; without one the arm's current probability stands in and the sum
  depends on the order.
- ``lin_ucb`` and ``linear_thompson``: each arm's ridge statistics
  A = ridge·I + Σ x xᵀ and b = Σ r x (the state keeps A⁻¹ and θ = A⁻¹b, which
  are recomputed from the sums).
- ``hybrid_lin_ucb``: per arm A, B = Σ x zᵀ and b = Σ r x, and the shared
  Σ z zᵀ and Σ r z; A₀, b₀, β and θ are functions of those sums.

Pulls and reward sums add up in every one; the seeded constants (an index
policy's tie-breaking salt, ε when not learnt, the propensity draws'
entropy) must be the prior's in every shard.

Exactness. Sums are taken with ``math.fsum`` over the prior and each shard's
change, so the result does not depend on the order of the shards, bit for
bit, and differs from a single writer's only by the rounding of its
incremental updates (Welford means, Sherman–Morrison inverses). An arm only
one shard changed keeps that shard's figures exactly; merging one shard
returns it. A Thompson sampler's decision posterior (the copy its
probabilities are estimated from) becomes the merged posterior itself, as
after :meth:`refresh`, due again at the next reward.

>>> from app.policies.ucb1 import UCB1
>>> import orjson
>>> prior = UCB1(["a", "b"], seed=0)
>>> shards = [UCB1.restore(prior.snapshot()) for _ in range(2)]
>>> shards[0].update("a", 1.0); shards[1].update("a", 0.5); shards[1].update("b", 0.2)
>>> state = lambda policy: orjson.loads(policy.snapshot())["state"]
>>> merged = merge("ucb1", state(prior), [state(s) for s in shards])
>>> merged["t"], merged["n"], merged["mean"]
(3, [2.0, 1.0], [0.75, 0.2])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import orjson

from app.policies.base import PolicyError

State = dict[str, Any]

MERGEABLE: frozenset[str] = frozenset(
    {
        "epsilon_greedy",
        "exp3",
        "gaussian_thompson",
        "hybrid_lin_ucb",
        "lin_ucb",
        "linear_thompson",
        "softmax",
        "thompson_sampling",
        "ucb1",
        "ucb_tuned",
        "ucb_v",
    }
)

# What a snapshot document must share with the prior's for its state to merge.
_SAME_IN_EVERY_SNAPSHOT = ("algorithm", "format", "arms", "seed", "params")


class MergeError(PolicyError):
    """Shard states that cannot be merged: an algorithm whose learning
    depends on the order of the outcomes, or shards that did not start from
    the same prior (other arms, other seeded constants)."""


def order_dependence(algorithm: str, params: Mapping[str, Any] | None = None) -> str | None:
    """Why the learning of ``algorithm`` with hyperparameters ``params``
    (its defaults when not given) depends on the order of the outcomes, or
    ``None`` when the states of its shards merge."""
    params = params or {}
    if algorithm not in MERGEABLE:
        return f"{algorithm!r} learns in an order-dependent way (mergeable: {sorted(MERGEABLE)})"
    if algorithm == "thompson_sampling" and params.get("discount", 1.0) != 1.0:
        return "a discount below 1 weighs each reward by how many came after it"
    if algorithm == "epsilon_greedy" and params.get("adaptive", False):
        return "adaptive ε (VDBE) is a running average over the order of the rewards"
    return None


def mergeable(algorithm: str, params: Mapping[str, Any] | None = None) -> bool:
    """Whether shards of ``algorithm`` with these hyperparameters merge exactly."""
    return order_dependence(algorithm, params) is None


def merge(
    algorithm: str,
    prior: Mapping[str, Any],
    shards: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any] | None = None,
) -> State:
    """The state one policy would hold after the outcomes of every shard.

    ``prior`` is the state every shard started from (a fresh policy's, or
    any common one), ``shards`` their states after disjoint sets of
    outcomes, ``params`` the hyperparameters (the algorithm's defaults when
    not given: a discounted Thompson sampler must say so). Raises
    :class:`MergeError` for an algorithm or hyperparameters that do not
    merge, and for shards whose fields, arm counts or seeded constants
    differ from the prior's (the shards must keep the prior's arms).
    """
    reason = order_dependence(algorithm, params)
    if reason is not None:
        raise MergeError(f"cannot merge shards of {algorithm}: {reason}")
    if not shards:
        raise MergeError("no shard states to merge")
    for i, shard in enumerate(shards):
        if shard.keys() != prior.keys():
            raise MergeError(
                f"shard {i} holds state fields {sorted(shard)}, the prior {sorted(prior)}"
            )
    if len(shards) == 1:
        return copy.deepcopy(dict(shards[0]))
    fields = _Fields(prior, shards)
    merged = _MERGERS[algorithm](fields)
    fields.check_all_used(algorithm)
    return merged


def merge_snapshots(prior: bytes, shards: Sequence[bytes]) -> bytes:
    """:func:`merge` on whole snapshots: the prior's snapshot (algorithm,
    arms, seed, hyperparameters, random generator) holding the merged state.
    Every shard must be a snapshot of the prior's algorithm, format, arms,
    seed and hyperparameters."""
    doc = orjson.loads(prior)
    docs = [orjson.loads(shard) for shard in shards]
    for i, other in enumerate(docs):
        for key in _SAME_IN_EVERY_SNAPSHOT:
            if other.get(key) != doc.get(key):
                raise MergeError(
                    f"shard {i} is a snapshot of {key} {other.get(key)!r}, "
                    f"the prior of {doc.get(key)!r}"
                )
    state = merge(doc["algorithm"], doc["state"], [d["state"] for d in docs], doc["params"])
    return orjson.dumps(doc | {"state": state}, option=orjson.OPT_SERIALIZE_NUMPY)


# -- the states' fields ---------------------------------------------------------------------------
class _Fields:
    """The prior's and the shards' values of each state field, read as
    arrays of the prior's shape; remembers which fields a merge used."""

    def __init__(self, prior: Mapping[str, Any], shards: Sequence[Mapping[str, Any]]) -> None:
        self.prior = prior
        self.shards = shards
        self._used: set[str] = set()

    def arrays(self, name: str) -> tuple[np.ndarray, list[np.ndarray]]:
        self._used.add(name)
        prior = np.asarray(self.prior[name], dtype=float)
        shards = [np.asarray(s[name], dtype=float) for s in self.shards]
        for i, shard in enumerate(shards):
            if shard.shape != prior.shape:
                raise MergeError(
                    f"shard {i} holds {name!r} of shape {shard.shape}, the prior "
                    f"{prior.shape}: every shard must keep the prior's arms"
                )
        return prior, shards

    def constant(self, name: str) -> Any:
        """A field every shard must hold unchanged from the prior."""
        self._used.add(name)
        value = self.prior[name]
        for i, shard in enumerate(self.shards):
            if shard[name] != value:
                raise MergeError(
                    f"shard {i} holds {name!r} = {shard[name]!r}, the prior {value!r}: "
                    "shards must start from the same prior, and not learn it"
                )
        return value

    def counter(self, name: str) -> int:
        """A count of updates: the prior's plus every shard's increment."""
        self._used.add(name)
        start = int(self.prior[name])
        return start + sum(int(s[name]) - start for s in self.shards)

    def total(self, name: str) -> list[Any]:
        """A per-arm sum: the prior's plus every shard's change."""
        prior, shards = self.arrays(name)
        return _added(prior, shards).tolist()

    def ignore(self, *names: str) -> None:
        """Fields the merge derives afresh rather than reads."""
        self._used.update(names)

    def check_all_used(self, algorithm: str) -> None:
        unknown = set(self.prior) - self._used
        if unknown:
            raise MergeError(f"{algorithm} states hold fields the merge does not know: {unknown}")


def _exact_sum(terms: np.ndarray) -> np.ndarray:
    """The sum over the first axis, each element correctly rounded (so the
    order of the terms does not matter)."""
    flat = terms.reshape(len(terms), -1)
    return np.array([math.fsum(col) for col in flat.T.tolist()]).reshape(terms.shape[1:])


def _added(prior: np.ndarray, shards: Sequence[np.ndarray]) -> np.ndarray:
    """``prior + Σ (shard − prior)``, elementwise; where only one shard
    changed an element, that shard's value exactly."""
    total = _exact_sum(np.stack([prior, *(s - prior for s in shards)]))
    changed = [s != prior for s in shards]
    lone = np.sum(changed, axis=0) == 1
    if lone.any():
        total[lone] = np.select(changed, shards)[lone]
    return total


def _changed_arms(
    priors: Sequence[np.ndarray], shards: Sequence[Sequence[np.ndarray]]
) -> list[np.ndarray]:
    """Per shard, a boolean per arm: whether the shard changed any of the
    per-arm arrays ``priors`` (arm first) for that arm."""
    out = []
    for arrays in shards:
        changed = np.zeros(len(priors[0]), dtype=bool)
        for prior, array in zip(priors, arrays, strict=True):
            changed |= (array != prior).reshape(len(prior), -1).any(axis=1)
        out.append(changed)
    return out


def _symmetric(m: np.ndarray) -> np.ndarray:
    return (m + np.swapaxes(m, -1, -2)) / 2.0


# -- context-free bandits -------------------------------------------------------------------------
def _pooled(
    prior: dict[str, np.ndarray], shards: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-arm count ``n``, mean and (when present) sum of squared
    deviations ``m2`` of the prior's rewards and every shard's own.

    A shard's own rewards are what it holds beyond the prior (none of
    theirs when the prior counts nothing, the usual case); the parts
    combine as counts, sums and Chan's pooled deviations."""
    n0, mean0 = prior["n"], prior["mean"]
    m20 = prior.get("m2", np.zeros_like(n0))
    ns, means, m2s = [n0], [mean0], [m20]
    for shard in shards:
        n_all, mean_all = shard["n"], shard["mean"]
        m2_all = shard.get("m2", np.zeros_like(n0))
        n = n_all - n0
        has = n > 0.0
        safe_n, safe_all = np.where(has, n, 1.0), np.where(n_all > 0.0, n_all, 1.0)
        mean = np.where(n0 == 0.0, mean_all, (n_all * mean_all - n0 * mean0) / safe_n)
        m2 = np.where(n0 == 0.0, m2_all, m2_all - m20 - n0 * n / safe_all * (mean - mean0) ** 2)
        ns.append(np.where(has, n, 0.0))
        means.append(np.where(has, mean, 0.0))
        m2s.append(np.where(has, m2, 0.0))
    n_parts, mean_parts = np.stack(ns), np.stack(means)
    n_total = _exact_sum(n_parts)
    tried = n_total > 0.0
    mean = np.where(tried, _exact_sum(n_parts * mean_parts) / np.where(tried, n_total, 1.0), mean0)
    pooled = {"n": n_total, "mean": mean}
    if "m2" in prior:
        deviations = np.stack(m2s) + n_parts * (mean_parts - mean) ** 2
        pooled["m2"] = np.where(tried, _exact_sum(deviations), m20)
    return pooled


def _bandit(
    fields: _Fields,
    *,
    sums: tuple[str, ...] = (),
    moments: tuple[str, ...] = (),
    constants: tuple[str, ...] = (),
    posterior: bool = False,
) -> State:
    """A context-free bandit's state: ``t``, pulls and reward sums, per-arm
    ``sums`` (added), per-arm ``moments`` (count, mean and maybe ``m2``,
    pooled), seeded ``constants`` and, for Thompson sampling, the decision
    posterior (the merged posterior itself)."""
    merged: State = {"t": fields.counter("t")}
    for name in ("pulls", "reward_sum", *sums):
        merged[name] = fields.total(name)
    if moments:
        read = [fields.arrays(name) for name in moments]
        prior = {name: p for name, (p, _) in zip(moments, read, strict=True)}
        shards = [
            {name: s[i] for name, (_, s) in zip(moments, read, strict=True)}
            for i in range(len(fields.shards))
        ]
        pooled = _pooled(prior, shards)
        # An arm no shard changed keeps the prior's figures, one only one
        # shard changed that shard's, exactly.
        changed = _changed_arms(list(prior.values()), [list(s.values()) for s in shards])
        untouched = ~np.any(changed, axis=0)
        lone = np.sum(changed, axis=0) == 1
        for name in moments:
            values = pooled[name]
            values[untouched] = prior[name][untouched]
            if lone.any():
                values[lone] = np.select(changed, [s[name] for s in shards])[lone]
            merged[name] = values.tolist()
    for name in constants:
        merged[name] = fields.constant(name)
    if posterior:
        fields.ignore("frozen", "frozen_t", "stale_at")
        merged["frozen"] = {name: merged[name] for name in fields.prior["frozen"]}
        merged["frozen_t"] = merged["t"]
        merged["stale_at"] = merged["t"] + 1
    return merged


def _exp3(fields: _Fields) -> State:
    """Exp3: log-weights add up, shifted so that their maximum is 0 again;
    the weight total is recomputed from them."""
    merged = _bandit(fields, sums=("gain",))
    prior, shards = fields.arrays("logw")
    raw = _exact_sum(np.stack([prior, *(s - prior for s in shards)]))
    logw = raw - raw.max()
    fields.ignore("wsum")
    merged["logw"] = logw.tolist()
    merged["wsum"] = math.fsum(np.exp(logw).tolist())
    return merged


# -- contextual bandits ---------------------------------------------------------------------------
def _ridge(
    fields: _Fields, *, counters: tuple[str, ...] = (), constants: tuple[str, ...] = ()
) -> State:
    """Per-arm ridge regressions kept as A⁻¹ and θ (LinUCB, linear Thompson
    sampling): A and b = Aθ add up; A⁻¹ and θ are recomputed from the sums."""
    ainv0, ainvs = fields.arrays("a_inv")
    theta0, thetas = fields.arrays("theta")
    ainv, theta = ainv0.copy(), theta0.copy()
    changed = _changed_arms([ainv0, theta0], list(zip(ainvs, thetas, strict=True)))
    for arm in range(len(ainv0)):
        who = [i for i, c in enumerate(changed) if c[arm]]
        if len(who) == 1:
            ainv[arm], theta[arm] = ainvs[who[0]][arm], thetas[who[0]][arm]
        elif who:
            a0 = np.linalg.inv(ainv0[arm])
            a_s = [np.linalg.inv(ainvs[i][arm]) for i in who]
            b_s = [a @ thetas[i][arm] for a, i in zip(a_s, who, strict=True)]
            a = _symmetric(_added(a0, a_s))
            ainv[arm] = _symmetric(np.linalg.inv(a))
            theta[arm] = np.linalg.solve(a, _added(a0 @ theta0[arm], b_s))
    merged: State = {"a_inv": ainv.tolist(), "theta": theta.tolist()}
    for name in ("pulls", "reward_sum"):
        merged[name] = fields.total(name)
    for name in counters:
        merged[name] = fields.counter(name)
    for name in constants:
        merged[name] = fields.constant(name)
    return merged


def _hybrid(fields: _Fields) -> State:
    """Hybrid LinUCB. Per arm, A (kept as A⁻¹), B = Σ x zᵀ and b = Σ r x add
    up; so do the shared G = λI + Σ z zᵀ = A₀ + Σₖ Bₖᵀ Cₖ and
    g = Σ r z = b₀ + Σₖ Cₖᵀ bₖ (Cₖ = Aₖ⁻¹ Bₖ): the algorithm's A₀ and b₀
    are those with every arm's part taken out. The rest is recomputed from
    the sums as the update computes it."""
    per_arm = ("ainv", "B", "b", "C")
    read = {name: fields.arrays(name) for name in (*per_arm, "A0", "b0")}
    fields.ignore("A0inv", "beta", "theta")

    def shared_sums(state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        big_b, b, c = state["B"], state["b"], state["C"]
        return (
            state["A0"] + np.einsum("kdm,kdn->mn", big_b, c),
            state["b0"] + np.einsum("kdm,kd->m", c, b),
        )

    prior = {name: p for name, (p, _) in read.items()}
    shards = [{name: s[i] for name, (_, s) in read.items()} for i in range(len(fields.shards))]
    g0, h0 = shared_sums(prior)
    sums = [shared_sums(shard) for shard in shards]
    g = _added(g0, [s[0] for s in sums])
    h = _added(h0, [s[1] for s in sums])

    own = {name: prior[name].copy() for name in per_arm}
    changed = _changed_arms(
        [prior[name] for name in per_arm], [[s[name] for name in per_arm] for s in shards]
    )
    for arm in range(len(own["ainv"])):
        who = [shards[i] for i, c in enumerate(changed) if c[arm]]
        if len(who) == 1:
            for name in per_arm:
                own[name][arm] = who[0][name][arm]
        elif who:
            a0 = np.linalg.inv(prior["ainv"][arm])
            a = _added(a0, [np.linalg.inv(s["ainv"][arm]) for s in who])
            own["ainv"][arm] = _symmetric(np.linalg.inv(_symmetric(a)))
            for name in ("B", "b"):
                own[name][arm] = _added(prior[name][arm], [s[name][arm] for s in who])
            own["C"][arm] = own["ainv"][arm] @ own["B"][arm]
    ainv, big_b, b, c = (own[name] for name in per_arm)
    shared_a = _symmetric(g - np.einsum("kdm,kdn->mn", big_b, c))
    shared_b = h - np.einsum("kdm,kd->m", c, b)
    shared_ainv = np.linalg.inv(shared_a)
    beta = shared_ainv @ shared_b
    theta = np.einsum("kij,kj->ki", ainv, b - big_b @ beta)
    return {
        **{name: own[name].tolist() for name in per_arm},
        "theta": theta.tolist(),
        "pulls": fields.total("pulls"),
        "reward_sum": fields.total("reward_sum"),
        "A0": shared_a.tolist(),
        "b0": shared_b.tolist(),
        "A0inv": shared_ainv.tolist(),
        "beta": beta.tolist(),
    }


_MEANS = ("n", "mean")
_MOMENTS = ("n", "mean", "m2")

_MERGERS: dict[str, Callable[[_Fields], State]] = {
    "thompson_sampling": partial(_bandit, sums=("alpha", "beta"), posterior=True),
    "gaussian_thompson": partial(_bandit, moments=_MOMENTS, posterior=True),
    "epsilon_greedy": partial(_bandit, moments=_MEANS, constants=("epsilon",)),
    "softmax": partial(_bandit, moments=_MEANS),
    "ucb1": partial(_bandit, moments=_MEANS, constants=("salt",)),
    "ucb_tuned": partial(_bandit, moments=_MOMENTS, constants=("salt",)),
    "ucb_v": partial(_bandit, moments=_MOMENTS, constants=("salt",)),
    "exp3": _exp3,
    "lin_ucb": _ridge,
    "linear_thompson": partial(_ridge, counters=("updates",), constants=("entropy",)),
    "hybrid_lin_ucb": _hybrid,
}
