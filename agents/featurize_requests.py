"""featurize_requests: requests → feature observations (tenant, task type),
routed by the entity's key to the observations topic.

Stateless: the windows are kept by ``aggregate_features``. A batch's
observations for one route go out as one message, so the repartitioning
costs one small message per route and batch, not one per request. Requests
``select_arm`` cannot parse are dead-lettered there, and only counted here;
an exception while featurizing one dead-letters it here as ``internal_error``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import faust
import orjson

from app import metrics
from app.features.observations import observation_doc, request_observations
from app.ingress import accept_request_message
from app.records import InvalidEvent
from app.stream.dead_letter import send_internal_error
from app.stream.runtime import Runtime

AGENT = "featurize_requests"


def register(app: faust.App, runtime: Runtime) -> None:
    t = runtime.topics
    source = app.topic(t.name("requests"), key_type=bytes, value_type=bytes, value_serializer="raw")
    observations = app.topic(
        t.name("feature_observations"), key_serializer="raw", value_serializer="raw"
    )
    dead = app.topic(t.name("dead_letter"), key_serializer="raw", value_serializer="raw")

    @app.agent(source, name=AGENT)
    async def featurize_requests(stream: Any) -> None:
        async for events in stream.take_events(2000, within=0.05):
            routed: dict[str, list[Any]] = defaultdict(list)
            for event in events:
                m = event.message
                try:
                    # The same acceptance as select_arm's: a spoofed tenant
                    # never feeds another tenant's windows.
                    request = accept_request_message(m, runtime.settings)
                    for route, entity, obs in request_observations(request):
                        routed[route].append(observation_doc(entity, obs))
                except InvalidEvent:  # select_arm dead-letters it
                    metrics.EVENTS.labels(AGENT, "invalid").inc()
                except Exception as exc:
                    await send_internal_error(dead.send, AGENT, event.message, exc)
            for route, batch in routed.items():
                await observations.send(key=route.encode(), value=orjson.dumps(batch))
            metrics.EVENTS.labels(AGENT, "ok").inc(len(events))
