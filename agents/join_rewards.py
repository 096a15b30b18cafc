"""join_rewards: decisions + rewards → outcomes, through a store of pending
decisions keyed by tenant and request id.

A :class:`~app.stream.batched_service.BatchedService` (its own consumer
group over the co-partitioned decisions and rewards topics, see topics.yaml
``joins``): a Faust agent's per-event bookkeeping cost several times the
join's own rules. The entries live in a :class:`ChangelogStore` (a local
RocksDB per partition, recovered from the ``<app id>-join-pending-changelog``
topic when a member takes a partition over).

A fetched batch is joined in memory (:mod:`app.join`'s rules); at its end
each changed key is written once, and its outcomes and dead letters are
sent; the batch's offsets are committed once every one of those sends (the
changelog's included) is acknowledged, so a crash redoes the batch against
the state written so far, and every join rule takes a redelivered event as
such. A send the broker refuses sends the service back to its committed
offsets (app/stream/batched_service.py).

Between batches (every ``join_timer_interval_seconds``) the due entries are
resolved: waits that ran out, held rewards, finished requests past
retention, found in an in-memory heap per partition. An entry is resolved
only once the join has read far enough (:class:`app.join.Progress`): the
next offset it has yet to process of each partition it owns (between
batches, the consumer's position) and the partition's end, fetched then.
Their outcomes are sent and acknowledged before their entries are written:
a crash in between sends them again, and the learner applies each once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import faust
import orjson
from aiokafka import TopicPartition

from app import metrics
from app.ingress import check_reward_message, check_reward_token, join_key
from app.join import JoinEntry, Joiner, Progress, Step, encode_entry, parse_decision, valid_entry
from app.join_alignment import RewardsAlignment
from app.key_heaps import KeyHeaps
from app.records import InvalidEvent, Reward, decode, now_ms
from app.stream.batched_service import Batch, BatchedService, LoopTurns, start_with_worker
from app.stream.changelog_store import ChangelogStore
from app.stream.cluster_watcher import current_cluster_id, rewind_to_start
from app.stream.dead_letter import dead_letter, dead_letter_key, internal_error
from app.stream.delivery import deliver
from app.stream.partition_ends import PartitionEnds
from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
AGENT = "join_rewards"
# Entries resolved per partition between two batches; more are left to the next time.
RESOLVE_PER_TICK = 2_000
# Records per fetched batch.
BATCH_MAX = 4_000
# Entries written lately that are kept decoded in memory (a reward mostly
# follows its decision within a few batches: reading it back from RocksDB
# and decoding it cost a tenth of the join).
RECENT_ENTRIES = 50_000
# Finished requests wait for their retention to run out in a local index of
# the store ordered by due time (keys: this prefix, the due time as 8
# big-endian bytes, the entry's key), not in memory: they are kept an hour
# by default, thousands per second.
EXPIRY_PREFIX = b"\x01done-due:"


def expiry_key(due: int, key: bytes) -> bytes:
    return EXPIRY_PREFIX + due.to_bytes(8, "big") + key


FETCH_WAIT_MS = 20


class RecentEntries:
    """The entries written lately, decoded (None: deleted), in two
    generations: a write goes to the young one, which becomes the old one
    when full, so the last ``limit`` / 2 to ``limit`` writes are kept
    without an order to maintain. Every write to the store passes here, so
    an entry found is the store's current value."""

    def __init__(self, limit: int) -> None:
        self.half = max(1, limit // 2)
        self.young: dict[bytes, JoinEntry | None] = {}
        self.old: dict[bytes, JoinEntry | None] = {}

    def get(self, key: bytes) -> tuple[bool, JoinEntry | None]:
        """(found, the entry)."""
        if key in self.young:
            return True, self.young[key]
        if key in self.old:
            return True, self.old[key]
        return False, None

    def wrote(self, entries: dict[int, dict[bytes, JoinEntry | None]]) -> None:
        for keys in entries.values():
            if len(self.young) + len(keys) > self.half:
                self.old, self.young = self.young, {}
            self.young.update(keys)

    def clear(self) -> None:
        self.young.clear()
        self.old.clear()


class JoinBatch:
    """What one batch (or one round of due entries) changed, applied at its
    end: the entries (partition → key → entry, None for deleted), the records
    to send, and the counters."""

    def __init__(self) -> None:
        self.entries: dict[int, dict[bytes, JoinEntry | None]] = {}
        self.expiries: dict[int, dict[bytes, bytes | None]] = {}  # the store's local index
        self.outcome_keys: list[bytes] = []
        self.outcome_values: list[bytes] = []
        self.dead: list[tuple[bytes | None, bytes]] = []
        self.results: Counter[str] = Counter()
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.rewards: dict[str, float] = {}
        self.dead_reasons: Counter[str] = Counter()

    def changes(self) -> dict[int, dict[bytes, bytes | None]]:
        return {
            p: {k: (encode_entry(e) if e is not None else None) for k, e in keys.items()}
            for p, keys in self.entries.items()
        }

    def count(self) -> None:
        for (pid, kind), n in self.outcomes.items():
            metrics.OUTCOMES.labels(pid, kind).inc(n)
        for pid, total in self.rewards.items():
            metrics.OUTCOME_REWARD.labels(pid).inc(total)
        for code, n in self.dead_reasons.items():
            metrics.DEAD_LETTERS.labels(AGENT, code).inc(n)
        for result, n in self.results.items():
            metrics.EVENTS.labels(AGENT, result).inc(n)


class JoinRewards:
    """The :class:`~app.stream.batched_service.StatefulBatchHandler` of the join."""

    def __init__(self, runtime: Runtime, cluster_id: Callable[[], str | None]) -> None:
        s, t = runtime.settings, runtime.topics
        self.settings, self.cluster_id = s, cluster_id
        self.source = t["decisions"]  # the changelog has its partitions
        self.decisions, self.rewards = t.name("decisions"), t.name("rewards")
        self.outcomes_name, self.dead_name = t.name("outcomes"), t.name("dead_letter")
        self.joiner = Joiner(
            runtime.policies,
            orphan_hold_ms=int(s.join_orphan_hold_seconds * 1000),
            done_retention_ms=int(s.join_done_retention_seconds * 1000),
            max_hold_ms=int(s.join_max_hold_seconds * 1000),
        )
        runtime.on_policies_changed.append(self.joiner.reconfigure)
        self.store = ChangelogStore(
            s.bootstrap,
            changelog_name(s.app_id),
            s.data_dir / f"{s.app_id}-join-pending",
            s.embedded_broker,
        )
        # Batches, due rounds and rebalances take turns (aiokafka runs the
        # rebalance callbacks in a task of its own).
        self.lock = asyncio.Lock()
        self.due = KeyHeaps[int]()  # partition → (due ms, key)
        # (topic, partition) → (offset to read to, key)
        self.reading = KeyHeaps[tuple[str, int]]()
        # partition → waiting entries' marks (kept in memory only)
        self.marks: dict[int, dict[bytes, int]] = {}
        self.recent = RecentEntries(RECENT_ENTRIES)
        # Keys joined before their wait ran out → the done entry's due: the
        # wait's heap item is stale, and skipped without reading the entry.
        self.settled: dict[bytes, int] = {}
        self.done: dict[tuple[str, int], int] = {}  # next offset to process
        self.ends = PartitionEnds(
            s.bootstrap, client_id=f"{s.app_id}-join-ends", fetch=s.embedded_broker
        )
        self.alignment = RewardsAlignment()
        self.cluster: str | None = None
        self.next_round = 0.0
        self.batch = JoinBatch()

    # -- lifecycle -----------------------------------------------------------------
    async def start(self, service: BatchedService) -> None:
        await self.store.ensure_topic(self.source.partitions, self.source.replication_factor)
        await self.ends.start()
        await service.partition_count(self.outcomes_name)

    async def background(self, service: BatchedService) -> None:
        return None

    async def stop(self) -> None:
        await self.ends.stop()
        self.store.close()

    async def on_assigned(self, service: BatchedService, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            owned = {tp.partition for tp in assigned if tp.topic == self.decisions}
            recovered = await self.store.assign(owned)
            for p, n in recovered.items():
                log.info("join-pending[%d]: %d changelog records recovered", p, n)
            self.done.clear()
            self.settled.clear()  # a shortcut only: a stale wait is read and skipped
            # A partition kept through the rebalance keeps its heaps: nobody
            # else wrote its store meanwhile.
            held = {*self.due.heaps, *(g[1] for g in self.reading.heaps), *self.marks}
            for gone in held - owned:
                self._drop(gone)
            await self._rebuild(sorted(recovered))
            for p in self.alignment.reset():
                service.consumer.resume(TopicPartition(self.rewards, p))

    async def on_revoked(self, service: BatchedService, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            self.done.clear()
            self.recent.clear()

    def _drop(self, p: int) -> None:
        self.marks.pop(p, None)
        self.due.drop(p)
        self.reading.drop((self.decisions, p))
        self.reading.drop((self.rewards, p))

    async def _rebuild(self, partitions: list[int]) -> None:
        """The heaps and the expiry index of ``partitions`` from the store
        (after an assignment or a new cluster), a turn of the loop at a time."""
        for p in partitions:
            self._drop(p)
            expiries: dict[bytes, bytes | None] = {}
            async for key, raw in self.store.scan(p):
                e = valid_entry(raw)
                if e is None:
                    self._set_aside(
                        p, key, InvalidEvent("schema_violation", "an unreadable join entry"), raw
                    )
                    continue
                if e["state"] == "done":
                    expiries[expiry_key(e["due"], key)] = b""
                else:
                    self.due.push(e["partition"], e["due"], key)
                if len(expiries) >= 10_000:
                    self.store.write_local(p, expiries)
                    expiries = {}
            self.store.write_local(p, expiries)
        metrics.PENDING_DECISIONS.set(self.due.size())

    async def _check_cluster(self, service: BatchedService) -> None:
        """A new cluster holds none of the old logs: every position goes back
        to its start, and marks and ends are taken afresh."""
        cluster = self.cluster_id()
        if cluster is None:
            return
        if self.cluster not in (None, cluster):
            await rewind_to_start(service.consumer, AGENT)
            await self.store.ensure_topic(self.source.partitions, self.source.replication_factor)
            self.store.forget_offsets()
            self.done.clear()
            self.ends.forget()
            for p in self.alignment.reset():
                service.consumer.resume(TopicPartition(self.rewards, p))
            # Marks are offsets of the old logs.
            self.due.clear()
            self.reading.clear()
            self.marks.clear()
            self.settled.clear()
            self.recent.clear()
            await self._rebuild(sorted(self.store.partitions))
        self.cluster = cluster

    # -- batches ---------------------------------------------------------------------
    async def handle(self, service: BatchedService, batch: Batch) -> list[asyncio.Future[Any]]:
        async with self.lock:
            await self._check_cluster(service)
            now = now_ms()
            turns = LoopTurns()
            for tp, msgs in batch.items():
                kind = "decisions" if tp.topic == self.decisions else "rewards"
                on = self._on_decision if kind == "decisions" else self._on_reward
                for m in msgs:
                    if turns.due():
                        await turns.take()
                    self.alignment.saw(kind, m.partition, m.timestamp)
                    try:
                        if m.key is None:
                            raise InvalidEvent(
                                "schema_violation", "message has no key (the request id)"
                            )
                        on(m, now)
                    except InvalidEvent as exc:
                        self._dead(m, exc)
                    except Exception as exc:  # one message never stops the join
                        log.exception("join_rewards failed on %s:%s", m.topic, m.offset)
                        self._dead(m, internal_error(exc))
                self.done[(tp.topic, tp.partition)] = msgs[-1].offset + 1
            done, self.batch = self.batch, JoinBatch()
            futures = await self.store.write(service.producer, done.changes(), done.expiries)
            self.recent.wrote(done.entries)
            futures += await self._send(service, done)
            done.count()
            self._align(service)
            return futures

    async def _send(self, service: BatchedService, done: JoinBatch) -> list[asyncio.Future[Any]]:
        futures: list[asyncio.Future[Any]] = []
        if done.outcome_keys:
            futures += await service.send_batches(
                self.outcomes_name, done.outcome_keys, done.outcome_values, now_ms()
            )
        for key, doc in done.dead:
            futures.append(await service.producer.send(self.dead_name, doc, key=key))
        return futures

    def _entry(self, p: int, key: bytes) -> JoinEntry | None:
        changed = self.batch.entries.get(p)
        if changed is not None and key in changed:
            found, e = True, changed[key]
        else:
            found, e = self.recent.get(key)
        if not found:
            raw = self.store.get(p, key)
            e = valid_entry(raw)
            if raw is not None and e is None:
                metrics.POISONED_STATE.labels("join-pending").inc()
                log.error("ignoring an unreadable join-pending entry (%d bytes)", len(raw))
        marks = self.marks.get(p)
        if e is not None and marks and key in marks:
            e = {**e, "mark": marks[key]}
        return e

    def _on_decision(self, m: Any, now: int) -> None:
        decision = parse_decision(m.value)
        if m.key != decision["request_id"].encode():
            raise InvalidEvent("schema_violation", "message key is not the request_id")
        key = join_key(decision["tenant_id"], decision["request_id"])
        src = [m.topic, m.partition, m.offset]
        self._apply(
            m.partition,
            key,
            self.joiner.on_decision(self._entry(m.partition, key), decision, src, now),
            m,
        )

    def _on_reward(self, m: Any, now: int) -> None:
        s = self.settings
        reward = Reward.from_dict(decode(m.value, s.max_event_bytes))
        if reward.request_id.encode() != m.key:
            raise InvalidEvent("schema_violation", "message key is not the request_id")
        check_reward_message(reward.tenant_id, m, s)
        check_reward_token(
            s.reward_token_secret, reward.tenant_id, reward.request_id, reward.reward_token
        )
        key = join_key(reward.tenant_id, reward.request_id)
        src = [m.topic, m.partition, m.offset]
        step = self.joiner.on_reward(self._entry(m.partition, key), reward, m.value, src, now)
        self._apply(m.partition, key, step, m)

    def _apply(self, p: int, key: bytes, step: Step, m: Any) -> None:
        b = self.batch
        marks = self.marks.get(p)
        if marks:
            marks.pop(key, None)
        if not step.keep:
            b.entries.setdefault(p, {})[key] = None
        elif step.entry is not None:
            e = step.entry
            b.entries.setdefault(p, {})[key] = e
            if e["state"] == "done":  # indexed again when re-kept: the same key
                b.expiries.setdefault(p, {})[expiry_key(e["due"], key)] = b""
                if step.result == "joined":
                    self.settled[key] = e["due"]
            else:
                self.due.push(e["partition"], e["due"], key)
        if step.outcome is not None:
            o = step.outcome
            b.outcome_keys.append(self.joiner.outcome_key(o))
            b.outcome_values.append(orjson.dumps(o))
            b.outcomes[(o["policy_id"], "defaulted" if o["defaulted"] else "rewarded")] += 1
            b.rewards[o["policy_id"]] = b.rewards.get(o["policy_id"], 0.0) + o["reward"]
        if step.error is not None:
            if step.original is not None:
                (topic, partition, offset), value = step.original
                self._dead(m, step.error, value, (topic, partition, offset))
            else:
                self._dead(m, step.error)
        if step.result.endswith("_at_bound"):
            metrics.JOIN_AT_BOUND.labels(step.result.removesuffix("_at_bound")).inc()
        b.results[step.result] += 1

    def _dead(
        self,
        m: Any,
        err: InvalidEvent,
        value: bytes | None = None,
        src: tuple[str, int, int] | None = None,
    ) -> None:
        topic, partition, offset = src or (m.topic, m.partition, m.offset)
        doc = dead_letter(
            topic, partition, offset, m.key, value if value is not None else m.value, err
        )
        self.batch.dead.append((dead_letter_key(m.key), doc))
        self.batch.dead_reasons[err.code] += 1
        if src is None:
            self.batch.results["dead_letter"] += 1

    def _align(self, service: BatchedService) -> None:
        """Pause the rewards partitions read too far ahead of their
        decisions, resume the others (app/join_alignment.py)."""

        def behind(p: int) -> bool:
            end = self.ends.ends.get((self.decisions, p))
            done = self.done.get((self.decisions, p))
            return end is not None and (done is None or done < end)

        pause, resume = self.alignment.changes(sorted(self.store.partitions), behind)
        consumer = service.consumer
        if pause:
            consumer.pause(*(TopicPartition(self.rewards, p) for p in pause))
            metrics.EVENTS.labels(AGENT, "rewards_paused").inc(len(pause))
        if resume:
            consumer.resume(*(TopicPartition(self.rewards, p) for p in resume))

    # -- due entries -------------------------------------------------------------------
    async def between_batches(self, service: BatchedService) -> None:
        if time.monotonic() < self.next_round:
            return
        self.next_round = time.monotonic() + self.settings.join_timer_interval_seconds
        async with self.lock:
            await self._check_cluster(service)
            await self._resolve_due(service)

    async def _resolve_due(self, service: BatchedService) -> None:
        consumer = service.consumer
        owned = sorted(self.store.partitions)
        tps = [TopicPartition(t, p) for p in owned for t in (self.decisions, self.rewards)]
        assigned = consumer.assignment()
        for tp in tps:
            if tp in assigned:
                # Between batches every record fetched has been handled.
                self.done[(tp.topic, tp.partition)] = await consumer.position(tp)
        try:
            await self.ends.refresh(tps, timeout_s=5.0)
        except Exception as exc:  # the broker is away: entries wait, nothing resolves early
            log.warning("join_rewards could not fetch partition ends: %s", exc)
        self._align(service)
        now = now_ms()
        for p in owned:
            view = self._progress(p)
            keys = self.due.pop_ready(p, now, RESOLVE_PER_TICK)
            for topic, done in (
                (self.rewards, view.rewards_done),
                (self.decisions, view.decisions_done),
            ):
                if done is not None:
                    keys += self.reading.pop_ready((topic, p), done, RESOLVE_PER_TICK - len(keys))
            for key in keys:
                done_due = self.settled.pop(key, None)
                if done_due is not None and done_due > now:
                    continue  # the wait of a request joined since
                try:
                    self._resolve(p, key, now, view)
                except Exception as exc:
                    log.exception("join_rewards could not resolve a due entry")
                    self._set_aside(p, key, internal_error(exc, AGENT))
            self._expire(p, now, view)
        metrics.PENDING_DECISIONS.set(self.due.size())
        finished, self.batch = self.batch, JoinBatch()
        if not (finished.entries or finished.outcome_keys or finished.dead or finished.expiries):
            finished.count()
            return
        # Outcomes first, acknowledged; then the entries that record them (no
        # commit waits for these: a refused one goes out with the next write).
        records: list[tuple[str, bytes | None, bytes]] = [
            (self.outcomes_name, k, v)
            for k, v in zip(finished.outcome_keys, finished.outcome_values, strict=True)
        ]
        records += [(self.dead_name, k, v) for k, v in finished.dead]

        async def send(topic: str, key: bytes | None, value: bytes) -> Any:
            return await service.producer.send(topic, value, key=key)

        await deliver(send, records, AGENT)
        await self.store.write(service.producer, finished.changes(), finished.expiries)
        self.recent.wrote(finished.entries)
        finished.count()

    def _expire(self, p: int, now: int, view: Progress) -> None:
        """Forget the finished requests whose retention ran out (the index
        may name entries changed since: each is looked up and decided)."""
        upto = EXPIRY_PREFIX + (now + 1).to_bytes(8, "big")
        for ikey in self.store.local_keys(p, EXPIRY_PREFIX, upto, RESOLVE_PER_TICK):
            self.batch.expiries.setdefault(p, {})[ikey] = None
            key = ikey[len(EXPIRY_PREFIX) + 8 :]
            try:
                e = self._entry(p, key)
                if e is not None and e["state"] == "done":
                    self._resolve(p, key, now, view, e)
            except Exception as exc:
                log.exception("join_rewards could not expire an entry")
                self._set_aside(p, key, internal_error(exc, AGENT))

    def _set_aside(self, p: int, key: bytes, err: InvalidEvent, raw: bytes | None = None) -> None:
        """An entry that cannot be read or resolved goes to the dead-letter
        topic, with the reason, and out of the store: kept, it would never
        resolve nor expire."""
        if raw is None:
            changed = self.batch.entries.get(p, {}).get(key)
            raw = encode_entry(changed) if changed is not None else self.store.get(p, key)
        metrics.POISONED_STATE.labels("join-pending").inc()
        self.batch.dead.append(
            (dead_letter_key(key), dead_letter(self.store.changelog, p, -1, key, raw, err))
        )
        self.batch.dead_reasons[err.code] += 1
        self.batch.entries.setdefault(p, {})[key] = None
        self.marks.get(p, {}).pop(key, None)

    def _progress(self, p: int) -> Progress:
        d, r = (self.decisions, p), (self.rewards, p)
        ends = self.ends.ends
        return Progress(
            decisions_end=ends.get(d),
            decisions_done=self.done.get(d),
            rewards_end=ends.get(r),
            rewards_done=self.done.get(r),
        )

    def _resolve(
        self, p: int, key: bytes, now: int, view: Progress, entry: JoinEntry | None = None
    ) -> None:
        """``entry``: the key's entry when the caller has just read it."""
        step = self.joiner.on_due(entry or self._entry(p, key), now, view)
        if step.result == "not_due":
            return
        if step.waits_on is None:
            self._apply(p, key, step, _Due())
            return
        # Waiting for the join to read further: held in memory, not rewritten.
        e = step.entry
        assert e is not None
        if e["mark"] is None:  # the partition's end is not known yet
            self.due.push(e["partition"], e["due"], key)
            return
        marks = self.marks.setdefault(p, {})
        if key not in marks:
            self.batch.results["waiting"] += 1
        marks[key] = e["mark"]
        topic = self.rewards if step.waits_on == "rewards" else self.decisions
        self.reading.push((topic, e["partition"]), e["mark"], key)
        self.due.push(e["partition"], e.get("until", now), key)  # the bound


class _Due:
    """What :meth:`JoinRewards._apply` reads of the record behind a step,
    for a step taken on a due entry (its dead letters name the entry's own
    source)."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.value = b""
        self.topic, self.partition, self.offset = "", -1, -1


def changelog_name(app_id: str) -> str:
    """The changelog of the join's store (a Faust table's name for it)."""
    return f"{app_id}-join-pending-changelog"


def register(app: faust.App, runtime: Runtime) -> None:
    start_with_worker(
        app,
        runtime,
        AGENT,
        ("decisions", "rewards"),
        lambda: JoinRewards(runtime, lambda: current_cluster_id(app)),
        FETCH_WAIT_MS,
        BATCH_MAX,
    )
