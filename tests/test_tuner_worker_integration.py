"""A parameter-tuning policy on a worker with every role, on the broker: the
learner computes the tuner's plans (GP fits) in a thread and takes them
before the policy's next update, and the loop still closes: every outcome is
applied once, and the settings the deciders serve move from the configured
one to the planned ones."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from app.evaluation.simulator import TrafficSimulator
from app.records import Decision, Request, now_ms
from tests.conftest import Deployment, policies_file
from tests.kafka_io import TopicReader, produce
from tests.test_loop_integration import latest_snapshot

WAVE = 150
START = {"temperature": 0.3, "top_p": 1.0, "max_tokens": 1024}
ARMS = [
    {"name": "gpt-4o-mini", "model": "gpt-4o-mini", "parameters": START},
    {"name": "llama-70b", "model": "llama-3.1-70b", "parameters": START},
]


def test_a_tuner_learns_on_a_worker_through_its_threaded_plans(
    deployment: Deployment, tmp_path: Path
) -> None:
    tuned = {
        "algorithm": "parameter_tuner",
        "hyperparameters": {"evaluation_size": 2, "batch_size": 2, "initial_points": 2},
        "fallback_arm": "gpt-4o-mini",
        "snapshot": {"every_updates": 10, "every_ms": 200},
        "arms": ARMS,
    }
    policies = policies_file(tmp_path / "policies.yaml", {"tuned": tuned})
    deployment.env["LLMOPT_POLICIES_PATH"] = str(policies)
    deployment.start_worker()
    asyncio.run(_run(deployment))
    log = Path(deployment.workers[0].log).read_text()
    assert "parameter plan failed" not in log


async def _run(d: Deployment) -> None:
    sim = TrafficSimulator.default(seed=6)
    first = await _wave(d, sim)
    start = {tuple(sorted((x.parameters or {}).items())) for x in first}
    assert len(start) == 1, f"before any reward one setting is served: {start}"
    await _applied(d, WAVE)
    second = await _wave(d, sim)
    await _applied(d, 2 * WAVE)
    served = {tuple(sorted((x.parameters or {}).items())) for x in second}
    assert len(served) >= 3, f"planned settings are served: {served}"


async def _wave(d: Deployment, sim: TrafficSimulator) -> list[Decision]:
    """WAVE requests of the tuned policy decided, and each rewarded for the
    setting it was served."""
    bs, t = d.broker.bootstrap, d.topics
    requests: dict[str, Request] = {}
    for _ in range(WAVE):
        r = sim.next_request(now_ms(), policy_id="tuned")
        requests[r.request_id] = r
    await produce(
        bs, t.name("requests"), ((r.tenant_id.encode(), r.dumps()) for r in requests.values())
    )
    ids = {rid.encode() for rid in requests}

    def ours(ms: list[Any]) -> list[Any]:
        return [m for m in ms if m.key in ids]

    async with TopicReader(bs, t.name("decisions")) as reader:
        await reader.until(lambda ms: len(ours(ms)) >= WAVE, 60, f"{WAVE} decisions")
    decisions = [Decision.loads(m.value) for m in ours(reader.messages)]
    await produce(
        bs,
        t.name("rewards"),
        (
            (
                x.request_id.encode(),
                sim.outcome(requests[x.request_id], x.arm, now_ms(), x.parameters).dumps(),
            )
            for x in decisions
        ),
    )
    return decisions


async def _applied(d: Deployment, n: int) -> None:
    """Until the tuned policy's snapshot holds ``n`` updates, each once."""
    async with TopicReader(d.broker.bootstrap, d.topics.name("policy_snapshots")) as snaps:
        await snaps.until(
            lambda ms: (s := latest_snapshot(ms, "tuned")) is not None and s.updates >= n,
            120,
            f"a snapshot of the tuned policy holding {n} updates",
        )
        await snaps.settle(1.0)
    snap = latest_snapshot(snaps.messages, "tuned")
    assert snap is not None and snap.updates == n, snap
