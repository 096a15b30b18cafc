"""detect_drift: outcomes → drift, anomaly and input-drift events
(``llmopt.drift.v1``) and alerts (``llmopt.alerts.v1``).

It runs on the workers with the ``learn`` role, as a batched service (its
own consumer group over the outcomes, keyed by policy id, so each policy's
outcomes are watched in order by one member). Drift events are keyed by
policy id too, with the outcomes' partition count (topics.yaml ``joins``),
so ``learn_from_outcomes`` gets each drift on the partition — and worker —
that holds the policy, and adapts it there (see
:meth:`app.learner.Learner.adapt`): policy state keeps one owner. A batch's
offsets are committed once its events are acknowledged.

The detector runs ahead of the learner as it likes: each event goes to the
partition number of the outcome that triggered it and names the offset just
after that outcome (``outcome_offset``), and the learner holds a drift back
until it has processed the outcomes that far (:class:`app.drift.DriftHold`).

Detector state lives in memory: after a restart or a rebalance the detectors
of the moved policies start afresh (a warm-up of a few hundred outcomes per
arm). An unparseable outcome, or one of a policy that is not configured, is
skipped and counted here; the learner, which reads the same bytes, sends it to
the dead-letter topic (once, not twice). An exception while watching an
outcome dead-letters it here as ``internal_error``, and the agent goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import faust

from app import metrics
from app.drift import AlertEngine, DriftConfig, DriftMonitor
from app.records import InvalidEvent, Outcome
from app.stream.batched_service import Batch, BatchedService, LoopTurns, start_with_worker
from app.stream.dead_letter import internal_error
from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
AGENT = "detect_drift"
BATCH_MAX = 4_000
FETCH_WAIT_MS = 20


class DetectDrift:
    """The :class:`~app.stream.batched_service.BatchHandler` of the detectors."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        t = runtime.topics
        self.drift, self.alerts = t.name("drift"), t.name("alerts")
        config = DriftConfig.load(runtime.settings.drift_path)
        self.monitor = DriftMonitor(config)
        self.engine = AlertEngine(
            config.alert_rules, config.alert_cooldown_seconds, config.alert_evaluate_every_seconds
        )

    async def start(self, service: BatchedService) -> None:
        return None

    async def background(self, service: BatchedService) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def handle(self, service: BatchedService, batch: Batch) -> list[asyncio.Future[Any]]:
        # Detectors are in memory: a batch costs its outcomes' observations
        # and the events found.
        futures: list[asyncio.Future[Any]] = []
        results: Counter[str] = Counter()
        turns = LoopTurns()
        for msgs in batch.values():
            for m in msgs:
                if turns.due():
                    await turns.take()
                try:
                    results[await self._watch(service, m, futures)] += 1
                except Exception as exc:
                    log.exception("%s failed on %s[%s]@%s", AGENT, m.topic, m.partition, m.offset)
                    futures.append(await service.dead(m, internal_error(exc, AGENT)))
        for result, n in results.items():
            metrics.EVENTS.labels(AGENT, result).inc(n)
        return futures

    async def _watch(
        self, service: BatchedService, msg: Any, futures: list[asyncio.Future[Any]]
    ) -> str:
        """Observe one outcome; the result to count."""
        try:
            outcome = Outcome.loads(msg.value, self.runtime.settings.max_event_bytes)
        except InvalidEvent as exc:
            return exc.code
        label = outcome.policy_id
        if label not in self.runtime.policies.policies:
            # The learner dead-letters it; watching it would grow state without bound.
            return "unknown_policy"
        found = self.monitor.observe(outcome)
        self.engine.record_events(found)
        fired = self.engine.observe(outcome)
        send = service.producer.send
        for e in found:
            # On the outcome's partition: the drift topic is co-partitioned
            # with the outcomes, and the learner waits for this offset there.
            e.outcome_offset = msg.offset + 1
            futures.append(
                await send(self.drift, e.dumps(), key=e.policy_id.encode(), partition=msg.partition)
            )
            metrics.DRIFT_EVENTS.labels(label, e.kind, e.signal).inc()
            log.info("%s: %s", e.kind, e.detail)
        for a in fired:
            futures.append(await send(self.alerts, a.dumps(), key=a.policy_id.encode()))
            metrics.ALERTS.labels(label, a.rule, a.status).inc()
            log.warning("alert %s %s: %s", a.rule, a.status, a.summary)
        return "observed"


def register(app: faust.App, runtime: Runtime) -> None:
    start_with_worker(
        app, runtime, AGENT, ("outcomes",), lambda: DetectDrift(runtime), FETCH_WAIT_MS, BATCH_MAX
    )
