"""detect_drift: outcomes → drift, anomaly and input-drift events
(``llmopt.drift.v1``) and alerts (``llmopt.alerts.v1``).

It runs on the workers with the ``learn`` role, beside
``learn_from_outcomes``: both read the outcomes, keyed by policy id, so a
policy's outcomes are watched on the worker that owns its state. Drift events
are keyed by policy id too, with the outcomes' partition count (topics.yaml
``joins``), so ``learn_from_outcomes`` gets each drift on the partition — and
worker — that holds the policy, and adapts it there (see
:meth:`app.learner.Learner.adapt`): policy state keeps one owner.

Detector state lives in memory: after a restart or a rebalance the detectors
of the moved policies start afresh (a warm-up of a few hundred outcomes per
arm). An unparseable outcome, or one of a policy that is not configured, is
skipped and counted here; the learner, which reads the same bytes, sends it to
the dead-letter topic (once, not twice). An exception while watching an
outcome dead-letters it here as ``internal_error``, and the agent goes on.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import faust

from app import metrics
from app.drift import AlertEngine, DriftConfig, DriftMonitor
from app.records import InvalidEvent, Outcome
from app.stream.dead_letter import send_internal_error
from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
AGENT = "detect_drift"


def register(app: faust.App, runtime: Runtime) -> None:
    t = runtime.topics
    source = app.topic(
        t.name("outcomes"),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    drift = app.topic(t.name("drift"), key_serializer="raw", value_serializer="raw")
    alerts = app.topic(t.name("alerts"), key_serializer="raw", value_serializer="raw")
    dead = app.topic(t.name("dead_letter"), key_serializer="raw", value_serializer="raw")
    config = DriftConfig.load(runtime.settings.drift_path)
    monitor = DriftMonitor(config)
    engine = AlertEngine(
        config.alert_rules, config.alert_cooldown_seconds, config.alert_evaluate_every_seconds
    )

    @app.agent(source, name="detect_drift")
    async def detect_drift(stream: Any) -> None:
        # A batch at a time (as the learner beside it): detectors are in
        # memory, so a batch costs its events' observations and the events
        # found, not a Faust round per outcome.
        async for events in stream.take_events(4_000, within=0.02):
            results: Counter[str] = Counter()
            for event in events:
                try:
                    results[await watch(event.message)] += 1
                except Exception as exc:
                    await send_internal_error(dead.send, AGENT, event.message, exc)
            for result, n in results.items():
                metrics.EVENTS.labels(AGENT, result).inc(n)

    async def watch(msg: Any) -> str:
        """Observe one outcome; the result to count."""
        try:
            outcome = Outcome.loads(msg.value, runtime.settings.max_event_bytes)
        except InvalidEvent as exc:
            return exc.code
        label = outcome.policy_id
        if label not in runtime.policies.policies:
            # The learner dead-letters it; watching it would grow state without bound.
            return "unknown_policy"
        found = monitor.observe(outcome)
        engine.record_events(found)
        fired = engine.observe(outcome)
        for e in found:
            await drift.send(key=e.policy_id.encode(), value=e.dumps())
            metrics.DRIFT_EVENTS.labels(label, e.kind, e.signal).inc()
            log.info("%s: %s", e.kind, e.detail)
        for a in fired:
            await alerts.send(key=a.policy_id.encode(), value=a.dumps())
            metrics.ALERTS.labels(label, a.rule, a.status).inc()
            log.warning("alert %s %s: %s", a.rule, a.status, a.summary)
        return "observed"
