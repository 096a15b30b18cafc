"""The worker's watch over its Kafka cluster (app/stream/cluster_watch.py says
what the findings mean); agents/watch_cluster.py starts it.

Every second (every quarter second while it does not answer) it asks the
cluster for its id and its topics:

- no answer: ``/health`` turns 503 with the reason until it answers again;
- topics of topics.yaml missing (a broker that lost its logs): they are
  created again as ``llmopt topics apply`` would, unless
  ``auto_create_topics`` is off (then ``/health`` says which are missing);
  Faust's table changelogs and internal topics are declared again as at a
  worker's start. The worker's own clients never create topics by asking
  about them (:func:`forbid_auto_topic_creation`), so none comes back with
  the broker's defaults instead of topics.yaml's;
- a partition of a topic the Faust agents read whose fetch high-water mark is
  below the consumer's position: the broker lost that log, and the consumer
  would skip as many records of the new one. It is logged as data loss on
  the broker side, counted, and read again from offset 0.

Aiokafka consumers outside Faust check their own partitions with
:func:`rewind_restarted_logs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient

from app import metrics
from app.kafka_security import kafka_security
from app.stream.cluster_watch import (
    ClusterState,
    RestartConfirmer,
    missing,
    restarted_partitions,
    topic_role,
)
from app.stream.runtime import Runtime
from app.topics import TopicMismatch, apply_topics

log = logging.getLogger(__name__)
PROBE_SECONDS = 1.0
RETRY_SECONDS = 0.25
PROBE_TIMEOUT_S = 2.0
# How long after a new cluster answered a rebalance rewinds the Faust
# consumer to offset 0 again (ClusterWatcher.rearm_after_rebalance).
REARM_WINDOW_S = 120.0
_STATES: weakref.WeakKeyDictionary[Any, ClusterState] = weakref.WeakKeyDictionary()


def cluster_state(app: Any) -> ClusterState | None:
    """What the watcher of ``app`` found (None before it was started)."""
    return _STATES.get(app)


def current_cluster_id(app: Any) -> str | None:
    """The id of the cluster ``app`` last reached (None before it did)."""
    state = _STATES.get(app)
    return state.cluster_id if state is not None else None


def _reason(exc: BaseException) -> str:
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


class _OutageLogFilter(logging.Filter):
    """Holds back the Kafka clients' log records while the cluster is known
    to be unreachable: they retry every few milliseconds and log each
    failure (thousands of lines a minute). The outage is logged once, with
    its reason, and shows on /health and ``llmopt_kafka_cluster_reachable``."""

    def __init__(self, state: ClusterState) -> None:
        super().__init__()
        self.state = state
        self.held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.state.unreachable:
            self.held_back += 1
            return False
        return True

    def install(self) -> None:
        # A logger's filters do not apply to its children's records: every
        # aiokafka logger gets it (all exist once aiokafka is imported).
        for name, logger in list(logging.Logger.manager.loggerDict.items()):
            if (name == "aiokafka" or name.startswith("aiokafka.")) and isinstance(
                logger, logging.Logger
            ):
                logger.addFilter(self)

    def take_count(self) -> int:
        n, self.held_back = self.held_back, 0
        return n


class ClusterWatcher:
    def __init__(self, app: faust.App, runtime: Runtime, state: ClusterState) -> None:
        self.app, self.state = app, state
        self.settings, self.catalog = runtime.settings, runtime.topics
        self.catalog_names = {spec.name for spec in runtime.topics.topics.values()}
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()
        self._admin_lock = asyncio.Lock()
        self.log_filter = _OutageLogFilter(state)
        self.restarts = RestartConfirmer()
        # Set when a new cluster answers, until the Faust consumer's
        # positions (in the old cluster's logs) have been taken back to 0;
        # set again by every assignment soon after (see rearm_after_rebalance).
        self._rewind_all = False
        self._new_cluster_at: float | None = None

    async def run(self) -> None:
        self.log_filter.install()
        try:
            while not self.app.should_stop:
                try:
                    await self.check()
                except Exception:  # never the worker's end: the next check tries again
                    log.exception("cluster check failed")
                await asyncio.sleep(RETRY_SECONDS if self.state.failures else PROBE_SECONDS)
        finally:
            await self._close_admin()

    async def check(self) -> None:
        """One probe, then what a reachable cluster needs."""
        async with self._lock:
            info = await self.probe()
            if info is None:
                return
            try:
                admin = await self._admin_client()
                topics = await asyncio.wait_for(admin.list_topics(), PROBE_TIMEOUT_S)
            except Exception as exc:
                self._failed(exc)
                return
            await self._ensure_topics(list(topics))
            # After a rebalance's seek to the committed offsets, not before it.
            if self._rewind_all and not getattr(self.app, "rebalancing", False):
                await self._rewind_faust_consumer_to_start()
            await self._rewind_faust_consumer()

    async def probe(self) -> dict[str, Any] | None:
        """Ask the cluster for its id: its description, None if it did not answer."""
        try:
            admin = await self._admin_client()
            info = dict(await asyncio.wait_for(admin.describe_cluster(), PROBE_TIMEOUT_S))
        except Exception as exc:  # any failure to answer is an outage
            self._failed(exc)
            return None
        self._reached(info.get("cluster_id"))
        return info

    def _reached(self, cluster_id: str | None) -> None:
        change = self.state.probe_ok(time.monotonic(), cluster_id)
        metrics.KAFKA_REACHABLE.set(1)
        if change is not None and change.down_for is not None:
            log.warning(
                "Kafka cluster at %s reachable again after %.1f s (%d Kafka client log lines "
                "held back meanwhile)",
                self.state.bootstrap,
                change.down_for,
                self.log_filter.take_count(),
            )
        if change is not None and change.new_cluster:
            self._rewind_all = True
            self._new_cluster_at = time.monotonic()
            log.warning(
                "data loss on the broker side: a different Kafka cluster (id %s, was %s) answers "
                "at %s; its logs started empty. Missing topics are created again and partitions "
                "that restarted below this worker's positions are read from offset 0",
                change.cluster_id,
                change.old_cluster_id,
                self.state.bootstrap,
            )

    def _failed(self, exc: BaseException) -> None:
        if self.state.probe_failed(time.monotonic(), _reason(exc)):
            metrics.KAFKA_REACHABLE.set(0)
            log.error(
                "Kafka cluster at %s unreachable (%s); /health reports 503 until it answers",
                self.state.bootstrap,
                self.state.last_error,
            )

    async def _admin_client(self) -> AIOKafkaAdminClient:
        async with self._admin_lock:
            return await self._start_admin()

    async def _start_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.settings.bootstrap,
                client_id=f"{self.settings.app_id}-cluster-watch",
                request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
                **kafka_security(self.settings),
            )
            try:
                await asyncio.wait_for(admin.start(), PROBE_TIMEOUT_S)
            except BaseException:
                with contextlib.suppress(Exception):
                    await admin.close()
                raise
            self._admin = admin
        return self._admin

    async def _close_admin(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
            self._admin = None

    # -- topics -----------------------------------------------------------------
    def _faust_topics(self) -> list[Any]:
        """Topics Faust creates at start: table changelogs, and its internal
        ones (the leader-election topic)."""
        found = [table.changelog_topic for table in self.app.tables.values()]
        found += [t for t in self.app.topics if getattr(t, "internal", False)]
        return found

    async def _ensure_topics(self, existing: list[str]) -> None:
        absent = missing((t.name for t in self.catalog.topics.values()), existing)
        faust_topics = [t for t in self._faust_topics() if missing(t.topics, existing)]
        faust_absent = tuple(n for t in faust_topics for n in missing(t.topics, existing))
        self.state.missing_topics = absent + faust_absent
        self.state.topics_checked = True
        if not self.state.missing_topics:
            return
        created: list[str] = []
        try:
            # Faust's own topics are declared again as at a worker's start.
            for topic in faust_topics:
                await topic.maybe_declare()
            created += faust_absent
            if absent and self.settings.auto_create_topics:
                created += await apply_topics(self.settings.bootstrap, self.catalog)
        except TopicMismatch as exc:
            log.error("topics created again, but they differ from topics.yaml: %s", exc)
        except Exception as exc:
            log.error("could not create the missing topics (will retry): %s", _reason(exc))
        if created:
            metrics.TOPICS_RECREATED.inc(len(created))
            log.warning(
                "%d topics were missing on the cluster, created again: %s", len(created), created
            )
            self.state.missing_topics = tuple(
                n for n in self.state.missing_topics if n not in created
            )

    # -- partitions that restarted below the Faust consumer's positions ---------------
    async def _rewind_faust_consumer_to_start(self) -> None:
        """A new cluster answers: every position of the Faust consumer is in
        a log the cluster no longer has. Each partition of topics.yaml it has
        read into goes back to offset 0 of the new log (redone events are
        taken as such by the agents). Not left to the high-water check below:
        once a new log has grown past the old position, it cannot tell, and
        the records before the old position would be skipped."""
        consumer = self.app.consumer
        if consumer is None:
            return
        with contextlib.suppress(Exception):  # not started, or a rebalance under way
            tps = [tp for tp in list(consumer.assignment()) if tp.topic in self.catalog_names]
            if not tps:
                return  # no assignment yet: the rebalance's reset starts from the new log
            for tp, position in (await _positions(consumer, tps)).items():
                if position:
                    _report_data_loss("faust", tp, position, 0)
                    with contextlib.suppress(Exception):  # revoked meanwhile
                        await consumer.seek(tp, 0)
            self._rewind_all = False

    def rearm_after_rebalance(self) -> None:
        """A rebalance soon after a new cluster answered seeks to the offsets
        committed on the new cluster, and Faust may have committed its old
        positions there as it reconnected (its commits only move forward from
        what it last committed, so it does not take them back): those
        partitions are rewound again. Redone events are duplicates the
        agents recognise; skipped ones would be lost."""
        at = self._new_cluster_at
        if at is not None and time.monotonic() - at < REARM_WINDOW_S:
            self._rewind_all = True

    async def _rewind_faust_consumer(self) -> None:
        consumer = self.app.consumer
        if consumer is None:
            return
        highwaters = _highwaters(consumer, self.catalog_names)
        positions = await _positions(consumer, list(highwaters))
        found = self.restarts.confirm(restarted_partitions(positions, highwaters))
        for tp, (position, high) in found.items():
            _report_data_loss("faust", tp, position, high)
            with contextlib.suppress(Exception):  # revoked meanwhile: its next owner reads it
                await consumer.seek(tp, 0)


def _highwaters(consumer: Any, topics: set[str] | None = None) -> dict[Any, int]:
    """The fetch high-water mark of each assigned partition (of ``topics``)
    that has one. Changelogs are left to table recovery."""
    found: dict[Any, int] = {}
    with contextlib.suppress(Exception):  # not started, or a rebalance under way
        for tp in list(consumer.assignment()):
            if topics is None or tp.topic in topics:
                with contextlib.suppress(Exception):  # revoked meanwhile
                    high = consumer.highwater(tp)
                    if high is not None:
                        found[tp] = high
    return found


async def _positions(consumer: Any, tps: list[Any]) -> dict[Any, int | None]:
    """Consumer positions, None where there is none now (revoked, or a
    rebalance under way): a position may wait for one, so all are bounded
    together by one timeout."""
    if not tps:
        return {}
    try:
        found = await asyncio.wait_for(
            asyncio.gather(*(consumer.position(tp) for tp in tps), return_exceptions=True),
            PROBE_TIMEOUT_S,
        )
    except TimeoutError:
        return {}
    return {tp: p if isinstance(p, int) else None for tp, p in zip(tps, found, strict=True)}


def _report_data_loss(consumer: str, tp: Any, position: int, high: int) -> None:
    metrics.BROKER_DATA_LOSS.labels(consumer, topic_role(tp.topic)).inc()
    log.warning(
        "data loss on the broker side: %s[%d] ends at offset %d, below the %s consumer's "
        "position %d (the broker lost the log); reading it again from offset 0",
        tp.topic,
        tp.partition,
        high,
        consumer,
        position,
    )


_LAST_REWIND_CHECK: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_RESTARTS: weakref.WeakKeyDictionary[Any, RestartConfirmer] = weakref.WeakKeyDictionary()


async def rewind_restarted_logs(consumer: Any, name: str, every_s: float = 1.0) -> int:
    """For an aiokafka consumer (group or assigned): seek to offset 0 every
    assigned partition whose log restarted below its position (see
    :func:`app.stream.cluster_watch.restarted`), log and count it as data loss on
    the broker side. Checks at most once per ``every_s`` per consumer, so it
    can sit in a fetch loop. Returns how many partitions were rewound."""
    now = time.monotonic()
    if now - _LAST_REWIND_CHECK.get(consumer, float("-inf")) < every_s:
        return 0
    _LAST_REWIND_CHECK[consumer] = now
    highwaters = _highwaters(consumer)
    confirmer = _RESTARTS.setdefault(consumer, RestartConfirmer())
    found = confirmer.confirm(
        restarted_partitions(await _positions(consumer, list(highwaters)), highwaters)
    )
    for tp, (position, high) in found.items():
        _report_data_loss(name, tp, position, high)
        with contextlib.suppress(Exception):  # revoked meanwhile: its next owner reads it
            consumer.seek(tp, 0)
    return len(found)


async def rewind_to_start(consumer: Any, name: str) -> int:
    """For a group-less consumer after the cluster id changed (a new cluster
    holds none of the old logs): every assigned partition is counted as data
    loss on the broker side, and each it had read into goes back to offset 0.
    Returns how many were counted. Not left to :func:`rewind_restarted_logs`:
    once the new log has grown past the old position, a position check alone
    can no longer tell."""
    positions = await _positions(consumer, list(consumer.assignment()))
    for tp, position in positions.items():
        # Counted even where the client already went back to 0 by itself
        # (an offset out of range): the log it had read is gone all the same.
        _report_data_loss(name, tp, position or 0, 0)
        if position:
            with contextlib.suppress(Exception):  # revoked meanwhile
                consumer.seek(tp, 0)
    return len(positions)


def forbid_auto_topic_creation() -> None:
    """Make this process's Kafka clients ask for metadata without creating
    topics (the Java clients' ``allow.auto.create.topics=false``, which
    aiokafka does not offer). A broker that creates topics on first use (the
    embedded broker always does, Kafka by default) would otherwise create a
    lost topic with its own defaults (partitions, retention, cleanup) as soon
    as any consumer or producer of this worker asked about it, before the
    watcher could create it again as topics.yaml says."""
    from aiokafka.protocol.metadata import MetadataRequest

    if getattr(MetadataRequest, "_llmopt_no_auto_create", False):
        return
    original = MetadataRequest.__init__

    def init(self: Any, topics: Any = None, allow_auto_topic_creation: bool | None = None) -> None:
        allow = False if allow_auto_topic_creation is None else allow_auto_topic_creation
        original(self, topics, allow)

    setattr(MetadataRequest, "__init__", init)  # noqa: B010 - mypy refuses method assignment
    setattr(MetadataRequest, "_llmopt_no_auto_create", True)  # noqa: B010


def watch(app: faust.App, runtime: Runtime) -> ClusterState:
    """Start watching the cluster from ``app``; the returned state (also
    :func:`cluster_state`) tells ``/health`` about problems."""
    s = runtime.settings
    if s.embedded_broker:
        # Kafka has a broker setting for this (auto.create.topics.enable,
        # off in docker-compose.kafka.yml); the embedded broker has none.
        forbid_auto_topic_creation()
    state = ClusterState(s.bootstrap, auto_create_topics=s.auto_create_topics)
    _STATES[app] = state
    watcher = ClusterWatcher(app, runtime, state)
    metrics.KAFKA_REACHABLE.set(1)

    @app.task
    async def watch_cluster() -> None:
        await watcher.run()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _learn_cluster_id(sender: Any, assigned: Any, **kw: Any) -> None:
        # Every reconnect to a new cluster brings a rebalance (the new
        # coordinator does not know the group): probing here, before the
        # streams resume, makes its id known before its records are processed.
        # Not behind the check's lock: that may be waiting on this rebalance.
        await watcher.probe()
        watcher.rearm_after_rebalance()

    return state
