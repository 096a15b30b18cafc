"""Every transition of the decision–reward join (app/join.py).

Entries go through the table's encoding between steps, as they do in the
agent's RocksDB table."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.join import JoinEntry, Joiner, Progress, Step, encode_entry, parse_decision, valid_entry
from app.policies.config import PoliciesConfig
from app.records import Decision, InvalidEvent, Outcome, Reward

WAIT_MS = 2_000
HOLD_MS = 5_000
RETAIN_MS = 60_000
MAX_MS = 900_000
T0 = 1_700_000_000_000
DEC_SRC = ["llmopt.decisions.v1", 3, 41]
REW_SRC = ["llmopt.rewards.v1", 3, 17]


def policies() -> PoliciesConfig:
    arms = [{"name": "big", "model": "gpt-4o"}, {"name": "small", "model": "gpt-4o-mini"}]
    return PoliciesConfig.from_dict(
        {
            "default_policy": "p",
            "policies": {
                "p": {
                    "algorithm": "thompson_sampling",
                    "hyperparameters": {"propensity_samples": 1000},
                    "reward": {
                        "weights": {"quality": 0.5, "cost": 0.3, "latency": 0.2},
                        "cost_scale_usd": 0.01,
                        "latency_scale_ms": 4000,
                        "error_reward": 0.05,
                        "wait_seconds": WAIT_MS / 1000,
                        "default_reward": 0.25,
                    },
                    "arms": arms,
                },
                "q": {
                    "algorithm": "thompson_sampling",
                    "arms": arms,
                    "reward": {"wait_seconds": 10, "default_reward": 0.0},
                },
            },
        }
    )


@pytest.fixture
def joiner() -> Joiner:
    return Joiner(
        policies(),
        orphan_hold_ms=HOLD_MS,
        done_retention_ms=RETAIN_MS,
        max_hold_ms=MAX_MS,
        settle_ms=0,
    )


def decision(rid: str = "r1", policy_id: str = "p", **extra: Any) -> dict[str, Any]:
    doc = {
        "decision_id": f"d-{rid}",
        "request_id": rid,
        "tenant_id": "acme",
        "policy_id": policy_id,
        "policy_version": 7,
        "arm": "big",
        "model": "gpt-4o",
        "parameters": {"temperature": 0.3},
        "available_arms": ["big", "small"],
        "propensity": 0.625,
        "scores": {"big": 0.7, "small": 0.4},
        "explored": False,
        "fallback": False,
        "requested_at": T0 - 5,
        "decided_at": T0,
        "schema_version": 1,
    }
    doc.update(extra)
    return Decision.from_dict(doc).to_dict()  # valid by construction


def reward(rid: str = "r1", **components: Any) -> Reward:
    if not components:
        components = {"quality": 0.9, "cost_usd": 0.004, "latency_ms": 1000.0}
    return Reward(request_id=rid, tenant_id="acme", sent_at=T0 + 100, **components)


def stored(step: Step) -> JoinEntry | None:
    """The entry as the table gives it back."""
    return valid_entry(encode_entry(step.entry)) if step.entry is not None else None


def valid_outcome(doc: dict[str, Any]) -> Outcome:
    out = Outcome.from_dict(doc)
    assert Outcome.loads(orjson.dumps(doc)) == out
    return out


def test_decision_alone_waits_for_its_reward(joiner: Joiner) -> None:
    step = joiner.on_decision(None, decision(), DEC_SRC, T0)
    assert step.result == "stored" and step.outcome is None and step.error is None
    assert step.keep
    assert step.entry == {
        "state": "pending",
        "decision": decision(),
        "due": T0 + WAIT_MS,
        "until": T0 + WAIT_MS + MAX_MS,
        "partition": 3,
    }
    assert step.due == T0 + WAIT_MS


def test_the_wait_is_the_policys(joiner: Joiner) -> None:
    assert joiner.on_decision(None, decision(policy_id="q"), DEC_SRC, T0).due == T0 + 10_000
    # A policy the joiner does not know waits the default 30 s.
    assert joiner.on_decision(None, decision(policy_id="zz"), DEC_SRC, T0).due == T0 + 30_000


def test_decision_then_reward_gives_one_outcome(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    r = reward()
    step = joiner.on_reward(entry, r, r.dumps(), REW_SRC, T0 + 500)
    assert step.result == "joined" and step.error is None and step.keep
    o = step.outcome
    assert o is not None
    spec = policies().policies["p"].reward
    assert o["reward"] == pytest.approx(spec.scalar(quality=0.9, cost_usd=0.004, latency_ms=1000))
    assert o["reward"] == pytest.approx(0.5 * 0.9 + 0.3 * 0.6 + 0.2 * 0.75)
    assert o["components"] == {"quality": 0.9, "cost_usd": 0.004, "latency_ms": 1000.0}
    assert o["defaulted"] is False and o["outcome_at"] == T0 + 500
    d = decision()
    for k in (
        "request_id",
        "tenant_id",
        "policy_id",
        "policy_version",
        "arm",
        "available_arms",
        "propensity",
        "explored",
        "decided_at",
    ):
        assert o[k] == d[k], k
    assert "features" not in o
    valid_outcome(o)
    assert step.entry is not None
    assert step.entry["state"] == "done" and step.entry["how"] == "rewarded"
    assert step.entry["due"] == T0 + 500 + RETAIN_MS and step.entry["partition"] == 3
    assert step.entry["completed_by"] == [REW_SRC] and step.entry["outcome"] == o


def test_error_reward_scores_the_error_reward(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    r = reward(error=True, latency_ms=30_000.0)
    o = joiner.on_reward(entry, r, r.dumps(), REW_SRC, T0 + 1).outcome
    assert o is not None
    assert o["reward"] == 0.05
    assert o["components"] == {"error": True, "latency_ms": 30_000.0}
    valid_outcome(o)


def test_partial_reward_renormalises(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    r = reward(feedback=-1.0, quality=0.4)
    o = joiner.on_reward(entry, r, r.dumps(), REW_SRC, T0 + 1).outcome
    assert o is not None
    assert o["reward"] == pytest.approx(0.4)  # feedback has weight 0 in policy p
    assert o["components"] == {"quality": 0.4, "feedback": -1.0}


def test_features_travel_to_the_outcome(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(features=[0.5, 1.0]), DEC_SRC, T0))
    r = reward()
    o = joiner.on_reward(entry, r, r.dumps(), REW_SRC, T0 + 1).outcome
    assert o is not None and o["features"] == [0.5, 1.0]
    assert valid_outcome(o).features == [0.5, 1.0]


def test_reward_before_decision_is_held_then_joined(joiner: Joiner) -> None:
    r = reward()
    held = joiner.on_reward(None, r, r.dumps(), REW_SRC, T0)
    assert held.result == "held" and held.outcome is None and held.error is None
    entry = stored(held)
    assert entry is not None
    assert entry["state"] == "orphan" and entry["due"] == T0 + HOLD_MS and entry["partition"] == 3
    assert entry["raw"] == r.dumps().decode() and entry["source"] == REW_SRC
    step = joiner.on_decision(entry, decision(), DEC_SRC, T0 + 50)
    assert step.result == "joined"
    o = step.outcome
    assert o is not None and o["outcome_at"] == T0 + 50 and o["defaulted"] is False
    assert o["reward"] == pytest.approx(0.78)
    valid_outcome(o)
    assert step.entry is not None and step.entry["completed_by"] == [DEC_SRC, REW_SRC]
    assert step.entry["due"] == T0 + 50 + RETAIN_MS
    done = stored(step)
    redelivered = joiner.on_reward(done, r, r.dumps(), REW_SRC, T0 + 60)
    assert redelivered.result == "redelivered" and redelivered.error is None
    assert redelivered.outcome == o, "the held reward delivered again re-sends the outcome"


def test_second_reward_is_a_duplicate(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    r = reward()
    entry = stored(joiner.on_reward(entry, r, r.dumps(), REW_SRC, T0 + 10))
    again = reward(quality=0.1)
    step = joiner.on_reward(entry, again, again.dumps(), ["llmopt.rewards.v1", 3, 18], T0 + 20)
    assert step.result == "duplicate_reward" and step.outcome is None
    assert isinstance(step.error, InvalidEvent) and step.error.code == "duplicate_reward"
    assert "'r1'" in step.error.detail
    assert step.entry == entry and step.keep


def test_second_reward_while_held_is_a_duplicate(joiner: Joiner) -> None:
    r = reward()
    entry = stored(joiner.on_reward(None, r, r.dumps(), REW_SRC, T0))
    step = joiner.on_reward(entry, r, r.dumps(), ["llmopt.rewards.v1", 3, 99], T0 + 1)
    assert step.error is not None and step.error.code == "duplicate_reward"
    assert step.entry == entry


def test_no_reward_in_time_gives_the_default(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    early = joiner.on_due(entry, T0 + WAIT_MS - 1)
    assert early.result == "not_due" and early.entry == entry and early.outcome is None
    step = joiner.on_due(entry, T0 + WAIT_MS)
    assert step.result == "defaulted" and step.error is None and step.keep
    o = step.outcome
    assert o is not None
    assert o["reward"] == 0.25 and o["defaulted"] is True and o["components"] == {}
    assert o["outcome_at"] == T0 + WAIT_MS
    valid_outcome(o)
    assert step.entry is not None and step.entry["how"] == "defaulted"
    assert step.entry["due"] == T0 + WAIT_MS + RETAIN_MS


def test_default_is_the_policys(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(policy_id="q"), DEC_SRC, T0))
    o = joiner.on_due(entry, T0 + 10_000).outcome
    assert o is not None and o["reward"] == 0.0 and o["policy_id"] == "q"


def test_reward_after_the_default_is_expired(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    entry = stored(joiner.on_due(entry, T0 + WAIT_MS + 3))
    late = reward()
    step = joiner.on_reward(entry, late, late.dumps(), REW_SRC, T0 + WAIT_MS + 10)
    assert step.result == "expired_request" and step.outcome is None
    assert step.error is not None and step.error.code == "expired_request"
    assert step.entry == entry


def test_orphan_past_due_is_an_unknown_request(joiner: Joiner) -> None:
    r = reward(rid="ghost")
    raw = r.dumps()
    entry = stored(joiner.on_reward(None, r, raw, REW_SRC, T0))
    assert entry is not None
    # What the agent dead-letters: the original bytes and where they came from.
    assert entry["raw"].encode() == raw and entry["source"] == REW_SRC
    assert joiner.on_due(entry, T0 + HOLD_MS - 1).result == "not_due"
    step = joiner.on_due(entry, T0 + HOLD_MS)
    assert step.result == "unknown_request" and step.outcome is None
    assert step.error is not None and step.error.code == "unknown_request"
    assert "read past where its decision would be" in step.error.detail
    assert step.entry is None and step.keep is False and step.due is None


def test_done_entry_is_deleted_after_retention(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    r = reward()
    entry = stored(joiner.on_reward(entry, r, r.dumps(), REW_SRC, T0 + 1))
    assert entry is not None
    assert joiner.on_due(entry, T0 + RETAIN_MS).result == "not_due"
    step = joiner.on_due(entry, T0 + 1 + RETAIN_MS)
    assert step.result == "expired" and step.entry is None and step.keep is False
    assert step.outcome is None and step.error is None


def test_on_due_without_entry_is_not_due(joiner: Joiner) -> None:
    step = joiner.on_due(None, T0)
    assert step.result == "not_due" and step.entry is None and step.keep


@pytest.mark.parametrize("state", ["pending", "done"])
def test_duplicate_decision_is_ignored(joiner: Joiner, state: str) -> None:
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    if state == "done":
        r = reward()
        entry = stored(joiner.on_reward(entry, r, r.dumps(), REW_SRC, T0 + 1))
    other = decision(arm="small", model="gpt-4o-mini")
    step = joiner.on_decision(entry, other, ["llmopt.decisions.v1", 3, 42], T0 + 5)
    assert step.result == "duplicate_decision"
    assert step.entry == entry and step.outcome is None and step.error is None and step.keep


def test_redelivered_reward_resends_the_same_outcome(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    r = reward()
    first = joiner.on_reward(entry, r, r.dumps(), REW_SRC, T0 + 1)
    entry = stored(first)
    step = joiner.on_reward(entry, r, r.dumps(), list(REW_SRC), T0 + 999)
    assert step.result == "redelivered" and step.error is None
    assert step.outcome == first.outcome and step.entry == entry


def test_redelivered_decision_after_orphan_join_resends_the_outcome(joiner: Joiner) -> None:
    r = reward()
    entry = stored(joiner.on_reward(None, r, r.dumps(), REW_SRC, T0))
    first = joiner.on_decision(entry, decision(), DEC_SRC, T0 + 1)
    step = joiner.on_decision(stored(first), decision(), list(DEC_SRC), T0 + 2)
    assert step.result == "redelivered" and step.outcome == first.outcome


def test_redelivered_held_reward_is_not_a_duplicate(joiner: Joiner) -> None:
    r = reward()
    entry = stored(joiner.on_reward(None, r, r.dumps(), REW_SRC, T0))
    step = joiner.on_reward(entry, r, r.dumps(), list(REW_SRC), T0 + 3)
    assert step.result == "redelivered"
    assert step.error is None and step.outcome is None and step.entry == entry


def test_parse_decision() -> None:
    d = decision()
    assert parse_decision(orjson.dumps(d)) == d
    with pytest.raises(InvalidEvent) as info:
        parse_decision(orjson.dumps({**d, "propensity": 1.5}))
    assert info.value.code == "invalid_value"
    with pytest.raises(InvalidEvent) as info:
        parse_decision(b"{not json")
    assert info.value.code == "malformed_json"
    # The document is kept as decoded: a null, even in an optional field, is refused.
    with pytest.raises(InvalidEvent) as info:
        parse_decision(orjson.dumps({**d, "task_type": None}))
    assert info.value.code == "schema_violation"


# -- nothing resolves before the join has read far enough ---------------------------------
def test_default_waits_until_the_rewards_partition_is_read_past_the_wait(joiner: Joiner) -> None:
    """A backlog of rewards never turns into defaults: past its wait time a
    decision defaults only once the join has processed the rewards partition
    up to where it ended when the wait ran out."""
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    behind = Progress(rewards_end=500, rewards_done=120)
    step = joiner.on_due(entry, T0 + WAIT_MS, behind)
    assert step.result == "waiting" and step.outcome is None
    assert step.waits_on == "rewards"
    entry = stored(step)
    assert entry is not None and entry["mark"] == 500 and entry["due"] > T0 + WAIT_MS
    # The reward, which was in that backlog, arrives and joins.
    r = reward()
    joined = joiner.on_reward(entry, r, r.dumps(), REW_SRC, T0 + 60_000)
    assert joined.result == "joined" and joined.outcome is not None
    assert joined.outcome["defaulted"] is False


def test_default_comes_once_the_join_reads_to_the_mark(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    entry = stored(joiner.on_due(entry, T0 + WAIT_MS, Progress(rewards_end=500, rewards_done=10)))
    assert entry is not None
    # The partition grew meanwhile; the mark stays where it was first seen.
    later = Progress(rewards_end=9_000, rewards_done=499)
    entry = stored(joiner.on_due(entry, entry["due"], later))
    assert entry is not None and entry["mark"] == 500
    step = joiner.on_due(entry, entry["due"], Progress(rewards_end=9_000, rewards_done=500))
    assert step.result == "defaulted" and step.outcome is not None and step.outcome["defaulted"]


def test_the_wait_counts_from_the_decisions_time(joiner: Joiner) -> None:
    """A decision the join reads late (a backlog, a restart) waits from its
    decided_at, not from when the join saw it."""
    step = joiner.on_decision(None, decision(), DEC_SRC, T0 + 7_000)
    assert step.due == T0 + WAIT_MS


def test_unknown_position_waits_until_the_bound(joiner: Joiner) -> None:
    entry = stored(joiner.on_decision(None, decision(), DEC_SRC, T0))
    unknown = Progress()
    step = joiner.on_due(entry, T0 + WAIT_MS, unknown)
    assert step.result == "waiting"
    entry = stored(step)
    assert entry is not None
    step = joiner.on_due(entry, T0 + WAIT_MS + MAX_MS, unknown)
    assert step.result == "defaulted_at_bound" and step.outcome is not None


def test_held_reward_waits_for_the_decisions_partition(joiner: Joiner) -> None:
    r = reward()
    entry = stored(joiner.on_reward(None, r, r.dumps(), REW_SRC, T0))
    behind = Progress(decisions_end=800, decisions_done=100)
    step = joiner.on_due(entry, T0 + HOLD_MS, behind)
    assert step.result == "waiting" and step.error is None
    assert step.waits_on == "decisions"
    entry = stored(step)
    assert entry is not None and entry["mark"] == 800
    # Long after any wall-clock hold, the decision arrives and joins.
    joined = joiner.on_decision(entry, decision(), DEC_SRC, T0 + 120_000)
    assert joined.result == "joined" and joined.outcome is not None
    assert joined.outcome["defaulted"] is False


def test_held_reward_is_unknown_once_the_decisions_are_read_past_the_mark(
    joiner: Joiner,
) -> None:
    r = reward()
    entry = stored(joiner.on_reward(None, r, r.dumps(), REW_SRC, T0))
    entry = stored(joiner.on_due(entry, T0 + HOLD_MS, Progress(decisions_end=800)))
    assert entry is not None
    step = joiner.on_due(entry, entry["due"], Progress(decisions_end=900, decisions_done=800))
    assert step.result == "unknown_request" and not step.keep
    assert step.error is not None and step.error.code == "unknown_request"


def test_held_reward_gives_up_at_the_bound(joiner: Joiner) -> None:
    r = reward()
    entry = stored(joiner.on_reward(None, r, r.dumps(), REW_SRC, T0))
    step = joiner.on_due(entry, T0 + MAX_MS, Progress(decisions_end=800, decisions_done=1))
    assert step.result == "unknown_request_at_bound"
    assert step.error is not None and str(MAX_MS) in step.error.detail


# -- the table's entries ------------------------------------------------------------------
def test_entries_written_with_the_short_keys_are_read(joiner: Joiner) -> None:
    """Changelogs written before entries had field names hold the short keys:
    they read as the same entries, and the join goes on from them."""
    r = reward()
    pending = {"s": "pending", "d": decision(), "due": T0 + WAIT_MS, "until": T0 + MAX_MS, "p": 3}
    orphan = {
        "s": "orphan",
        "r": r.to_dict(),
        "src": REW_SRC,
        "raw": r.dumps().decode(),
        "due": T0 + HOLD_MS,
        "until": T0 + MAX_MS,
        "p": 3,
        "mark": 800,
    }
    done_step = joiner.on_reward(stored(joiner.on_decision(None, decision(), DEC_SRC, T0)), r,
                                 r.dumps(), REW_SRC, T0 + 1)  # fmt: skip
    o = done_step.outcome
    done = {"s": "done", "how": "rewarded", "due": T0 + RETAIN_MS, "p": 3, "by": [REW_SRC], "o": o}

    assert valid_entry(orjson.dumps(pending)) == {
        "state": "pending",
        "decision": decision(),
        "due": T0 + WAIT_MS,
        "until": T0 + MAX_MS,
        "partition": 3,
    }
    assert valid_entry(orjson.dumps(orphan)) == {
        "state": "orphan",
        "reward": r.to_dict(),
        "source": REW_SRC,
        "raw": r.dumps().decode(),
        "due": T0 + HOLD_MS,
        "until": T0 + MAX_MS,
        "partition": 3,
        "mark": 800,
    }
    assert valid_entry(orjson.dumps(done)) == {
        "state": "done",
        "how": "rewarded",
        "due": T0 + RETAIN_MS,
        "partition": 3,
        "completed_by": [REW_SRC],
        "outcome": o,
    }
    joined = joiner.on_reward(valid_entry(orjson.dumps(pending)), r, r.dumps(), REW_SRC, T0 + 1)
    assert joined.result == "joined" and joined.outcome == o
    joined = joiner.on_decision(valid_entry(orjson.dumps(orphan)), decision(), DEC_SRC, T0 + 1)
    assert joined.result == "joined" and joined.entry is not None
    assert joined.entry["completed_by"] == [DEC_SRC, REW_SRC]
    again = joiner.on_reward(valid_entry(orjson.dumps(done)), r, r.dumps(), REW_SRC, T0 + 2)
    assert again.result == "redelivered" and again.outcome == o


def test_entries_go_through_the_table_unchanged(joiner: Joiner) -> None:
    r = reward()
    pending = joiner.on_decision(None, decision(), DEC_SRC, T0).entry
    held = joiner.on_reward(None, r, r.dumps(), REW_SRC, T0).entry
    assert pending is not None and held is not None
    done = joiner.on_reward(pending, r, r.dumps(), REW_SRC, T0 + 1).entry
    waiting = joiner.on_due(held, T0 + HOLD_MS, Progress()).entry  # mark not known yet
    for entry in (pending, held, done, waiting):
        assert entry is not None
        assert valid_entry(encode_entry(entry)) == entry
        assert b'"s"' not in encode_entry(entry)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"{not json",
        b"[]",
        b'{"state": "gone", "due": 1, "partition": 0}',
        b'{"state": "pending", "due": "1", "partition": 0}',
        b'{"state": "pending", "due": 1}',
        b'{"s": "pending", "due": 1.5, "p": 0}',
        b'{"s": "orphan", "due": 1, "partition": null}',
    ],
)
def test_unreadable_entries_are_none(raw: bytes | None) -> None:
    assert valid_entry(raw) is None
