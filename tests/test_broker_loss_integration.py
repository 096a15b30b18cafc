"""Broker loss on the embedded broker, with a real worker: /health turns 503
with the reason while the cluster is gone; a new broker on the same port comes
back empty, and the same worker process re-creates the topics, reads the new
logs from their beginning and decides, joins and learns again. And `llmopt
broker` says when its broker exits and leaves nothing behind when stopped."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.evaluation.simulator import TrafficSimulator
from app.records import Decision, PolicySnapshot
from app.stream.broker import EmbeddedBroker, free_port
from app.stream.cluster_watcher import rewind_restarted_logs
from app.topics import apply_topics, check_topics
from tests.conftest import ROOT, Broker, Deployment, Worker, deploy
from tests.kafka_io import TopicReader
from tests.kafka_io import round_trip as kafka_round_trip

pytestmark = pytest.mark.integration


def health(worker: Worker) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/health", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_health(worker: Worker, status: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    seen: tuple[int, dict] = (0, {})
    while time.monotonic() < deadline:
        seen = health(worker)
        if seen[0] == status:
            return seen[1]
        time.sleep(0.2)
    raise AssertionError(f"/health not {status} in {timeout}s; last: {seen}\n{worker.tail()}")


def metric(worker: Worker, name: str, **labels: str) -> float:
    """The sum of a metric's series that carry ``labels``."""
    total = 0.0
    for found, value in re.findall(rf"^{name}(\{{[^}}]*\}})? (\S+)$", worker.metrics(), re.M):
        if all(f'{k}="{v}"' in found for k, v in labels.items()):
            total += float(value)
    return total


def wait_metric(worker: Worker, name: str, at_least: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while (value := metric(worker, name)) < at_least:
        if time.monotonic() > deadline:
            counts = re.findall(
                r"^llmopt_(?:events|policy_updates_skipped|sends_retried|broker_data_loss)"
                r"_total\{.*$",
                worker.metrics(),
                re.M,
            )
            raise AssertionError(
                f"{name} = {value} < {at_least}\n" + "\n".join(counts) + f"\n{worker.tail()}"
            )
        time.sleep(0.5)
    return value


async def round_trip(d: Deployment, sim: TrafficSimulator, n: int) -> list[Decision]:
    """n requests → their n decisions → n rewards."""
    return await kafka_round_trip(d.broker.bootstrap, d.topics, sim, n)


async def latest_snapshot(bootstrap: str, topic: str) -> PolicySnapshot:
    async with TopicReader(bootstrap, topic) as reader:
        await reader.until(lambda ms: bool(ms), 20, "a policy snapshot")
        await reader.settle(1.0)
    return max(
        (PolicySnapshot.loads(m.value, 1 << 24) for m in reader.messages), key=lambda s: s.version
    )


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, on a fixed port, that it can kill and restart."""
    broker = EmbeddedBroker(port=free_port()).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_deployment(own_broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Deployment]:
    yield from deploy(Broker(own_broker.bootstrap, "embedded"), tmp_path)


def test_worker_rides_out_a_broker_that_lost_everything(
    own_deployment: Deployment, own_broker: EmbeddedBroker
) -> None:
    d, broker = own_deployment, own_broker
    worker = d.start_worker()
    sim = TrafficSimulator.default(seed=23)
    asyncio.run(round_trip(d, sim, 150))
    wait_metric(worker, "llmopt_policy_updates_total", 150, 30)
    old_cluster = broker.cluster_id

    assert broker.proc is not None
    broker.proc.kill()  # SIGKILL: the broker and every log it held are gone
    broker.stop()
    lost_at = time.monotonic()
    body = wait_health(worker, 503, 10)
    assert time.monotonic() - lost_at < 6, "the outage shows within seconds"
    assert body["status"] == "unavailable"
    assert "unreachable" in body["reason"] and broker.bootstrap in body["reason"]
    assert metric(worker, "llmopt_kafka_cluster_reachable") == 0

    broker.start()  # same port, empty, another cluster id
    assert broker.cluster_id != old_cluster
    wait_health(worker, 200, 30)
    assert metric(worker, "llmopt_kafka_cluster_reachable") == 1
    assert metric(worker, "llmopt_topics_recreated_total") >= len(d.topics.topics)
    # As topics.yaml says, not as the broker would have made them on first use.
    asyncio.run(check_topics(broker.bootstrap, d.topics))

    # The same worker process decides, joins and learns from the new logs.
    decided = asyncio.run(round_trip(d, sim, 150))
    assert len(decided) == 150
    wait_metric(worker, "llmopt_outcomes_total", 300, 40)
    wait_metric(worker, "llmopt_policy_updates_total", 300, 40)
    # The worker kept its state (the broker lost its logs, not the worker its
    # tables): the new snapshots go on from the old count, and the decider
    # follows them on the new log.
    snap = asyncio.run(latest_snapshot(broker.bootstrap, d.topics.name("policy_snapshots")))
    assert snap.updates >= 300
    wait_metric(worker, "llmopt_decider_policy_version", snap.version, 20)
    assert worker.alive() and worker.proc.pid == d.workers[0].proc.pid
    log = worker.log.read_text(errors="replace")
    assert "data loss on the broker side" in log
    # Positions from the old logs were taken back to the new beginning: the
    # snapshot follower's (assigned, no group) always; the groups' when their
    # consumer fetched before the new coordinator reset them.
    loss = metric(worker, "llmopt_broker_data_loss_total", consumer="snapshot_follower")
    assert loss >= 1

    # A worker started later on the new cluster goes on too: its tables hold
    # offsets of the old logs, which hide nothing of the new ones.
    worker.stop()
    worker = d.start_worker()
    asyncio.run(round_trip(d, sim, 100))
    wait_metric(worker, "llmopt_policy_updates_total", 100, 40)
    snapshots = d.topics.name("policy_snapshots")
    deadline = time.monotonic() + 20
    while (snap := asyncio.run(latest_snapshot(broker.bootstrap, snapshots))).updates < 400:
        assert time.monotonic() < deadline, f"{snap.updates} updates, 400 rewarded requests"
    assert snap.updates == 400, "each rewarded request applied once, across the loss and restart"


def test_auto_create_off_reports_missing_topics_until_they_are_applied(
    own_deployment: Deployment, own_broker: EmbeddedBroker
) -> None:
    d = own_deployment
    d.env["LLMOPT_AUTO_CREATE_TOPICS"] = "0"
    worker = d.start_worker()
    assert own_broker.proc is not None
    own_broker.proc.kill()
    own_broker.stop()
    wait_health(worker, 503, 10)
    own_broker.start()
    body = wait_health_reason(worker, "llmopt topics apply", 20)
    assert any(spec.name in body["reason"] for spec in d.topics.topics.values())
    time.sleep(2)  # the worker leaves topics.yaml's topics to the operator
    assert d.topics.name("requests") not in asyncio.run(topic_names(own_broker.bootstrap))
    assert health(worker)[0] == 503
    asyncio.run(apply_topics(own_broker.bootstrap, d.topics))
    wait_health(worker, 200, 30)
    assert worker.alive()


async def topic_names(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def wait_health_reason(worker: Worker, text: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    seen: tuple[int, dict] = (0, {})
    while time.monotonic() < deadline:
        seen = health(worker)
        if seen[0] == 503 and text in seen[1].get("reason", ""):
            return seen[1]
        time.sleep(0.2)
    raise AssertionError(f"/health never said {text!r} in {timeout}s; last: {seen}")


def test_an_assigned_consumer_is_rewound_when_its_log_restarted(
    own_broker: EmbeddedBroker,
) -> None:
    asyncio.run(_rewind(own_broker))


async def _rewind(broker: EmbeddedBroker) -> None:
    tp = TopicPartition("llmopt.requests.v1.rewind", 0)

    async def send(values: list[bytes]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for v in values:
                await producer.send(tp.topic, v, partition=0)
        finally:
            await producer.stop()

    await send([b"old-%d" % i for i in range(50)])
    async with TopicReader(broker.bootstrap, tp.topic) as reader:
        await reader.until(lambda ms: len(ms) == 50, 10, "the old log")
        assert await rewind_restarted_logs(reader.consumer, "test", every_s=0) == 0
        assert broker.proc is not None
        broker.proc.kill()
        broker.stop()
        broker.start()
        await send([b"new-%d" % i for i in range(5)])
        deadline = time.monotonic() + 15
        while not await rewind_restarted_logs(reader.consumer, "test", every_s=0):
            assert time.monotonic() < deadline, "the restarted log was not noticed"
            await reader.poll()
        assert await reader.consumer.position(tp) == 0
        new = await reader.until(lambda ms: len(ms) >= 55, 10, "the new log")
    assert [m.value for m in new[50:]] == [b"new-%d" % i for i in range(5)]


# -- `llmopt broker` ----------------------------------------------------------------------
class BrokerCommand:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "broker", "--port", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert f"127.0.0.1:{self.port}" in line, line
        self.child = _children(self.proc.pid)[0]
        self.workdir = Path(os.readlink(f"/proc/{self.child}/cwd"))
        assert self.workdir.is_dir()

    def wait(self) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, err


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_broker_command_says_when_its_broker_dies_and_exits_non_zero() -> None:
    cmd = BrokerCommand()
    os.kill(cmd.child, signal.SIGKILL)
    code, err = cmd.wait()
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "exited" in lines[0] and "SIGKILL" in lines[0] and str(cmd.port) in lines[0]
    assert not cmd.workdir.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_broker_command_stopped_by_a_signal_leaves_nothing_behind(sig: signal.Signals) -> None:
    cmd = BrokerCommand()
    cmd.proc.send_signal(sig)
    code, err = cmd.wait()
    assert code == 0, err
    assert not _running(cmd.child), "the broker process was stopped"
    assert not cmd.workdir.exists(), "its data directory was removed"
