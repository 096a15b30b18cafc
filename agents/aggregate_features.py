"""aggregate_features: feature observations → windowed aggregates in a
RocksDB-backed table, one entry per (entity, pane), recovered from its
changelog after a restart.

The pure :class:`~app.features.store.FeatureStore` (``runtime.feature_store``)
does the windowing; this agent persists the panes each batch changed and
deletes expired ones. Observations are read in batches; a table write must
name the partition its key belongs to, which Faust takes from the "current
event", so each partition's writes are made with one of that partition's
events current. After (re)assignment the store is rebuilt from the table.

The observations topic is internal, but anything may be written to it: a
message that is not a JSON array is dead-lettered; an observation that is
not of the shape :mod:`app.features.observations` makes is skipped and
counted, and so is a table entry that cannot be read back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from app import metrics
from app.features.observations import parse_observations
from app.features.store import pane_key
from app.records import InvalidEvent
from app.stream.current_event import set_current_event
from app.stream.dead_letter import send_dead_letter
from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
AGENT = "aggregate_features"
EXPIRE_EVERY_S = 10.0
# Source position of an observation: offset × this + index in the message
# (messages hold at most a few thousand observations).
POS_PER_MESSAGE = 1_000_000
JSON = dict[str, Any]


def register(app: faust.App, runtime: Runtime) -> None:
    t = runtime.topics
    source = app.topic(
        t.name("feature_observations"), key_type=bytes, value_type=bytes, value_serializer="raw"
    )
    table = app.Table(
        "feature-windows",
        key_type=bytes,
        value_type=bytes,
        partitions=t["feature_observations"].partitions,
    )
    store = runtime.feature_store
    dead = app.topic(t.name("dead_letter"), key_serializer="raw", value_serializer="raw")
    state: dict[str, Any] = {"rebuild": True, "expired_at": time.monotonic()}
    entity_event: dict[str, Any] = {}  # entity → an event of its partition (for deletes)

    @app.agent(source, name=AGENT)
    async def aggregate_features(stream: Any) -> None:
        async for events in stream.take_events(5000, within=0.05):
            if state["rebuild"]:
                rebuild()
            dirty: dict[int, tuple[Any, set[tuple[str, int]]]] = {}
            applied = late = invalid = failed = dead_lettered = 0
            for event in events:
                msg = event.message
                try:
                    batch, skipped = parse_observations(msg.value)
                except InvalidEvent as exc:
                    await send_dead_letter(dead.send, AGENT, msg, exc)
                    dead_lettered += 1
                    continue
                if skipped:
                    invalid += skipped
                    log.warning(
                        "skipped %d invalid observation(s) of %s[%s]@%s",
                        skipped,
                        msg.topic,
                        msg.partition,
                        msg.offset,
                    )
                p = msg.partition
                slot = dirty.get(p)
                if slot is None:
                    slot = dirty[p] = (event, set())
                base = msg.offset * POS_PER_MESSAGE
                for i, entity, obs in batch:
                    try:
                        start = store.observe(entity, obs, base + i)
                    except Exception:  # one observation must not stop the others
                        failed += 1
                        log.exception(
                            "observation %d of %s[%s]@%s failed", i, msg.topic, p, msg.offset
                        )
                        continue
                    if start is None:
                        late += 1
                        continue
                    applied += 1
                    slot[1].add((entity, start))
                    entity_event[entity] = event
            for event, panes in dirty.values():
                set_current_event(event)
                for entity, start in panes:
                    table[pane_key(entity, start)] = store.pane_value(entity, start)
            if time.monotonic() - state["expired_at"] >= EXPIRE_EVERY_S:
                expire()
            metrics.FEATURE_OBSERVATIONS.labels("applied").inc(applied)
            metrics.FEATURE_OBSERVATIONS.labels("late_or_redelivered").inc(late)
            metrics.FEATURE_OBSERVATIONS.labels("invalid").inc(invalid)
            metrics.FEATURE_OBSERVATIONS.labels("internal_error").inc(failed)
            metrics.EVENTS.labels(AGENT, "ok").inc(len(events) - dead_lettered)
            metrics.EVENTS.labels(AGENT, "dead_letter").inc(dead_lettered)

    def expire() -> None:
        state["expired_at"] = time.monotonic()
        for key in store.expire():
            entity = key.decode().rpartition("@")[0]
            event = entity_event.get(entity)
            if event is None:
                continue  # recovered, never written since: expires again after the next write
            set_current_event(event)
            table.pop(key, None)
        metrics.FEATURE_ENTITIES.set(len(store.entities()))

    def rebuild() -> None:
        state["rebuild"] = False
        store.clear()
        n = 0
        for key, value in table.items():
            try:
                store.load(key, value)
            except Exception as exc:  # e.g. a record written to the changelog by someone else
                metrics.EVENTS.labels(AGENT, "unreadable_pane").inc()
                log.warning("skipped an unreadable feature pane (%s)", type(exc).__name__)
                continue
            n += 1
        metrics.FEATURE_ENTITIES.set(len(store.entities()))
        log.info("feature store rebuilt from %d panes (%d entities)", n, len(store.entities()))

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _on_assigned(sender: Any, assigned: Any, **kw: Any) -> None:
        state["rebuild"] = True

    @app.timer(0.5)
    async def rebuild_after_recovery() -> None:
        """Rebuild as soon as the table is recovered, even if no new
        observation comes (reads must not wait for traffic)."""
        assigned = bool(app.consumer and app.consumer.assignment())
        if state["rebuild"] and assigned and not app.rebalancing and not app.in_recovery:
            rebuild()
