"""featurize_outcomes: outcomes (keyed by policy) → feature observations for
the tenant and the tenant × arm, repartitioned to the tenant key through the
observations topic, so that ``aggregate_features`` keeps a tenant's outcome
windows beside its request windows, where ``select_arm`` reads them.
Outcomes ``learn_from_outcomes`` cannot parse are dead-lettered there, and only
counted here; an exception while featurizing one dead-letters it here as
``internal_error``."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import faust
import orjson

from app import metrics
from app.features.observations import observation_doc, outcome_observations
from app.records import InvalidEvent, Outcome
from app.stream.dead_letter import send_internal_error
from app.stream.runtime import Runtime

AGENT = "featurize_outcomes"


def register(app: faust.App, runtime: Runtime) -> None:
    t = runtime.topics
    source = app.topic(t.name("outcomes"), key_type=bytes, value_type=bytes, value_serializer="raw")
    observations = app.topic(
        t.name("feature_observations"), key_serializer="raw", value_serializer="raw"
    )
    dead = app.topic(t.name("dead_letter"), key_serializer="raw", value_serializer="raw")
    max_bytes = runtime.settings.max_event_bytes

    @app.agent(source, name=AGENT)
    async def featurize_outcomes(stream: Any) -> None:
        async for events in stream.take_events(2000, within=0.05):
            routed: dict[str, list[Any]] = defaultdict(list)
            for event in events:
                try:
                    outcome = Outcome.loads(event.message.value, max_bytes)
                    for route, entity, obs in outcome_observations(outcome):
                        routed[route].append(observation_doc(entity, obs))
                except InvalidEvent:  # learn_from_outcomes dead-letters it
                    metrics.EVENTS.labels(AGENT, "invalid").inc()
                except Exception as exc:
                    await send_internal_error(dead.send, AGENT, event.message, exc)
            for route, batch in routed.items():
                await observations.send(key=route.encode(), value=orjson.dumps(batch))
            metrics.EVENTS.labels(AGENT, "ok").inc(len(events))
