"""The closed loop on a real Kafka-protocol broker, with a real worker process:
requests → decisions → rewards → outcomes → policy updates → snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.evaluation.simulator import TrafficSimulator
from app.policies.config import PoliciesConfig
from app.records import Decision, Outcome, PolicySnapshot, Request, now_ms
from app.stream.kafka_io import assign_from_start, partitions_of
from tests.conftest import TEST_POLICIES, Deployment
from tests.kafka_io import TopicReader, produce


def latest_snapshot(messages: list, policy_id: str = "default") -> PolicySnapshot | None:
    snaps = [PolicySnapshot.loads(m.value, 1 << 24) for m in messages]
    snaps = [s for s in snaps if s.policy_id == policy_id]
    return max(snaps, key=lambda s: s.version) if snaps else None


async def snapshot_holding(
    bootstrap: str, topic: str, updates: int, timeout: float, settle: float = 3.0
) -> PolicySnapshot:
    """The default policy's latest snapshot, once one holds ``updates``
    updates and the topic has had ``settle`` seconds of quiet."""
    async with TopicReader(bootstrap, topic) as snaps:
        await snaps.until(
            lambda m: (s := latest_snapshot(m)) is not None and s.updates >= updates,
            timeout,
            f"a snapshot holding {updates} updates",
        )
        await snaps.settle(settle)
    snap = latest_snapshot(snaps.messages)
    assert snap is not None
    return snap


def test_2000_requests_get_2000_decisions_and_rewards_update_the_policy(
    deployment: Deployment,
) -> None:
    deployment.start_worker()
    asyncio.run(_closed_loop(deployment))


async def _closed_loop(d: Deployment) -> None:
    bs, t = d.broker.bootstrap, d.topics
    sim = TrafficSimulator.default(seed=7)
    requests = {r.request_id: r for r in (sim.next_request(now_ms()) for _ in range(2000))}
    await produce(
        bs, t.name("requests"), ((r.tenant_id.encode(), r.dumps()) for r in requests.values())
    )

    async with TopicReader(bs, t.name("decisions")) as reader:
        await reader.until(lambda m: len(m) >= 2000, 90, "2000 decisions")
        await reader.settle(2.0)
    decisions = [Decision.loads(m.value) for m in reader.messages]
    assert len(decisions) == 2000, "exactly one decision per request"
    assert {x.request_id for x in decisions} == set(requests)
    for m, x in zip(reader.messages, decisions, strict=True):
        assert m.key == x.request_id.encode()
        assert x.arm in x.available_arms and 0.0 < x.propensity <= 1.0
        assert set(x.scores) == set(x.available_arms)
        assert x.requested_at == requests[x.request_id].created_at <= x.decided_at

    spec = PoliciesConfig.load(TEST_POLICIES).get("default").reward  # type: ignore[union-attr]
    rewards = {
        x.request_id: sim.outcome(requests[x.request_id], x.arm, now_ms()) for x in decisions
    }
    await produce(bs, t.name("rewards"), ((rid.encode(), r.dumps()) for rid, r in rewards.items()))

    async with TopicReader(bs, t.name("outcomes")) as reader:
        await reader.until(lambda m: len(m) >= 2000, 60, "2000 outcomes")
        await reader.settle(1.0)
    outcomes = [Outcome.loads(m.value) for m in reader.messages]
    assert len(outcomes) == 2000 and {o.request_id for o in outcomes} == set(requests)
    chosen = {x.request_id: x for x in decisions}
    for o in outcomes:
        r = rewards[o.request_id]
        assert not o.defaulted
        assert o.arm == chosen[o.request_id].arm
        assert o.propensity == chosen[o.request_id].propensity
        assert abs(o.reward - spec.scalar(r.quality, r.cost_usd, r.latency_ms, r.error)) < 1e-12

    async with TopicReader(bs, t.name("policy_snapshots")) as reader:
        await reader.until(
            lambda m: (s := latest_snapshot(m)) is not None and s.updates >= 2000,
            60,
            "a snapshot with 2000 updates",
        )
        await reader.settle(1.0)
    snap = latest_snapshot(reader.messages)
    assert snap is not None and snap.updates == 2000
    assert sum(s["pulls"] for s in snap.arm_stats.values()) == 2000
    per_arm = {a: sum(1 for x in decisions if x.arm == a) for a in snap.arm_stats}
    assert {a: int(s["pulls"]) for a, s in snap.arm_stats.items()} == per_arm


def test_worker_killed_and_stopped_repeatedly_loses_nothing_and_applies_each_reward_once(
    deployment: Deployment,
) -> None:
    """SIGKILLs and SIGTERMs in a steady rewarded stream: every request is
    decided, every reward reaches its outcome (none is taken for an unknown
    request), the policy's applied count equals the distinct rewarded
    requests, and the published update count never goes backwards."""
    deployment.start_worker()
    asyncio.run(_kill_and_restart(deployment))


KILLS = ("kill", "stop", "kill", "stop")


async def _kill_and_restart(d: Deployment) -> None:
    bs, t = d.broker.bootstrap, d.topics
    total, rate = 3000, 300.0
    kill_at = [total * (i + 1) // (len(KILLS) + 1) for i in range(len(KILLS))]
    sim = TrafficSimulator.default(seed=11)
    sent: dict[str, Request] = {}
    rewarded: set[str] = set()
    producer = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=2)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bs, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await producer.start()
    await consumer.start()
    assign_from_start(consumer, partitions_of(consumer, t.name("decisions")))

    async def send_requests() -> None:
        start = time.monotonic()
        while len(sent) < total:
            due = min(total, int((time.monotonic() - start) * rate))
            while len(sent) < due:
                r = sim.next_request(now_ms())
                sent[r.request_id] = r
                await producer.send(t.name("requests"), r.dumps(), key=r.tenant_id.encode())
            await asyncio.sleep(0.005)

    sender = asyncio.create_task(send_requests())
    kills = list(zip(kill_at, KILLS, strict=True))
    deadline = time.monotonic() + 300
    try:
        while len(rewarded) < total or kills:
            assert time.monotonic() < deadline, f"only {len(rewarded)}/{total} requests decided"
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                for m in msgs:
                    x = Decision.loads(m.value)
                    if x.request_id in rewarded:
                        continue  # a redelivered request decided twice: reward once
                    rewarded.add(x.request_id)
                    reward = sim.outcome(sent[x.request_id], x.arm, now_ms())
                    await producer.send(t.name("rewards"), reward.dumps(), key=m.key)
            if kills and len(rewarded) >= kills[0][0]:
                how = kills.pop(0)[1]
                worker = d.workers[-1]
                worker.kill() if how == "kill" else worker.stop()
                await asyncio.to_thread(d.start_worker)
        await sender
    finally:
        sender.cancel()
        await producer.stop()
        await consumer.stop()
    assert not kills and rewarded == set(sent)

    async with TopicReader(bs, t.name("policy_snapshots")) as reader:
        with contextlib.suppress(AssertionError):
            await reader.until(
                lambda m: (s := latest_snapshot(m)) is not None and s.updates >= total,
                120,
                f"a snapshot with {total} updates",
            )
        await reader.settle(3.0)
    async with TopicReader(bs, t.name("outcomes")) as outcomes:
        await outcomes.settle(2.0)
    async with TopicReader(bs, t.name("dead_letter")) as dead:
        await dead.settle(1.0)
    reasons = Counter(orjson.loads(m.value)["reason"] for m in dead.messages)
    docs = [Outcome.loads(m.value, 1 << 20) for m in outcomes.messages]
    joined = {o.request_id for o in docs}
    defaulted = {o.request_id for o in docs if o.defaulted}
    snap = latest_snapshot(reader.messages)
    ours = [PolicySnapshot.loads(m.value, 1 << 24) for m in reader.messages]
    updates = [s.updates for s in ours if s.policy_id == "default"]
    learner_lines = [
        line
        for line in d.workers[-1].metrics().splitlines()
        if "learn_from_outcomes" in line or "updates_skipped" in line or "regression" in line
    ]
    seen = (
        f"updates {snap.updates if snap else None}, outcomes {len(docs)} "
        f"({len(joined)} requests, {len(defaulted)} defaulted), dead letters {dict(reasons)}; "
        f"last worker: {learner_lines}"
    )
    assert joined == rewarded, seen
    assert not defaulted, f"rewards were replaced by the default: {seen}"
    assert not reasons, seen
    assert snap is not None and snap.updates == len(rewarded), f"applied once each? {seen}"
    back = [i for i in range(1, len(updates)) if updates[i] < updates[i - 1]]
    around = (
        [
            (s.updates, s.version, s.created_at)
            for s in [x for x in ours if x.policy_id == "default"][
                max(0, back[0] - 3) : back[0] + 3
            ]
        ]
        if back
        else []
    )
    assert not back, f"the published update count went backwards: {seen}; around: {around}"


def test_switching_a_policys_algorithm_in_the_config_takes_effect_without_restart(
    deployment: Deployment, tmp_path: Path
) -> None:
    policies = tmp_path / "policies.yaml"
    doc = yaml.safe_load(TEST_POLICIES.read_text())
    policies.write_text(yaml.safe_dump(doc))
    deployment.env.update(LLMOPT_POLICIES_PATH=str(policies), LLMOPT_POLICIES_RELOAD_SECONDS="0.5")
    worker = deployment.start_worker()
    asyncio.run(_switch_algorithm(deployment, policies, doc))
    assert worker.alive(), "the switch needed no restart"
    assert 'llmopt_config_reloads_total{result="ok"} 1.0' in worker.metrics()


async def _switch_algorithm(d: Deployment, path: Path, doc: dict) -> None:
    bs, t = d.broker.bootstrap, d.topics
    sim = TrafficSimulator.default(seed=3)

    async def round_trip(n: int) -> list[Decision]:
        reqs = {r.request_id: r for r in (sim.next_request(now_ms()) for _ in range(n))}
        await produce(
            bs, t.name("requests"), ((r.tenant_id.encode(), r.dumps()) for r in reqs.values())
        )
        async with TopicReader(bs, t.name("decisions")) as reader:
            await reader.until(
                lambda ms: len({m.key for m in ms} & {k.encode() for k in reqs}) >= n,
                60,
                f"{n} decisions",
            )
        got = [
            x for x in (Decision.loads(m.value) for m in reader.messages) if x.request_id in reqs
        ]
        await produce(
            bs,
            t.name("rewards"),
            (
                (x.request_id.encode(), sim.outcome(reqs[x.request_id], x.arm, now_ms()).dumps())
                for x in got
            ),
        )
        return got

    before = await round_trip(200)
    assert sum(x.propensity == 1.0 for x in before) < 20, "Thompson sampling explores"

    doc["policies"]["default"]["algorithm"] = "ucb1"
    doc["policies"]["default"]["hyperparameters"] = {}
    path.write_text(yaml.safe_dump(doc))

    async with TopicReader(bs, t.name("policy_snapshots")) as reader:
        await reader.until(
            lambda ms: (s := latest_snapshot(ms)) is not None and s.algorithm == "ucb1",
            30,
            "a ucb1 snapshot",
        )
    after = await round_trip(200)
    # UCB1 is deterministic: once the deciders switched, every propensity is 1.
    assert sum(x.propensity == 1.0 for x in after[-100:]) >= 95
