"""featurize_requests: requests → feature observations (tenant, task type),
routed by the entity's key to the observations topic.

Stateless: the windows are kept by ``aggregate_features``. A
:class:`~app.stream.batched_service.BatchedService` (its own consumer
group): a fetched batch's observations for one route go out as one message,
so the repartitioning costs one small message per route and batch, not one
per request, and the batch's offsets are committed once those are
acknowledged. Requests ``select_arm`` cannot parse are dead-lettered there,
and only counted here; an exception while featurizing one dead-letters it
here as ``internal_error``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import faust
import orjson

from app import metrics
from app.features.observations import observation_doc, request_observations
from app.ingress import accept_request_message
from app.records import InvalidEvent, now_ms
from app.stream.batched_service import Batch, BatchedService, start_with_worker
from app.stream.dead_letter import internal_error
from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
AGENT = "featurize_requests"
BATCH_MAX = 4_000
FETCH_WAIT_MS = 50
# A consumed record → its observations as (route, entity, observation);
# raises InvalidEvent for a record the agent that owns the topic dead-letters.
Observe = Callable[[Any], list[tuple[str, str, Any]]]


class Featurize:
    """The :class:`~app.stream.batched_service.BatchHandler` of both
    featurize agents: records → observations, one message per route."""

    def __init__(self, runtime: Runtime, agent: str, observe: Observe) -> None:
        self.agent, self.observe = agent, observe
        self.observations = runtime.topics.name("feature_observations")

    async def start(self, service: BatchedService) -> None:
        await service.partition_count(self.observations)

    async def background(self, service: BatchedService) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def handle(self, service: BatchedService, batch: Batch) -> list[asyncio.Future[Any]]:
        routed: dict[str, list[Any]] = defaultdict(list)
        futures: list[asyncio.Future[Any]] = []
        invalid = n = 0
        for msgs in batch.values():
            n += len(msgs)
            for m in msgs:
                try:
                    for route, entity, obs in self.observe(m):
                        routed[route].append(observation_doc(entity, obs))
                except InvalidEvent:  # the topic's own agent dead-letters it
                    invalid += 1
                except Exception as exc:
                    log.exception(
                        "%s failed on %s[%s]@%s", self.agent, m.topic, m.partition, m.offset
                    )
                    futures.append(await service.dead(m, internal_error(exc, self.agent)))
        if routed:
            futures += await service.send_batches(
                self.observations,
                [r.encode() for r in routed],
                [orjson.dumps(docs) for docs in routed.values()],
                now_ms(),
            )
        metrics.EVENTS.labels(self.agent, "invalid").inc(invalid)
        metrics.EVENTS.labels(self.agent, "ok").inc(n - invalid)
        return futures


def register_featurize(
    app: faust.App, runtime: Runtime, agent: str, source_role: str, observe: Observe
) -> None:
    """Run a featurize agent over ``source_role``'s topic."""
    start_with_worker(
        app,
        runtime,
        agent,
        (source_role,),
        lambda: Featurize(runtime, agent, observe),
        FETCH_WAIT_MS,
        BATCH_MAX,
    )


def register(app: faust.App, runtime: Runtime) -> None:
    def observe(m: Any) -> list[tuple[str, str, Any]]:
        # The same acceptance as select_arm's: a spoofed tenant never feeds
        # another tenant's windows.
        return request_observations(accept_request_message(m, runtime.settings))

    register_featurize(app, runtime, AGENT, "requests", observe)
