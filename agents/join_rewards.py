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
"""

from __future__ import annotations

import logging
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
from app.key_heaps import KeyHeaps
from app.records import InvalidEvent, Reward, decode, now_ms
from app.stream.cluster_watcher import current_cluster_id
from app.stream.dead_letter import dead_letter, dead_letter_key, internal_error
from app.stream.in_sequence import InSequence
from app.stream.partition_ends import PartitionEnds
from app.stream.runtime import Runtime
from app.stream.stream_progress import StreamProgress

log = logging.getLogger(__name__)
AGENT = "join_rewards"
# Entries resolved per tick; more are left to a tick sent at once, so that
# decisions and rewards keep flowing between them.
RESOLVE_PER_TICK = 2_000


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
    outcomes = app.topic(t.name("outcomes"), key_serializer="raw", value_serializer="raw")
    dead = app.topic(t.name("dead_letter"), key_serializer="raw", value_serializer="raw")
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

    state: dict[str, Any] = {"rebuild": True, "cluster": None}
    max_bytes = s.max_event_bytes

    async def apply(key: bytes, step: Step, msg: Any) -> None:
        marks.pop(key, None)
        if not step.keep:
            pending.pop(key, None)
        elif step.entry is not None:
            pending[key] = encode_entry(step.entry)
            due.push(step.entry["partition"], step.entry["due"], key)
        if step.outcome is not None:
            o = step.outcome
            await outcomes.send(key=o["policy_id"].encode(), value=orjson.dumps(o))
            kind = "defaulted" if o["defaulted"] else "rewarded"
            metrics.OUTCOMES.labels(o["policy_id"], kind).inc()
            metrics.OUTCOME_REWARD.labels(o["policy_id"]).inc(o["reward"])
        if step.error is not None:
            if step.original is not None:
                await send_dead(msg, step.error, step.original[1], step.original[0])
            else:
                await send_dead(msg, step.error)
        if step.result.endswith("_at_bound"):
            metrics.JOIN_AT_BOUND.labels(step.result.removesuffix("_at_bound")).inc()
        metrics.EVENTS.labels(AGENT, step.result).inc()

    async def send_dead(
        msg: Any, err: InvalidEvent, value: bytes | None = None, src: list[Any] | None = None
    ) -> None:
        topic, partition, offset = src or (msg.topic, msg.partition, msg.offset)
        doc = dead_letter(
            topic, partition, offset, msg.key, value if value is not None else msg.value, err
        )
        await dead.send(key=dead_letter_key(msg.key), value=doc)
        metrics.DEAD_LETTERS.labels(AGENT, err.code).inc()

    def entry(key: bytes) -> JoinEntry | None:
        raw = pending.get(key)
        e = valid_entry(raw)
        if raw is not None and e is None:
            metrics.POISONED_STATE.labels("join-pending").inc()
            log.error("ignoring an unreadable join-pending entry (%d bytes)", len(raw))
        if e is not None and key in marks:
            e["mark"] = marks[key]
        return e

    async def on_decision(msg: Any, now: int) -> None:
        decision = parse_decision(msg.value)
        if msg.key != decision["request_id"].encode():
            raise InvalidEvent("schema_violation", "message key is not the request_id")
        key = join_key(decision["tenant_id"], decision["request_id"])
        src = [msg.topic, msg.partition, msg.offset]
        await apply(key, joiner.on_decision(entry(key), decision, src, now), msg)

    async def on_reward(msg: Any, now: int) -> None:
        reward = Reward.from_dict(decode(msg.value, max_bytes))
        if reward.request_id.encode() != msg.key:
            raise InvalidEvent("schema_violation", "message key is not the request_id")
        check_tenant(reward.tenant_id, msg.headers, s.tenant_header)
        check_reward_token(
            s.reward_token_secret, reward.tenant_id, reward.request_id, reward.reward_token
        )
        key = join_key(reward.tenant_id, reward.request_id)
        src = [msg.topic, msg.partition, msg.offset]
        await apply(key, joiner.on_reward(entry(key), reward, msg.value, src, now), msg)

    async def handle(msg: Any) -> None:
        now = now_ms()
        try:
            if msg.topic == timeouts:
                await resolve_due(msg, now)
                return
            progress.saw(msg.topic, msg.partition, msg.offset)
            if msg.key is None:
                raise InvalidEvent("schema_violation", "message has no key (the request id)")
            if msg.topic == decisions:
                await on_decision(msg, now)
            else:
                await on_reward(msg, now)
        except InvalidEvent as exc:
            await send_dead(msg, exc)
            metrics.EVENTS.labels(AGENT, "dead_letter").inc()
        except Exception as exc:  # one message never stops the join
            log.exception("join_rewards failed on %s:%s", msg.topic, msg.offset)
            await send_dead(msg, internal_error(exc))
            metrics.EVENTS.labels(AGENT, "dead_letter").inc()

    @app.agent(source, name="join_rewards")
    async def join_rewards(stream: Any) -> None:
        async for event in stream.events():
            await sequence.handle(event.message, handle)

    async def resolve_due(msg: Any, now: int) -> None:
        p = msg.partition
        view = progress.view(decisions, rewards, p)
        keys = due.pop_ready(p, now, RESOLVE_PER_TICK)
        for topic, done in ((rewards, view.rewards_done), (decisions, view.decisions_done)):
            if done is not None:
                keys += reading.pop_ready((topic, p), done, RESOLVE_PER_TICK - len(keys))
        for key in keys:
            try:
                await resolve(key, msg, now, view)
            except Exception:
                log.exception("join_rewards could not resolve a due entry; it is dropped")
                metrics.POISONED_STATE.labels("join-pending").inc()
        metrics.PENDING_DECISIONS.set(due.size())
        if len(keys) >= RESOLVE_PER_TICK:
            await reward_timeouts_topic.send(value=b"{}", partition=p)

    async def resolve(key: bytes, msg: Any, now: int, view: Progress) -> None:
        step = joiner.on_due(entry(key), now, view)
        if step.result == "not_due":
            return
        if step.waits_on is None:
            await apply(key, step, msg)
            return
        # Waiting for the join to read further: held in memory, not rewritten.
        e = step.entry
        assert e is not None
        if e["mark"] is None:  # the partition's end is not known yet
            due.push(e["partition"], e["due"], key)
            return
        if key not in marks:
            metrics.EVENTS.labels(AGENT, "waiting").inc()
        marks[key] = e["mark"]
        topic = rewards if step.waits_on == "rewards" else decisions
        reading.push((topic, e["partition"]), e["mark"], key)
        due.push(e["partition"], e.get("until", now), key)  # the bound

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _on_assigned(sender: Any, assigned: Any, **kw: Any) -> None:
        state["rebuild"] = True
        progress.reset()
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
            state["rebuild"] = True
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
        now = now_ms()
        for p in owned:
            if (
                due.ready(p, now)
                or reading.ready((rewards, p), progress.done.get((rewards, p)))
                or reading.ready((decisions, p), progress.done.get((decisions, p)))
            ):
                await reward_timeouts_topic.send(value=b"{}", partition=p)
