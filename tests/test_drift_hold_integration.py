"""A drift never overtakes the outcomes it was detected on, on a real
Kafka-protocol broker with a real worker: a drift event that names outcomes
the learner has not read yet is held (and not committed, so a killed
learner reads it again) until those outcomes are applied; one naming
outcomes that never come is applied after the bound."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.records import DriftEvent, Outcome, PolicySnapshot, now_ms
from app.stream.batched_service import group_id
from app.stream.partitioning import partitions_for
from tests.conftest import Deployment, Worker
from tests.kafka_io import TopicReader, produce

POLICY, ARM = "default", "claude-haiku"
ARMS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku", "llama-70b",
        "llama-70b-creative"]  # fmt: skip
N = 50  # outcomes the drift was detected on
HELD = 'llmopt_events_total{agent="learn_from_outcomes",result="drift_held"} 1.0'
ADAPTED = 'llmopt_events_total{agent="learn_from_outcomes",result="drift_adapted"} 1.0'
PAST_BOUND = 'llmopt_events_total{agent="learn_from_outcomes",result="drift_held_past_bound"} 1.0'


def outcomes(n: int) -> list[tuple[bytes, bytes]]:
    t0 = now_ms()
    return [
        (POLICY.encode(), Outcome(
            request_id=f"held-{i}", tenant_id="acme", policy_id=POLICY, policy_version=0,
            arm=ARM, available_arms=ARMS, propensity=0.9, explored=False, reward=1.0,
            defaulted=False, decided_at=t0 + i, outcome_at=t0 + i + 1,
            components={"quality": 1.0, "error": False},
        ).dumps())
        for i in range(n)
    ]  # fmt: skip


def drift(outcome_offset: int) -> tuple[bytes, bytes]:
    t = now_ms()
    event = DriftEvent(
        event_id=f"drift-{outcome_offset}", kind="drift", policy_id=POLICY, signal="reward",
        detector="cusum", observed_at=t, created_at=t, arm=ARM, direction="down",
        outcome_offset=outcome_offset,
    )  # fmt: skip
    return POLICY.encode(), event.dumps()


async def until_metric(worker: Worker, lines: tuple[str, ...], timeout: float) -> str:
    """Wait until the worker's metrics show one of ``lines``; that line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = worker.metrics()
        for line in lines:
            if line in text:
                return line
        await asyncio.sleep(0.2)
    raise AssertionError(f"none of {lines} in the metrics after {timeout}s")


async def adaptation_and_snapshot(d: Deployment) -> tuple[DriftEvent, PolicySnapshot]:
    """The learner's adaptation event, and the snapshot of the state it made."""
    bs, t = d.broker.bootstrap, d.topics
    async with TopicReader(bs, t.name("drift")) as reader:
        await reader.until(
            lambda ms: any(b'"adaptation"' in m.value for m in ms), 60, "an adaptation event"
        )
    (adaptation,) = [
        e for e in (DriftEvent.loads(m.value) for m in reader.messages) if e.kind == "adaptation"
    ]

    def version(m: Any) -> int:
        return int(orjson.loads(m.value)["version"])

    async with TopicReader(bs, t.name("policy_snapshots")) as reader:
        await reader.until(
            lambda ms: any(version(m) == adaptation.policy_version for m in ms),
            30, "the snapshot of the adapted state",
        )  # fmt: skip
    snap = next(
        PolicySnapshot.loads(m.value, 1 << 24)
        for m in reader.messages
        if version(m) == adaptation.policy_version
    )
    return adaptation, snap


def assert_adapted_after_the_outcomes(adaptation: DriftEvent, snap: PolicySnapshot) -> None:
    # N updates, then the adaptation: the reset arm has seen all N outcomes
    # and keeps none of their evidence (a drift applied first: version 1, and
    # the N outcomes learned on the reset arm afterwards).
    assert adaptation.policy_version == N + 1, adaptation
    assert (adaptation.action, adaptation.applied) == ("reset", "reset_arm")
    assert snap.arm_stats[ARM]["pulls"] == N
    assert (snap.arm_stats[ARM]["alpha"], snap.arm_stats[ARM]["beta"]) == (1.0, 1.0)


def test_a_drift_ahead_of_the_learner_waits_for_its_outcomes(deployment: Deployment) -> None:
    worker = deployment.start_worker(roles="learn")
    asyncio.run(_ahead(deployment, worker))


async def _ahead(d: Deployment, worker: Worker) -> None:
    bs, t = d.broker.bootstrap, d.topics
    await produce(bs, t.name("drift"), [drift(outcome_offset=N)])
    # The learner has read the drift before any of its outcomes exist.
    seen = await until_metric(worker, (HELD, ADAPTED), 30)
    await produce(bs, t.name("outcomes"), outcomes(N))
    assert_adapted_after_the_outcomes(*await adaptation_and_snapshot(d))
    assert seen == HELD
    text = worker.metrics()
    assert ADAPTED in text and "drift_held_past_bound" not in text


def test_a_held_drift_survives_a_killed_learner(deployment: Deployment) -> None:
    first = deployment.start_worker(roles="learn")
    asyncio.run(_killed(deployment, first))


async def _killed(d: Deployment, first: Worker) -> None:
    bs, t = d.broker.bootstrap, d.topics
    await produce(bs, t.name("drift"), [drift(outcome_offset=N)])
    await until_metric(first, (HELD, ADAPTED), 30)
    await asyncio.sleep(1.0)  # a batch or two later: nothing of the drift is committed
    first.kill()
    (p,) = partitions_for([POLICY.encode()], t["drift"].partitions)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bs, group_id=group_id(d.settings.app_id, "learn_from_outcomes")
    )
    await consumer.start()
    try:
        committed = await consumer.committed(TopicPartition(t.name("drift"), p))
    finally:
        await consumer.stop()
    assert committed in (None, 0), f"the held drift (offset 0) was committed past: {committed}"

    second = d.start_worker(roles="learn")
    assert await until_metric(second, (HELD, ADAPTED), 30) == HELD
    await produce(bs, t.name("outcomes"), outcomes(N))
    assert_adapted_after_the_outcomes(*await adaptation_and_snapshot(d))


def test_a_drift_whose_outcomes_never_come_goes_after_the_bound(deployment: Deployment) -> None:
    deployment.env["LLMOPT_DRIFT_MAX_HOLD_SECONDS"] = "3"
    worker = deployment.start_worker(roles="learn")
    asyncio.run(_bound(deployment, worker))


async def _bound(d: Deployment, worker: Worker) -> None:
    bs, t = d.broker.bootstrap, d.topics
    await produce(bs, t.name("drift"), [drift(outcome_offset=10**6)])
    await until_metric(worker, (HELD,), 30)
    held_at = time.monotonic()
    # Outcomes keep being learned while the drift waits.
    await produce(bs, t.name("outcomes"), outcomes(N))
    adaptation, snap = await adaptation_and_snapshot(d)
    assert time.monotonic() - held_at > 2.0
    assert PAST_BOUND in worker.metrics()
    assert_adapted_after_the_outcomes(adaptation, snap)
