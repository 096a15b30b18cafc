"""Topic specs from ``topics.yaml``, and creating / checking them on a cluster."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.kafka_security import kafka_security
from app.settings import Settings

_NAME = re.compile(r"llmopt\.[a-z0-9]+(?:-[a-z0-9]+)*\.v[1-9][0-9]*")


class TopicMismatch(RuntimeError):
    """A topic exists on the cluster with settings other than topics.yaml's."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    role: str
    name: str
    key: str
    partitions: int
    replication_factor: int
    retention_ms: int
    cleanup_policy: str

    @property
    def configs(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


@dataclass(frozen=True, slots=True)
class TopicCatalog:
    topics: dict[str, TopicSpec]
    joins: dict[str, list[str]]

    def __getitem__(self, role: str) -> TopicSpec:
        return self.topics[role]

    def name(self, role: str) -> str:
        return self.topics[role].name

    @classmethod
    def load(cls, path: Path | None = None, namespace: str = "") -> TopicCatalog:
        path = path or Settings().topics_path
        doc: dict[str, Any] = yaml.safe_load(Path(path).read_text())
        defaults = doc.get("defaults", {})
        topics = {}
        for role, t in doc["topics"].items():
            try:
                spec = TopicSpec(
                    role=role,
                    name=t["name"] + (f".{namespace}" if namespace else ""),
                    key=t["key"],
                    partitions=int(t.get("partitions", defaults.get("partitions", 1))),
                    replication_factor=int(
                        t.get("replication_factor", defaults.get("replication_factor", 1))
                    ),
                    retention_ms=int(t["retention_ms"]),
                    cleanup_policy=t["cleanup_policy"],
                )
            except KeyError as exc:
                raise ValueError(f"{path}: topic {role!r} has no {exc.args[0]!r}") from None
            if not _NAME.fullmatch(t["name"]):
                raise ValueError(f"topic {t['name']!r} must be named llmopt.<entity>.v<N>")
            if spec.cleanup_policy not in {"delete", "compact", "compact,delete"}:
                raise ValueError(f"topic {spec.name!r}: bad cleanup_policy {spec.cleanup_policy!r}")
            topics[role] = spec
        joins = {agent: list(roles) for agent, roles in doc.get("joins", {}).items()}
        for agent, roles in joins.items():
            unknown = [r for r in roles if r not in topics]
            if unknown:
                raise ValueError(f"join {agent!r} names unknown topics {unknown}")
        return cls(topics=topics, joins=joins)

    @classmethod
    def for_settings(cls, settings: Settings) -> TopicCatalog:
        return cls.load(settings.topics_path, settings.topic_namespace)


async def apply_topics(bootstrap: str, catalog: TopicCatalog) -> list[str]:
    """Create missing topics; return the names created. Existing topics are checked."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="llmopt-topics", **kafka_security()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in catalog.topics.values() if t.name not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(t.name, t.partitions, t.replication_factor, topic_configs=t.configs)
                    for t in missing
                ]
            )
    finally:
        await admin.close()
    await check_topics(bootstrap, catalog)
    return [t.name for t in missing]


async def check_topics(bootstrap: str, catalog: TopicCatalog) -> None:
    """Raise :class:`TopicMismatch` listing every difference from topics.yaml."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="llmopt-topics", **kafka_security()
    )
    await admin.start()
    problems: list[str] = []
    try:
        described = await admin.describe_topics([t.name for t in catalog.topics.values()])
        by_name = {d["topic"]: d for d in described}
        for t in catalog.topics.values():
            d = by_name.get(t.name)
            if d is None or d.get("error_code", 0) != 0 or not d.get("partitions"):
                problems.append(f"{t.name}: missing (run `llmopt topics apply`)")
                continue
            if len(d["partitions"]) != t.partitions:
                problems.append(
                    f"{t.name}: {len(d['partitions'])} partitions, topics.yaml says {t.partitions}"
                )
            resources = [ConfigResource(ConfigResourceType.TOPIC, t.name)]
            for response in await admin.describe_configs(resources):
                for resource in response.resources:
                    actual = {entry[0]: entry[1] for entry in resource[4]}
                    for key, want in t.configs.items():
                        if key in actual and actual[key] != want:
                            problems.append(
                                f"{t.name}: {key}={actual[key]}, topics.yaml says {want}"
                            )
    finally:
        await admin.close()
    if problems:
        raise TopicMismatch("topics differ from topics.yaml:\n  " + "\n  ".join(problems))
