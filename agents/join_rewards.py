"""join_rewards: decisions + rewards → outcomes, through a RocksDB table of
pending decisions keyed by tenant and request id.

Decisions, rewards and reward timeouts (ticks) are co-partitioned (same key, same
partition count; see topics.yaml ``joins``), so one stream over the three
topics sees every event of a request on one partition. Due entries (waits
that ran out, held rewards, finished requests past retention) are found in
an in-memory heap per partition, entries waiting for the join to read
further in a heap per decisions/rewards partition by offset; a timer sends
one tick per owned partition to the timeouts topic, and the tick, processed
in the stream, resolves that partition's due entries — table changes happen
only in stream context, where Faust knows which changelog partition they
belong to.

A due entry is resolved only once the stream has read far enough
(:class:`app.join.Progress`): the agent tracks, per decisions and rewards
partition, the next offset it has yet to process and the end the consumer
last fetched.

Events are taken a batch at a time (:class:`JoinBatch`): within a batch the
entries are read and changed in memory, and at its end each changed key is
written to the table once (a decision and its reward in one batch cost one
table and changelog write, not two), and the outcomes and dead letters are
sent together and acknowledged by the broker, those it refuses sent again
(:mod:`app.stream.delivery`). Faust acks a batch's events only after that,
and commits only after the producer has flushed, so a crash at any point
redoes the batch against the state written so far: every join rule takes a
redelivered event as such.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import faust
import orjson
from faust.types import TP

from app import metrics
from app.ingress import check_reward_token, check_tenant, join_key
from app.join import (
    JoinEntry,
    Joiner,
    Progress,
    Step,
    encode_entry,
    parse_decision,
    valid_entry,
)
from app.join_alignment import RewardsAlignment
from app.key_heaps import KeyHeaps
from app.records import InvalidEvent, Reward, decode, now_ms
from app.stream.cluster_watcher import current_cluster_id
from app.stream.current_event import set_current_event
from app.stream.dead_letter import dead_letter, dead_letter_key, internal_error
from app.stream.delivery import deliver
from app.stream.in_sequence import InSequence
from app.stream.partition_ends import PartitionEnds
from app.stream.runtime import Runtime
from app.stream.stream_progress import StreamProgress

log = logging.getLogger(__name__)
AGENT = "join_rewards"
# Entries resolved per tick; more are left to a tick sent at once, so that
# decisions and rewards keep flowing between them.
RESOLVE_PER_TICK = 2_000
# Events per batch, and how long a batch waits to fill.
BATCH_MAX = 4_000
BATCH_WITHIN_S = 0.02


class JoinBatch:
    """What one batch changed, applied at its end: the entries (key →
    (partition, entry or None for deleted)), the records to send, and the
    counters. ``events[p]`` is an event of the batch on partition ``p``:
    table writes go to the partition of Faust's current event."""

    def __init__(self) -> None:
        self.entries: dict[bytes, tuple[int, JoinEntry | None]] = {}
        self.events: dict[int, Any] = {}
        self.sends: list[tuple[str, bytes | None, bytes]] = []
        self.results: Counter[str] = Counter()
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.rewards: dict[str, float] = {}
        self.dead: Counter[str] = Counter()
        self.generation = 0  # the cluster generation the batch was fetched in


def register(app: faust.App, runtime: Runtime) -> None:
    t = runtime.topics
    s = runtime.settings
    decisions, rewards, timeouts = t.name("decisions"), t.name("rewards"), t.name("reward_timeouts")
    source = app.topic(
        decisions,
        rewards,
        timeouts,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    reward_timeouts_topic = app.topic(timeouts, key_serializer="raw", value_serializer="raw")
    pending = app.Table(
        "join-pending",
        key_type=bytes,
        value_type=bytes,
        partitions=t["decisions"].partitions,
    )
    joiner = Joiner(
        runtime.policies,
        orphan_hold_ms=int(s.join_orphan_hold_seconds * 1000),
        done_retention_ms=int(s.join_done_retention_seconds * 1000),
        max_hold_ms=int(s.join_max_hold_seconds * 1000),
    )
    runtime.on_policies_changed.append(joiner.reconfigure)
    due = KeyHeaps()  # partition → (due ms, key)
    reading = KeyHeaps()  # (topic, partition) → (offset to read to, key)
    marks: dict[bytes, int] = {}  # waiting entries' marks (kept in memory only)
    progress = StreamProgress()
    sequence = InSequence(app, AGENT, {decisions, rewards})
    ends = PartitionEnds(s.bootstrap, client_id=f"{s.app_id}-join-ends", fetch=s.embedded_broker)
    ends_started = {"yes": False}  # started on the first tick, inside the worker's loop

    # "generation" counts cluster changes: a batch fetched from a cluster
    # that was replaced while it was being processed says nothing about how
    # far the join has read the new cluster's partitions.
    state: dict[str, Any] = {"rebuild": True, "cluster": None, "generation": 0}
    max_bytes = s.max_event_bytes
    outcomes_name, dead_name = t.name("outcomes"), t.name("dead_letter")
    batch = JoinBatch()
    alignment = RewardsAlignment()

    def align() -> None:
        """Pause the rewards partitions read too far ahead of their
        decisions, resume the others (app/join_alignment.py)."""
        consumer = app.consumer
        if consumer is None:
            return
        owned = sorted(tp.partition for tp in consumer.assignment() if tp.topic == decisions)

        def behind(p: int) -> bool:
            end = progress.ends.get((decisions, p))
            done = progress.done.get((decisions, p))
            return end is not None and (done is None or done < end)

        pause, resume = alignment.changes(owned, behind)
        if pause:
            consumer.pause_partitions([TP(rewards, p) for p in pause])
            metrics.EVENTS.labels(AGENT, "rewards_paused").inc(len(pause))
        if resume:
            consumer.resume_partitions([TP(rewards, p) for p in resume])

    def apply(key: bytes, step: Step, msg: Any) -> None:
        marks.pop(key, None)
        if not step.keep:
            batch.entries[key] = (msg.partition, None)
        elif step.entry is not None:
            batch.entries[key] = (msg.partition, step.entry)
            due.push(step.entry["partition"], step.entry["due"], key)
        if step.outcome is not None:
            o = step.outcome
            batch.sends.append((outcomes_name, joiner.outcome_key(o), orjson.dumps(o)))
            batch.outcomes[(o["policy_id"], "defaulted" if o["defaulted"] else "rewarded")] += 1
            batch.rewards[o["policy_id"]] = batch.rewards.get(o["policy_id"], 0.0) + o["reward"]
        if step.error is not None:
            if step.original is not None:
                send_dead(msg, step.error, step.original[1], step.original[0])
            else:
                send_dead(msg, step.error)
        if step.result.endswith("_at_bound"):
            metrics.JOIN_AT_BOUND.labels(step.result.removesuffix("_at_bound")).inc()
        batch.results[step.result] += 1

    async def send(topic: str, key: bytes | None, value: bytes) -> Any:
        return await app.producer.send(topic, key, value, None, None, None)

    def send_dead(
        msg: Any, err: InvalidEvent, value: bytes | None = None, src: list[Any] | None = None
    ) -> None:
        topic, partition, offset = src or (msg.topic, msg.partition, msg.offset)
        doc = dead_letter(
            topic, partition, offset, msg.key, value if value is not None else msg.value, err
        )
        batch.sends.append((dead_name, dead_letter_key(msg.key), doc))
        batch.dead[err.code] += 1

    async def finish_batch() -> None:
        """Each changed key written once, then the records sent (see the
        module docstring); then the counters."""
        nonlocal batch
        done, batch = batch, JoinBatch()
        for key, (p, e) in done.entries.items():
            set_current_event(done.events[p])
            if e is None:
                pending.pop(key, None)
            else:
                pending[key] = encode_entry(e)
        # Acknowledged before the batch's events are (app/stream/delivery.py).
        await deliver(send, done.sends, AGENT)
        for (pid, kind), n in done.outcomes.items():
            metrics.OUTCOMES.labels(pid, kind).inc(n)
        for pid, total in done.rewards.items():
            metrics.OUTCOME_REWARD.labels(pid).inc(total)
        for code, n in done.dead.items():
            metrics.DEAD_LETTERS.labels(AGENT, code).inc(n)
        for result, n in done.results.items():
            metrics.EVENTS.labels(AGENT, result).inc(n)

    def entry(key: bytes) -> JoinEntry | None:
        changed = batch.entries.get(key)
        if changed is not None:
            e = changed[1]
            if e is not None and key in marks:
                e = {**e, "mark": marks[key]}
            return e
        raw = pending.get(key)
        e = valid_entry(raw)
        if raw is not None and e is None:
            metrics.POISONED_STATE.labels("join-pending").inc()
            log.error("ignoring an unreadable join-pending entry (%d bytes)", len(raw))
        if e is not None and key in marks:
            e["mark"] = marks[key]
        return e

    def on_decision(msg: Any, now: int) -> None:
        decision = parse_decision(msg.value)
        if msg.key != decision["request_id"].encode():
            raise InvalidEvent("schema_violation", "message key is not the request_id")
        key = join_key(decision["tenant_id"], decision["request_id"])
        src = [msg.topic, msg.partition, msg.offset]
        apply(key, joiner.on_decision(entry(key), decision, src, now), msg)

    def on_reward(msg: Any, now: int) -> None:
        reward = Reward.from_dict(decode(msg.value, max_bytes))
        if reward.request_id.encode() != msg.key:
            raise InvalidEvent("schema_violation", "message key is not the request_id")
        check_tenant(reward.tenant_id, msg.headers, s.tenant_header)
        check_reward_token(
            s.reward_token_secret, reward.tenant_id, reward.request_id, reward.reward_token
        )
        key = join_key(reward.tenant_id, reward.request_id)
        src = [msg.topic, msg.partition, msg.offset]
        apply(key, joiner.on_reward(entry(key), reward, msg.value, src, now), msg)

    async def handle(msg: Any) -> None:
        now = now_ms()
        try:
            if msg.topic == timeouts:
                await resolve_due(msg, now)
                return
            if batch.generation == state["generation"]:
                progress.saw(msg.topic, msg.partition, msg.offset)
            if msg.key is None:
                raise InvalidEvent("schema_violation", "message has no key (the request id)")
            if msg.topic == decisions:
                on_decision(msg, now)
            else:
                on_reward(msg, now)
        except InvalidEvent as exc:
            send_dead(msg, exc)
            batch.results["dead_letter"] += 1
        except Exception as exc:  # one message never stops the join
            log.exception("join_rewards failed on %s:%s", msg.topic, msg.offset)
            send_dead(msg, internal_error(exc))
            batch.results["dead_letter"] += 1

    @app.agent(source, name="join_rewards")
    async def join_rewards(stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            batch.generation = state["generation"]
            for event in events:
                m = event.message
                if m.topic != timeouts:
                    kind = "decisions" if m.topic == decisions else "rewards"
                    alignment.saw(kind, m.partition, int(m.timestamp * 1000))
                # Table reads look in the current event's partition.
                set_current_event(event)
                batch.events[m.partition] = event
                await sequence.handle(m, handle)
            await finish_batch()
            align()

    async def resolve_due(msg: Any, now: int) -> None:
        p = msg.partition
        view = progress.view(decisions, rewards, p)
        keys = due.pop_ready(p, now, RESOLVE_PER_TICK)
        for topic, done in ((rewards, view.rewards_done), (decisions, view.decisions_done)):
            if done is not None:
                keys += reading.pop_ready((topic, p), done, RESOLVE_PER_TICK - len(keys))
        for key in keys:
            try:
                resolve(key, msg, now, view)
            except Exception:
                log.exception("join_rewards could not resolve a due entry; it is dropped")
                metrics.POISONED_STATE.labels("join-pending").inc()
        metrics.PENDING_DECISIONS.set(due.size())
        if len(keys) >= RESOLVE_PER_TICK:
            await reward_timeouts_topic.send(value=b"{}", partition=p)

    def resolve(key: bytes, msg: Any, now: int, view: Progress) -> None:
        step = joiner.on_due(entry(key), now, view)
        if step.result == "not_due":
            return
        if step.waits_on is None:
            apply(key, step, msg)
            return
        # Waiting for the join to read further: held in memory, not rewritten.
        e = step.entry
        assert e is not None
        if e["mark"] is None:  # the partition's end is not known yet
            due.push(e["partition"], e["due"], key)
            return
        if key not in marks:
            batch.results["waiting"] += 1
        marks[key] = e["mark"]
        topic = rewards if step.waits_on == "rewards" else decisions
        reading.push((topic, e["partition"]), e["mark"], key)
        due.push(e["partition"], e.get("until", now), key)  # the bound

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _on_assigned(sender: Any, assigned: Any, **kw: Any) -> None:
        state["rebuild"] = True
        progress.reset()
        held = alignment.reset()
        if held and app.consumer is not None:
            app.consumer.resume_partitions([TP(rewards, p) for p in held])
        await sequence.expect_committed(assigned)

    def rebuild() -> None:
        """After (re)assignment the heap is rebuilt from the recovered table."""
        state["rebuild"] = False
        due.clear()
        reading.clear()
        marks.clear()
        for key, raw in pending.items():
            e = valid_entry(raw)
            if e is None:
                metrics.POISONED_STATE.labels("join-pending").inc()
                log.error("skipping an unreadable join-pending entry (%d bytes)", len(raw or b""))
                continue
            due.push(e["partition"], e["due"], key)
        for key, (_, e) in batch.entries.items():  # a batch under way when it ran
            if e is not None:
                due.push(e["partition"], e["due"], key)

    @app.timer(s.join_timer_interval_seconds)
    async def tick_owned_partitions() -> None:
        assignment = app.consumer.assignment() if app.consumer else set()
        owned = sorted(tp.partition for tp in assignment if tp.topic == timeouts)
        cluster = current_cluster_id(app)
        if cluster is not None and state["cluster"] not in (None, cluster):
            # Positions in another cluster's logs (a broker that lost them)
            # say nothing about the new ones; marks are taken afresh.
            progress.reset()
            progress.ends.clear()
            ends.forget()
            sequence.forget()
            app.consumer.resume_partitions([TP(rewards, p) for p in alignment.reset()])
            state["rebuild"] = True
            state["generation"] += 1
        if cluster is not None:
            state["cluster"] = cluster
        if state["rebuild"] and owned:
            rebuild()
        tps = [TP(topic, p) for p in owned for topic in (decisions, rewards)]
        try:
            if not ends_started["yes"]:
                await ends.start()
                ends_started["yes"] = True
            progress.ends.update(await ends.refresh(tps, timeout_s=5.0))
        except Exception as exc:  # the broker is away: entries wait, nothing resolves early
            log.warning("join_rewards could not fetch partition ends: %s", exc)
        busy = {(m.tp.topic, m.tp.partition) for m in list(app.consumer.unacked)}
        for tp in tps:
            await progress.observe_idle(app.consumer, tp.topic, tp.partition, busy)
        align()  # resumes rewards once their decisions are read, with or without new events
        now = now_ms()
        for p in owned:
            if (
                due.ready(p, now)
                or reading.ready((rewards, p), progress.done.get((rewards, p)))
                or reading.ready((decisions, p), progress.done.get((decisions, p)))
            ):
                await reward_timeouts_topic.send(value=b"{}", partition=p)
