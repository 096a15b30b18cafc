"""An event an agent cannot process is dead-lettered (or, inside a batch of
observations, skipped and counted) and the agent goes on: the archive, the
feature aggregation and the rest of the worker keep working.

Before: an observation without ``"e"`` raised KeyError in
``aggregate_features``, a negative latency raised in the latency sketch, and
an outcome whose components Parquet cannot hold failed the archive's batch.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pyarrow.dataset as ds

from app.records import Outcome, Request, now_ms
from tests.conftest import Deployment, Worker
from tests.kafka_io import TopicReader, produce
from tests.test_bad_input_integration import dead_letter_for


def outcome(request_id: str, **overrides: object) -> bytes:
    now = now_ms()
    doc = Outcome(
        request_id=request_id,
        tenant_id="acme",
        policy_id="default",
        policy_version=0,
        arm="gpt-4o",
        available_arms=["gpt-4o", "gpt-4o-mini"],
        propensity=0.5,
        explored=False,
        reward=0.5,
        defaulted=False,
        decided_at=now,
        outcome_at=now,
    ).to_dict()
    doc.update(overrides)
    return orjson.dumps(doc)


def archived_ids(d: Deployment) -> set[str]:
    root = d.settings.data_dir / "archive"
    if not root.exists():
        return set()
    table = ds.dataset(str(root), partitioning="hive", format="parquet").to_table()
    return set(table["request_id"].to_pylist())


def test_agents_dead_letter_what_they_cannot_process_and_go_on(deployment: Deployment) -> None:
    d = deployment
    worker = d.start_worker(roles="decide,join,learn,features,archive")
    bs, t = d.broker.bootstrap, d.topics
    tag = str(now_ms())
    good = outcome(f"good-{tag}")
    unarchivable = outcome(f"slow-{tag}", components={"latency_ms": "slow"})
    far_future = outcome(f"future-{tag}", decided_at=2**53)
    asyncio.run(
        produce(bs, t.name("outcomes"), [(b"default", v) for v in (unarchivable, good, far_future)])
    )
    not_json = b"not json " + tag.encode()
    negative_latency = {"e": "tenant=acme", "k": "o", "t": 1, "reward": 0.5, "latency_ms": -1}
    observations = [
        (b"acme", not_json),
        (b"acme", orjson.dumps([{"k": "r", "t": 1}])),  # no entity
        (b"acme", orjson.dumps([negative_latency])),
    ]
    asyncio.run(produce(bs, t.name("feature_observations"), observations))

    dl = asyncio.run(dead_letter_for(d, unarchivable))
    assert dl.reason == "internal_error"
    assert dl.detail.startswith("archive_outcomes: Arrow"), dl.detail
    assert dl.source_topic == t.name("outcomes")
    dl = asyncio.run(dead_letter_for(d, far_future))
    assert (dl.reason, dl.detail) == ("invalid_value", "'decided_at' is beyond year 9999")
    dl = asyncio.run(dead_letter_for(d, not_json))
    assert (dl.reason, dl.source_topic) == ("malformed_json", t.name("feature_observations"))

    deadline = time.monotonic() + 30
    while f"good-{tag}" not in archived_ids(d) and time.monotonic() < deadline:
        time.sleep(0.5)
    ids = archived_ids(d)
    assert f"good-{tag}" in ids
    assert not {f"slow-{tag}", f"future-{tag}"} & ids

    # The worker still decides, and counted what it skipped.
    request = Request(request_id=f"after-{tag}", tenant_id="acme", task_type="qa", created_at=1)
    asyncio.run(produce(bs, t.name("requests"), [(b"acme", request.dumps())]))

    async def decided() -> None:
        async with TopicReader(bs, t.name("decisions")) as reader:
            await reader.until(
                lambda ms: any(m.key == request.request_id.encode() for m in ms), 30, "a decision"
            )

    asyncio.run(decided())
    assert worker.alive()
    # The two hostile observations, and the two made of the "slow" outcome
    # (its tenant and tenant × arm), which arrive through featurize_outcomes.
    # At-least-once: a redelivery may count some twice.
    deadline = time.monotonic() + 30
    while metric(worker, 'llmopt_feature_observations_total{result="invalid"}') < 4:
        assert time.monotonic() < deadline, "4 invalid observations counted"
        time.sleep(0.5)
    assert metric(
        worker, 'llmopt_dead_letters_total{agent="archive_outcomes",reason="internal_error"}'
    )
    assert metric(
        worker, 'llmopt_dead_letters_total{agent="aggregate_features",reason="malformed_json"}'
    )


def metric(worker: Worker, series: str) -> float:
    """A series' value on the worker's /metrics, 0 when absent."""
    for line in worker.metrics().splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
