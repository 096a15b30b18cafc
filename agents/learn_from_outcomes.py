"""learn_from_outcomes: outcomes → policy updates → snapshots.

Outcomes are keyed by policy id, so each policy is updated on one partition,
serially. Its state lives in a RocksDB table keyed by policy id, together
with the offset of the last outcome applied per source partition (see
:mod:`app.learner`); a second table remembers applied request ids. Snapshots
go to the compacted snapshots topic every N updates or T milliseconds.

The same agent reads ``llmopt.drift.v1`` (keyed by policy id and
co-partitioned with the outcomes, topics.yaml ``joins``): a drift on an arm
reaches the partition that owns the policy, is applied in the same serial
stream as the outcomes — the policy state keeps a single writer — and the
adaptation (config/drift.yaml ``adaptation``) goes back to the drift topic as
an event of kind ``adaptation``, followed at once by a snapshot. Other kinds
(anomalies, input drift, adaptations) are read and passed over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
import orjson

from app import metrics
from app.drift.config import DriftConfig
from app.ingress import join_key
from app.learner import Learner, applied_in_state
from app.records import DriftEvent, InvalidEvent, Outcome, now_ms
from app.stream.cluster_watch import offsets_key
from app.stream.cluster_watcher import current_cluster_id
from app.stream.dead_letter import send_dead_letter, send_internal_error
from app.stream.in_sequence import InSequence
from app.stream.runtime import Runtime
from app.stream.snapshot_log import published_versions

log = logging.getLogger(__name__)
AGENT = "learn_from_outcomes"


def register(app: faust.App, runtime: Runtime) -> None:
    t = runtime.topics
    drift_name = t.name("drift")
    source = app.topic(
        t.name("outcomes"),
        drift_name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    snapshots = app.topic(t.name("policy_snapshots"), key_serializer="raw", value_serializer="raw")
    dead = app.topic(t.name("dead_letter"), key_serializer="raw", value_serializer="raw")
    partitions = t["outcomes"].partitions
    states = app.Table("policy-state", key_type=bytes, value_type=bytes, partitions=partitions)
    applied = app.Table("applied-requests", key_type=bytes, value_type=bytes, partitions=partitions)
    learner = Learner(runtime.policies)
    runtime.on_policies_changed.append(learner.reconfigure)
    drift_config = DriftConfig.load(runtime.settings.drift_path)
    drift = app.topic(drift_name, key_serializer="raw", value_serializer="raw")

    async def adapt(msg: Any, now: int) -> None:
        """Apply a drift event to the policy it names (see the module docstring)."""
        try:
            event = DriftEvent.loads(msg.value, runtime.settings.max_event_bytes)
        except InvalidEvent as exc:
            await send_dead_letter(dead.send, AGENT, msg, exc)
            return
        pid = event.policy_id
        if event.kind != "drift" or learner.config.policies.get(pid) is None:
            metrics.EVENTS.labels(AGENT, f"drift_{event.kind}_skipped").inc()
            return
        await ensure_loaded(pid, now)
        spec = drift_config.adaptation_for(pid)
        part = offsets_key(msg.partition, current_cluster_id(app))
        done = learner.adapt(event, spec, part, msg.offset, now)
        metrics.EVENTS.labels(AGENT, "drift_adapted" if done else "drift_ignored").inc()
        if done is None:
            return
        # State (with the drift's offset) first, then the event: a crash in
        # between keeps the adaptation and loses only its announcement.
        states[pid.encode()] = orjson.dumps(learner.state(pid))
        await drift.send(key=pid.encode(), value=done.dumps())
        metrics.ADAPTATIONS.labels(pid, done.applied or "none").inc()
        log.info("adapted %s/%s after %s drift: %s", pid, done.arm, done.signal, done.detail)
        for due in learner.due_snapshots(now):
            await publish(due, now)

    publishing = asyncio.Lock()

    async def publish(pid: str, now: int) -> None:
        # One at a time (the agent and the timer both publish): a snapshot
        # taken before another's flush must not be sent after it.
        async with publishing:
            snap = learner.snapshot(pid, now)
            # Table writes go out through Faust's send buffer, the snapshot
            # directly: without this flush a crash could leave a published
            # snapshot ahead of the state the table recovers.
            await app.producer.flush()
            await snapshots.send(key=pid.encode(), value=snap.dumps())
        published[pid] = max(published.get(pid, 0), snap.version)
        metrics.SNAPSHOTS.labels(pid).inc()

    async def ensure_loaded(pid: str, now: int) -> None:
        """Bring a policy's state in from the table; a state the table holds
        that cannot be read is skipped (the policy starts from its prior and
        the applied-requests table still stops double updates); a state older
        than a snapshot already published is reported: it means updates
        were lost."""
        if learner.known(pid):
            return
        raw = states.get(pid.encode())
        try:
            learner.load(pid, orjson.loads(raw) if raw is not None else None, now)
        except Exception as exc:
            metrics.POISONED_STATE.labels("policy-state").inc()
            log.error("policy %s: unreadable stored state skipped (%s)", pid, str(exc)[:200])
            learner.load(pid, None, now)
        log.info(
            "policy %s loaded at version %d (offsets %s)",
            pid,
            learner.version(pid),
            learner.state(pid)["offsets"],
        )
        if "read" not in published_read:
            published_read["read"] = True
            try:
                published.update(await published_versions(runtime, t.name("policy_snapshots")))
            except Exception as exc:
                log.warning("could not read the published snapshot versions: %s", exc)
        version, last = learner.version(pid), published.get(pid, 0)
        if version < last:
            metrics.STATE_REGRESSIONS.labels(pid).inc()
            log.error(
                "policy %s: recovered state is at version %d, but version %d was already "
                "published: %d updates were lost",
                pid,
                version,
                last,
                last - version,
            )

    published: dict[str, int] = {}
    published_read: dict[str, bool] = {}

    sequence = InSequence(app, AGENT, {t.name("outcomes"), drift_name})
    last_cluster: dict[str, str | None] = {}

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _on_assigned(sender: Any, assigned: Any, **kw: Any) -> None:
        await sequence.expect_committed(assigned)

    async def handle(msg: Any) -> None:
        try:
            await learn(msg, now_ms())
        except Exception as exc:  # one message never stops the learner
            await send_internal_error(dead.send, AGENT, msg, exc)

    @app.agent(source, name="learn_from_outcomes")
    async def learn_from_outcomes(stream: Any) -> None:
        async for event in stream.events():
            cluster = current_cluster_id(app)
            if cluster is not None:
                if last_cluster.get("id") not in (None, cluster):
                    sequence.forget()  # a new cluster's logs: positions start afresh
                last_cluster["id"] = cluster
            await sequence.handle(event.message, handle)

    async def learn(msg: Any, now: int) -> None:
        if msg.topic == drift_name:
            await adapt(msg, now)
            return
        try:
            outcome = Outcome.loads(msg.value, runtime.settings.max_event_bytes)
            pc = learner.config.policies.get(outcome.policy_id)
            if pc is None:
                raise InvalidEvent("unknown_policy", f"no policy {outcome.policy_id!r}")
            if not pc.allows(outcome.tenant_id):
                raise InvalidEvent(
                    "unauthorized_policy", f"tenant may not use policy {outcome.policy_id!r}"
                )
        except InvalidEvent as exc:
            await send_dead_letter(dead.send, AGENT, msg, exc)
            return
        pid = outcome.policy_id
        await ensure_loaded(pid, now)
        rid = join_key(outcome.tenant_id, outcome.request_id)
        part = offsets_key(msg.partition, current_cluster_id(app))
        if learner.seen(pid, part, msg.offset):
            result = "redelivered"
        elif applied_in_state(applied.get(rid), learner.version(pid)):
            learner.mark(pid, part, msg.offset)
            result = "duplicate"
        else:
            result = learner.apply(outcome, part, msg.offset)
        if result == "applied":
            metrics.POLICY_UPDATES.labels(pid).inc()
        else:
            metrics.POLICY_UPDATES_SKIPPED.labels(pid, result).inc()
        if result != "redelivered":
            # The mark first, then the state (with the offset): a mark that
            # outlives a lost state write names a version the state has not
            # reached, so the update is made again (see applied_in_state).
            applied[rid] = str(learner.version(pid)).encode()
            states[pid.encode()] = orjson.dumps(learner.state(pid))
        metrics.EVENTS.labels(AGENT, result).inc()
        for due in learner.due_snapshots(now):
            await publish(due, now)

    interval = min(p.snapshot_every_ms for p in runtime.policies.policies.values()) / 1000

    @app.timer(interval)
    async def publish_due_snapshots() -> None:
        now = now_ms()
        for pid in learner.due_snapshots(now):
            await publish(pid, now)
