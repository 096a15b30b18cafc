"""The policy snapshots topic read from its start: the newest version
published for each policy (or shard of one), for the learner to tell when a
recovered state went backwards.

The read waits on the cluster inside the learner's batch, so it is bounded
(PUBLISHED_VERSIONS_TIMEOUT_SECONDS) and behind a circuit breaker
(``published_versions``): a cluster that does not answer costs the learner
one timeout, not a stalled batch, and the learner goes on without the check.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.circuit_breaker import CircuitBreaker
from app.learner import live_key
from app.stream.kafka_io import read_to_end

PUBLISHED_VERSIONS_TIMEOUT_SECONDS = 30.0
PUBLISHED_VERSIONS = CircuitBreaker("published_versions", failures=3, reset_seconds=60.0)


async def published_versions(
    runtime: Any, topic: str, timeout_seconds: float = PUBLISHED_VERSIONS_TIMEOUT_SECONDS
) -> dict[str, int]:
    """{policy id (or shard's live key): highest snapshot version} over the
    whole topic; ``TimeoutError`` past ``timeout_seconds``,
    :class:`~app.circuit_breaker.CircuitOpen` while the breaker is open."""
    return await PUBLISHED_VERSIONS.call_async(
        lambda: _read_versions(runtime, topic), timeout_seconds
    )


async def _read_versions(runtime: Any, topic: str) -> dict[str, int]:
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
    shard = doc.get("shard")
    if isinstance(pid, str) and type(version) is int and (shard is None or type(shard) is int):
        key = live_key(pid, shard)
        versions[key] = max(versions.get(key, 0), version)
