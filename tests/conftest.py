"""Brokers and workers for the integration tests.

The broker is, in this order: the cluster named by ``LLMOPT_TEST_KAFKA_BOOTSTRAP``;
a testcontainers Kafka when a Docker engine is reachable; else the embedded
broker. Each test gets its own topic namespace and application id, so tests
never see each other's events, whichever broker it is.
"""

from __future__ import annotations

import asyncio
import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings
from app.stream.broker import EmbeddedBroker, free_port
from app.stream.worker_process import WorkerProcess
from app.topics import TopicCatalog, apply_topics

ROOT = Path(__file__).resolve().parent.parent
TEST_POLICIES = ROOT / "tests" / "fixtures" / "policies.yaml"


def policies_file(path: Path, policies: dict[str, dict[str, Any]]) -> Path:
    """The test policies with ``policies`` merged in (policy id → keys that
    replace or add to its entry), written to ``path``."""
    doc = yaml.safe_load(TEST_POLICIES.read_text())
    for pid, changes in policies.items():
        doc["policies"][pid] = {**doc["policies"].get(pid, {}), **changes}
    path.write_text(yaml.safe_dump(doc))
    return path


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    kind: str  # external | testcontainers | embedded

    @property
    def embedded(self) -> bool:
        return self.kind == "embedded"


def _docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    external = os.environ.get("LLMOPT_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield Broker(external, "external")
    elif _docker_reachable():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield Broker(kafka.get_bootstrap_server(), "testcontainers")
    else:
        with EmbeddedBroker() as b:
            yield Broker(b.bootstrap, "embedded")


@dataclass
class Deployment:
    """One isolated deployment on the test broker: settings, topics, workers."""

    broker: Broker
    settings: Settings
    env: dict[str, str]
    topics: TopicCatalog
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, roles: str | None = None, timeout: float = 60.0) -> Worker:
        env = dict(self.env)
        if roles:
            env["LLMOPT_WORKER_ROLES"] = roles
        env["LLMOPT_WEB_PORT"] = str(free_port())
        worker = Worker(env, Path(self.settings.data_dir) / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        worker.wait_ready(timeout)
        return worker


class Worker(WorkerProcess):
    """A worker of a test deployment, on its own web port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.port = int(env["LLMOPT_WEB_PORT"])
        url = f"http://127.0.0.1:{self.port}/health"
        super().__init__(log, url, env=env, cwd=ROOT, new_session=False)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return str(r.read().decode())


@pytest.fixture
def deployment(broker: Broker, tmp_path: Path) -> Iterator[Deployment]:
    yield from deploy(broker, tmp_path)


def deploy(broker: Broker, tmp_path: Path) -> Iterator[Deployment]:
    """An isolated deployment: own topic namespace, app id and data directory."""
    ns = "t" + uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPT_")}
    env.update(
        LLMOPT_KAFKA_BOOTSTRAP=broker.bootstrap,
        LLMOPT_EMBEDDED_BROKER="1" if broker.embedded else "0",
        LLMOPT_APP_ID=f"llmopt-{ns}",
        LLMOPT_TOPIC_NAMESPACE=ns,
        LLMOPT_DATA_DIR=str(tmp_path / "data"),
        LLMOPT_POLICIES_PATH=str(TEST_POLICIES),
        LLMOPT_LOG_LEVEL="info",
        LLMOPT_JOIN_ORPHAN_HOLD_SECONDS="3",
    )
    settings = Settings.from_env(env)
    topics = TopicCatalog.for_settings(settings)
    asyncio.run(apply_topics(broker.bootstrap, topics))
    d = Deployment(broker, settings, env, topics)
    try:
        yield d
    finally:
        for w in d.workers:
            w.stop()


def pytest_collection_modifyitems(items: list[Any]) -> None:
    for item in items:
        if "deployment" in getattr(item, "fixturenames", ()) or "broker" in getattr(
            item, "fixturenames", ()
        ):
            item.add_marker(pytest.mark.integration)
