"""Rollouts on the test broker with a real worker: `llmopt experiment create`
starts one, the decider assigns variants by the sticky hash and tags the
decisions, the join carries the tags to the outcomes, and the evaluator
rolls a worse challenger back by itself; a worker restarted mid-rollout
carries on counting from the experiments topic, each outcome once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.experiments.events import EXPERIMENT_MAX_BYTES
from app.records import Decision, ExperimentEvent, Request, Reward, now_ms
from tests.conftest import ROOT, Deployment
from tests.kafka_io import TopicReader, produce

pytestmark = pytest.mark.integration
QUALITY = {"champion": 0.95, "challenger": 0.05}


def cli(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "experiment", *args],
        cwd=ROOT,
        env=d.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def create(d: Deployment, tmp_path: Path, definition: dict[str, Any]) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(definition))
    done = cli(d, "create", "--file", str(path))
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout


async def events(
    d: Deployment, until: Any, what: str, timeout: float = 60
) -> list[ExperimentEvent]:
    def parsed(ms: list[Any]) -> list[ExperimentEvent]:
        return [ExperimentEvent.loads(m.value, EXPERIMENT_MAX_BYTES) for m in ms]

    async with TopicReader(d.broker.bootstrap, d.topics.name("experiments")) as reader:
        await reader.until(lambda ms: until(parsed(ms)), timeout, what)
    return parsed(reader.messages)


async def traffic(d: Deployment, n: int, quality: dict[str, float]) -> list[Decision]:
    """n requests of users of their own → their decisions → a reward per
    decision whose quality depends on the variant (champion when untagged)."""
    run = uuid.uuid4().hex[:6]
    reqs = [
        Request(request_id=f"{run}-{i}", tenant_id=f"tenant-{i % 7}", task_type="qa",
                created_at=now_ms(), metadata={"user_id": f"user-{run}-{i}"})
        for i in range(n)
    ]  # fmt: skip
    await produce(
        d.broker.bootstrap,
        d.topics.name("requests"),
        ((r.tenant_id.encode(), r.dumps()) for r in reqs),
    )
    keys = {r.request_id.encode() for r in reqs}
    async with TopicReader(d.broker.bootstrap, d.topics.name("decisions")) as reader:
        await reader.until(lambda ms: len({m.key for m in ms} & keys) >= n, 60, f"{n} decisions")
    decided = {
        x.request_id: x for x in (Decision.loads(m.value) for m in reader.messages if m.key in keys)
    }
    rewards = [
        Reward(request_id=x.request_id, tenant_id=x.tenant_id, sent_at=now_ms(),
               quality=quality[x.variant or "champion"])
        for x in decided.values()
    ]  # fmt: skip
    await produce(
        d.broker.bootstrap,
        d.topics.name("rewards"),
        ((r.request_id.encode(), r.dumps()) for r in rewards),
    )
    return list(decided.values())


def rollout(exp_id: str, **over: Any) -> dict[str, Any]:
    return {
        "id": exp_id,
        "policy": "default",
        "variants": [
            {"name": "champion", "policy": "default"},
            {"name": "challenger", "arm": "llama-70b-creative"},
        ],
        "split_key": "user_id",
        "stages": [50, 100],
        "min_samples": 30,
        "tuning_n": 400,
    } | over


def units(ev: ExperimentEvent) -> int:
    assert ev.result is not None
    return sum(v["reward"]["n"] for v in ev.result["variants"].values())


def test_a_worse_challenger_is_rolled_back_automatically(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    d.env["LLMOPT_EXPERIMENT_RESULT_SECONDS"] = "1"
    d.start_worker()
    create(d, tmp_path, rollout("worse-llama"))
    # The evaluator's first result: it follows the experiment from now on.
    asyncio.run(events(d, lambda es: any(e.kind == "result" for e in es), "a first result"))

    decided = asyncio.run(traffic(d, 300, QUALITY))
    tagged = [x for x in decided if x.experiment_id == "worse-llama"]
    variants = {x.variant for x in tagged}
    assert len(tagged) == len(decided) and variants == {"champion", "challenger"}
    for x in tagged:
        if x.variant == "challenger":
            assert (x.arm, x.propensity, x.available_arms) == ("llama-70b-creative", 1.0,
                                                               ["llama-70b-creative"])  # fmt: skip
        else:
            assert x.policy_id == "default" and len(x.available_arms) == 6

    found = asyncio.run(
        events(d, lambda es: any(e.kind == "stopped" for e in es), "the rollback", timeout=30)
    )
    [stop] = [e for e in found if e.kind == "stopped"]
    assert stop.stop_reason == "rolled_back" and stop.created_by.startswith("evaluator@")
    assert stop.shares == {"champion": 1.0, "challenger": 0.0}
    last = [e for e in found if e.kind == "result"][-1]
    assert last.result is not None
    assert last.result["treatments"]["challenger"]["decision"] == "worse"

    status = cli(d, "status", "worse-llama", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert (doc["status"], doc["stop_reason"]) == ("stopped", "rolled_back")
    table = cli(d, "status", "worse-llama")
    assert "challenger" in table.stdout and "worse" in table.stdout

    # The deciders have let go: new requests are in no experiment.
    after = asyncio.run(traffic(d, 40, QUALITY))
    assert all(x.experiment_id is None and x.variant is None for x in after)


def test_a_restarted_worker_carries_on_counting_each_outcome_once(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    d.env["LLMOPT_EXPERIMENT_RESULT_SECONDS"] = "1"
    worker = d.start_worker()
    # Never decided (min_samples above the traffic): the counts are what is checked.
    create(d, tmp_path, rollout("counted", min_samples=100_000))
    asyncio.run(events(d, lambda es: any(e.kind == "result" for e in es), "a first result"))
    same = {"champion": 0.7, "challenger": 0.7}

    def counted(n: int) -> Any:
        return lambda es: any(e.kind == "result" and units(e) >= n for e in es)

    asyncio.run(traffic(d, 150, same))
    asyncio.run(events(d, counted(150), "150 outcomes counted"))
    worker.stop()
    d.start_worker()
    asyncio.run(traffic(d, 150, same))
    found = asyncio.run(events(d, counted(300), "300 outcomes counted"))
    results = [e for e in found if e.kind == "result"]
    assert max(units(e) for e in results) == 300  # none lost, none counted twice
    assert all(e.stage == 0 for e in results)
