"""A Faust sensor timing each event of each Faust agent into
``llmopt_agent_processing_seconds{agent}``, and the worker's consumer lag."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import faust

from app import metrics


class AgentSensor(faust.Sensor):
    """Times an event from its delivery to the agent until the agent asks for
    the next one (Faust acknowledges it then). The agent label is the
    stream's prefix, which Faust sets to the agent's name."""

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> Any:
        return time.perf_counter()

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        if isinstance(state, float):
            agent = getattr(stream, "prefix", "") or "unknown"
            metrics.AGENT_PROCESSING_SECONDS.labels(agent).observe(time.perf_counter() - state)


def lag_by_topic(
    end_offsets: Mapping[Any, int],
    committed: Mapping[Any, int],
    assigned: Iterable[Any],
    role_by_topic: Mapping[str, str],
) -> dict[str, int]:
    """High-water mark minus committed offset, summed per topic role over the
    assigned partitions (``tp.topic`` names; unknown topics are left out).

    >>> from collections import namedtuple
    >>> TP = namedtuple("TP", "topic partition")
    >>> a, b = TP("llmopt.outcomes.v1", 0), TP("llmopt.outcomes.v1", 1)
    >>> lag_by_topic({a: 10, b: 5}, {a: 7}, [a, b], {"llmopt.outcomes.v1": "outcomes"})
    {'outcomes': 8}
    """
    out: dict[str, int] = {}
    for tp in assigned:
        role = role_by_topic.get(tp.topic)
        if role is None:
            continue
        out.setdefault(role, 0)
        if tp not in end_offsets:
            continue
        lag = max(0, int(end_offsets[tp]) - int(committed.get(tp) or 0))
        out[role] = out.get(role, 0) + lag
    return out
