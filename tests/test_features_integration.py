"""Windowed feature tables on a real broker with a real worker: requests and
outcomes → observations → RocksDB tables; the HTTP endpoint answers what a
brute-force store computes; after a kill and a wiped local state the tables
come back from their changelogs; outcomes land in Parquet."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pyarrow.dataset as ds
import yaml

from app.features.observations import outcome_observations, request_observations
from app.features.spec import FeatureSpec
from app.features.store import FeatureStore
from app.records import Outcome, Request, now_ms
from tests.conftest import ROOT, Deployment, Worker
from tests.kafka_io import produce

N = 2_400
STEP_MS = 3_000  # two hours of event time
CHUNK = 200  # 10 minutes of event time, a third of the grace period


def spec_file(tmp_path: Path) -> Path:
    doc = yaml.safe_load((ROOT / "config" / "features.yaml").read_text())
    # A grace period longer than any reordering between the two topics: the
    # result is then independent of how the observations interleave.
    doc["windows"].update(grace_seconds=1800, retention_seconds=3 * 3600)
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def traffic(t0: int) -> tuple[list[Request], list[Outcome]]:
    reqs, outs = [], []
    for i in range(N):
        tenant, arm = ("acme", "beta")[i % 2], ("a", "b")[i % 3 == 0]
        r = Request(
            request_id=f"r{i}",
            tenant_id=tenant,
            task_type=("qa", "code")[i % 4 == 0],
            created_at=t0 + i * STEP_MS,
            input_tokens=100 + i % 700,
        )
        o = Outcome(
            request_id=r.request_id,
            tenant_id=tenant,
            policy_id="default",
            policy_version=1,
            arm=arm,
            available_arms=["a", "b"],
            propensity=0.5,
            explored=False,
            reward=(i % 10) / 10,
            defaulted=False,
            decided_at=r.created_at + 5,
            outcome_at=r.created_at + 900,
            components={
                "latency_ms": 200.0 + i % 1000,
                "cost_usd": 0.001 * (i % 5),
                "error": i % 9 == 0,
            },
        )
        reqs.append(r)
        outs.append(o)
    return reqs, outs


def get(worker: Worker, path: str, **query: object) -> dict:
    url = f"http://127.0.0.1:{worker.port}{path}?{urllib.parse.urlencode(query, doseq=True)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_featurized(worker: Worker, n: int, timeout: float = 60.0) -> None:
    """Until both featurize agents have read ``n`` events each."""
    deadline = time.monotonic() + timeout
    series = [
        f'llmopt_events_total{{agent="featurize_{x}",result="ok"}}'
        for x in ("requests", "outcomes")
    ]
    while True:
        text = worker.metrics()
        done = [re.search(rf"^{re.escape(x)} (\S+)$", text, re.M) for x in series]
        if all(m is not None and float(m.group(1)) >= n for m in done):
            return
        assert time.monotonic() < deadline, f"not featurized: {done}\n{worker.tail()}"
        time.sleep(0.2)


def wait_for(worker: Worker, entity: str, want: dict, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    got: dict = {}
    while time.monotonic() < deadline:
        got = get(worker, "/features", entity=entity)["features"][entity]
        if got == want:
            return got
        time.sleep(0.5)
    raise AssertionError(f"{entity}: {got} != {want}\n{worker.tail()}")


def test_feature_tables_answer_over_http_and_survive_a_restart(
    deployment: Deployment, tmp_path: Path
) -> None:
    spec = FeatureSpec.load(spec_file(tmp_path))
    deployment.env.update(
        LLMOPT_WORKER_ROLES="features,archive",
        LLMOPT_FEATURE_SPEC_PATH=str(spec_file(tmp_path)),
        LLMOPT_ARCHIVE_DIR=str(tmp_path / "archive"),
        LLMOPT_ARCHIVE_FLUSH_SECONDS="0.5",
    )
    worker = deployment.start_worker()
    t0 = now_ms() - N * STEP_MS
    reqs, outs = traffic(t0)
    truth = FeatureStore.for_spec(spec)
    for r, o in zip(reqs, outs, strict=True):
        for _, entity, obs in [*request_observations(r), *outcome_observations(o)]:
            truth.observe(entity, dict(obs))
    bs, t = deployment.broker.bootstrap, deployment.topics
    # As traffic comes: a chunk of requests and their outcomes at a time, so
    # that the two featurize agents never drift further apart in event time
    # than the grace period (observations later than it are dropped).
    for i in range(0, N, CHUNK):
        chunk = slice(i, i + CHUNK)
        rs, os_ = reqs[chunk], outs[chunk]
        asyncio.run(
            produce(bs, t.name("requests"), ((r.tenant_id.encode(), r.dumps()) for r in rs))
        )
        asyncio.run(produce(bs, t.name("outcomes"), ((b"default", o.dumps()) for o in os_)))
        wait_featurized(worker, i + len(rs))

    entities = ["tenant=acme", "tenant=beta", "task_type=qa", "task_type=code", "tenant=acme,arm=b"]
    expected = {e: truth.get_features(e) for e in entities}
    assert (
        expected["tenant=acme"]["outcome_count_5m"] and expected["task_type=qa"]["request_count_1m"]
    )
    for e in entities:
        wait_for(worker, e, json.loads(json.dumps(expected[e])))
    batch = get(worker, "/features", entity=entities[:2], names="mean_reward_5m,latency_p95_ms_5m")
    assert batch["features"] == {
        e: {k: expected[e][k] for k in ("mean_reward_5m", "latency_p95_ms_5m")}
        for e in entities[:2]
    }
    lo, hi = t0, t0 + N * STEP_MS
    history = get(worker, "/features/history", entity="tenant=acme", start=lo, end=hi)["rows"]
    assert history == json.loads(json.dumps(truth.get_historical_features("tenant=acme", lo, hi)))
    assert len(history) > 100
    try:
        get(worker, "/features", entity="tenant=acme", names="nope_1m")
        raise AssertionError("an unknown feature name must be refused")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400

    # Kill the worker, wipe its local RocksDB state: the new worker must
    # recover the tables from their changelog topics alone.
    worker.kill()
    for child in Path(deployment.settings.data_dir).iterdir():
        if child.is_dir():
            shutil.rmtree(child)
    again = deployment.start_worker()
    for e in entities:
        wait_for(again, e, json.loads(json.dumps(expected[e])))

    # Outcomes the killed worker had not archived yet are archived by the new
    # one (at-least-once): wait for them.
    deadline = time.monotonic() + 60
    while True:
        archived = ds.dataset(tmp_path / "archive", partitioning="hive").to_table()
        missing = {o.request_id for o in outs} - set(archived["request_id"].to_pylist())
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(archived["request_id"].to_pylist()) == {o.request_id for o in outs}
    assert set(archived["policy"].to_pylist()) == {"default"}
