"""A learner killed after a batch in which some policy updates raised, and
before that batch's commit, still dead-letters every refused outcome: the
redone batch finds the outcomes marked as seen in the policy state written
before the kill, so the first dead letters must be in the topic by then."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import orjson

from app.faults import Faults
from app.records import DeadLetter, now_ms
from app.stream.broker import free_port
from tests.conftest import Deployment, Worker, policies_file
from tests.kafka_io import TopicReader, produce
from tests.test_agent_faults_integration import outcome
from tests.test_bad_input_integration import _original
from tests.test_loop_integration import snapshot_holding

CRASH_FRACTION = 0.25
TOTAL = 200


def test_refused_outcomes_of_a_batch_killed_before_its_commit_are_dead_lettered(
    deployment: Deployment,
) -> None:
    d = deployment
    refuses = Faults(crash_fraction=CRASH_FRACTION).crashes
    stamp = now_ms()
    ids = [f"refused-{stamp}-{i:04d}" for i in range(TOTAL)]
    crashing = {rid for rid in ids if refuses(rid)}
    # Written before the worker starts: its first batch holds many, some refused.
    asyncio.run(
        produce(
            d.broker.bootstrap, d.topics.name("outcomes"), ((b"default", outcome(r)) for r in ids)
        )
    )
    base = f"crash_policy_update:{CRASH_FRACTION}"
    # No snapshot due in the killed batch: nothing there waits for the sends.
    rare = policies_file(
        Path(d.settings.data_dir).parent / "policies-rare-snapshots.yaml",
        {"default": {"snapshot": {"every_updates": 10**6, "every_ms": 10**9}}},
    )
    env = {
        **d.env,
        "LLMOPT_FAULTS": f"{base},kill_mid_batch:learn_from_outcomes:1",
        "LLMOPT_WORKER_ROLES": "learn",
        "LLMOPT_WEB_PORT": str(free_port()),
        # Sends wait in the producer's buffer: the kill finds the dead letters there.
        "LLMOPT_PRODUCER_LINGER_MS": "500",
        "LLMOPT_POLICIES_PATH": str(rare),
    }
    # Not waited ready: it may be killed before its /health answers.
    doomed = Worker(env, Path(d.settings.data_dir) / "worker-doomed.log")
    d.workers.append(doomed)
    deadline = time.monotonic() + 60
    while doomed.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = doomed.log.read_text()
    assert doomed.proc.returncode == -signal.SIGKILL, doomed.tail()
    assert "kill_mid_batch after batch 1 of learn_from_outcomes" in log
    assert "InjectedFault" in log  # the killed batch had refused updates

    d.env["LLMOPT_FAULTS"] = base  # every start refuses the same requests
    d.start_worker(roles="learn")
    # One more, applied: the restarted learner publishes a snapshot after an update.
    last = next(r for i in range(100) if not refuses(r := f"refused-{stamp}-last-{i}"))
    asyncio.run(
        produce(d.broker.bootstrap, d.topics.name("outcomes"), [(b"default", outcome(last))])
    )
    applied = TOTAL - len(crashing) + 1
    dead, updates = asyncio.run(_settled(d, applied))
    assert updates == applied
    assert crashing - dead == set(), f"{len(crashing - dead)} refused outcomes never dead-lettered"
    assert dead <= crashing


async def _settled(d: Deployment, applied: int) -> tuple[set[str], int | None]:
    """The request ids dead-lettered internal_error from the outcomes topic,
    and the updates of the policy's latest snapshot, once it shows ``applied``."""
    bs, t = d.broker.bootstrap, d.topics
    snap = await snapshot_holding(bs, t.name("policy_snapshots"), applied, 90, settle=2.0)
    async with TopicReader(bs, t.name("dead_letter")) as letters:
        await letters.settle(2.0)
    dead = set()
    for m in letters.messages:
        dl = DeadLetter.loads(m.value, 1 << 20)
        if dl.reason == "internal_error" and dl.source_topic == t.name("outcomes"):
            dead.add(orjson.loads(_original(m))["request_id"])
    return dead, snap.updates
