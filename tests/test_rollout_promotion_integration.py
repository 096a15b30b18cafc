"""A rollout promoted on the test broker with a real worker: the evaluator
promotes a better challenger policy, and the registry then shows the
challenger's configuration and learned state as the version serving the
experiment's policy, from the promotion on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.records import RegistryEvent
from app.versions import REGISTRY_MAX_BYTES
from tests.conftest import ROOT, TEST_POLICIES, Deployment
from tests.kafka_io import TopicReader
from tests.test_experiments_integration import create, events, rollout, traffic

pytestmark = pytest.mark.integration


async def registry(d: Deployment, until: Any, what: str) -> list[RegistryEvent]:
    def parsed(ms: list[Any]) -> list[RegistryEvent]:
        return [RegistryEvent.loads(m.value, REGISTRY_MAX_BYTES) for m in ms]

    async with TopicReader(d.broker.bootstrap, d.topics.name("registry")) as reader:
        await reader.until(lambda ms: until(parsed(ms)), 60, what)
    return parsed(reader.messages)


def test_a_promoted_challenger_policy_serves_the_policy_in_the_registry(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    d.env["LLMOPT_EXPERIMENT_RESULT_SECONDS"] = "1"
    d.start_worker()
    definition = rollout("better-policy", min_samples=30) | {
        "variants": [
            {"name": "champion", "policy": "default"},
            {"name": "challenger", "policy": "short-wait"},
        ]
    }
    create(d, tmp_path, definition)
    asyncio.run(events(d, lambda es: any(e.kind == "result" for e in es), "a first result"))

    better = {"champion": 0.2, "challenger": 0.95}
    for _ in range(8):
        asyncio.run(traffic(d, 200, better))
        try:
            found = asyncio.run(
                events(d, lambda es: any(e.kind == "stopped" for e in es), "a stop", timeout=10)
            )
            break
        except AssertionError:
            continue  # more outcomes needed
    stopped = [e for e in found if e.kind == "stopped"]
    assert [e.stop_reason for e in stopped] == ["promoted"], stopped

    def promoted(rs: list[RegistryEvent]) -> bool:
        return any(r.kind == "status" and r.status == "champion" for r in rs)

    records = asyncio.run(registry(d, promoted, "the challenger's champion status"))
    [serve] = [r for r in records if r.kind == "serve"]
    assert serve.policy_id == "default" and serve.version is None
    assert serve.created_by.startswith("evaluator@")
    [made] = [r for r in records if r.kind == "version" and r.status == "development"]
    short_wait = yaml.safe_load(TEST_POLICIES.read_text())["policies"]["short-wait"]
    assert made.config == short_wait and made.state is not None
    assert made.state["updates"] > 0, "the challenger's learned state, not its prior"
    assert made.lineage is not None and made.lineage["experiment_id"] == "better-policy"
    [champion] = [r for r in records if r.kind == "status" and r.status == "champion"]
    assert champion.version == made.version

    listed = subprocess.run(
        [sys.executable, "-m", "app.cli", "registry", "list", "default", "--json"],
        cwd=ROOT,
        env=d.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    rows = {r["version"]: r for r in json.loads(listed.stdout)}
    assert rows[made.version]["serving"] and rows[made.version]["status"] == "champion"
    assert rows[made.version]["algorithm"] == "thompson_sampling"
