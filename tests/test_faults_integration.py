"""Faults injected into a real worker (``LLMOPT_FAULTS``, app/faults.py) on
the test broker: a worker killed after a batch was handled and before its
commit decides that request again once restarted; a policy update that
raises dead-letters its outcome ``internal_error`` and the learner goes on."""

from __future__ import annotations

import asyncio
import signal
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.records import Request, now_ms
from app.stream.batched_service import group_id
from tests.conftest import Deployment
from tests.kafka_io import TopicReader, produce
from tests.test_agent_faults_integration import outcome
from tests.test_bad_input_integration import dead_letter_for


async def committed_requests(d: Deployment) -> int:
    """Offsets the decider's group committed over the requests topic."""
    c = AIOKafkaConsumer(
        bootstrap_servers=d.broker.bootstrap, group_id=group_id(d.settings.app_id, "select_arm")
    )
    await c.start()
    try:
        topic = d.topics.name("requests")
        parts = range(d.topics["requests"].partitions)
        return sum([await c.committed(TopicPartition(topic, p)) or 0 for p in parts])
    finally:
        await c.stop()


async def decisions_of(d: Deployment, request_id: str, timeout: float) -> int:
    async with TopicReader(d.broker.bootstrap, d.topics.name("decisions")) as reader:
        await reader.until(
            lambda ms: any(m.key == request_id.encode() for m in ms), timeout, "a decision"
        )
        await asyncio.sleep(1.0)
        await reader.poll()
        return sum(1 for m in reader.messages if m.key == request_id.encode())


def test_a_worker_killed_mid_batch_decides_the_request_again(deployment: Deployment) -> None:
    d = deployment
    d.env["LLMOPT_FAULTS"] = "kill_mid_batch:select_arm:1"
    doomed = d.start_worker(roles="decide")
    request = Request(request_id=f"k-{now_ms()}", tenant_id="acme", task_type="qa", created_at=1)
    asyncio.run(
        produce(d.broker.bootstrap, d.topics.name("requests"), [(b"acme", request.dumps())])
    )
    deadline = time.monotonic() + 30
    while doomed.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert doomed.proc.returncode == -signal.SIGKILL
    assert "kill_mid_batch after batch 1 of select_arm" in doomed.log.read_text()
    assert asyncio.run(committed_requests(d)) == 0  # killed before the batch's commit

    del d.env["LLMOPT_FAULTS"]
    d.start_worker(roles="decide")
    # Its offset was never committed: decided again (by the same decision id
    # if the first decision went out before the kill).
    assert asyncio.run(decisions_of(d, request.request_id, 60)) >= 1


def test_a_policy_update_that_raises_dead_letters_its_outcome(deployment: Deployment) -> None:
    d = deployment
    d.env["LLMOPT_FAULTS"] = "crash_policy_update:1"
    worker = d.start_worker(roles="learn")
    crashing = outcome(f"crash-{now_ms()}")
    asyncio.run(produce(d.broker.bootstrap, d.topics.name("outcomes"), [(b"default", crashing)]))
    dl = asyncio.run(dead_letter_for(d, crashing, timeout=60))
    assert dl.reason == "internal_error"
    assert "InjectedFault" in dl.detail
    assert dl.source_topic == d.topics.name("outcomes")
    assert orjson.loads(crashing)["request_id"] in worker.log.read_text()
    assert worker.alive()
