"""An RL policy learning from multi-step workflows through the real stream:
requests carry a workflow id, step and state; the learner links each
workflow's outcomes into transitions (tests/fixtures/policies.yaml `workflow`)."""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from app.policies.q_learning import QLearning
from app.records import Decision, Request, Reward, now_ms
from tests.conftest import Deployment
from tests.kafka_io import TopicReader, produce
from tests.test_loop_integration import latest_snapshot

EPISODES = 120
START, SECOND = [0.0, 0.0], [1.0, 0.0]


def test_an_rl_policy_learns_the_value_of_a_second_step_from_the_stream(
    deployment: Deployment,
) -> None:
    deployment.start_worker()
    asyncio.run(_workflows(deployment))


def _request(e: int, step: int) -> Request:
    return Request(
        request_id=f"wf{e}-{step}",
        tenant_id=f"t{e % 3}",
        task_type="qa",
        created_at=now_ms(),
        policy_id="workflow",
        workflow={"id": f"wf{e}", "step": step, "state": START if step == 0 else SECOND}
        | ({"final": True} if step == 1 else {}),
    )


def _quality(step: int, arm: str) -> float:
    # Stopping at once is worth 0.5; going on is worth nothing now and 1.0 at
    # the second step: 0.9 in all at γ = 0.9, so going on is the better plan.
    if arm == "go":
        return 0.0
    return 0.5 if step == 0 else 1.0


async def _decide(d: Deployment, requests: list[Request]) -> list[Decision]:
    bs, t = d.broker.bootstrap, d.topics
    ids = {r.request_id.encode() for r in requests}
    await produce(bs, t.name("requests"), ((r.tenant_id.encode(), r.dumps()) for r in requests))
    async with TopicReader(bs, t.name("decisions")) as reader:
        await reader.until(lambda ms: len({m.key for m in ms} & ids) >= len(ids), 60, "decisions")
    got = [Decision.loads(m.value) for m in reader.messages if m.key in ids]
    await produce(
        bs,
        t.name("rewards"),
        (
            (
                x.request_id.encode(),
                Reward(
                    request_id=x.request_id,
                    tenant_id=x.tenant_id,
                    sent_at=now_ms(),
                    quality=_quality(x.workflow["step"] if x.workflow else 0, x.arm),
                ).dumps(),
            )
            for x in got
        ),
    )
    return got


async def _workflows(d: Deployment) -> None:
    first = await _decide(d, [_request(e, 0) for e in range(EPISODES)])
    assert all(x.workflow == {"id": x.request_id[:-2], "step": 0} for x in first)
    assert all(x.features == START for x in first)
    went_on = [int(x.request_id[2:-2]) for x in first if x.arm == "go"]
    assert 20 < len(went_on) < EPISODES - 20, "ε = 1: both arms are tried"
    second = await _decide(d, [_request(e, 1) for e in went_on])
    outcomes = len(first) + len(second)

    async with TopicReader(d.broker.bootstrap, d.topics.name("policy_snapshots")) as reader:
        await reader.until(
            lambda ms: (s := latest_snapshot(ms, "workflow")) is not None and s.updates >= outcomes,
            60,
            f"a workflow snapshot with {outcomes} updates",
        )
    snap = latest_snapshot(reader.messages, "workflow")
    assert snap is not None and snap.updates == outcomes
    policy = QLearning.restore(base64.b64decode(snap.state))
    assert isinstance(policy, QLearning)
    # Every step became a transition, and the linked steps carried the second
    # step's value back to the first: a one-step learner would stop at once.
    assert policy._learned == outcomes
    q_go, q_stop = policy.scores(["go", "stop"], np.array(START)).tolist()
    assert q_go > q_stop, (q_go, q_stop)
