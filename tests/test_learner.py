"""The learner: exactly-once updates by per-partition offsets, persisted
state, snapshot cadence, and config changes (removed arms, switched
algorithm)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from app.learner import Learner
from app.policies import ThompsonSampling
from app.policies.config import PoliciesConfig
from app.records import Outcome, PolicySnapshot

T0 = 1_700_000_000_000
EVERY_UPDATES = 5
EVERY_MS = 1_000


def config(arms: tuple[str, ...] = ("big", "small", "mid")) -> PoliciesConfig:
    arm_list = [{"name": a, "model": a} for a in arms]
    return PoliciesConfig.from_dict(
        {
            "default_policy": "p",
            "policies": {
                "p": {
                    "algorithm": "thompson_sampling",
                    "hyperparameters": {"propensity_samples": 1000},
                    "snapshot": {"every_updates": EVERY_UPDATES, "every_ms": EVERY_MS},
                    "seed": 5,
                    "arms": arm_list,
                },
                "q": {
                    "algorithm": "thompson_sampling",
                    "arms": arm_list,
                    "hyperparameters": {"propensity_samples": 1000},
                },
            },
        }
    )


def outcome(arm: str = "big", reward: float = 1.0, policy_id: str = "p", n: int = 0) -> Outcome:
    return Outcome(
        request_id=f"r{n}",
        tenant_id="acme",
        policy_id=policy_id,
        policy_version=0,
        arm=arm,
        available_arms=["big", "small", "mid"],
        propensity=0.5,
        explored=False,
        reward=reward,
        defaulted=False,
        decided_at=T0,
        outcome_at=T0 + 1,
    )


@pytest.fixture
def learner() -> Learner:
    ln = Learner(config())
    ln.load("p", None, T0)
    return ln


def policy_of(state: dict[str, Any]) -> ThompsonSampling:
    policy = ThompsonSampling.restore(base64.b64decode(state["policy"]))
    assert isinstance(policy, ThompsonSampling)
    return policy


def feed(learner: Learner, count: int, partition: int = 0, start: int = 0) -> list[str]:
    arms = ["big", "small", "mid"]
    return [
        learner.apply(outcome(arms[i % 3], (i % 4) / 3, n=start + i), partition, start + i)
        for i in range(count)
    ]


def test_fresh_policy_starts_from_the_prior(learner: Learner) -> None:
    assert learner.known("p") and not learner.known("q")
    state = learner.state("p")
    assert state["algorithm"] == "thompson_sampling"
    assert state["updates"] == 0 and state["offsets"] == {}
    assert all(s["pulls"] == 0 for s in policy_of(state).stats().values())
    assert policy_of(state).seed == 5


def test_apply_updates_the_policy(learner: Learner) -> None:
    assert learner.apply(outcome("small", 0.25), 2, 40) == "applied"
    state = learner.state("p")
    assert state["updates"] == 1 and state["offsets"] == {"2": 40}
    stats = policy_of(state).stats()
    assert stats["small"]["pulls"] == 1 and stats["small"]["alpha"] == pytest.approx(1.25)
    assert stats["big"]["pulls"] == 0


def test_the_same_offset_twice_is_applied_once(learner: Learner) -> None:
    assert learner.apply(outcome("big", 1.0), 1, 7) == "applied"
    before = learner.state("p")
    assert learner.apply(outcome("big", 1.0), 1, 7) == "redelivered"
    assert learner.apply(outcome("mid", 0.0, n=9), 1, 3) == "redelivered"  # older offset
    assert learner.state("p") == before
    assert learner.seen("p", 1, 7) and learner.seen("p", 1, 0) and not learner.seen("p", 1, 8)
    # Offsets are per partition: the same offset elsewhere is new.
    assert not learner.seen("p", 0, 7)
    assert learner.apply(outcome("big", 1.0, n=2), 0, 7) == "applied"
    assert learner.state("p")["offsets"] == {"1": 7, "0": 7}
    assert learner.state("p")["updates"] == 2


def test_mark_records_an_offset_without_learning(learner: Learner) -> None:
    learner.apply(outcome(), 0, 10)
    before = policy_of(learner.state("p")).stats()
    learner.mark("p", 0, 12)
    learner.mark("p", 0, 11)  # never goes back
    state = learner.state("p")
    assert state["offsets"] == {"0": 12} and state["updates"] == 1
    assert policy_of(state).stats() == before
    assert learner.apply(outcome(n=3), 0, 12) == "redelivered"


def test_state_round_trip_preserves_updates_offsets_and_choices(learner: Learner) -> None:
    feed(learner, 9, partition=0)
    feed(learner, 4, partition=3, start=100)
    state = orjson.loads(orjson.dumps(learner.state("p")))  # as the table stores it
    again = Learner(config())
    again.load("p", state, T0 + 5)
    assert again.state("p") == learner.state("p")
    assert again.state("p")["updates"] == 13
    assert again.state("p")["offsets"] == {"0": 8, "3": 103}
    assert again.apply(outcome(), 3, 103) == "redelivered"
    a, b = policy_of(learner.state("p")), policy_of(again.state("p"))
    assert [a.select().arm for _ in range(40)] == [b.select().arm for _ in range(40)]
    # Both go on learning identically.
    assert feed(learner, 6, start=200) == feed(again, 6, start=200)
    assert learner.state("p") == again.state("p")


def test_loaded_state_is_not_due_for_a_snapshot(learner: Learner) -> None:
    feed(learner, 3)
    again = Learner(config())
    again.load("p", learner.state("p"), T0)
    assert again.due_snapshots(T0 + 10 * EVERY_MS) == []
    assert again.snapshot("p", T0).version == 3


def test_snapshot_due_after_every_updates_not_before(learner: Learner) -> None:
    feed(learner, EVERY_UPDATES - 1)
    assert learner.due_snapshots(T0 + 1) == []
    feed(learner, 1, start=EVERY_UPDATES - 1)
    assert learner.due_snapshots(T0 + 1) == ["p"]
    snap = learner.snapshot("p", T0 + 1)
    assert snap.version == EVERY_UPDATES
    assert learner.due_snapshots(T0 + 2) == []


def test_snapshot_due_after_every_ms_not_before(learner: Learner) -> None:
    feed(learner, 1)
    assert learner.due_snapshots(T0 + EVERY_MS - 1) == []
    assert learner.due_snapshots(T0 + EVERY_MS) == ["p"]
    learner.snapshot("p", T0 + EVERY_MS)
    feed(learner, 1, start=1)
    assert learner.due_snapshots(T0 + 2 * EVERY_MS - 1) == []
    assert learner.due_snapshots(T0 + 2 * EVERY_MS) == ["p"]


def test_no_updates_no_snapshot_unless_forced(learner: Learner) -> None:
    assert learner.due_snapshots(T0 + 100 * EVERY_MS) == []
    assert learner.due_snapshots(T0, force=True) == ["p"]
    learner.apply(outcome(), 0, 0)
    learner.snapshot("p", T0)
    assert learner.due_snapshots(T0 + 100 * EVERY_MS) == []


def test_snapshot_version_is_the_number_of_updates(learner: Learner) -> None:
    results = feed(learner, 12)
    assert results == ["applied"] * 12
    snap = learner.snapshot("p", T0 + 3)
    assert snap.version == snap.updates == 12
    assert snap.policy_id == "p" and snap.algorithm == "thompson_sampling"
    assert snap.created_at == T0 + 3
    assert sum(s["pulls"] for s in snap.arm_stats.values()) == 12
    assert PolicySnapshot.loads(snap.dumps()) == snap
    restored = ThompsonSampling.restore(base64.b64decode(snap.state))
    assert restored.stats() == snap.arm_stats
    learner.apply(outcome(), 0, 5)  # redelivered: no new version
    assert learner.snapshot("p", T0 + 4).version == 12


def test_outcome_for_a_removed_arm(learner: Learner) -> None:
    learner.apply(outcome("mid", 0.5), 0, 0)
    state = learner.state("p")
    reconfigured = Learner(config(("big", "small", "newcomer")))
    reconfigured.load("p", state, T0)
    assert reconfigured.apply(outcome("mid", 1.0, n=1), 0, 1) == "removed_arm"
    after = reconfigured.state("p")
    assert after["updates"] == 1 and after["offsets"] == {"0": 1}
    stats = policy_of(after).stats()
    assert sorted(stats) == ["big", "newcomer", "small"]
    assert sum(s["pulls"] for s in stats.values()) == 0
    assert reconfigured.apply(outcome("newcomer", 1.0, n=2), 0, 2) == "applied"
    assert reconfigured.state("p")["updates"] == 2


def test_config_that_replaced_every_arm_still_loads(learner: Learner) -> None:
    feed(learner, 3)
    fresh = Learner(config(("x", "y")))
    fresh.load("p", learner.state("p"), T0)
    assert sorted(policy_of(fresh.state("p")).arms) == ["x", "y"]
    assert fresh.apply(outcome("big", n=7), 0, 3) == "removed_arm"


def test_state_of_another_algorithm_gives_a_fresh_policy(learner: Learner) -> None:
    feed(learner, 7)
    state = {**learner.state("p"), "algorithm": "ucb1"}
    switched = Learner(config())
    switched.load("p", state, T0)
    after = switched.state("p")
    assert after["updates"] == 0 and after["offsets"] == {"0": 6}
    assert all(s["pulls"] == 0 for s in policy_of(after).stats().values())
    # Offsets survive the switch (an old outcome redelivered is still not
    # applied twice) and versions keep rising, so deciders take the snapshot.
    assert switched.apply(outcome(), 0, 3) == "redelivered"
    assert switched.apply(outcome(), 0, 7) == "applied"
    assert switched.snapshot("p", T0).version == 8


def test_reconfigure_switches_algorithm_and_keeps_versions_rising(learner: Learner) -> None:
    from app.policies.config import PoliciesConfig

    feed(learner, 5)
    before = learner.snapshot("p", T0)
    doc = {
        "policies": {
            "p": {
                "algorithm": "ucb1",
                "arms": [{"name": a, "model": a} for a in policy_of(learner.state("p")).arms],
            }
        }
    }
    retired = learner.reconfigure(PoliciesConfig.from_dict(doc))
    # What it learned is kept as a registry version, numbered past every update.
    assert [(v.kind, v.status, v.version) for v in retired] == [
        ("version", "retired", before.version + 1)
    ]
    assert retired[0].state is not None and retired[0].state["updates"] == 5
    assert learner.due_snapshots(T0) == ["p"], "a switch is published at once"
    snap = learner.snapshot("p", T0)
    assert snap.algorithm == "ucb1" and snap.version > before.version
    assert learner.apply(outcome(), 0, 5) == "applied"
    assert learner.snapshot("p", T0).version == before.version + 2


def test_policies_are_kept_apart(learner: Learner) -> None:
    learner.load("q", None, T0)
    learner.apply(outcome("big", 1.0), 0, 0)
    learner.apply(outcome("big", 0.0, policy_id="q"), 0, 0)
    assert learner.state("p")["updates"] == learner.state("q")["updates"] == 1
    assert policy_of(learner.state("p")).stats()["big"]["alpha"] == 2.0
    assert policy_of(learner.state("q")).stats()["big"]["beta"] == 2.0
    assert sorted(learner.due_snapshots(T0, force=True)) == ["p", "q"]


def test_an_update_that_raises_changes_nothing_but_the_offset(
    learner: Learner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outcome goes to the dead-letter topic: the arm estimates (and the
    shadows) must not count what the policy never learned."""
    priced = {"quality": 0.9, "cost_usd": 0.01, "latency_ms": 800.0}
    first = outcome("big", 1.0, n=1)
    first.components = priced
    assert learner.apply(first, 0, 1) == "applied"
    before = learner.snapshot("p", T0).arm_stats
    assert before["big"]["cost_usd_count"] == 1
    live = learner._live["p"]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the policy")

    monkeypatch.setattr(live.policy, "update", broken)
    second = outcome("big", 0.0, n=2)
    second.components = priced
    with pytest.raises(RuntimeError):
        learner.apply(second, 0, 2)
    monkeypatch.undo()
    assert learner.snapshot("p", T0).arm_stats == before
    assert learner.state("p")["updates"] == 1
    assert learner.seen("p", 0, 2)  # dead-lettered once, not retried
