"""A decision reads its tenant's windows whichever worker aggregates them.

Two workers of one app: one decides (and aggregates nothing), the other
aggregates every window (and decides nothing), so every tenant's windows
live on the other worker than its decisions. Each tenant's outcomes all
carry one reward of its own, so its mean reward over any window is that
reward: every decision must log it, none the spec's default, and the
deciding worker counts no lookup that missed because its copy of the
windows was behind.
"""

from __future__ import annotations

import asyncio
import re
import time

import orjson
import pytest

from app.features.extraction import FeatureExtractor
from app.features.observations import observation_doc, outcome_observations
from app.features.spec import FeatureSpec
from app.records import Decision, Outcome, Request, now_ms
from tests.conftest import ROOT, Deployment, Worker
from tests.kafka_io import TopicReader, produce
from tests.test_features_integration import get
from tests.test_scale_out_integration import start_second_worker

TENANTS = [f"tenant-{i}" for i in range(8)]
OUTCOMES_PER_TENANT = 40


def reward_of(tenant: str) -> float:
    return 0.05 + 0.1 * TENANTS.index(tenant)  # never the default 0.5


def metric(worker: Worker, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", worker.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def outcome(tenant: str, i: int, t: int) -> Outcome:
    return Outcome(
        request_id=f"{tenant}-h{i}",
        tenant_id=tenant,
        policy_id="default",
        policy_version=1,
        arm="a",
        available_arms=["a", "b"],
        propensity=0.5,
        explored=False,
        reward=reward_of(tenant),
        defaulted=False,
        decided_at=t - 900,
        outcome_at=t,
        components={"latency_ms": 300.0, "cost_usd": 0.001, "error": False},
    )


def test_decisions_read_windows_another_worker_aggregates(
    deployment: Deployment,
) -> None:
    spec_path = ROOT / "config" / "features.yaml"  # a 5 s grace: windows final soon
    column = FeatureExtractor(FeatureSpec.load(spec_path)).columns.index("tenant_mean_reward")
    deployment.env.update(LLMOPT_FEATURE_SPEC_PATH=str(spec_path))
    decider = deployment.start_worker(roles="decide")
    deployment.env["LLMOPT_WORKER_ROLES"] = "features"
    aggregator = start_second_worker(deployment)
    bs, t = deployment.broker.bootstrap, deployment.topics

    # Outcomes of the last few minutes, straight onto the observations topic
    # (as featurize_outcomes routes them: by tenant).
    end = now_ms() - 70_000
    routed = []
    for tenant in TENANTS:
        obs = [
            observation_doc(entity, o)
            for i in range(OUTCOMES_PER_TENANT)
            for _, entity, o in outcome_observations(
                outcome(tenant, i, end - (OUTCOMES_PER_TENANT - i) * 6_000)
            )
        ]
        routed.append((tenant.encode(), orjson.dumps(obs)))
    asyncio.run(produce(bs, t.name("feature_observations"), routed))

    # Both workers hold every tenant's windows; only the aggregator made them.
    for worker in (aggregator, decider):
        deadline = time.monotonic() + 60
        while True:
            got = get(worker, "/features", entity=[f"tenant={x}" for x in TENANTS])["features"]
            means = {e: v["mean_reward_5m"] for e, v in got.items()}
            if all(means[f"tenant={x}"] == pytest.approx(reward_of(x)) for x in TENANTS):
                break
            assert time.monotonic() < deadline, f"{means}\n{worker.tail()}"
            time.sleep(0.5)
    applied = 'llmopt_feature_observations_total{result="applied"}'
    assert metric(aggregator, applied) > 0
    assert metric(decider, applied) == 0

    requests = [
        Request(request_id=f"{x}-r{i}", tenant_id=x, task_type="qa", created_at=now_ms())
        for x in TENANTS
        for i in range(5)
    ]
    asyncio.run(
        produce(bs, t.name("requests"), ((r.tenant_id.encode(), r.dumps()) for r in requests))
    )

    async def read_decisions() -> list[Decision]:
        async with TopicReader(bs, t.name("decisions")) as reader:
            await reader.until(lambda m: len(m) >= len(requests), 60, "decisions")
        return [Decision.loads(m.value) for m in reader.messages]

    decisions = asyncio.run(read_decisions())
    assert len({d.request_id for d in decisions}) == len(requests)
    for d in decisions:
        assert d.spec_features is not None
        assert d.spec_features["values"][column] == pytest.approx(reward_of(d.tenant_id)), d
    misses = 'llmopt_feature_window_misses_total{reason="not_caught_up"}'
    assert metric(decider, misses) == 0
