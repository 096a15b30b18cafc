"""featurize_requests: requests → feature observations (tenant, task type),
routed by the entity's key to the observations topic.

Stateless: the windows are kept by ``aggregate_features``. A batch's
observations for one route go out as one message, so the repartitioning
costs one small message per route and batch, not one per request. Requests
``select_arm`` cannot parse are dead-lettered there, and only counted here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import faust
import orjson

from app import metrics
from app.faust_app import Runtime
from app.features.observations import request_observations
from app.records import InvalidEvent, Request, decode

AGENT = "featurize_requests"


def register(app: faust.App, runtime: Runtime) -> None:
    t = runtime.topics
    source = app.topic(t.name("requests"), key_type=bytes, value_type=bytes, value_serializer="raw")
    observations = app.topic(
        t.name("feature_observations"), key_serializer="raw", value_serializer="raw"
    )
    max_bytes = runtime.settings.max_event_bytes

    @app.agent(source, name=AGENT)
    async def featurize_requests(stream: Any) -> None:
        async for events in stream.take_events(2000, within=0.05):
            routed: dict[str, list[Any]] = defaultdict(list)
            for event in events:
                try:
                    request = Request.from_dict(decode(event.message.value, max_bytes))
                except InvalidEvent:
                    metrics.EVENTS.labels(AGENT, "invalid").inc()
                    continue
                for route, entity, obs in request_observations(request):
                    routed[route].append({"e": entity, **obs})
            for route, batch in routed.items():
                await observations.send(key=route.encode(), value=orjson.dumps(batch))
            metrics.EVENTS.labels(AGENT, "ok").inc(len(events))
