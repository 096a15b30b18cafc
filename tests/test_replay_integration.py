"""Reading time ranges from real topics, and replaying requests through a
candidate worker on isolated topics (embedded broker unless configured)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
import yaml

from app.cli import main
from app.evaluation.logged_data import LoggedDataError
from app.evaluation.simulator import TrafficSimulator
from app.records import Outcome, now_ms
from app.stream.kafka_io import read_outcomes_topic
from tests.conftest import TEST_POLICIES, Deployment
from tests.kafka_io import TopicReader, produce


def _outcome(i: int, arm: str) -> Outcome:
    return Outcome(
        request_id=f"r{i}",
        tenant_id="t",
        policy_id="default",
        policy_version=1,
        arm=arm,
        available_arms=["a", "b"],
        propensity=0.5,
        explored=False,
        reward=0.25 if arm == "a" else 0.75,
        defaulted=False,
        decided_at=now_ms(),
        outcome_at=now_ms(),
    )


def _gap() -> int:
    """A time strictly between what was written before and what comes after."""
    time.sleep(1.0)
    t = now_ms()
    time.sleep(1.0)
    return t


def test_outcomes_are_read_by_time_range(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bs, topic = deployment.broker.bootstrap, deployment.topics.name("outcomes")

    def send(batch: range, arm: str) -> None:
        asyncio.run(produce(bs, topic, ((b"default", _outcome(i, arm).dumps()) for i in batch)))

    send(range(0, 40), "a")
    t1 = _gap()
    send(range(40, 100), "b")
    t2 = _gap()
    send(range(100, 130), "a")
    t3 = _gap()

    middle = asyncio.run(read_outcomes_topic(bs, topic, t1, t2, idle_timeout_s=3))
    assert middle.n_events == 60
    assert {middle.arm_names[a] for a in middle.actions} == {"b"}
    assert (middle.rewards == 0.75).all()
    everything = asyncio.run(read_outcomes_topic(bs, topic, 0, t3, idle_timeout_s=3))
    assert everything.n_events == 130
    # A start past the end: the embedded broker answers offset 0 — nothing must be read.
    with pytest.raises(LoggedDataError, match="no outcomes"):
        asyncio.run(read_outcomes_topic(bs, topic, t3, t3 + 60_000, idle_timeout_s=3))
    with pytest.raises(LoggedDataError, match="does not exist"):
        asyncio.run(read_outcomes_topic(bs, topic + ".nope", t1, t2, idle_timeout_s=1))

    # The same range through `llmopt backtest --topic` (the deployment's outcomes topic).
    for key, value in deployment.env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "bt.json"
    argv = ["backtest", "--topic", "--start", str(t1), "--end", str(t2), "--policy", "fixed:b"]
    assert main([*argv, "--resamples", "0", "--no-progress", "--json", str(out)]) == 0
    doc = orjson.loads(out.read_bytes())
    assert doc["n_events"] == 60
    fixed_b = doc["policies"][0]["estimates"]
    assert fixed_b["snips"]["value"] == pytest.approx(0.75)


def test_a_replay_decides_a_time_range_on_isolated_topics(
    deployment: Deployment,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`llmopt replay` end to end: only the range is copied, a candidate
    worker decides it on *.replay.<run-id> topics, live topics stay as they were."""
    bs, live = deployment.broker.bootstrap, deployment.topics
    sim = TrafficSimulator.default(seed=3)

    def send(n: int, reply_to: str | None = None) -> list[str]:
        reqs = [sim.next_request(now_ms(), reply_to=reply_to) for _ in range(n)]
        asyncio.run(
            produce(bs, live.name("requests"), ((r.tenant_id.encode(), r.dumps()) for r in reqs))
        )
        return [r.request_id for r in reqs]

    send(20)
    start = _gap()
    in_range = send(50, reply_to="llmopt.replies.v1.some-live-client")
    end = _gap()
    send(20)

    doc = yaml.safe_load(TEST_POLICIES.read_text())
    doc["policies"]["default"]["algorithm"] = "epsilon_greedy"
    doc["policies"]["default"]["hyperparameters"] = {"epsilon": 0.3}
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(yaml.safe_dump(doc))

    for key, value in deployment.env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "summary.json"
    args = ["replay", "--policies", str(candidate), "--start", str(start), "--end", str(end)]
    code = main([*args, "--run-id", "cand-1", "--json", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr()
    summary = orjson.loads(out.read_bytes())
    assert "50 requests" in capsys.readouterr().out

    assert summary["requests"] == 50 and summary["decisions"] == 50
    assert summary["dead_letters"] == 0
    assert summary["decisions_topic"] == live.name("decisions") + ".replay.cand-1"
    assert summary["requests_topic"] == live.name("requests") + ".replay.cand-1"
    assert abs(sum(summary["arm_shares"].values()) - 1.0) < 1e-9
    assert summary["agreement"] is None  # no live worker decided these requests

    async def read(topic: str) -> list:
        async with TopicReader(bs, topic) as reader:
            return await reader.settle(1.5)

    decisions = [orjson.loads(m.value) for m in asyncio.run(read(summary["decisions_topic"]))]
    assert sorted(d["request_id"] for d in decisions) == sorted(in_range)
    copies = [orjson.loads(m.value) for m in asyncio.run(read(summary["requests_topic"]))]
    assert len(copies) == 50 and not any("reply_to" in c for c in copies)
    # Nothing was written to the live topics: requests as produced, no decisions.
    assert len(asyncio.run(read(live.name("requests")))) == 90
    assert asyncio.run(read(live.name("decisions"))) == []
    assert asyncio.run(read(live.name("outcomes"))) == []
