"""evaluate_experiments: outcomes, drifts and alerts → experiment results,
stage changes, rollbacks and promotions on ``llmopt.experiments.v1``.

Not a Faust stream: an experiment's variants are often different policies,
whose outcomes are on different partitions (keyed by policy id), and one
evaluator must see all of them. So one worker evaluates every experiment:
the one its consumer group (``<app_id>-evaluate-experiments``) gives the
experiments topic's single partition — a lease that moves to another worker
when this one stops. The holder reads the experiments topic from offset 0
(nothing is committed), builds the running experiments' statistics from
their last ``result`` or ``stage`` event, and reads the outcomes, drift and
alerts topics, group-less, from the positions those events carry
(:mod:`app.experiments.evaluator`). Its state is the topic: a restart, or
another worker taking the lease, carries on from the last event written.

A promoted rollout whose challenger is another policy makes that policy's
configuration and learned state (its newest snapshot) the champion of the
experiment's policy in the registry: the ``serve`` request
``llmopt registry promote --to champion`` writes (app/versions.py
``serve_records``), without a version number, so the policy's learner
registers the state as a version and serves it. A rollback comes before any
promotion, so it writes nothing to the registry.

A lost cluster loses the experiments topic with it, while the deciders keep
splitting traffic by the definitions they hold. So the evaluator keeps the
latest event of each record key it has read or written and, on a new
cluster, writes them to the new topic with every position at 0 (the
statistics so far count what the old logs held; the new logs are read from
their start), then recovers from that topic as after a new lease.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from app import metrics
from app.experiments.evaluator import SIGNAL_DRIFT_KINDS, Evaluator
from app.experiments.events import EXPERIMENT_MAX_BYTES, record_key
from app.ingress import join_key
from app.kafka_security import kafka_security
from app.policies.config import PolicyConfig
from app.records import (
    AlertEvent,
    DriftEvent,
    ExperimentEvent,
    InvalidEvent,
    Outcome,
    PolicySnapshot,
    now_ms,
)
from app.registry_cli import read_registry, write_records
from app.stream.cluster_watcher import current_cluster_id
from app.stream.kafka_io import assign_from, partitions_of, read_to_end, stop_consumer
from app.stream.partition_ends import fetched_end_offsets
from app.stream.runtime import Runtime
from app.versions import serve_records

log = logging.getLogger(__name__)
AGENT = "evaluate_experiments"
LOOK_EVERY_S = 0.5
SOURCES = ("outcomes", "drift", "alerts")  # topic roles read beside the experiments


class _Lease(ConsumerRebalanceListener):
    """Tells the evaluator when it gains or loses the experiments partition."""

    def __init__(self, owner: EvaluateExperiments) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.owner.lose()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            self.owner.gain(list(assigned))


class EvaluateExperiments:
    def __init__(self, runtime: Runtime, cluster_id: Callable[[], str | None]) -> None:
        self.rt, self.cluster_id = runtime, cluster_id
        self.cluster: str | None = None
        # The latest event of each record key of the topic, read or written.
        self.latest: dict[bytes, ExperimentEvent] = {}
        s, t = runtime.settings, runtime.topics
        self.by = f"evaluator@{socket.gethostname()}:{s.web_port}:{os.getpid()}"
        self.topic = t.name("experiments")
        self.roles = {t.name(role): role for role in SOURCES}
        self.result_every_ms = int(s.experiment_result_seconds * 1000)
        self.evaluator: Evaluator | None = None
        self._gained: list[TopicPartition] | None = None
        self.reader: AIOKafkaConsumer | None = None
        self._lease_count = 0  # changes with every lease gained or lost

    def gain(self, tps: list[TopicPartition]) -> None:
        self._gained = tps
        self._lease_count += 1

    def lose(self) -> None:
        self.evaluator, self._gained = None, None
        self._lease_count += 1

    async def run(self) -> None:
        """Evaluate while this worker holds the lease; a failure (the broker
        gone) starts over, from the topic, a second later."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("experiment evaluation failed; starting again")
            self.lose()
            await asyncio.sleep(1.0)

    async def _run_once(self) -> None:
        s = self.rt.settings
        client_id = f"{s.app_id}-evaluate-experiments"
        profile = s.broker_profile()
        self.lease = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            group_id=client_id,
            client_id=client_id,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=8 << 20,
            session_timeout_ms=int(profile["session_timeout"] * 1000),
            heartbeat_interval_ms=int(profile["heartbeat_interval"] * 1000),
            rebalance_timeout_ms=int(profile["rebalance_timeout"] * 1000),
            **kafka_security(s),
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap, client_id=client_id, acks=1, **kafka_security(s)
        )
        self.reader = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            client_id=f"{client_id}-reader",
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            **kafka_security(s),
        )
        await self.producer.start()
        await self.reader.start()
        await self.lease.start()
        self.lease.subscribe([self.topic], listener=_Lease(self))
        try:
            await self._loop()
        finally:
            for c in (self.lease, self.reader):
                with contextlib.suppress(Exception):
                    await stop_consumer(c)
            with contextlib.suppress(Exception):
                await self.producer.stop()

    async def _loop(self) -> None:
        last_look = 0.0
        while True:
            batch = await self.lease.getmany(timeout_ms=100 if self.evaluator else 500)
            if await self._carried_to_new_cluster():
                continue
            if self._gained is not None:
                gained, self._gained = self._gained, None
                await self._recover(gained)
                continue
            ev = self.evaluator
            if ev is None:
                continue
            for msgs in batch.values():
                for e in _events(msgs):
                    self.latest[record_key(e)] = e
                    ev.on_event(e)
            await self._read_sources(ev)
            if time.monotonic() - last_look >= LOOK_EVERY_S:
                last_look = time.monotonic()
                await self._publish(ev.look(now_ms()))

    async def _recover(self, tps: list[TopicPartition]) -> None:
        """Lease gained: fold the experiments topic from offset 0 to its end,
        then start reading the sources where the running experiments left off."""
        ev = Evaluator(self.by, self.result_every_ms)
        lease = self._lease_count
        ends = await fetched_end_offsets(self.rt.settings.bootstrap, tps)
        for tp in tps:
            self.lease.seek(tp, 0)
        left = {tp for tp in tps if ends[(tp.topic, tp.partition)] > 0}
        while left:
            batch = await self.lease.getmany(timeout_ms=500)
            if self._lease_count != lease:
                return  # lost (or gained again) meanwhile: the loop starts over
            for tp, msgs in batch.items():
                for e in _events(msgs):
                    self.latest[record_key(e)] = e
                    ev.recover(e)
                if msgs and msgs[-1].offset + 1 >= ends[(tp.topic, tp.partition)]:
                    left.discard(tp)
        assert self.reader is not None
        sources = partitions_of(self.reader, *self.roles)
        source_ends = await fetched_end_offsets(self.rt.settings.bootstrap, sources)
        by_name = {_where(self.roles[tp.topic], tp.partition): tp for tp in sources}
        positions = ev.start(
            {w: source_ends[(tp.topic, tp.partition)] for w, tp in by_name.items()}
        )
        if self._lease_count != lease:
            return
        assign_from(self.reader, {tp: positions[w] for w, tp in by_name.items()})
        self.evaluator = ev
        log.info(
            "evaluating %d running experiment(s); reading %d partitions from %s",
            len(ev.runs),
            len(by_name),
            positions,
        )

    async def _carried_to_new_cluster(self) -> bool:
        """On a new cluster: write the experiments' latest events to its
        topic, positions at 0, and recover from it (see the module
        docstring); whether it did."""
        cluster = self.cluster_id()
        if cluster is None or self.cluster in (None, cluster):
            self.cluster = cluster or self.cluster
            return False
        carried = [_from_the_start(e) for e in self.latest.values()]
        await asyncio.gather(
            *[
                await self.producer.send(self.topic, orjson.dumps(e.to_dict()), key=record_key(e))
                for e in carried
            ]
        )
        self.latest = {record_key(e): e for e in carried}
        self.cluster = cluster
        log.warning(
            "a new cluster: %d experiment event(s) written to its topic; evaluating from there",
            len(carried),
        )
        metrics.EVENTS.labels(AGENT, "carried_to_new_cluster").inc(len(carried))
        held = list(self.lease.assignment())
        self.lose()
        if held:
            self.gain(held)
        return True

    async def _read_sources(self, ev: Evaluator) -> None:
        assert self.reader is not None
        batch = await self.reader.getmany(timeout_ms=100, max_records=20_000)
        for tp, msgs in batch.items():
            role = self.roles.get(tp.topic)
            where = _where(role or tp.topic, tp.partition)
            for m in msgs:
                if role == "outcomes":
                    self._outcome(ev, where, m)
                elif role is not None:
                    self._signal(ev, where, role, m)

    def _outcome(self, ev: Evaluator, where: str, m: Any) -> None:
        raw = m.value
        if not raw or b'"experiment_id"' not in raw:
            ev.passed(where, m.offset)  # the cheap test: most outcomes are in no experiment
            return
        try:
            o = Outcome.loads(raw)
        except InvalidEvent:
            ev.passed(where, m.offset)  # the learner dead-letters it
            return
        doc = {
            "request": join_key(o.tenant_id, o.request_id),
            "experiment_id": o.experiment_id,
            "variant": o.variant,
            "reward": o.reward,
            "components": o.components,
        }
        counted = ev.on_outcome(where, m.offset, doc)
        metrics.EVENTS.labels(AGENT, "counted" if counted else "ignored").inc()

    def _signal(self, ev: Evaluator, where: str, role: str, m: Any) -> None:
        try:
            if role == "drift":
                d = DriftEvent.loads(m.value)
                if d.kind in SIGNAL_DRIFT_KINDS:
                    what = f"{d.kind} of {d.signal} ({d.detector})"
                    ev.on_signal(where, m.offset, d.policy_id, d.arm, what)
                    return
            else:
                a = AlertEvent.loads(m.value)
                if a.status == "firing":
                    ev.on_signal(where, m.offset, a.policy_id, a.arm, f"alert {a.rule}")
                    return
        except InvalidEvent:
            pass
        ev.passed(where, m.offset)

    async def _publish(self, events: list[ExperimentEvent]) -> None:
        if not events:
            return
        futures = [
            await self.producer.send(self.topic, orjson.dumps(e.to_dict()), key=record_key(e))
            for e in events
        ]
        await asyncio.gather(*futures)
        for e in events:
            self.latest[record_key(e)] = e
            if e.kind == "result" and e.result is not None:
                metrics.set_experiment_result(e.experiment_id, e.result)
            elif e.kind == "stopped" and e.stop_reason:
                metrics.EXPERIMENT_STOPS.labels(e.stop_reason).inc()
                log.info("experiment %s stopped (%s): %s", e.experiment_id, e.stop_reason, e.reason)
                if e.stop_reason == "promoted":
                    await self._promote_in_registry(e)
            elif e.kind == "stage":
                log.info("experiment %s: stage %s %s", e.experiment_id, e.stage, e.shares)

    async def _promote_in_registry(self, stopped: ExperimentEvent) -> None:
        """The promoted challenger becomes the champion of the experiment's
        policy in the registry (see the module docstring). Written after the
        experiment's events: a crash in between leaves the registry as it was."""
        live = self.evaluator.log.experiments.get(stopped.experiment_id) if self.evaluator else None
        if live is None:
            return
        d, s = live.definition, self.rt.settings
        challenger = self.rt.policies.get(d.challenger.policy)
        if challenger is None or d.challenger.policy == d.policy:
            log.info(
                "rollout %s: its challenger is no other policy: the registry is unchanged",
                d.experiment_id,
            )
            return
        if challenger.learning == "sharded":
            log.warning(
                "rollout %s: %s learns in shards, not registered",
                d.experiment_id,
                challenger.policy_id,
            )
            return
        try:
            snap = await _latest_snapshot(
                s.bootstrap,
                self.rt.topics.name("policy_snapshots"),
                challenger.policy_id,
                f"{s.app_id}-promotion",
            )
            topic = self.rt.topics.name("registry")
            view = await read_registry(s.bootstrap, topic)
            reason = f"promoted by rollout {d.experiment_id}: {stopped.reason or ''}".rstrip(": ")
            records = serve_records(
                view.policies.get(d.policy),
                None,
                self.by,
                stopped.created_at,
                reason[:1024],
                policy_id=d.policy,
                config=dict(challenger.source),
                config_hash=challenger.config_hash,
                state=_version_state(challenger, snap),
                lineage={
                    "experiment_id": d.experiment_id,
                    "challenger_policy": challenger.policy_id,
                    "challenger_snapshot_version": snap.version if snap is not None else 0,
                },
            )
            await write_records(s.bootstrap, topic, records)
        except Exception:
            log.exception(
                "rollout %s: the promotion was not written to the registry", d.experiment_id
            )
            return
        log.info(
            "rollout %s: %s serves %s in the registry",
            d.experiment_id,
            challenger.policy_id,
            d.policy,
        )


def _version_state(pc: PolicyConfig, snap: PolicySnapshot | None) -> dict[str, Any]:
    """A registry version's state from a policy's snapshot (its prior when
    it has none)."""
    if snap is None:
        prior = base64.b64encode(pc.build().snapshot()).decode()
        return {"algorithm": pc.algorithm, "policy": prior, "updates": 0}
    return {"algorithm": snap.algorithm, "policy": snap.state, "updates": snap.updates}


async def _latest_snapshot(
    bootstrap: str, topic: str, policy_id: str, client_id: str
) -> PolicySnapshot | None:
    """The newest snapshot of a single-writer policy (message key: its id)."""
    key, newest = policy_id.encode(), None
    async for records in read_to_end(bootstrap, topic, client_id):
        for m in records:
            if m.key != key:
                continue
            with contextlib.suppress(InvalidEvent):
                # A snapshot's state is at most 16 MiB (schemas/policy_snapshot.v1.json).
                snap = PolicySnapshot.loads(m.value, 32 << 20)
                if newest is None or snap.version > newest.version:
                    newest = snap
    return newest


def _where(role: str, partition: int) -> str:
    return f"{role}/{partition}"


def _from_the_start(e: ExperimentEvent) -> ExperimentEvent:
    """``e`` with the positions its state carries set to 0."""
    if not e.state or "offsets" not in e.state:
        return e
    offsets = dict.fromkeys(e.state["offsets"], 0)
    return dataclasses.replace(e, state={**e.state, "offsets": offsets})


def _events(msgs: list[Any]) -> list[ExperimentEvent]:
    out = []
    for m in msgs:
        try:
            out.append(ExperimentEvent.loads(m.value, EXPERIMENT_MAX_BYTES))
        except InvalidEvent as exc:
            metrics.POISONED_STATE.labels("experiments").inc()
            log.warning("ignoring unreadable experiment event at offset %s: %s", m.offset, exc)
    return out


def register(app: faust.App, runtime: Runtime) -> None:
    @app.task
    async def evaluate_experiments() -> None:
        await EvaluateExperiments(runtime, lambda: current_cluster_id(app)).run()
