"""learning: sharded end to end without a broker: the join keys a sharded
policy's outcomes by request, the learner keeps one state per partition,
and a decider that merges the shards' snapshots decides exactly as one fed
the single writer's snapshot of the same outcomes (same arms, same
propensities); config refuses algorithms whose shards do not merge."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from app.decider import Decider
from app.evaluation.simulator import TrafficSimulator
from app.ingress import join_key
from app.join import Joiner
from app.learner import Learner, live_key
from app.policies.config import PoliciesConfig, PolicyConfigError
from app.records import Outcome, PolicySnapshot

T0 = 1_700_000_000_000
ARMS = ("a", "b", "c", "d")
PARTITIONS = 4


def config(algorithm: str, learning: str, **hyperparameters: Any) -> PoliciesConfig:
    return PoliciesConfig.from_dict(
        {
            "default_policy": "p",
            "policies": {
                "p": {
                    "algorithm": algorithm,
                    "learning": learning,
                    "hyperparameters": hyperparameters,
                    "seed": 3,
                    "arms": [{"name": a, "model": a} for a in ARMS],
                }
            },
        }
    )


def outcomes(n: int, seed: int) -> list[Outcome]:
    rng = np.random.default_rng(seed)
    means = dict(zip(ARMS, rng.uniform(0.2, 0.8, len(ARMS)), strict=True))
    out = []
    for i in range(n):
        arm = ARMS[int(rng.integers(len(ARMS)))]
        out.append(
            Outcome(
                request_id=f"r{seed}-{i}",
                tenant_id="acme",
                policy_id="p",
                policy_version=0,
                arm=arm,
                available_arms=list(ARMS),
                propensity=0.25,
                explored=False,
                reward=float(rng.random() < means[arm]),
                defaulted=False,
                decided_at=T0 + i,
                outcome_at=T0 + i + 1,
                rewarded_at=T0 + i,
            )
        )
    return out


def partition_of(o: Outcome) -> int:
    key = join_key(o.tenant_id, o.request_id)
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big") % PARTITIONS


def single_snapshot(cfg: PoliciesConfig, stream: list[Outcome]) -> PolicySnapshot:
    learner = Learner(cfg)
    learner.load("p", None, T0)
    for offset, o in enumerate(stream):
        assert learner.apply(o, 0, offset) == "applied"
    return learner.snapshot("p", T0 + len(stream))


def shard_snapshots(cfg: PoliciesConfig, stream: list[Outcome]) -> list[PolicySnapshot]:
    learner = Learner(cfg)
    offsets = [0] * PARTITIONS
    for o in stream:
        p = partition_of(o)
        key = live_key("p", p)
        if not learner.known(key):
            learner.load("p", None, T0, shard=p)
        assert learner.apply(o, p, offsets[p], key) == "applied"
        offsets[p] += 1
    return [
        learner.snapshot(live_key("p", p), T0 + len(stream))
        for p in range(PARTITIONS)
        if learner.known(live_key("p", p))
    ]


def decisions(decider: Decider, seed: int) -> list[tuple[str, float]]:
    sim = TrafficSimulator.default(seed=seed)
    requests = [sim.next_request(T0) for _ in range(200)]
    for r in requests:
        object.__setattr__(r, "policy_id", "p")
    out = decider.decide(requests, T0)
    return [(d["arm"], d["propensity"]) for d in out]  # type: ignore[index]


CASES = [
    ("thompson_sampling", {"propensity_samples": 500}),
    ("ucb1", {}),
    ("epsilon_greedy", {"epsilon": 0.2}),
    ("gaussian_thompson", {}),
]


@pytest.mark.parametrize(("algorithm", "hyperparameters"), CASES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merged_shards_decide_as_the_single_writer(
    algorithm: str, hyperparameters: dict[str, Any], seed: int
) -> None:
    stream = outcomes(1_500, seed)
    single = single_snapshot(config(algorithm, "single", **hyperparameters), stream)
    sharded_cfg = config(algorithm, "sharded", **hyperparameters)
    shards = shard_snapshots(sharded_cfg, stream)
    assert len(shards) == PARTITIONS and all(s.shard is not None for s in shards)
    assert sum(s.updates for s in shards) == len(stream)

    merged = Decider(sharded_cfg, seed=11)
    applied = [merged.apply_snapshot(s) for s in shards]
    assert all(applied)
    assert merged.version("p") == sum(s.version for s in shards)
    reference = Decider(config(algorithm, "single", **hyperparameters), seed=11)
    assert reference.apply_snapshot(single)
    assert decisions(merged, seed) == decisions(reference, seed)


def test_a_shard_snapshot_older_than_the_last_one_changes_nothing() -> None:
    cfg = config("ucb1", "sharded")
    shards = shard_snapshots(cfg, outcomes(400, 5))
    decider = Decider(cfg, seed=1)
    for s in shards:
        decider.apply_snapshot(s)
    version = decider.version("p")
    assert not decider.apply_snapshot(shards[0])
    assert decider.version("p") == version


def test_a_single_writer_policy_ignores_shard_snapshots() -> None:
    shards = shard_snapshots(config("ucb1", "sharded"), outcomes(200, 6))
    decider = Decider(config("ucb1", "single"), seed=1)
    assert not any(decider.apply_snapshot(s) for s in shards)
    assert decider.version("p") == 0


def test_the_join_keys_sharded_outcomes_by_request() -> None:
    o = outcomes(1, 7)[0].to_dict()
    assert Joiner(config("ucb1", "sharded")).outcome_key(o) == join_key("acme", o["request_id"])
    assert Joiner(config("ucb1", "single")).outcome_key(o) == b"p"


@pytest.mark.parametrize(
    ("algorithm", "hyperparameters"),
    [("discounted_ucb", {}), ("sliding_window_ucb", {}), ("thompson_sampling", {"discount": 0.99})],
)
def test_sharded_learning_of_an_order_dependent_algorithm_is_refused(
    algorithm: str, hyperparameters: dict[str, Any]
) -> None:
    with pytest.raises(PolicyConfigError, match="learning: sharded needs shard states that merge"):
        config(algorithm, "sharded", **hyperparameters)


def test_an_unknown_learning_mode_is_refused() -> None:
    with pytest.raises(PolicyConfigError, match="did you mean 'sharded'"):
        config("ucb1", "shardd")
