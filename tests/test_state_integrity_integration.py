"""Stored state that cannot be trusted: a changelog record older than what the
learner already published is reported as lost updates; unreadable records in
the changelogs and the snapshots topic are skipped, counted, and the worker
keeps deciding and learning."""

from __future__ import annotations

import asyncio
import base64
import re
import time

import orjson

from app.evaluation.simulator import TrafficSimulator
from app.policies.config import PoliciesConfig
from app.records import Decision, now_ms
from tests.conftest import TEST_POLICIES, Deployment
from tests.kafka_io import TopicReader, produce
from tests.test_loop_integration import latest_snapshot


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _rewarded_round(d: Deployment, n: int, seed: int) -> None:
    """n requests of the default policy, each rewarded once decided."""
    bs, t = d.broker.bootstrap, d.topics
    sim = TrafficSimulator.default(seed=seed)
    reqs = {r.request_id: r for r in (sim.next_request(now_ms()) for _ in range(n))}
    await produce(
        bs, t.name("requests"), ((r.tenant_id.encode(), r.dumps()) for r in reqs.values())
    )
    async with TopicReader(bs, t.name("decisions")) as reader:
        await reader.until(
            lambda ms: len({m.key for m in ms} & {k.encode() for k in reqs}) >= n, 90, "decisions"
        )
    rewards = []
    for m in reader.messages:
        x = Decision.loads(m.value)
        if x.request_id in reqs:
            rewards.append((m.key, sim.outcome(reqs.pop(x.request_id), x.arm, now_ms()).dumps()))
    await produce(bs, t.name("rewards"), rewards)


def test_state_older_than_a_published_snapshot_is_reported(deployment: Deployment) -> None:
    d = deployment
    worker = d.start_worker()
    asyncio.run(_rewarded_round(d, 200, seed=3))

    async def published() -> int:
        async with TopicReader(d.broker.bootstrap, d.topics.name("policy_snapshots")) as reader:
            await reader.until(
                lambda m: (s := latest_snapshot(m)) is not None and s.updates >= 200,
                60,
                "a snapshot with 200 updates",
            )
        snap = latest_snapshot(reader.messages)
        assert snap is not None
        return snap.version

    version = asyncio.run(published())
    worker.stop()

    # What a changelog that lost its last records would recover: a state
    # far behind the published snapshots (the prior, at version 5).
    pc = PoliciesConfig.load(TEST_POLICIES).get("default")
    assert pc is not None
    old = {
        "algorithm": pc.algorithm,
        "policy": base64.b64encode(pc.build().snapshot()).decode(),
        "updates": 5,
        "version": 5,
        "offsets": {},
    }
    app_id = d.settings.app_id
    poison = [
        (f"{app_id}-policy-state-changelog", b"default", orjson.dumps(old)),
        (f"{app_id}-policy-state-changelog", b"short-wait", b"\x00not json"),
        (f"{app_id}-join-pending-changelog", b"1:tr-1", b'{"s": "pending"}'),
        (d.topics.name("policy_snapshots"), b"default", b'{"policy_id": "default"}'),
    ]

    async def inject() -> None:
        for topic, key, value in poison:
            await produce(d.broker.bootstrap, topic, [(key, value)])

    asyncio.run(inject())
    # The changelog record goes to the partition Faust's key hashing picks;
    # a partition of the outcomes topic owns the key "default" either way.
    worker = d.start_worker()
    asyncio.run(_rewarded_round(d, 50, seed=4))
    deadline = time.monotonic() + 60
    while True:
        text = worker.metrics()
        if _metric(text, "llmopt_policy_state_regressions_total", policy_id="default") >= 1:
            break
        assert time.monotonic() < deadline, (
            f"no regression reported (published version {version}):\n{worker.tail()}"
        )
        time.sleep(1)
    assert re.search(r"recovered state is at version \d+, but version \d+", worker.log.read_text())
    assert worker.alive()
    # The unreadable records were skipped and counted; decisions kept flowing.
    assert _metric(text, "llmopt_poisoned_state_total", store="join-pending") >= 1
    assert _metric(text, "llmopt_poisoned_state_total", store="policy-snapshots") >= 1
    assert _metric(text, "llmopt_decisions_total") >= 50
