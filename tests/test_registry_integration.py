"""The policy registry on the test broker, with two real workers: switching
the algorithm in the policies file keeps what the policy learned as a
version; `llmopt registry rollback` serves it again (configuration and
state) on every worker within 5 s, and a restarted worker keeps serving it."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.evaluation.simulator import TrafficSimulator
from app.records import Decision, PolicySnapshot, RegistryEvent
from app.versions import REGISTRY_MAX_BYTES
from tests.conftest import ROOT, TEST_POLICIES, Deployment, Worker
from tests.kafka_io import TopicReader
from tests.kafka_io import round_trip as kafka_round_trip

pytestmark = pytest.mark.integration
ROLLBACK_S = 5.0


def cli(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "registry", *args],
        cwd=ROOT,
        env=d.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def decider_version(worker: Worker) -> int:
    found = re.search(
        r'^llmopt_decider_policy_version\{policy_id="default"\} (\S+)$', worker.metrics(), re.M
    )
    return int(float(found.group(1))) if found else -1


async def round_trip(d: Deployment, sim: TrafficSimulator, n: int) -> list[Decision]:
    """n requests → their n decisions → n rewards."""
    return await kafka_round_trip(d.broker.bootstrap, d.topics, sim, n)


async def snapshots(d: Deployment, until: Any, what: str) -> list[PolicySnapshot]:
    async with TopicReader(d.broker.bootstrap, d.topics.name("policy_snapshots")) as reader:
        await reader.until(
            lambda ms: until([PolicySnapshot.loads(m.value, 1 << 24) for m in ms]), 40, what
        )
    return [PolicySnapshot.loads(m.value, 1 << 24) for m in reader.messages]


async def registry(d: Deployment, until: Any, what: str) -> list[RegistryEvent]:
    async with TopicReader(d.broker.bootstrap, d.topics.name("registry")) as reader:
        await reader.until(
            lambda ms: until([RegistryEvent.loads(m.value, REGISTRY_MAX_BYTES) for m in ms]),
            40,
            what,
        )
    return [RegistryEvent.loads(m.value, REGISTRY_MAX_BYTES) for m in reader.messages]


def latest(snaps: list[PolicySnapshot]) -> PolicySnapshot:
    return max((s for s in snaps if s.policy_id == "default"), key=lambda s: s.version)


def test_a_switched_algorithm_is_rolled_back_on_every_worker(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    policies = tmp_path / "policies.yaml"
    doc = yaml.safe_load(TEST_POLICIES.read_text())
    policies.write_text(yaml.safe_dump(doc))
    d.env.update(LLMOPT_POLICIES_PATH=str(policies), LLMOPT_POLICIES_RELOAD_SECONDS="0.5")
    workers = [d.start_worker(), d.start_worker()]
    sim = TrafficSimulator.default(seed=11)
    asyncio.run(round_trip(d, sim, 300))
    learned = asyncio.run(
        snapshots(d, lambda ss: any(s.updates >= 300 for s in ss), "300 updates published")
    )
    ts_updates = max(s.updates for s in learned if s.policy_id == "default")

    # The file switches the algorithm: what Thompson sampling learned is a version.
    doc["policies"]["default"]["algorithm"] = "ucb1"
    doc["policies"]["default"]["hyperparameters"] = {}
    policies.write_text(yaml.safe_dump(doc))
    asyncio.run(
        snapshots(d, lambda ss: bool(ss) and latest(ss).algorithm == "ucb1", "a ucb1 snapshot")
    )
    asyncio.run(round_trip(d, sim, 100))
    records = asyncio.run(
        registry(d, lambda rs: any(r.kind == "version" for r in rs), "a registered version")
    )
    [kept] = [r for r in records if r.kind == "version"]
    assert kept.status == "retired" and kept.state is not None
    assert kept.state["algorithm"] == "thompson_sampling" and kept.state["updates"] == ts_updates

    listed = cli(d, "list", "default", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["version"], r["status"], r["algorithm"]) for r in rows] == [
        (kept.version, "retired", "thompson_sampling")
    ]

    # Roll back: the default target is that retired version.
    started = time.time()
    done = cli(d, "rollback", "default", "--reason", "ucb1 explores too little")
    assert done.returncode == 0, done.stderr
    assert f"version {kept.version} serving" in done.stdout
    served = asyncio.run(
        snapshots(
            d,
            lambda ss: any((s.serving or {}).get("version") == kept.version for s in ss),
            "a snapshot serving the version",
        )
    )
    first = min(
        (s for s in served if (s.serving or {}).get("version") == kept.version),
        key=lambda s: s.version,
    )
    assert first.algorithm == "thompson_sampling" and first.updates == ts_updates
    records = asyncio.run(
        registry(d, lambda rs: any(r.kind == "serve" for r in rs), "the serve request")
    )
    [serve] = [r for r in records if r.kind == "serve"]
    deadline = serve.created_at / 1000 + ROLLBACK_S
    while not all(decider_version(w) >= first.version for w in workers):
        assert time.time() < deadline, (
            f"not on every worker {ROLLBACK_S} s after the rollback: "
            f"{[decider_version(w) for w in workers]} < {first.version}"
        )
        time.sleep(0.05)
    took = time.time() - serve.created_at / 1000
    assert took < ROLLBACK_S and time.time() - started < 30
    # Both workers decide with Thompson sampling again: it explores.
    after = asyncio.run(round_trip(d, sim, 200))
    assert sum(x.propensity < 1.0 for x in after[-100:]) > 50

    # The ucb1 state it replaced is a version too, and the history says who served when.
    listed = json.loads(cli(d, "list", "default", "--json").stdout)
    by_version = {r["version"]: r for r in listed}
    assert by_version[kept.version]["serving"] and by_version[kept.version]["status"] == "champion"
    assert [r["algorithm"] for r in listed if r["version"] != kept.version] == ["ucb1"]
    shown = cli(d, "show", "default", str(kept.version))
    assert shown.returncode == 0 and "ucb1 explores too little" in shown.stdout
    diff = cli(d, "diff", "default", str(kept.version), str(max(by_version)))
    assert diff.returncode == 0 and 'algorithm: "thompson_sampling" → "ucb1"' in diff.stdout

    # A restarted worker keeps serving the version (the file is unchanged).
    workers[0].stop()
    workers[0] = d.start_worker()
    again = asyncio.run(round_trip(d, sim, 100))
    assert sum(x.propensity < 1.0 for x in again) > 50
    assert all(w.alive() for w in workers)


def test_registry_cli_errors_are_one_line(deployment: Deployment) -> None:
    out = cli(deployment, "show", "default", "3")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "no versions of policy 'default'" in out.stderr
    out = cli(deployment, "rollback", "nope", "--wait", "0")
    assert out.returncode == 2 and "no versions of policy 'nope'" in out.stderr
