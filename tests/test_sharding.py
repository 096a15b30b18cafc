"""Merging shards' states gives the single writer's state and decisions.

For every mergeable algorithm, a stream of logged outcomes from a known
environment is applied once by one policy and once split over shards by a
hash of the request id, each shard starting from the same prior; the merge
of the shards must equal the single writer's state (1e-9 relative) and
decide as it does.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import orjson
import pytest

from app.policies.base import Policy
from app.policies.registry import algorithms
from app.policies.sharding import (
    MERGEABLE,
    MergeError,
    merge,
    merge_snapshots,
    mergeable,
)

ARMS = ["a", "b", "c", "d"]
LOGGING = [0.4, 0.3, 0.2, 0.1]  # the probabilities the logged arms were drawn with
OUTCOMES = 400
RTOL = 1e-9
Outcome = tuple[str, str, float, Any, float]  # request id, arm, reward, context, propensity


def build(algorithm: str, seed: int | None, **params: Any) -> Policy:
    cls = algorithms()[algorithm]
    return cls(ARMS, seed=seed, **{**cls.example_params, **params})


def state(policy: Policy) -> dict[str, Any]:
    return orjson.loads(policy.snapshot())["state"]


def context_dim(policy: Policy) -> int | None:
    return getattr(policy, "context_dim", None) if policy.contextual else None


def context(rng: np.random.Generator, dim: int | None) -> np.ndarray | None:
    """A shared feature, a constant 1 and normal features (none for the others)."""
    return np.concatenate([[rng.normal(), 1.0], rng.normal(size=dim - 2)]) if dim else None


def stream(seed: int, dim: int | None, n: int = OUTCOMES) -> list[Outcome]:
    """Logged outcomes with rewards in [0, 1] from arms whose mean reward
    depends on the context."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(len(ARMS), dim or 1))
    out = []
    for i in range(n):
        j = int(rng.choice(len(ARMS), p=LOGGING))
        x = context(rng, dim)
        mean = 0.5 + 0.2 * np.tanh(weights[j] @ x) if dim else 0.3 + 0.1 * j
        reward = float(np.clip(mean + 0.15 * rng.normal(), 0.0, 1.0))
        out.append((f"req-{seed}-{i}", ARMS[j], reward, x, LOGGING[j]))
    return out


def shard_of(request_id: str, shards: int) -> int:
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest) % shards


def learn(prior: bytes, outcomes: list[Outcome], *, logged: bool = True) -> Policy:
    """A policy restored from ``prior`` that applied ``outcomes`` in order
    (with their logged propensities unless ``logged`` is false)."""
    policy = algorithms()[orjson.loads(prior)["algorithm"]].restore(prior)
    for _, arm, reward, x, p in outcomes:
        policy.update(arm, reward, x, propensity=p if logged else None)
    return policy


def split(prior: bytes, outcomes: list[Outcome], k: int, **kw: Any) -> list[Policy]:
    """``k`` shards from ``prior``, each applying the outcomes its request ids hash to."""
    parts: list[list[Outcome]] = [[] for _ in range(k)]
    for outcome in outcomes:
        parts[shard_of(outcome[0], k)].append(outcome)
    assert all(parts), "every shard gets outcomes"
    return [learn(prior, part, **kw) for part in parts]


def single_writer(prior: bytes, outcomes: list[Outcome]) -> Policy:
    policy = learn(prior, outcomes)
    refresh = getattr(policy, "refresh", None)
    if refresh is not None:
        refresh()  # its decision posterior as of now, as the merge's
    return policy


def assert_state_close(got: Any, want: Any, path: str = "state") -> None:
    """Equal field by field: text and counts exactly, numbers within 1e-9 of
    the largest magnitude of their array."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), path
        for key in want:
            if key != "stale_at":  # when the decision posterior is due again: bookkeeping
                assert_state_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, str | int) and not isinstance(want, bool):
        assert got == want, path
    else:
        g, w = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
        assert g.shape == w.shape, path
        scale = float(np.abs(w).max(initial=0.0))
        assert np.allclose(g, w, rtol=RTOL, atol=RTOL * scale), (
            f"{path}: largest difference {np.abs(g - w).max()} at scale {scale}"
        )


def far(got: Any, want: Any) -> bool:
    """Whether two arrays differ by far more than rounding."""
    g, w = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return not np.allclose(g, w, rtol=1e-6, atol=1e-6)


def test_every_mergeable_algorithm_is_registered() -> None:
    assert set(algorithms()) >= MERGEABLE


@pytest.mark.parametrize("algorithm", sorted(MERGEABLE))
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("k", [2, 4])
def test_merged_shards_equal_the_single_writer(algorithm: str, seed: int, k: int) -> None:
    prior = build(algorithm, seed)
    prior_bytes = prior.snapshot()
    dim = context_dim(prior)
    outcomes = stream(seed, dim)
    shards = split(prior_bytes, outcomes, k)
    single = single_writer(prior_bytes, outcomes)

    params = orjson.loads(prior_bytes)["params"]
    merged = merge(algorithm, state(prior), [state(s) for s in shards], params)
    assert_state_close(merged, state(single))

    # Decisions: the same probabilities, and the same draws from the same generator.
    mine = type(prior).restore(merge_snapshots(prior_bytes, [s.snapshot() for s in shards]))
    theirs = type(prior).restore(single.snapshot())
    rng = np.random.default_rng(seed + 100)
    for allowed in (None, ["d", "b", "a"]):
        for _ in range(5):
            x = context(rng, dim)
            assert np.allclose(
                mine.probabilities(allowed, x),
                theirs.probabilities(allowed, x),
                rtol=RTOL,
                atol=1e-12,
            )
            for _ in range(10):
                a, b = mine.select(x, allowed), theirs.select(x, allowed)
                assert (a.arm, a.explored) == (b.arm, b.explored)
                assert a.propensity == pytest.approx(b.propensity, rel=RTOL, abs=1e-12)


@pytest.mark.parametrize("algorithm", sorted(MERGEABLE))
def test_merge_is_order_independent_and_one_shard_is_itself(algorithm: str) -> None:
    prior = build(algorithm, 7)
    shards = [state(s) for s in split(prior.snapshot(), stream(7, context_dim(prior)), 4)]
    merged = merge(algorithm, state(prior), shards)
    for order in range(3):
        shuffled = shards[:]
        random.Random(order).shuffle(shuffled)
        assert merge(algorithm, state(prior), shuffled) == merged  # bit for bit
    assert merge(algorithm, state(prior), shards[:1]) == shards[0]


@pytest.mark.parametrize("algorithm", sorted(MERGEABLE))
def test_shards_of_a_prior_that_has_learnt_merge_too(algorithm: str) -> None:
    """The common prior may be any state (say, the last merged one): each
    shard's change is taken out of it, counters included."""
    prior = build(algorithm, 9)
    dim = context_dim(prior)
    prior = learn(prior.snapshot(), stream(9, dim, 60))
    outcomes = stream(10, dim, 150)
    shards = split(prior.snapshot(), outcomes, 3)
    merged = merge(algorithm, state(prior), [state(s) for s in shards])
    assert_state_close(merged, state(single_writer(prior.snapshot(), outcomes)))
    for counter in ("t", "updates"):
        if counter in merged:
            assert merged[counter] == 60 + 150
    assert sum(merged["pulls"]) == 60 + 150


@pytest.mark.parametrize("algorithm", sorted(set(algorithms()) - MERGEABLE))
def test_order_dependent_algorithms_refuse_to_merge(algorithm: str) -> None:
    assert not mergeable(algorithm)
    with pytest.raises(MergeError, match="order-dependent"):
        merge(algorithm, {}, [{}, {}])


def test_hyperparameters_that_make_learning_order_dependent_refuse_to_merge() -> None:
    assert mergeable("thompson_sampling") and mergeable("epsilon_greedy", {"adaptive": False})
    with pytest.raises(MergeError, match="discount"):
        merge("thompson_sampling", {}, [{}], {"discount": 0.99})
    with pytest.raises(MergeError, match="VDBE"):
        merge("epsilon_greedy", {}, [{}], {"adaptive": True})
    # VDBE's ε is learnt, which its states show even when the caller does not say.
    prior = build("epsilon_greedy", 1, adaptive=True)
    shards = split(prior.snapshot(), stream(1, None, 60), 2)
    with pytest.raises(MergeError, match="'epsilon'"):
        merge("epsilon_greedy", state(prior), [state(s) for s in shards])


def test_discounted_thompson_sampling_would_not_merge() -> None:
    """Why a discount is refused: summing the shards' changes is not what
    one discounted writer holds."""
    prior = build("thompson_sampling", 5, discount=0.95)
    outcomes = stream(5, None)
    shards = split(prior.snapshot(), outcomes, 2)
    naive = merge("thompson_sampling", state(prior), [state(s) for s in shards])  # no params
    assert far(naive["alpha"], state(single_writer(prior.snapshot(), outcomes))["alpha"])


def test_exp3_merges_only_with_logged_propensities() -> None:
    """Exp3 adds γ·r/(p·K) to a log-weight: with the logged p (a number each
    outcome carries) the log-weights add up, as the tests above show; with p
    taken from the learner's current probabilities they do not."""
    prior = build("exp3", 4)
    outcomes = stream(4, None)
    shards = split(prior.snapshot(), outcomes, 4, logged=False)
    naive = merge("exp3", state(prior), [state(s) for s in shards])
    single = learn(prior.snapshot(), outcomes, logged=False)
    assert far(naive["logw"], state(single)["logw"])
    assert far(naive["gain"], state(single)["gain"])


def test_shards_must_keep_the_priors_arms() -> None:
    prior = build("ucb1", 2)
    shards = split(prior.snapshot(), stream(2, None, 40), 2)
    shards[1].add_arm("e")
    with pytest.raises(MergeError, match="keep the prior's arms"):
        merge("ucb1", state(prior), [state(s) for s in shards])
    # The same number of arms under other names: only the snapshots show it.
    shards[1].remove_arm("a")
    with pytest.raises(MergeError, match="arms"):
        merge_snapshots(prior.snapshot(), [s.snapshot() for s in shards])


def test_shards_must_start_from_one_prior() -> None:
    """Unseeded priors built apart break ties with salts of their own."""
    priors = [build("ucb1", None) for _ in range(2)]
    shards = [learn(p.snapshot(), stream(1, None, 20)) for p in priors]
    with pytest.raises(MergeError, match="'salt'"):
        merge("ucb1", state(priors[0]), [state(s) for s in shards])


def test_unknown_state_fields_are_refused() -> None:
    prior = build("softmax", 1)
    shards = [state(s) for s in split(prior.snapshot(), stream(1, None, 40), 2)]
    extra = {"learnt_rate": 0.5}
    with pytest.raises(MergeError, match="learnt_rate"):
        merge("softmax", state(prior) | extra, [s | extra for s in shards])
