"""learn_from_outcomes: outcomes → policy updates → snapshots.

Outcomes are keyed by policy id, so each policy is updated on one partition,
serially. Its state lives in a RocksDB table keyed by policy id, together
with the offset of the last outcome applied per source partition (see
:mod:`app.learner`); a second table remembers applied request ids. Snapshots
go to the compacted snapshots topic every N updates or T milliseconds.

Outcomes are taken a batch at a time: each is applied to the policy in
memory, and at the batch's end the applied request ids are written, then
each changed policy's state once (a LinUCB state of 20 arms is ~50 KB: per
outcome, its RocksDB and changelog writes were most of the learner's cost).
Faust acks the batch only after that, so a crash redoes it; the offsets in
the state and the applied ids make the redone part a no-op.

Applied request ids expire ``applied_requests_retention_seconds`` after
their outcome's time, counted in the outcome times the partition has
reached (not the wall clock: a learner that was down for hours expires
nothing meanwhile). The join re-emits an outcome only while it keeps the
finished request (``join_done_retention_seconds``, and only once it has read
that far: ``join_max_hold_seconds``), and a re-emitted outcome carries its
first time, so the retention, which must cover both, keeps exactly-once.

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
from collections import Counter
from typing import Any

import faust
import orjson

from app import metrics
from app.drift.config import DriftConfig
from app.ingress import join_key
from app.key_heaps import KeyHeaps
from app.learner import Learner, applied_in_state, applied_mark, live_key, mark_expiry
from app.metrics_snapshot import process_id
from app.records import DriftEvent, InvalidEvent, Outcome, RegistryEvent, now_ms
from app.stream.cluster_watch import offsets_key
from app.stream.cluster_watcher import current_cluster_id
from app.stream.current_event import set_current_event
from app.stream.dead_letter import send_dead_letter, send_internal_error
from app.stream.delivery import deliver
from app.stream.in_sequence import InSequence
from app.stream.partitioning import partitions_for
from app.stream.runtime import Runtime
from app.stream.snapshot_log import published_versions
from app.versions import REGISTRY_MAX_BYTES, VersionError, policy_of_key, record_key

log = logging.getLogger(__name__)
AGENT = "learn_from_outcomes"
# Outcomes per batch, and how long a batch waits to fill.
BATCH_MAX = 4_000
BATCH_WITHIN_S = 0.02
# Expired applied ids deleted per batch (the rest at the next ones).
EXPIRE_PER_BATCH = 10_000


class LearnBatch:
    """What one batch changed, written at its end: applied request ids
    (id → (event, mark)), the policies whose state changed (id → an event on
    their partition: table writes go to the current event's partition), and
    the counters."""

    def __init__(self) -> None:
        self.marks: dict[bytes, tuple[Any, bytes]] = {}
        self.states: dict[str, Any] = {}
        self.events: dict[int, Any] = {}
        self.results: Counter[str] = Counter()
        self.updates: Counter[str] = Counter()
        self.skipped: Counter[tuple[str, str]] = Counter()


def register(app: faust.App, runtime: Runtime) -> None:
    t = runtime.topics
    drift_name, registry_name = t.name("drift"), t.name("registry")
    source = app.topic(
        t.name("outcomes"),
        drift_name,
        registry_name,
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
    learner = Learner(runtime.policies, runtime.file_policies)
    by = f"learner@{process_id(runtime.settings.web_port)}"
    registry_partitions = t["registry"].partitions
    writing: set[asyncio.Task[None]] = set()

    async def write_registry(records: list[RegistryEvent]) -> None:
        """Registry records, each on its policy's partition, acknowledged."""

        async def send(topic: str, key: bytes | None, value: bytes) -> Any:
            pid = policy_of_key(key or b"")
            p = partitions_for([pid.encode()], registry_partitions)[0]
            return await app.producer.send(topic, key, value, p, None, None)

        await deliver(send, [(registry_name, record_key(r), r.dumps()) for r in records], AGENT)
        for r in records:
            metrics.REGISTRY_RECORDS.labels(r.policy_id, r.status or r.kind).inc()

    def on_policies_changed(config: Any) -> None:
        retired = learner.reconfigure(config, runtime.file_policies, now_ms(), by)
        if retired:  # what the switched policies had learned, kept as versions
            task = asyncio.get_running_loop().create_task(write_registry(retired))
            writing.add(task)
            task.add_done_callback(writing.discard)

    runtime.on_policies_changed.append(on_policies_changed)
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
        pc = learner.config.policies.get(pid)
        if event.kind != "drift" or pc is None:
            metrics.EVENTS.labels(AGENT, f"drift_{event.kind}_skipped").inc()
            return
        if pc.learning == "sharded":
            # Its shards learn on every partition; an adaptation would have
            # to reach them all (docs/architecture.md#sharded-learning).
            metrics.EVENTS.labels(AGENT, "drift_sharded_skipped").inc()
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

    async def publish(key: str, now: int) -> None:
        """Publish the snapshot of a policy (or of a shard: ``key`` is a live key)."""
        if key in batch.states:
            return  # its state is not written yet: published at the batch's end
        # One at a time (the agent and the timer both publish): a snapshot
        # taken before another's flush must not be sent after it.
        async with publishing:
            snap = learner.snapshot(key, now)
            # Table writes go out through Faust's send buffer, the snapshot
            # directly: without this flush a crash could leave a published
            # snapshot ahead of the state the table recovers.
            await app.producer.flush()
            await snapshots.send(key=key.encode(), value=snap.dumps())
        published[key] = max(published.get(key, 0), snap.version)
        metrics.SNAPSHOTS.labels(snap.policy_id).inc()

    async def ensure_loaded(pid: str, now: int, shard: int | None = None) -> str:
        """Bring a policy's state (or its shard's) in from the table and
        return its live key; a state the table holds that cannot be read is
        skipped (the policy starts from its prior and the applied-requests
        table still stops double updates); a state older than a snapshot
        already published is reported: it means updates were lost."""
        key = live_key(pid, shard)
        if learner.known(key):
            return key
        raw = states.get(key.encode())
        retired = None
        try:
            stored = orjson.loads(raw) if raw is not None else None
            retired = learner.load(pid, stored, now, shard, by)
        except Exception as exc:
            metrics.POISONED_STATE.labels("policy-state").inc()
            log.error("policy %s: unreadable stored state skipped (%s)", pid, str(exc)[:200])
            learner.load(pid, None, now, shard)
        if retired is not None:
            # Learned under a configuration changed meanwhile: kept as a
            # version before the state that replaces it is written.
            await write_registry([retired])
            states[key.encode()] = orjson.dumps(learner.state(key))
        log.info(
            "policy %s%s loaded at version %d (offsets %s)",
            pid,
            "" if shard is None else f" shard {shard}",
            learner.version(key),
            learner.state(key)["offsets"],
        )
        if "read" not in published_read:
            published_read["read"] = True
            try:
                published.update(await published_versions(runtime, t.name("policy_snapshots")))
            except Exception as exc:
                log.warning("could not read the published snapshot versions: %s", exc)
        version, last = learner.version(key), published.get(key, 0)
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
        return key

    published: dict[str, int] = {}
    published_read: dict[str, bool] = {}

    sequence = InSequence(app, AGENT, {t.name("outcomes"), drift_name, registry_name})
    last_cluster: dict[str, str | None] = {}
    retention_ms = int(runtime.settings.applied_requests_retention_seconds * 1000)
    expiring = KeyHeaps()  # outcomes partition → (expiry in outcome time, request id)
    reached: dict[int, int] = {}  # outcomes partition → latest outcome time applied
    index = {"rebuild": True}
    batch = LearnBatch()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _on_assigned(sender: Any, assigned: Any, **kw: Any) -> None:
        index["rebuild"] = True
        await sequence.expect_committed(assigned)

    def rebuild_expiry() -> None:
        """The expiry index from the recovered table (after an assignment)."""
        index["rebuild"] = False
        expiring.clear()
        for rid, mark in applied.items():
            found = mark_expiry(mark, retention_ms) if mark else None
            if found is not None:
                expiring.push(found[0], found[1], rid)

    async def handle(msg: Any) -> None:
        try:
            await learn(msg, now_ms())
        except Exception as exc:  # one message never stops the learner
            await send_internal_error(dead.send, AGENT, msg, exc)

    @app.agent(source, name="learn_from_outcomes")
    async def learn_from_outcomes(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            cluster = current_cluster_id(app)
            if cluster is not None:
                if last_cluster.get("id") not in (None, cluster):
                    sequence.forget()  # a new cluster's logs: positions start afresh
                last_cluster["id"] = cluster
            if index["rebuild"]:
                rebuild_expiry()
            for event in events:
                # Table reads look in the current event's partition.
                set_current_event(event)
                batch.events[event.message.partition] = event
                await sequence.handle(event.message, handle)
            await finish_batch()

    async def finish_batch() -> None:
        """Applied ids first, then each changed state once (the order that
        makes a lost state write redo its updates: see applied_in_state);
        then expired ids, the counters and the due snapshots."""
        nonlocal batch
        done, batch = batch, LearnBatch()
        for rid, (event, mark) in done.marks.items():
            set_current_event(event)
            applied[rid] = mark
        for key, event in done.states.items():
            set_current_event(event)
            states[key.encode()] = orjson.dumps(learner.state(key))
        for p, event in done.events.items():
            if p in reached and expiring.ready(p, reached[p]):
                set_current_event(event)
                expired = expiring.pop_ready(p, reached[p], EXPIRE_PER_BATCH)
                for rid in expired:
                    applied.pop(rid, None)
                metrics.APPLIED_EXPIRED.inc(len(expired))
        for key in done.states:
            metrics.set_shadow_values(key, learner.shadow_values(key))
        for pid, n in done.updates.items():
            metrics.POLICY_UPDATES.labels(pid).inc(n)
        for (pid, why), n in done.skipped.items():
            metrics.POLICY_UPDATES_SKIPPED.labels(pid, why).inc(n)
        for result, n in done.results.items():
            metrics.EVENTS.labels(AGENT, result).inc(n)
        now = now_ms()
        for due in learner.due_snapshots(now):
            await publish(due, now)

    def applied_mark_of(rid: bytes) -> bytes | None:
        pending = batch.marks.get(rid)
        return pending[1] if pending is not None else applied.get(rid)

    async def on_registry(msg: Any, now: int) -> None:
        """Serve a version, or register the serving state (app/versions.py);
        versions and status records are the CLI's to read."""
        try:
            event = RegistryEvent.loads(msg.value, REGISTRY_MAX_BYTES)
        except InvalidEvent as exc:
            await send_dead_letter(dead.send, AGENT, msg, exc)
            return
        pid = event.policy_id
        pc = learner.config.policies.get(pid)
        if event.kind == "version" or pc is None or pc.learning == "sharded":
            why = event.kind if pc is not None else "unknown_policy"
            metrics.EVENTS.labels(AGENT, f"registry_{why}_skipped").inc()
            if pc is None or pc.learning == "sharded":
                log.error(
                    "registry %s for policy %s not done: %s",
                    event.kind,
                    pid,
                    "no such policy" if pc is None else "it learns in shards",
                )
            return
        key = await ensure_loaded(pid, now)
        part = f"registry:{offsets_key(msg.partition, current_cluster_id(app))}"
        if learner.seen(key, part, msg.offset):
            metrics.EVENTS.labels(AGENT, "registry_redelivered").inc()
            return
        learner.mark(key, part, msg.offset)
        batch.states[key] = batch.events[msg.partition]
        if event.kind == "status":
            # Entering shadow starts one (the record carries the version's
            # configuration and state); any other status stops it.
            try:
                if event.status == "shadow":
                    learner.shadow(key, event, now)
                elif event.version is None or not learner.unshadow(key, event.version):
                    return
            except VersionError as exc:
                metrics.EVENTS.labels(AGENT, "registry_refused").inc()
                log.error("shadow of policy %s refused: %s", pid, exc)
                return
            metrics.EVENTS.labels(AGENT, f"registry_shadow_{event.status}").inc()
            log.info("registry: version %s of %s now %s", event.version, pid, event.status)
            return
        try:
            if event.kind == "register":
                reason = event.reason or "registered on request"
                records = [learner.register(key, now, by, "development", reason, event.event_id)]
            else:
                reason = event.reason or f"version {event.version} served"
                records = learner.serve(key, event, now, by, reason)
        except VersionError as exc:
            metrics.EVENTS.labels(AGENT, "registry_refused").inc()
            log.error("registry %s for policy %s refused: %s", event.kind, pid, exc)
            return
        # The records first, then (at the batch's end) the state: a crash in
        # between redoes the request, which writes the same version again.
        await write_registry(records)
        metrics.EVENTS.labels(AGENT, f"registry_{event.kind}").inc()
        log.info("registry: %s for policy %s done (%s)", event.kind, pid, reason)

    async def learn(msg: Any, now: int) -> None:
        if msg.topic == drift_name:
            await adapt(msg, now)
            return
        if msg.topic == registry_name:
            await on_registry(msg, now)
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
        # learning: sharded: the state of this partition's shard of the policy.
        key = await ensure_loaded(pid, now, msg.partition if pc.learning == "sharded" else None)
        rid = join_key(outcome.tenant_id, outcome.request_id)
        part = offsets_key(msg.partition, current_cluster_id(app))
        if learner.seen(key, part, msg.offset):
            result = "redelivered"
        elif applied_in_state(applied_mark_of(rid), learner.version(key)):
            learner.mark(key, part, msg.offset)
            result = "duplicate"
        else:
            result = learner.apply(outcome, part, msg.offset, key)
        if result == "applied":
            batch.updates[pid] += 1
        else:
            batch.skipped[(pid, result)] += 1
        if result != "redelivered":
            event = batch.events[msg.partition]
            if result != "duplicate" or rid not in batch.marks:
                mark = applied_mark(learner.version(key), outcome.outcome_at, msg.partition)
                batch.marks[rid] = (event, mark)
                expiring.push(msg.partition, outcome.outcome_at + retention_ms, rid)
            batch.states[key] = event
            reached[msg.partition] = max(reached.get(msg.partition, 0), outcome.outcome_at)
        batch.results[result] += 1

    interval = min(p.snapshot_every_ms for p in runtime.policies.policies.values()) / 1000

    @app.timer(interval)
    async def publish_due_snapshots() -> None:
        now = now_ms()
        for key in learner.due_snapshots(now):
            await publish(key, now)
