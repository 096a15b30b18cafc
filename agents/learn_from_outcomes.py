"""learn_from_outcomes: outcomes → policy updates → snapshots.

A :class:`~app.stream.batched_service.BatchedService` (its own consumer
group over the co-partitioned outcomes, drift and registry topics, see
topics.yaml ``joins``), as the join is. Outcomes are keyed by policy id, so
each policy is updated on one partition, serially (``learning: sharded``:
keyed by request, each partition learns a shard of the policy). Its state
lives in a :class:`ChangelogStore` keyed by policy id (or shard), together
with the offset of the last outcome applied per source partition (see
:mod:`app.learner`); a second store remembers applied request ids.
Snapshots go to the compacted snapshots topic every N updates or T
milliseconds, once the state they show is in the changelog (so a recovered
state is never behind a published snapshot).

A fetched batch is applied to the policies in memory; at its end the
applied request ids and each changed policy's state are written once (a
LinUCB state of 20 arms is ~50 KB: per outcome, its writes were most of the
learner's cost). The batch's offsets are committed once those writes are
acknowledged, so a crash redoes it; the offsets in the state and the
applied ids make the redone part a no-op.

Applied request ids expire ``applied_requests_retention_seconds`` after
their outcome's time, counted in the outcome times the partition has
reached (not the wall clock: a learner that was down for hours expires
nothing meanwhile). The join re-emits an outcome only while it keeps the
finished request (``join_done_retention_seconds``, and only once it has read
that far: ``join_max_hold_seconds``), and a re-emitted outcome carries its
first time, so the retention, which must cover both, keeps exactly-once.

Drift events (``llmopt.drift.v1``, keyed by policy id) reach the partition
that owns the policy and are applied in the same serial stream as the
outcomes — the policy state keeps a single writer — and the adaptation
(config/drift.yaml ``adaptation``) goes back to the drift topic as an event
of kind ``adaptation``, once the state is written, followed at once by a
snapshot. Other kinds (anomalies, input drift, adaptations) are passed over.
The detector reads the outcomes at its own pace, so a drift may come before
the learner has applied the outcomes it was detected on: a drift names the
outcomes offset it follows (``outcome_offset``), and until this partition's
outcomes are processed that far (at most ``drift_max_hold_seconds``,
:class:`app.drift.DriftHold`) the learner stops reading that drift
partition: it seeks back to the held drift, pauses the partition and leaves
the drift out of the batch's commit, so a crash meanwhile reads it again.
Registry requests (``llmopt.registry.v1``) serve, register or shadow
versions (app/versions.py).

Shadow versions decide on every outcome of their policy as they learn from
it (app/shadow.py): their decisions go to ``llmopt.shadow-decisions.v1``
with the batch's other sends, so the batch's commit waits for them, and a
batch redone after a crash sends the same decisions again (keyed by request
id). An apprentice that stops imitating is announced on the registry topic
(a ``status`` record of the version, ``shadow``, with
``lineage.apprentice_ended_at``), before the state that records it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import faust
import orjson
from aiokafka import TopicPartition

from app import metrics
from app.drift.config import DriftConfig
from app.drift.drift_hold import DriftHold
from app.ingress import join_key
from app.key_heaps import KeyHeaps
from app.learner import (
    Learner,
    Shadow,
    applied_in_state,
    applied_mark,
    live_key,
    mark_expiry,
    parse_live_key,
)
from app.metrics_snapshot import process_id
from app.records import DriftEvent, InvalidEvent, Outcome, RegistryEvent, now_ms
from app.stream.batched_service import Batch, BatchedService, LoopTurns, start_with_worker
from app.stream.changelog_store import ChangelogStore
from app.stream.cluster_watch import offsets_key
from app.stream.cluster_watcher import current_cluster_id, rewind_to_start
from app.stream.dead_letter import dead_letter, dead_letter_key, internal_error
from app.stream.delivery import deliver
from app.stream.partitioning import partitions_for
from app.stream.runtime import Runtime
from app.stream.snapshot_log import published_versions
from app.versions import REGISTRY_MAX_BYTES, VersionError, policy_of_key, record_key

log = logging.getLogger(__name__)
AGENT = "learn_from_outcomes"
BATCH_MAX = 4_000
FETCH_WAIT_MS = 20
# Expired applied ids deleted per partition and batch (the rest at the next ones).
EXPIRE_PER_BATCH = 10_000


def in_time_order(batch: Batch) -> Iterator[Any]:
    """A batch's records, its partitions merged by record time, each
    partition's in offset order: a drift event comes after the outcomes it
    was detected on, as it did on the wire (a fetch hands partitions over
    one after another)."""
    if len(batch) == 1:
        return iter(next(iter(batch.values())))
    return heapq.merge(*batch.values(), key=lambda m: m.timestamp)


class LearnBatch:
    """What one batch changed, written at its end: applied request ids
    (partition → id → mark), the states that changed (live key → partition),
    records to send once those are written, and the counters."""

    def __init__(self) -> None:
        self.marks: dict[int, dict[bytes, bytes | None]] = {}
        self.states: dict[str, int] = {}
        self.after_state: list[tuple[str, bytes | None, bytes]] = []
        self.dead: list[tuple[bytes | None, bytes]] = []
        self.results: Counter[str] = Counter()
        self.updates: Counter[str] = Counter()
        self.skipped: Counter[tuple[str, str]] = Counter()
        self.dead_reasons: Counter[str] = Counter()


class LearnFromOutcomes:
    """The :class:`~app.stream.batched_service.StatefulBatchHandler` of the learner."""

    def __init__(self, runtime: Runtime, cluster_id: Callable[[], str | None]) -> None:
        s, t = runtime.settings, runtime.topics
        self.runtime, self.settings, self.cluster_id = runtime, s, cluster_id
        self.source = t["outcomes"]  # the changelogs have its partitions
        self.outcomes_name, self.drift_name = t.name("outcomes"), t.name("drift")
        self.registry_name, self.snapshots_name = t.name("registry"), t.name("policy_snapshots")
        self.dead_name = t.name("dead_letter")
        self.shadow_name = t.name("shadow_decisions")
        self.learner = Learner(runtime.policies, runtime.file_policies, plan_later=True)
        self.by = f"learner@{process_id(s.web_port)}"
        self.states = self._store("policy-state")
        self.applied = self._store("applied-requests")
        self.drift_config = DriftConfig.load(s.drift_path)
        self.hold = DriftHold(s.drift_max_hold_seconds)
        self.retention_ms = int(s.applied_requests_retention_seconds * 1000)
        self.lock = asyncio.Lock()
        self.expiring = KeyHeaps[int]()  # partition → (expiry in outcome time, request id)
        self.reached: dict[int, int] = {}  # partition → latest outcome time applied
        self.published: dict[str, int] = {}
        self.published_read = False
        self.unacked: list[asyncio.Future[Any]] = []  # state writes not yet acknowledged
        self.cluster: str | None = None
        self.batch = LearnBatch()
        self.service: BatchedService | None = None
        self.writing: set[asyncio.Task[None]] = set()
        self.interval_s = (
            min(p.snapshot_every_ms for p in runtime.policies.policies.values()) / 1000
        )
        self.next_publish = 0.0
        runtime.on_policies_changed.append(self._on_policies_changed)

    def _store(self, name: str) -> ChangelogStore:
        s = self.settings
        return ChangelogStore(
            s.bootstrap,
            f"{s.app_id}-{name}-changelog",
            s.data_dir / f"{s.app_id}-{name}",
            s.embedded_broker,
        )

    # -- lifecycle -----------------------------------------------------------------
    async def start(self, service: BatchedService) -> None:
        self.service = service
        await self._ensure_changelogs()
        await service.partition_count(self.registry_name)
        await service.partition_count(self.shadow_name)

    async def background(self, service: BatchedService) -> None:
        return None

    async def stop(self) -> None:
        self.states.close()
        self.applied.close()

    async def on_assigned(self, service: BatchedService, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            owned = {tp.partition for tp in assigned if tp.topic == self.outcomes_name}
            new: set[int] = set()
            for store in (self.states, self.applied):
                for p, n in (await store.assign(owned)).items():
                    log.info("%s[%d]: %d changelog records recovered", store.changelog, p, n)
                    new.add(p)
            # States are read again from the stores: a partition held
            # before may have been learned on elsewhere meanwhile.
            self.learner.forget_all()
            await self._rebuild_expiry(owned, new)
            await self._load_unpublished(service, owned)
            # Held drifts are read again from the committed offsets.
            self.hold.forget()
            consumer = service.consumer
            paused = {tp for tp in consumer.paused() if tp.topic == self.drift_name}
            if paused & assigned:
                consumer.resume(*(paused & assigned))

    async def on_revoked(self, service: BatchedService, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            self.hold.forget()
            if self.unacked:  # snapshots are never ahead of the stores
                await asyncio.gather(*self.unacked, return_exceptions=True)
                self.unacked.clear()

    async def _rebuild_expiry(self, owned: set[int], new: set[int]) -> None:
        """The applied request ids' expiry heaps of the ``new`` partitions
        from the store, a turn of the loop at a time (an hour and a half of
        request ids); a partition kept through the rebalance keeps its own."""
        for p in {*self.expiring.heaps, *self.reached} - (owned - new):
            self.expiring.drop(p)
            self.reached.pop(p, None)
        for p in sorted(new):
            async for rid, mark in self.applied.scan(p):
                found = mark_expiry(mark, self.retention_ms) if mark else None
                if found is not None:
                    self.expiring.push(found[0], found[1], rid)

    async def _check_cluster(self, service: BatchedService) -> None:
        cluster = self.cluster_id()
        if cluster is None:
            return
        if self.cluster not in (None, cluster):
            # A new cluster holds none of the old logs (offsets in the
            # states are kept per cluster: app/stream/cluster_watch.py).
            await rewind_to_start(service.consumer, AGENT)
            await self._ensure_changelogs()
            self.states.forget_offsets()
            self.applied.forget_offsets()
            self._resume(service, self.hold.forget())
        self.cluster = cluster

    async def _ensure_changelogs(self) -> None:
        for store in (self.states, self.applied):
            await store.ensure_topic(self.source.partitions, self.source.replication_factor)

    def _on_policies_changed(self, config: Any) -> None:
        retired = self.learner.reconfigure(config, self.runtime.file_policies, now_ms(), self.by)
        if retired:  # what the switched policies had learned, kept as versions
            task = asyncio.get_running_loop().create_task(self._write_registry(retired))
            self.writing.add(task)
            task.add_done_callback(self.writing.discard)

    # -- batches -------------------------------------------------------------------
    async def handle(self, service: BatchedService, batch: Batch) -> list[asyncio.Future[Any]]:
        async with self.lock:
            await self._check_cluster(service)
            now = now_ms()
            await self._outcomes_reached(
                service, {tp.partition for tp in batch if tp.topic == self.drift_name}, batch
            )
            futures: list[asyncio.Future[Any]] = []
            held: dict[int, int] = {}  # drift partition → offset of the drift held
            hold, outcomes = self.hold, self.outcomes_name
            turns = LoopTurns()
            for m in in_time_order(batch):
                if turns.due():
                    await turns.take()
                try:
                    if m.topic == self.drift_name:
                        if m.partition in held:
                            continue  # read again once the held drift goes
                        event = DriftEvent.loads(m.value, self.settings.max_event_bytes)
                        if self._held(event, m):
                            held[m.partition] = m.offset
                        elif await self._adapt(event, m, now):
                            # Its snapshot shows the adapted state, before
                            # any later outcome: the batch ends here.
                            futures += await self._finish(service, now)
                    elif m.topic == self.registry_name:
                        await self._on_registry(m, now)
                    else:
                        await self._learn(m, now)
                except InvalidEvent as exc:
                    self._dead(m, exc)
                except Exception as exc:  # one message never stops the learner
                    log.exception("learn_from_outcomes failed on %s:%s", m.topic, m.offset)
                    self.batch.results["internal_error"] += 1
                    self._dead(m, internal_error(exc, AGENT))
                if m.topic == outcomes:
                    hold.reached(m.partition, m.offset + 1)
            self._hold_back(service, batch, held)
            self._release(service)
            return futures + await self._finish(service, now)

    # -- drifts held for their outcomes ------------------------------------------------
    def _held(self, event: DriftEvent, m: Any) -> bool:
        """Whether a drift the learner would act on waits for outcomes it
        has not processed yet (:class:`app.drift.DriftHold`)."""
        pc = self.learner.config.policies.get(event.policy_id)
        if event.kind != "drift" or pc is None or pc.learning == "sharded":
            return False
        if (
            self.hold.admit(m.partition, m.offset, event.outcome_offset, time.monotonic())
            == "apply"
        ):
            return False
        metrics.EVENTS.labels(AGENT, "drift_held").inc()
        log.info(
            "drift %s of %s held: outcomes[%d] processed below %d, detected at %d",
            event.event_id,
            event.policy_id,
            m.partition,
            self.hold.done(m.partition),
            event.outcome_offset,
        )
        return True

    def _hold_back(self, service: BatchedService, batch: Batch, held: dict[int, int]) -> None:
        """Stop reading each held drift's partition at the held record: it is
        fetched again (and not committed meanwhile) once the hold is over."""
        consumer = service.consumer
        for p, offset in held.items():
            tp = TopicPartition(self.drift_name, p)
            batch[tp] = [r for r in batch[tp] if r.offset < offset]
            consumer.seek(tp, offset)
            consumer.pause(tp)

    def _release(self, service: BatchedService) -> None:
        """Read again the drift partitions whose hold is over."""
        released = self.hold.released(time.monotonic())
        for p, past_bound in released:
            if past_bound:
                metrics.EVENTS.labels(AGENT, "drift_held_past_bound").inc()
                log.warning(
                    "a drift on partition %d is applied after %gs on hold: the outcomes it was "
                    "detected on were not reached",
                    p,
                    self.hold.max_hold_s,
                )
        self._resume(service, [p for p, _ in released])

    def _resume(self, service: BatchedService, partitions: list[int]) -> None:
        consumer = service.consumer
        assigned = consumer.assignment()
        tps = [TopicPartition(self.drift_name, p) for p in partitions]
        if tps := [tp for tp in tps if tp in assigned]:
            consumer.resume(*tps)

    async def _outcomes_reached(
        self, service: BatchedService, partitions: set[int], batch: Batch | None = None
    ) -> None:
        """Tell the hold how far the outcomes of ``partitions`` are processed:
        up to the first record of this batch, else up to the consumer's
        position (every record fetched before has been handled)."""
        consumer = service.consumer
        assigned = consumer.assignment()
        for p in partitions:
            tp = TopicPartition(self.outcomes_name, p)
            records = batch.get(tp) if batch is not None else None
            if records:
                self.hold.reached(p, records[0].offset)
            elif tp in assigned:
                self.hold.reached(p, await consumer.position(tp))

    async def _finish(self, service: BatchedService, now: int) -> list[asyncio.Future[Any]]:
        """Applied ids and changed states written (with the ids that
        expired), the dead letters sent; then what waits for the states
        (adaptations, due snapshots)."""
        done, self.batch = self.batch, LearnBatch()
        decided, graduated = self.learner.take_shadow_output()
        if graduated:  # announced before the states that record it
            await self._write_registry([self._apprentice_ended(g) for g in graduated])
        for p in list(self.applied.partitions):
            reached = self.reached.get(p)
            if reached is not None and self.expiring.ready(p, reached):
                expired = self.expiring.pop_ready(p, reached, EXPIRE_PER_BATCH)
                marks = done.marks.setdefault(p, {})
                for rid in expired:
                    marks.setdefault(rid, None)
                metrics.APPLIED_EXPIRED.inc(len(expired))
        # Dead letters and shadow decisions are acknowledged before the
        # states: a state is on the local disk as soon as it is written, and
        # records the offsets of the outcomes it has seen, so after a kill the
        # redone batch skips those outcomes and would not send these again.
        if done.dead:
            await deliver(self._send, [(self.dead_name, k, v) for k, v in done.dead], AGENT)
        if decided:
            keys = [d.request_id.encode() for d in decided]
            await deliver(
                self._send,
                [(self.shadow_name, k, d.dumps()) for k, d in zip(keys, decided, strict=True)],
                AGENT,
            )
            metrics.EVENTS.labels(AGENT, "shadow_decision").inc(len(decided))
        futures = await self.applied.write(service.producer, done.marks)
        states: dict[int, dict[bytes, bytes | None]] = {}
        for key, p in done.states.items():
            states.setdefault(p, {})[key.encode()] = orjson.dumps(self.learner.state(key))
        written = await self.states.write(service.producer, states)
        futures += written
        self.unacked += written
        for key in done.states:
            metrics.set_shadow_values(key, self.learner.shadow_values(key))
        for pid, n in done.updates.items():
            metrics.POLICY_UPDATES.labels(pid).inc(n)
        for (pid, why), n in done.skipped.items():
            metrics.POLICY_UPDATES_SKIPPED.labels(pid, why).inc(n)
        for code, n in done.dead_reasons.items():
            metrics.DEAD_LETTERS.labels(AGENT, code).inc(n)
        for result, n in done.results.items():
            metrics.EVENTS.labels(AGENT, result).inc(n)
        if done.after_state:
            try:
                await self._states_written()
                await deliver(self._send, done.after_state, AGENT)
            except RuntimeError as exc:  # the state is redone; its announcement is lost
                log.warning("%s: %d records not sent", exc, len(done.after_state))
        futures += await self._publish_due(service, now_ms())
        return futures

    async def _send(self, topic: str, key: bytes | None, value: bytes) -> Any:
        assert self.service is not None
        return await self.service.producer.send(topic, value, key=key)

    async def _states_written(self) -> None:
        """Wait for the state writes made so far (a refused one is the
        service's to redo: the snapshot then waits for the next one)."""
        pending, self.unacked = self.unacked, []
        results = await asyncio.gather(*pending, return_exceptions=True)
        if any(isinstance(r, BaseException) for r in results):
            raise RuntimeError("a state write was refused; snapshots wait for it to be redone")

    async def _publish_due(
        self, service: BatchedService, now: int, force: bool = False
    ) -> list[asyncio.Future[Any]]:
        due = self.learner.due_snapshots(now, force)
        if not due:
            return []
        try:
            await self._states_written()
        except RuntimeError as exc:
            log.warning("%s", exc)
            return []
        futures = []
        for key in due:
            snap = self.learner.snapshot(key, now)
            futures.append(
                await service.producer.send(self.snapshots_name, snap.dumps(), key=key.encode())
            )
            self.published[key] = max(self.published.get(key, 0), snap.version)
            metrics.SNAPSHOTS.labels(snap.policy_id).inc()
        return futures

    async def between_batches(self, service: BatchedService) -> None:
        if self.hold.held():
            async with self.lock:
                await self._outcomes_reached(service, set(self.hold.held()))
                self._release(service)
        if time.monotonic() < self.next_publish:
            return
        self.next_publish = time.monotonic() + self.interval_s
        async with self.lock:
            await self._check_cluster(service)
            await self._publish_due(service, now_ms())

    def _dead(self, m: Any, err: InvalidEvent) -> None:
        doc = dead_letter(m.topic, m.partition, m.offset, m.key, m.value, err)
        self.batch.dead.append((dead_letter_key(m.key), doc))
        self.batch.dead_reasons[err.code] += 1

    async def _write_registry(self, records: list[RegistryEvent]) -> None:
        """Registry records, each on its policy's partition, acknowledged."""
        assert self.service is not None
        producer = self.service.producer
        n = await self.service.partition_count(self.registry_name)

        async def send(topic: str, key: bytes | None, value: bytes) -> Any:
            p = partitions_for([policy_of_key(key or b"").encode()], n)[0]
            return await producer.send(topic, value, key=key, partition=p)

        await deliver(
            send, [(self.registry_name, record_key(r), r.dumps()) for r in records], AGENT
        )
        for r in records:
            metrics.REGISTRY_RECORDS.labels(r.policy_id, r.status or r.kind).inc()

    def _apprentice_ended(self, shadow: Shadow) -> RegistryEvent:
        """The registry record saying that a shadow stopped imitating; its
        event id is the shadow run's, so a redone batch writes the same key."""
        a, pid, number = shadow.agreement, shadow.config.policy_id, shadow.version
        assert a.level is not None and a.graduated_at is not None
        reason = (
            f"apprentice mode ended: agreement {a.recent_rate():.3f} over the last "
            f"{a.window} outcomes reached {a.level:g}; learning from the rewards from now on"
        )
        log.info("shadow version %d of %s: %s", number, pid, reason)
        return RegistryEvent(
            event_id=f"{number}-apprentice-{shadow.started_at}",
            kind="status",
            policy_id=pid,
            created_at=a.graduated_at,
            created_by=self.by,
            version=number,
            status="shadow",
            reason=reason,
            lineage={
                "apprentice": a.level,
                "agreement": a.recent_rate(),
                "outcomes": a.n,
                "apprentice_ended_at": a.graduated_at,
            },
        )

    # -- state -----------------------------------------------------------------------
    async def _ensure_loaded(self, pid: str, p: int, now: int, shard: int | None = None) -> str:
        """Bring a policy's state (or its shard's) in from the store and
        return its live key; a state the store holds that cannot be read is
        skipped (the policy starts from its prior and the applied-requests
        store still stops double updates); a state older than a snapshot
        already published is reported: it means updates were lost."""
        key = live_key(pid, shard)
        learner = self.learner
        if learner.known(key):
            return key
        raw = self.states.get(p, key.encode())
        retired = None
        try:
            stored = orjson.loads(raw) if raw is not None else None
            retired = learner.load(pid, stored, now, shard, self.by)
        except Exception as exc:
            metrics.POISONED_STATE.labels("policy-state").inc()
            log.error("policy %s: unreadable stored state skipped (%s)", pid, str(exc)[:200])
            learner.load(pid, None, now, shard)
        if retired is not None:
            # Learned under a configuration changed meanwhile: kept as a
            # version before the state that replaces it is written.
            await self._write_registry([retired])
            self.batch.states[key] = p
        log.info(
            "policy %s%s loaded at version %d (offsets %s)",
            pid,
            "" if shard is None else f" shard {shard}",
            learner.version(key),
            learner.state(key)["offsets"],
        )
        await self._read_published()
        version, last = learner.version(key), self.published.get(key, 0)
        if version > last:
            learner.published_before(key, last)
        elif version < last:
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

    async def _read_published(self) -> None:
        """The versions the snapshots topic holds, read once."""
        if self.published_read:
            return
        self.published_read = True
        try:
            self.published.update(await published_versions(self.runtime, self.snapshots_name))
        except Exception as exc:
            log.warning("could not read the published snapshot versions: %s", exc)

    async def _load_unpublished(self, service: BatchedService, owned: set[int]) -> None:
        """Load the states of ``owned`` partitions that are ahead of their
        published snapshot, and publish them: updates written and then a
        kill or a handover before their snapshot would otherwise reach the
        deciders only with the policy's next outcome, which may never come."""
        await self._read_published()
        now, loaded = now_ms(), False
        for p in sorted(owned):
            async for raw_key, raw in self.states.scan(p):
                key = raw_key.decode(errors="replace")
                pid, shard = parse_live_key(key)
                if pid not in self.runtime.policies.policies:
                    continue
                try:
                    version = orjson.loads(raw)["version"]
                except Exception:
                    continue  # unreadable: _ensure_loaded reports it at the next outcome
                if isinstance(version, int) and version > self.published.get(key, 0):
                    await self._ensure_loaded(pid, p, now, shard)
                    loaded = True
        if loaded:
            sent = await self._finish(service, now)
            for r in await asyncio.gather(*sent, return_exceptions=True):
                if isinstance(r, BaseException):  # published again at the next update
                    log.warning("a recovered state's snapshot was not sent: %s", r)

    def _mark_of(self, p: int, rid: bytes) -> bytes | None:
        marks = self.batch.marks.get(p)
        if marks is not None and rid in marks:
            return marks[rid]
        return self.applied.get(p, rid)

    # -- events ----------------------------------------------------------------------
    async def _learn(self, m: Any, now: int) -> None:
        outcome = Outcome.loads(m.value, self.settings.max_event_bytes)
        pc = self.learner.config.policies.get(outcome.policy_id)
        if pc is None:
            raise InvalidEvent("unknown_policy", f"no policy {outcome.policy_id!r}")
        if not pc.allows(outcome.tenant_id):
            raise InvalidEvent(
                "unauthorized_policy", f"tenant may not use policy {outcome.policy_id!r}"
            )
        pid, p, b = outcome.policy_id, m.partition, self.batch
        # learning: sharded: the state of this partition's shard of the policy.
        key = await self._ensure_loaded(pid, p, now, p if pc.learning == "sharded" else None)
        rid = join_key(outcome.tenant_id, outcome.request_id)
        part = offsets_key(p, self.cluster_id())
        learner = self.learner
        if learner.seen(key, part, m.offset):
            result = "redelivered"
        elif applied_in_state(self._mark_of(p, rid), learner.version(key)):
            learner.mark(key, part, m.offset)
            result = "duplicate"
        else:
            result = learner.apply(outcome, part, m.offset, key)
            plans = learner.due_plans(key)
            if plans is not None:
                await self._plan(pid, plans)
        if result == "applied":
            b.updates[pid] += 1
        else:
            b.skipped[(pid, result)] += 1
        if result != "redelivered":
            marks = b.marks.setdefault(p, {})
            if result != "duplicate" or rid not in marks:
                marks[rid] = applied_mark(learner.version(key), outcome.outcome_at, p)
                self.expiring.push(p, outcome.outcome_at + self.retention_ms, rid)
            b.states[key] = p
            self.reached[p] = max(self.reached.get(p, 0), outcome.outcome_at)
        b.results[result] += 1

    async def _plan(self, pid: str, compute: Callable[[], Callable[[], None]]) -> None:
        """A tuner's plans (a GP fit each, 0.15-0.6 s) computed in a thread
        and taken here, before the policy's next update: the deciders, the
        join and the group's heartbeats on this event loop go on meanwhile,
        and nothing changes the policy while its plans are computed from it.
        A plan that fails leaves its tuner to plan at its next update; the
        outcome stays applied."""
        try:
            take = await asyncio.to_thread(compute)
        except Exception:
            log.exception("policy %s: a parameter plan failed; it is made again later", pid)
            return
        take()

    async def _adapt(self, event: DriftEvent, m: Any, now: int) -> bool:
        """Apply a drift event (record ``m``) to the policy it names (see the
        module docstring); whether it changed the policy."""
        pid = event.policy_id
        pc = self.learner.config.policies.get(pid)
        if event.kind != "drift" or pc is None:
            metrics.EVENTS.labels(AGENT, f"drift_{event.kind}_skipped").inc()
            return False
        if pc.learning == "sharded":
            # Its shards learn on every partition; an adaptation would have
            # to reach them all (docs/architecture.md#sharded-learning).
            metrics.EVENTS.labels(AGENT, "drift_sharded_skipped").inc()
            return False
        key = await self._ensure_loaded(pid, m.partition, now)
        spec = self.drift_config.adaptation_for(pid)
        part = offsets_key(m.partition, self.cluster_id())
        done = self.learner.adapt(event, spec, part, m.offset, now)
        metrics.EVENTS.labels(AGENT, "drift_adapted" if done else "drift_ignored").inc()
        if done is None:
            return False
        # The state (with the drift's offset) first, then the event: a crash
        # in between keeps the adaptation and loses only its announcement.
        self.batch.states[key] = m.partition
        self.batch.after_state.append((self.drift_name, pid.encode(), done.dumps()))
        metrics.ADAPTATIONS.labels(pid, done.applied or "none").inc()
        log.info("adapted %s/%s after %s drift: %s", pid, done.arm, done.signal, done.detail)
        return True

    async def _on_registry(self, m: Any, now: int) -> None:
        """Serve a version, or register the serving state (app/versions.py);
        versions and status records are the CLI's to read."""
        event = RegistryEvent.loads(m.value, REGISTRY_MAX_BYTES)
        pid = event.policy_id
        learner = self.learner
        pc = learner.config.policies.get(pid)
        if event.kind == "status" and "apprentice_ended_at" in (event.lineage or {}):
            return  # a learner's own announcement (_apprentice_ended)
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
        key = await self._ensure_loaded(pid, m.partition, now)
        part = f"registry:{offsets_key(m.partition, self.cluster_id())}"
        if learner.seen(key, part, m.offset):
            metrics.EVENTS.labels(AGENT, "registry_redelivered").inc()
            return
        learner.mark(key, part, m.offset)
        self.batch.states[key] = m.partition
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
                records = [
                    learner.register(key, now, self.by, "development", reason, event.event_id)
                ]
            else:
                reason = event.reason or f"version {event.version} served"
                records = learner.serve(key, event, now, self.by, reason)
        except VersionError as exc:
            metrics.EVENTS.labels(AGENT, "registry_refused").inc()
            log.error("registry %s for policy %s refused: %s", event.kind, pid, exc)
            return
        # The records first, then (at the batch's end) the state: a crash in
        # between redoes the request, which writes the same version again.
        await self._write_registry(records)
        metrics.EVENTS.labels(AGENT, f"registry_{event.kind}").inc()
        log.info("registry: %s for policy %s done (%s)", event.kind, pid, reason)


def register(app: faust.App, runtime: Runtime) -> None:
    start_with_worker(
        app,
        runtime,
        AGENT,
        ("outcomes", "drift", "registry"),
        lambda: LearnFromOutcomes(runtime, lambda: current_cluster_id(app)),
        FETCH_WAIT_MS,
        BATCH_MAX,
    )
