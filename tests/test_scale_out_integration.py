"""Two workers in one group share the join's and the learner's partitions;
when the one that learns the policy is SIGKILLed mid-stream, the other takes
its partitions over, recovers their state from the changelogs (it has no
local copy of them), and every rewarded request is still joined and applied
to the policy exactly once."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from app.evaluation.simulator import TrafficSimulator
from app.records import Decision, Outcome, now_ms
from app.stream.broker import free_port
from tests.conftest import Deployment, Worker
from tests.kafka_io import TopicReader, produce
from tests.test_batch_kill_integration import counter, kill_when
from tests.test_loop_integration import snapshot_holding

TOTAL = 12_000


def start_second_worker(d: Deployment) -> Worker:
    """A worker of the same app with its own data directory and web port,
    as on another machine."""
    env = dict(d.env)
    env["LLMOPT_DATA_DIR"] = str(Path(d.settings.data_dir).parent / "data-second")
    env["LLMOPT_WEB_PORT"] = str(free_port())
    worker = Worker(env, Path(d.settings.data_dir) / f"worker-{len(d.workers)}.log")
    d.workers.append(worker)
    worker.wait_ready(60.0)
    return worker


def test_two_workers_share_the_loop_and_one_survives_the_others_kill(
    deployment: Deployment,
) -> None:
    asyncio.run(_run(deployment))


async def _run(d: Deployment) -> None:
    bs, t = d.broker.bootstrap, d.topics
    sim = TrafficSimulator.default(seed=5)
    requests = {r.request_id: r for r in (sim.next_request(now_ms()) for _ in range(TOTAL))}
    workers = [d.start_worker(), await asyncio.to_thread(start_second_worker, d)]
    # Both hold (and have recovered) partitions of the join and of the learner.
    for consumer, role in (("join_rewards", "decisions"), ("learn_from_outcomes", "outcomes")):
        await _wait_shared(workers, consumer, role, t[role].partitions)
    await produce(
        bs, t.name("requests"), ((r.tenant_id.encode(), r.dumps()) for r in requests.values())
    )
    async with TopicReader(bs, t.name("decisions")) as reader:
        await reader.until(lambda m: len({x.key for x in m}) >= TOTAL, 120, f"{TOTAL} decisions")
    decisions = {x.request_id: x for x in (Decision.loads(m.value) for m in reader.messages)}
    ids = list(decisions)

    async def reward(batch: list[str]) -> None:
        await produce(
            bs,
            t.name("rewards"),
            (
                (rid.encode(), sim.outcome(requests[rid], decisions[rid].arm, now_ms()).dumps())
                for rid in batch
            ),
        )

    first, second = ids[: TOTAL // 2], ids[TOTAL // 2 :]
    await reward(first)
    # Both workers join (a request's partition decides which one does).
    joined = await _wait_total(workers, "llmopt_outcomes_total", len(first))
    assert all(n > 0 for n in joined), f"each worker joins its partitions' requests: {joined}"
    # The worker that learns the policy goes, in the middle of the second half.
    # It is known once the first half is applied: joining ahead of learning,
    # both workers may still show no update when the join is done.
    updates = await _wait_total(workers, "llmopt_policy_updates_total", len(first))
    learner = max(range(2), key=lambda i: updates[i])
    assert updates[learner] > 0, f"one worker learns the policy: {updates}"
    victim, survivor = workers[learner], workers[1 - learner]
    base = updates[learner]
    await reward(second)
    await asyncio.to_thread(
        kill_when,
        victim,
        lambda v: base < v < base + 0.85 * len(second),
        "llmopt_policy_updates_total",
        120,
    )

    snap = await snapshot_holding(bs, t.name("policy_snapshots"), TOTAL, 180)
    async with TopicReader(bs, t.name("outcomes")) as outcomes:
        await outcomes.settle(2.0)
    docs = [Outcome.loads(m.value, 1 << 20) for m in outcomes.messages]
    assert {o.request_id for o in docs} == set(requests), "every request joined"
    assert not any(o.defaulted for o in docs), "no reward replaced by the default"
    assert snap.updates == TOTAL, f"each applied once: {snap}"
    text = survivor.metrics()
    assert "llmopt_state_regressions_total{" not in text, "no state older than a snapshot"


async def _wait_shared(
    workers: list[Worker], consumer: str, role: str, partitions: int, timeout: float = 120.0
) -> None:
    """Until every worker holds some of ``consumer``'s partitions of
    ``role`` and together they hold all of them (no rebalance in between)."""
    pattern = rf'^llmopt_assigned_partitions\{{consumer="{consumer}",topic="{role}"\}} (\S+)$'
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    held: list[float] = []
    while loop.time() < deadline:
        held = [sum(float(v) for v in re.findall(pattern, w.metrics(), re.M)) for w in workers]
        if all(n > 0 for n in held) and sum(held) == partitions:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{consumer}'s {role} partitions not shared by both workers: {held}")


async def _wait_total(
    workers: list[Worker], name: str, n: int, timeout: float = 120.0
) -> list[float]:
    """Each worker's counter ``name`` once together they reach ``n``
    (or the timeout passes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        values = [counter(w, name) for w in workers]
        if sum(values) >= n or loop.time() > deadline:
            return values
        await asyncio.sleep(0.2)
