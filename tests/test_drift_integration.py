"""The drift loop on a real Kafka-protocol broker with a real worker: a
degraded arm in the outcome stream → a drift event, an alert, the learner's
adaptation event and a snapshot with the arm's estimates reset; bad drift and
outcome events go to the dead-letter topic and the worker keeps going."""

from __future__ import annotations

import asyncio
import base64
import random
from typing import Any

import orjson

from app.records import AlertEvent, DeadLetter, DriftEvent, Outcome, PolicySnapshot, now_ms
from app.stream.partitioning import partitions_for
from tests.conftest import Deployment
from tests.kafka_io import TopicReader, produce

ARM = "claude-haiku"
ARMS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "claude-haiku", "llama-70b",
        "llama-70b-creative"]  # fmt: skip
HEALTHY, DEGRADED = 700, 300


def outcomes(t0: int) -> list[bytes]:
    rng = random.Random(5)
    out = []
    for i in range(HEALTHY + DEGRADED):
        failed = i >= HEALTHY
        components: dict[str, Any] = {"latency_ms": rng.lognormvariate(6.5, 0.3), "error": failed}
        if not failed:
            components.update(quality=rng.betavariate(9, 1), cost_usd=rng.uniform(0.001, 0.003))
        out.append(
            Outcome(
                request_id=f"drift-{i}", tenant_id="acme", policy_id="default", policy_version=1,
                arm=ARM, available_arms=ARMS, propensity=0.9, explored=False,
                reward=0.0 if failed else rng.uniform(0.75, 0.95), defaulted=False,
                decided_at=t0 + 10 * i, outcome_at=t0 + 10 * i + 5, components=components,
            ).dumps()
        )  # fmt: skip
    return out


def test_a_degraded_arm_is_detected_alerted_and_adapted_to(deployment: Deployment) -> None:
    deployment.start_worker(roles="learn")
    asyncio.run(_drift_loop(deployment))


async def _drift_loop(d: Deployment) -> None:
    bs, t = d.broker.bootstrap, d.topics
    bad_drift = b'{"schema_version": 1, "kind": "drift"}'
    bad_outcome = b'{"schema_version": 1, "request_id": '
    msgs = outcomes(now_ms())
    await produce(bs, t.name("drift"), [(b"default", bad_drift)])
    await produce(bs, t.name("outcomes"), [(b"default", m) for m in [bad_outcome, *msgs]])

    async with TopicReader(bs, t.name("drift")) as reader:

        def adapted(ms: list[Any]) -> bool:
            return any(b'"adaptation"' in m.value for m in ms)

        await reader.until(adapted, 60, "an adaptation event")
        await reader.settle(1.0)
    events = [DriftEvent.loads(m.value) for m in reader.messages if m.value != bad_drift]
    assert all(m.key == b"default" for m in reader.messages)
    # on the partition number of the policy's outcomes
    (p,) = partitions_for([b"default"], t["outcomes"].partitions)
    assert all(m.partition == p for m in reader.messages)
    drifts = [e for e in events if e.kind == "drift" and e.signal == "reward"]
    assert len(drifts) == 1, events
    (drift,) = drifts
    assert drift.arm == ARM and drift.direction == "down" and drift.detector == "cusum"
    # CUSUM warms up on 500 values, then needs only a few of the failures
    offset_of_change = HEALTHY
    assert drift.samples is not None and offset_of_change < drift.samples < HEALTHY + 50
    assert drift.mean_before is not None and drift.mean_before > 0.8
    # detected on the outcome at offset `samples` (the bad outcome is offset 0)
    assert drift.outcome_offset == drift.samples + 1
    adaptations = [e for e in events if e.kind == "adaptation"]
    assert len(adaptations) == 1
    (adaptation,) = adaptations
    assert adaptation.cause_id == drift.event_id and adaptation.arm == ARM
    assert (adaptation.action, adaptation.applied) == ("reset", "reset_arm")
    assert adaptation.policy_version is not None
    # adapted once every outcome up to the drift was applied: one update each, then the adaptation
    assert adaptation.policy_version >= drift.outcome_offset

    async with TopicReader(bs, t.name("policy_snapshots")) as reader:
        await reader.until(
            lambda ms: any(_version(m) == adaptation.policy_version for m in ms),
            30, "the snapshot of the adapted state",
        )  # fmt: skip
    snap = next(
        PolicySnapshot.loads(m.value, 1 << 24)
        for m in reader.messages
        if _version(m) == adaptation.policy_version
    )
    # the arm's posterior is back to the prior (1, 1); it had ~600 successes before
    assert snap.arm_stats[ARM]["alpha"] == 1.0 and snap.arm_stats[ARM]["beta"] == 1.0
    assert snap.arm_stats[ARM]["pulls"] >= drift.samples

    async with TopicReader(bs, t.name("alerts")) as reader:
        await reader.until(lambda ms: len(ms) >= 1, 30, "an alert")
    alert = AlertEvent.loads(reader.messages[0].value)
    assert (alert.rule, alert.status, alert.severity, alert.arm) == (
        "high-error-rate", "firing", "critical", ARM)  # fmt: skip
    assert alert.value > 0.05

    async with TopicReader(bs, t.name("dead_letter")) as reader:
        await reader.until(lambda ms: len(ms) >= 2, 30, "two dead letters")
        await reader.settle(1.0)
    dead = [DeadLetter.loads(m.value, 1 << 20) for m in reader.messages]
    by_source = {x.source_topic: x for x in dead}
    assert len(dead) == 2, "one per bad event (detect_drift leaves it to the learner)"
    assert base64.b64decode(by_source[t.name("drift")].original_value_b64) == bad_drift
    assert by_source[t.name("drift")].reason == "schema_violation"
    assert base64.b64decode(by_source[t.name("outcomes")].original_value_b64) == bad_outcome
    assert by_source[t.name("outcomes")].reason == "malformed_json"

    metrics = d.workers[0].metrics()
    assert 'llmopt_adaptations_total{applied="reset_arm",policy_id="default"} 1.0' in metrics
    assert 'llmopt_events_total{agent="detect_drift",result="observed"} 1000.0' in metrics


def _version(m: Any) -> int:
    return int(orjson.loads(m.value)["version"])
