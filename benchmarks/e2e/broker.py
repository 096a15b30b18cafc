"""A fresh embedded broker per measurement, with the project's topics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.kafka_security import kafka_security
from benchmarks.common import ROOT
from benchmarks.e2e.configs import ECHO_OUTPUT_TOPIC


@contextlib.asynccontextmanager
async def fresh_broker() -> AsyncIterator[tuple[str, dict[str, str]]]:
    """An empty embedded broker with topics.yaml applied (+ the echo's output topic)."""
    from app.stream.broker import EmbeddedBroker
    from app.topics import TopicCatalog, apply_topics

    broker = EmbeddedBroker()
    broker.start()
    try:
        catalog = TopicCatalog.load(ROOT / "topics.yaml")
        await _create_topics(broker.bootstrap, catalog, apply_topics)
        names = {role: catalog.name(role) for role in catalog.topics}
        names["broker_pid"] = str(broker.proc.pid if broker.proc else "")
        yield broker.bootstrap, names
    finally:
        broker.stop()


async def _create_topics(bootstrap: str, catalog: Any, apply_topics: Callable[..., Any]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    await apply_topics(bootstrap, catalog)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="llmopt-bench", **kafka_security()
    )
    await admin.start()
    try:
        spec = catalog["decisions"]
        await admin.create_topics(
            [NewTopic(ECHO_OUTPUT_TOPIC, spec.partitions, 1, topic_configs=spec.configs)]
        )
    finally:
        await admin.close()
