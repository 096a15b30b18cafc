"""Updates applied and written but not yet published when the worker is
killed reach the deciders once a worker takes the partition again, without
waiting for the policy's next outcome (which may never come).

The default policy here publishes once an hour, so when the worker is
killed every update it applied is in its state store and none is in a
snapshot; the restarted worker gets no further outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.evaluation.simulator import TrafficSimulator
from app.records import Decision, now_ms
from tests.conftest import Deployment, policies_file
from tests.kafka_io import TopicReader, produce
from tests.test_batch_kill_integration import counter
from tests.test_loop_integration import latest_snapshot, snapshot_holding

TOTAL = 300


def test_a_recovered_state_ahead_of_its_snapshot_is_published(
    deployment: Deployment, tmp_path: Path
) -> None:
    hourly = {"default": {"snapshot": {"every_updates": 10**9, "every_ms": 3_600_000}}}
    policies = policies_file(tmp_path / "policies.yaml", hourly)
    deployment.env["LLMOPT_POLICIES_PATH"] = str(policies)
    asyncio.run(_run(deployment))


async def _run(d: Deployment) -> None:
    bs, t = d.broker.bootstrap, d.topics
    sim = TrafficSimulator.default(seed=9)
    requests = {r.request_id: r for r in (sim.next_request(now_ms()) for _ in range(TOTAL))}
    worker = await asyncio.to_thread(d.start_worker)
    await produce(
        bs, t.name("requests"), ((r.tenant_id.encode(), r.dumps()) for r in requests.values())
    )
    async with TopicReader(bs, t.name("decisions")) as reader:
        await reader.until(lambda m: len({x.key for x in m}) >= TOTAL, 60, f"{TOTAL} decisions")
    decisions = [Decision.loads(m.value) for m in reader.messages]
    await produce(
        bs,
        t.name("rewards"),
        (
            (x.request_id.encode(), sim.outcome(requests[x.request_id], x.arm, now_ms()).dumps())
            for x in decisions
        ),
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while counter(worker, "llmopt_policy_updates_total") < TOTAL:
        assert loop.time() < deadline, "the worker never applied every outcome"
        await asyncio.sleep(0.1)
    async with TopicReader(bs, t.name("policy_snapshots")) as snaps:
        await snaps.settle(1.0)
    before = latest_snapshot(snaps.messages)
    assert before is None or before.updates < TOTAL, f"published before the kill: {before}"
    worker.kill()

    await asyncio.to_thread(d.start_worker)
    snap = await snapshot_holding(bs, t.name("policy_snapshots"), TOTAL, 60, settle=1.0)
    assert snap.updates == TOTAL and snap.version == TOTAL, snap
