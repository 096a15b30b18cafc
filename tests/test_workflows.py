"""RL policies in the stream: multi-step workflows keyed by workflow id, from
the request through the decider, the join and the learner's episodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.decider import Decider
from app.episodes import Episodes, Transition
from app.join import _outcome_doc
from app.learner import Learner
from app.policies.config import PoliciesConfig, PolicyConfigError
from app.records import Decision, InvalidEvent, Outcome, Request

T0 = 1_700_000_000_000


def outcome(
    wid: str, step: int, arm: str, reward: float, state: list[float], at: int = T0, **wf: Any
) -> Outcome:
    return Outcome(
        request_id=f"{wid}-{step}",
        tenant_id="t",
        policy_id="wf",
        policy_version=0,
        arm=arm,
        available_arms=["go", "stop"],
        propensity=0.5,
        explored=False,
        reward=reward,
        defaulted=False,
        decided_at=at,
        outcome_at=at,
        features=state,
        workflow={"id": wid, "step": step, **wf},
    )


def config(algorithm: str = "q_learning", **extra: Any) -> PoliciesConfig:
    hyper = {
        "q_learning": {
            "context_dim": 2,
            "bins": 2,
            "learning_rate": 0.2,
            "gamma": 0.9,
            "epsilon": 0.1,
            "epsilon_decay_steps": 0,
            "replay_steps": 4,
        },
        "reinforce": {"context_dim": 2},
    }[algorithm]
    return PoliciesConfig.from_dict(
        {
            "policies": {
                "wf": {
                    "algorithm": algorithm,
                    "context": "workflow",
                    "hyperparameters": hyper,
                    "episode": {"terminal_arms": ["stop"], "timeout_seconds": 60},
                    "arms": [{"name": "go", "model": "m-go"}, {"name": "stop", "model": "none"}],
                    **extra,
                }
            }
        }
    )


# -- the episode linker --------------------------------------------------------------------------


def test_steps_become_transitions_as_the_next_state_arrives() -> None:
    ep = Episodes(terminal_arms=("stop",))
    assert ep.add(outcome("w", 0, "go", 0.1, [0.0, 0.0])) == []
    assert ep.add(outcome("w", 1, "go", 0.2, [1.0, 0.0])) == [
        Transition([0.0, 0.0], "go", 0.1, [1.0, 0.0], False)
    ]
    assert ep.add(outcome("w", 2, "stop", 0.9, [1.0, 1.0])) == [
        Transition([1.0, 0.0], "go", 0.2, [1.0, 1.0], False),
        Transition([1.0, 1.0], "stop", 0.9, [1.0, 1.0], True),
    ]
    assert ep.open_count == 0


def test_interleaved_workflows_are_kept_apart() -> None:
    ep = Episodes()
    ep.add(outcome("a", 0, "go", 0.1, [0.0, 0.0]))
    ep.add(outcome("b", 0, "go", 0.5, [0.5, 0.5]))
    (ta,) = ep.add(outcome("a", 1, "go", 0.2, [1.0, 0.0], final=True))[:1]
    assert (ta.state, ta.reward, ta.next_state) == ([0.0, 0.0], 0.1, [1.0, 0.0])
    assert ep.open_count == 1


def test_final_flag_ends_the_episode_and_a_restart_closes_the_old_one() -> None:
    ep = Episodes()
    assert ep.add(outcome("w", 0, "go", 0.3, [0.0, 0.0], final=True)) == [
        Transition([0.0, 0.0], "go", 0.3, [0.0, 0.0], True)
    ]
    ep.add(outcome("w", 0, "go", 0.3, [0.0, 0.0]))
    closed = ep.add(outcome("w", 0, "go", 0.4, [0.0, 1.0]))  # step 0 again: a new episode
    assert closed == [Transition([0.0, 0.0], "go", 0.3, [0.0, 0.0], True)]
    assert ep.open_count == 1


@pytest.mark.parametrize("monte_carlo", [False, True])
def test_steps_arriving_out_of_order_are_linked_all_the_same(monte_carlo: bool) -> None:
    """Rewards come back through different partitions of the join, so a
    workflow's outcomes can arrive in any order."""
    ep = Episodes(monte_carlo=monte_carlo)
    s0, s1, s2 = [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]
    got = ep.add(outcome("w", 2, "stop", 0.9, s2, final=True))
    got += ep.add(outcome("w", 0, "go", 0.1, s0))
    assert ep.open_count == 1
    got += ep.add(outcome("w", 1, "go", 0.2, s1))
    expected = [
        Transition(s0, "go", 0.1, s1, False),
        Transition(s1, "go", 0.2, s2, False),
        Transition(s2, "stop", 0.9, s2, True),
    ]
    assert sorted(map(repr, got)) == sorted(map(repr, expected))
    if monte_carlo:  # a whole episode, in order
        assert [t.state for t in got] == [s0, s1, s2]
    assert ep.open_count == 0


def test_overdue_episodes_expire_oldest_first() -> None:
    ep = Episodes(timeout_ms=1_000)
    ep.add(outcome("old", 0, "go", 0.1, [0.0, 0.0], at=T0))
    ep.add(outcome("new", 0, "go", 0.2, [1.0, 0.0], at=T0 + 900))
    assert ep.expire(T0 + 1_000) == []
    assert ep.expire(T0 + 1_001) == [Transition([0.0, 0.0], "go", 0.1, [0.0, 0.0], True)]
    assert ep.open_count == 1


def test_monte_carlo_agents_get_whole_episodes_in_order() -> None:
    ep = Episodes(monte_carlo=True)
    assert ep.add(outcome("w", 0, "go", 0.1, [0.0, 0.0])) == []
    assert ep.add(outcome("x", 0, "go", 0.7, [0.5, 0.5])) == []
    assert ep.add(outcome("w", 1, "go", 0.2, [1.0, 0.0])) == []
    assert ep.add(outcome("w", 2, "go", 0.3, [1.0, 1.0], final=True)) == [
        Transition([0.0, 0.0], "go", 0.1, [1.0, 0.0], False),
        Transition([1.0, 0.0], "go", 0.2, [1.0, 1.0], False),
        Transition([1.0, 1.0], "go", 0.3, [1.0, 1.0], True),
    ]


def test_the_open_steps_round_trip_and_are_bounded() -> None:
    ep = Episodes(max_open=2)
    for w in ("a", "b"):
        ep.add(outcome(w, 0, "go", 0.1, [0.0, 0.0]))
    twin = Episodes(max_open=2)
    twin.load(ep.to_dict())
    assert twin.to_dict() == ep.to_dict()
    closed = ep.add(outcome("c", 0, "go", 0.1, [0.0, 0.0]))
    assert [t.done for t in closed] == [True] and ep.open_count == 2


# -- the config, decider and join ----------------------------------------------------------------


def test_workflow_context_needs_a_contextual_algorithm_and_its_dimension() -> None:
    with pytest.raises(PolicyConfigError, match="context_dim"):
        PoliciesConfig.from_dict(
            {
                "policies": {
                    "p": {
                        "algorithm": "thompson_sampling",
                        "context": "workflow",
                        "arms": [{"name": "a", "model": "m"}],
                    }
                }
            }
        )
    with pytest.raises(PolicyConfigError, match="terminal_arms"):
        config(episode={"terminal_arms": ["nope"]})
    with pytest.raises(PolicyConfigError, match="context must be one of"):
        config(context="session")


def test_the_decider_decides_on_the_workflow_state_and_logs_the_workflow() -> None:
    decider = Decider(config(), seed=0)
    req = Request(
        request_id="r",
        tenant_id="t",
        task_type="qa",
        created_at=T0,
        policy_id="wf",
        workflow={"id": "w1", "step": 1, "state": [1.0, 0.0]},
    )
    missing = Request(request_id="r2", tenant_id="t", task_type="qa", created_at=T0, policy_id="wf")
    doc, err = decider.decide([req, missing], now_ms=T0)
    assert isinstance(doc, dict) and isinstance(err, InvalidEvent)
    assert doc["features"] == [1.0, 0.0]
    assert doc["workflow"] == {"id": "w1", "step": 1}
    assert "workflow.state" in err.detail and err.code == "invalid_value"
    Decision.from_dict(doc)  # a valid decision
    out = Outcome.from_dict(_outcome_doc(doc, 0.5, {}, False, T0 + 1))
    assert out.workflow == {"id": "w1", "step": 1} and out.features == [1.0, 0.0]


# -- learning through the learner ----------------------------------------------------------------

# A two-step workflow: at the start [0, 0], "stop" is worth 0.5 at once; "go"
# gives nothing but reaches [1, 0], where "stop" is worth 1.0 (and "go" again
# 0, ending it). With γ = 0.9, going first is worth 0.9: better, but only to a
# learner that links the steps of a workflow.
START, SECOND = [0.0, 0.0], [1.0, 0.0]


def play(learner: Learner, episodes: int, seed: int, link: bool) -> None:
    rng = np.random.default_rng(seed)
    offset = 0
    for e in range(episodes):
        state, step = START, 0
        while True:
            arm = "go" if rng.random() < 0.5 else "stop"
            final = arm == "stop" or step == 1
            reward = (0.5 if step == 0 else 1.0) if arm == "stop" else 0.0
            # The gateway marks its last allowed step; "stop" is a terminal arm.
            last = {"final": True} if step == 1 else {}
            o = outcome(f"w{e}", step, arm, reward, state, at=T0 + offset, **last)
            if not link:
                o.workflow = None
            assert learner.apply(o, 0, offset) == "applied"
            offset += 1
            if final:
                break
            state, step = SECOND, 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linked_steps_teach_the_value_of_going_on(seed: int) -> None:
    linked, alone = Learner(config()), Learner(config())
    for learner, link in ((linked, True), (alone, False)):
        learner.load("wf", None, T0)
        play(learner, 400, seed, link)
    policy = linked._live["wf"].policy
    assert policy.select(np.array(START), explore=False).arm == "go"
    assert policy.select(np.array(SECOND), explore=False).arm == "stop"
    # Without the workflow, "go" looks worthless: the one-step learner stops.
    assert alone._live["wf"].policy.select(np.array(START), explore=False).arm == "stop"
    assert linked.open_workflows("wf") == 0


def test_open_workflows_survive_a_restart_of_the_learner() -> None:
    learner = Learner(config())
    learner.load("wf", None, T0)
    learner.apply(outcome("w", 0, "go", 0.0, START), 0, 0)
    state = learner.state("wf")
    restored = Learner(config())
    restored.load("wf", state, T0)
    assert restored.open_workflows("wf") == 1
    restored.apply(outcome("w", 1, "stop", 1.0, SECOND, at=T0 + 1), 0, 1)
    assert restored.open_workflows("wf") == 0
    assert restored._live["wf"].policy._learned == 2  # type: ignore[attr-defined]


def test_monte_carlo_policies_learn_whole_episodes_through_the_learner() -> None:
    learner = Learner(config("reinforce"))
    learner.load("wf", None, T0)
    play(learner, 30, seed=0, link=True)
    policy: Any = learner._live["wf"].policy
    assert policy.monte_carlo and policy._episodes > 0 and learner.open_workflows("wf") == 0


def test_a_state_of_the_wrong_length_is_rejected() -> None:
    learner = Learner(config())
    learner.load("wf", None, T0)
    assert learner.apply(outcome("w", 0, "go", 0.0, [0.0, 0.0, 0.0]), 0, 0) == "rejected"


def test_the_request_vector_length_is_checked_against_the_extractor() -> None:
    from app.decider import check_dimensions

    cfg = PoliciesConfig.from_dict(
        {
            "policies": {
                "lin": {
                    "algorithm": "lin_ucb",
                    "hyperparameters": {"context_dim": 15},
                    "arms": [{"name": "a", "model": "m"}, {"name": "b", "model": "m"}],
                }
            }
        }
    )
    check_dimensions(cfg, 15)  # a feature spec adding two columns to the policy vector
    with pytest.raises(PolicyConfigError, match="context_dim 15 differs"):
        Decider(cfg)  # no spec: 13 features
    with pytest.raises(PolicyConfigError, match="below the request vector"):
        PoliciesConfig.from_dict(
            {
                "policies": {
                    "lin": {
                        "algorithm": "lin_ucb",
                        "hyperparameters": {"context_dim": 5},
                        "arms": [{"name": "a", "model": "m"}],
                    }
                }
            }
        )
