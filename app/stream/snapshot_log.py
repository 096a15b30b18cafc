"""The policy snapshots topic read from its start: the newest version
published for each policy, for the learner to tell when a recovered state
went backwards."""

from __future__ import annotations

from typing import Any

import orjson

from app.stream.kafka_io import read_to_end


async def published_versions(runtime: Any, topic: str) -> dict[str, int]:
    """{policy id: highest snapshot version} over the whole topic."""
    s = runtime.settings
    versions: dict[str, int] = {}
    async for records in read_to_end(s.bootstrap, topic, f"{s.app_id}-snapshot-versions"):
        for m in records:
            _note(versions, m.value)
    return versions


def _note(versions: dict[str, int], raw: bytes | None) -> None:
    try:
        doc = orjson.loads(raw or b"")
        pid, version = doc["policy_id"], doc["version"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return  # not a snapshot: the deciders skip it too
    if isinstance(pid, str) and type(version) is int:
        versions[pid] = max(versions.get(pid, 0), version)
