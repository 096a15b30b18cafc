"""Shadow decisions on the test broker: a registry version promoted to
shadow (in apprentice mode) in a running worker decides on every live
request of its policy, and its decisions reach
``llmopt.shadow-decisions.v1`` keyed by request id, beside the served ones;
once its agreement reaches its level it learns from the rewards, and the
registry's history says so."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest

from app.evaluation.simulator import TrafficSimulator
from app.records import ShadowDecision
from tests.conftest import ROOT, Deployment
from tests.kafka_io import TopicReader
from tests.kafka_io import round_trip as kafka_round_trip

pytestmark = pytest.mark.integration


def cli(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "registry", *args],
        cwd=ROOT,
        env=d.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_shadow_writes_a_decision_for_every_live_request(deployment: Deployment) -> None:
    d = deployment
    worker = d.start_worker()
    sim = TrafficSimulator.default(seed=5)
    asyncio.run(kafka_round_trip(d.broker.bootstrap, d.topics, sim, 60))

    registered = cli(d, "register", "default", "--reason", "to shadow", "--wait", "30")
    assert registered.returncode == 0, registered.stderr
    number = int(re.search(r"as version (\d+)", registered.stdout).group(1))  # type: ignore[union-attr]
    promoted = cli(
        d, "promote", "default", str(number), "--to", "shadow", "--apprentice", "0.2",
        "--apprentice-outcomes", "20",
    )  # fmt: skip
    assert promoted.returncode == 0, promoted.stderr
    refused = cli(d, "promote", "default", str(number), "--to", "canary", "--apprentice", "0.9")
    assert refused.returncode == 2 and "--apprentice is for --to shadow" in refused.stderr

    # Requests sent once the shadow runs: the learner reads the promotion
    # before their outcomes (the same registry and outcomes partition).
    live = asyncio.run(kafka_round_trip(d.broker.bootstrap, d.topics, sim, 150))
    served = {x.request_id: x for x in live}
    keys = {k.encode() for k in served}

    async def shadow_decisions() -> list[ShadowDecision]:
        async with TopicReader(d.broker.bootstrap, d.topics.name("shadow_decisions")) as reader:
            await reader.until(
                lambda ms: keys <= {m.key for m in ms}, 60, "a shadow decision per live request"
            )
        return [ShadowDecision.loads(m.value) for m in reader.messages if m.key in keys]

    found = asyncio.run(shadow_decisions())
    by_request = {s.request_id: s for s in found}
    assert set(by_request) == set(served)
    for rid, s in by_request.items():
        x = served[rid]
        assert (s.policy_id, s.shadow_version, s.tenant_id) == ("default", number, x.tenant_id)
        assert s.served_arm == x.arm and s.served_propensity == x.propensity
        assert s.policy_version == x.policy_version
        assert s.available_arms == x.available_arms and s.arm in s.available_arms
        assert 0 < s.propensity <= 1 and s.agreed == (s.arm == x.arm)
    # 20% agreement over 20 outcomes: reached once a window is full, early on.
    imitating = sum(s.apprentice for s in by_request.values())
    assert 20 <= imitating < len(by_request), imitating
    # A repeated record (a batch redone) says the same.
    for m in found:
        assert m == by_request[m.request_id]

    shown = cli(d, "show", "default", str(number))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("apprentice mode ended: agreement") == 1, shown.stdout

    text = worker.metrics()
    agreement = re.search(
        rf'^llmopt_shadow_agreement\{{policy_id="default",version="{number}"\}} (\S+)$',
        text,
        re.M,
    )
    assert agreement is not None and 0 <= float(agreement.group(1)) <= 1
    assert worker.alive()
