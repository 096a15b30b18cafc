"""A worker SIGKILLed while the join, and then the learner, are inside a
batch of a backlog loses nothing and doubles nothing: the batch is redone
from the state written so far, and every rewarded request is applied to the
policy exactly once.

The kills are timed from the worker's own counters: the first when the join
has emitted part of the outcomes of a backlog of rewards (the join takes
them in batches of thousands), the second, after a second backlog is sent
to the restarted worker, when its learner has applied part of those."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

from app.evaluation.simulator import TrafficSimulator
from app.records import Decision, Outcome, now_ms
from tests.conftest import Deployment, Worker
from tests.kafka_io import TopicReader, produce
from tests.test_loop_integration import snapshot_holding

TOTAL = 16000  # halves of 8,000: the join and the learner take batches of 4,000


def counter(worker: Worker, name: str) -> float:
    """The sum of a counter's samples on the worker's /metrics (0 when absent)."""
    text = worker.metrics()
    return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))


def kill_when(worker: Worker, ready: Callable[[float], bool], name: str, timeout: float) -> float:
    """SIGKILL ``worker`` as soon as counter ``name`` satisfies ``ready``;
    the value seen last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = counter(worker, name)
        if ready(value):
            worker.kill()
            return value
        time.sleep(0.02)
    raise AssertionError(f"{name} never reached the kill point in {timeout} s")


def test_kills_inside_join_and_learner_batches_apply_each_outcome_once(
    deployment: Deployment,
) -> None:
    asyncio.run(_run(deployment))


async def _run(d: Deployment) -> None:
    bs, t = d.broker.bootstrap, d.topics
    sim = TrafficSimulator.default(seed=21)
    requests = {r.request_id: r for r in (sim.next_request(now_ms()) for _ in range(TOTAL))}
    worker = d.start_worker()
    await produce(
        bs, t.name("requests"), ((r.tenant_id.encode(), r.dumps()) for r in requests.values())
    )
    async with TopicReader(bs, t.name("decisions")) as reader:
        await reader.until(lambda m: len({x.key for x in m}) >= TOTAL, 120, f"{TOTAL} decisions")
    decisions = {x.request_id: x for x in (Decision.loads(m.value) for m in reader.messages)}

    # Half the rewards at once: the join works through them in batches.
    ids = list(decisions)
    first, second = ids[: TOTAL // 2], ids[TOTAL // 2 :]

    async def reward(batch: list[str]) -> None:
        await produce(
            bs,
            t.name("rewards"),
            (
                (rid.encode(), sim.outcome(requests[rid], decisions[rid].arm, now_ms()).dumps())
                for rid in batch
            ),
        )

    half = len(first)
    await reward(first)
    joined = await asyncio.to_thread(
        kill_when, worker, lambda v: 0.15 * half < v < 0.85 * half, "llmopt_outcomes_total", 120
    )
    worker = await asyncio.to_thread(d.start_worker)
    # The other half once the new worker runs, so that its learner is
    # watched from its first update of them.
    base = counter(worker, "llmopt_policy_updates_total")
    await reward(second)
    applied = await asyncio.to_thread(
        kill_when,
        worker,
        lambda v: base < v < base + 0.85 * len(second),
        "llmopt_policy_updates_total",
        120,
    )
    worker = await asyncio.to_thread(d.start_worker)

    snap = await snapshot_holding(bs, t.name("policy_snapshots"), TOTAL, 180)
    async with TopicReader(bs, t.name("outcomes")) as outcomes:
        await outcomes.settle(2.0)
    docs = [Outcome.loads(m.value, 1 << 20) for m in outcomes.messages]
    seen = (
        f"killed with {joined:.0f} outcomes joined, then with {applied:.0f} applied "
        f"(by that worker); {len(docs)} outcome messages"
    )
    assert {o.request_id for o in docs} == set(requests), f"every request joined: {seen}"
    assert not any(o.defaulted for o in docs), f"no reward replaced by the default: {seen}"
    assert snap.updates == TOTAL, f"applied once each? {snap}; {seen}"
