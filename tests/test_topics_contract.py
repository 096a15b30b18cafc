"""topics.yaml is the contract between the agents: names, keys, partition
counts (co-partitioned joins), cleanup policies. And a malformed file is
refused with a message that says what is wrong."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings
from app.topics import TopicCatalog

REPO = Path(__file__).resolve().parents[1]
TOPICS = REPO / "topics.yaml"
ROLES = [
    "requests",
    "decisions",
    "rewards",
    "outcomes",
    "policy_snapshots",
    "metrics",
    "dead_letter",
]
NAME = re.compile(r"llmopt\.[a-z0-9]+(?:-[a-z0-9]+)*\.v[1-9][0-9]*")


@pytest.fixture(scope="module")
def catalog() -> TopicCatalog:
    return TopicCatalog.load(TOPICS)


def test_default_path_is_the_repository_file(catalog: TopicCatalog) -> None:
    assert Settings().topics_path == TOPICS
    assert TopicCatalog.load() == catalog


def test_every_role_the_agents_use_exists(catalog: TopicCatalog) -> None:
    missing = [r for r in ROLES if r not in catalog.topics]
    assert not missing, missing
    for role in ROLES:
        assert catalog[role].role == role
        assert catalog.name(role) == catalog[role].name


def test_topic_names_follow_the_convention(catalog: TopicCatalog) -> None:
    names = [t.name for t in catalog.topics.values()]
    for name in names:
        assert NAME.fullmatch(name), name
    assert len(set(names)) == len(names), "two roles share a topic"


@pytest.mark.parametrize(
    ("role", "key"),
    [
        ("requests", "tenant_id"),
        ("decisions", "request_id"),
        ("rewards", "request_id"),
        ("outcomes", "policy_id"),
        ("policy_snapshots", "policy_id"),
    ],
)
def test_keys(catalog: TopicCatalog, role: str, key: str) -> None:
    assert catalog[role].key == key


def test_joined_topics_are_co_partitioned(catalog: TopicCatalog) -> None:
    assert "join_rewards" in catalog.joins
    assert set(catalog.joins["join_rewards"]) >= {"decisions", "rewards"}
    for agent, roles in catalog.joins.items():
        assert len(roles) >= 2, agent
        specs = [catalog[r] for r in roles]
        assert len({s.key for s in specs}) == 1, (agent, [(s.role, s.key) for s in specs])
        assert len({s.partitions for s in specs}) == 1, (
            agent,
            [(s.role, s.partitions) for s in specs],
        )


def test_cleanup_and_retention(catalog: TopicCatalog) -> None:
    snaps = catalog["policy_snapshots"]
    assert snaps.cleanup_policy == "compact"
    assert snaps.configs == {"cleanup.policy": "compact", "retention.ms": str(snaps.retention_ms)}
    for spec in catalog.topics.values():
        assert spec.cleanup_policy in {"delete", "compact", "compact,delete"}
        assert spec.partitions >= 1 and spec.replication_factor >= 1
        assert spec.retention_ms == -1 or spec.retention_ms > 0
        if spec.cleanup_policy == "delete":
            assert spec.retention_ms > 0, spec.name  # a delete topic must expire
    # The backtest log outlives the request log.
    assert catalog["outcomes"].retention_ms >= catalog["requests"].retention_ms


def test_defaults_fill_partitions(catalog: TopicCatalog) -> None:
    doc = yaml.safe_load(TOPICS.read_text())
    default = doc["defaults"]["partitions"]
    for role, t in doc["topics"].items():
        assert catalog[role].partitions == t.get("partitions", default)


def test_namespace_is_appended_to_every_name(catalog: TopicCatalog) -> None:
    ns = TopicCatalog.load(TOPICS, namespace="t1234")
    for role, spec in catalog.topics.items():
        assert ns.name(role) == spec.name + ".t1234"
        assert (ns[role].key, ns[role].partitions) == (spec.key, spec.partitions)
    assert TopicCatalog.for_settings(Settings(topic_namespace="t1234")) == ns


# -- malformed files --------------------------------------------------------------------------


def _doc() -> dict[str, Any]:
    return {
        "defaults": {"partitions": 2},
        "topics": {
            "decisions": {
                "name": "llmopt.decisions.v1",
                "key": "request_id",
                "retention_ms": 1000,
                "cleanup_policy": "delete",
            },
            "rewards": {
                "name": "llmopt.rewards.v1",
                "key": "request_id",
                "retention_ms": 1000,
                "cleanup_policy": "delete",
            },
        },
        "joins": {"join_rewards": ["decisions", "rewards"]},
    }


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_minimal_file_loads(tmp_path: Path) -> None:
    cat = TopicCatalog.load(_write(tmp_path, _doc()))
    assert cat["rewards"].partitions == 2 and cat["rewards"].replication_factor == 1
    assert cat.joins == {"join_rewards": ["decisions", "rewards"]}


@pytest.mark.parametrize(
    "name",
    [
        "requests.v1",
        "llmopt.requests",
        "llmopt.requests.version",
        "llmopt.requests.v1x",
        "llmopt..v1",
        "LLMOPT.requests.v1",
        "llmopt.requests.v0",
        "llmopt.a.b.v1",
    ],
)
def test_bad_topic_name(tmp_path: Path, name: str) -> None:
    doc = _doc()
    doc["topics"]["rewards"]["name"] = name
    with pytest.raises(ValueError) as info:
        TopicCatalog.load(_write(tmp_path, doc))
    assert repr(name) in str(info.value) and "llmopt.<entity>.v<N>" in str(info.value)


def test_unknown_join_topic(tmp_path: Path) -> None:
    doc = _doc()
    doc["joins"]["join_rewards"].append("reward_timeouts")
    with pytest.raises(ValueError, match=r"join 'join_rewards' names unknown topics \['reward_"):
        TopicCatalog.load(_write(tmp_path, doc))


@pytest.mark.parametrize("policy", ["compacted", "", "delete,compact,forever"])
def test_bad_cleanup_policy(tmp_path: Path, policy: str) -> None:
    doc = _doc()
    doc["topics"]["decisions"]["cleanup_policy"] = policy
    with pytest.raises(ValueError, match=r"llmopt\.decisions\.v1.*cleanup_policy"):
        TopicCatalog.load(_write(tmp_path, doc))


@pytest.mark.parametrize("field", ["name", "key", "retention_ms", "cleanup_policy"])
def test_missing_field_names_the_topic(tmp_path: Path, field: str) -> None:
    doc = _doc()
    del doc["topics"]["rewards"][field]
    with pytest.raises(ValueError) as info:
        TopicCatalog.load(_write(tmp_path, doc))
    assert "'rewards'" in str(info.value) and repr(field) in str(info.value)
