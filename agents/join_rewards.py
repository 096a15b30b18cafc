"""join_rewards: decisions + rewards → outcomes, through a RocksDB table of
pending decisions keyed by request id.

Decisions, rewards and timeout ticks are co-partitioned (same key, same
partition count; see topics.yaml ``joins``), so one stream over the three
topics sees every event of a request on one partition. Due entries (waits
that ran out, held rewards, finished requests past retention) are found in
an in-memory heap per partition; a timer sends one tick per owned partition
to the timeouts topic, and the tick, processed in the stream, resolves that
partition's due entries — table changes happen only in stream context, where
Faust knows which changelog partition they belong to.
"""

from __future__ import annotations

import heapq
import logging
from typing import Any

import faust
import orjson

from app import metrics
from app.dead_letter import dead_letter
from app.faust_app import Runtime
from app.join import Joiner, Step, parse_decision
from app.records import InvalidEvent, Reward, decode, now_ms

log = logging.getLogger(__name__)
AGENT = "join_rewards"


class DueHeap:
    """Per-partition min-heaps of (due ms, key); stale entries are harmless
    (the table entry decides) and dropped when popped."""

    def __init__(self) -> None:
        self.heaps: dict[int, list[tuple[int, bytes]]] = {}

    def push(self, partition: int, due: int, key: bytes) -> None:
        heapq.heappush(self.heaps.setdefault(partition, []), (due, key))

    def pop_due(self, partition: int, now: int) -> list[bytes]:
        heap = self.heaps.get(partition, [])
        keys = []
        while heap and heap[0][0] <= now:
            keys.append(heapq.heappop(heap)[1])
        return keys

    def size(self) -> int:
        return sum(len(h) for h in self.heaps.values())


def register(app: faust.App, runtime: Runtime) -> None:
    t = runtime.topics
    decisions, rewards, ticks = t.name("decisions"), t.name("rewards"), t.name("reward_timeouts")
    source = app.topic(
        decisions,
        rewards,
        ticks,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    ticks_topic = app.topic(ticks, key_serializer="raw", value_serializer="raw")
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
        orphan_hold_ms=int(runtime.settings.join_orphan_hold_seconds * 1000),
        done_retention_ms=int(runtime.settings.join_done_retention_seconds * 1000),
    )
    runtime.on_policies_changed.append(joiner.reconfigure)
    due = DueHeap()
    state = {"rebuild": True}
    max_bytes = runtime.settings.max_event_bytes

    async def apply(key: bytes, step: Step, msg: Any) -> None:
        if not step.keep:
            pending.pop(key, None)
        elif step.entry is not None:
            pending[key] = orjson.dumps(step.entry)
            due.push(step.entry["p"], step.entry["due"], key)
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
        metrics.EVENTS.labels(AGENT, step.result).inc()

    async def send_dead(
        msg: Any, err: InvalidEvent, value: bytes | None = None, src: list[Any] | None = None
    ) -> None:
        topic, partition, offset = src or (msg.topic, msg.partition, msg.offset)
        doc = dead_letter(
            topic, partition, offset, msg.key, value if value is not None else msg.value, err
        )
        await dead.send(key=msg.key, value=doc)
        metrics.DEAD_LETTERS.labels(AGENT, err.code).inc()

    def entry(key: bytes) -> dict[str, Any] | None:
        raw = pending.get(key)
        return orjson.loads(raw) if raw is not None else None

    @app.agent(source, name="join_rewards")
    async def join_rewards(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            key, now = msg.key, now_ms()
            try:
                if msg.topic == ticks:
                    await resolve_due(msg, now)
                elif key is None:
                    raise InvalidEvent("schema_violation", "message has no key (the request id)")
                elif msg.topic == decisions:
                    src = [msg.topic, msg.partition, msg.offset]
                    step = joiner.on_decision(entry(key), parse_decision(msg.value), src, now)
                    await apply(key, step, msg)
                else:
                    reward = Reward.from_dict(decode(msg.value, max_bytes))
                    if reward.request_id.encode() != key:
                        raise InvalidEvent("schema_violation", "message key is not the request_id")
                    src = [msg.topic, msg.partition, msg.offset]
                    step = joiner.on_reward(entry(key), reward, msg.value, src, now)
                    await apply(key, step, msg)
            except InvalidEvent as exc:
                await send_dead(msg, exc)
                metrics.EVENTS.labels(AGENT, "dead_letter").inc()

    async def resolve_due(msg: Any, now: int) -> None:
        for key in due.pop_due(msg.partition, now):
            step = joiner.on_due(entry(key), now)
            if step.result == "not_due":
                continue
            await apply(key, step, msg)
        metrics.PENDING_DECISIONS.set(due.size())

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _on_assigned(sender: Any, assigned: Any, **kw: Any) -> None:
        state["rebuild"] = True

    @app.timer(runtime.settings.join_timer_interval_seconds)
    async def tick_owned_partitions() -> None:
        assignment = app.consumer.assignment() if app.consumer else set()
        owned = sorted(tp.partition for tp in assignment if tp.topic == ticks)
        if state["rebuild"] and owned:
            # After (re)assignment the heap is rebuilt from the recovered table.
            state["rebuild"] = False
            due.heaps.clear()
            for key, raw in pending.items():
                e = orjson.loads(raw)
                due.push(e["p"], e["due"], key)
        now = now_ms()
        for p in owned:
            heap = due.heaps.get(p)
            if heap and heap[0][0] <= now:
                await ticks_topic.send(value=b"{}", partition=p)
