"""replicate_features: every worker's copy of every entity's feature windows.

``aggregate_features`` writes each pane it changes to the feature-windows
changelog, partitioned as the observations (by entity). A decision reads
the windows of its tenant and its task type, whichever member aggregates
them, so each worker follows the whole changelog
(:class:`~app.stream.changelog_replica.ChangelogReplica`) into
``runtime.feature_store``, which the decider's extractor and ``/features``
read. A window reaches the other workers a fetch after its owner wrote it;
the windows a decision reads are final ones (closed a grace period ago), so
that delay never shows. Until the copy has read what the changelog held at
the start, a missing window counts as ``not_caught_up``
(``llmopt_feature_window_misses_total``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust

from agents.aggregate_features import changelog_name
from app import metrics
from app.stream.changelog_replica import ChangelogReplica
from app.stream.cluster_watcher import current_cluster_id
from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
AGENT = "replicate_features"


def register(app: faust.App, runtime: Runtime) -> None:
    s, t = runtime.settings, runtime.topics
    store = runtime.feature_store
    store.complete = False
    unreadable = metrics.POISONED_STATE.labels("feature-windows")

    def load(items: Iterator[tuple[bytes, bytes]]) -> None:
        store.clear()
        for key, value in items:
            apply(key, value)
        store.complete = True
        metrics.FEATURE_ENTITIES.set(store.entity_count())
        log.info("feature windows: %d entities held", store.entity_count())

    def apply(key: bytes, value: bytes | None) -> None:
        try:
            if value is None:
                store.drop(key)
            else:
                store.load(key, value)
        except Exception as exc:  # e.g. a record written to the changelog by someone else
            unreadable.inc()
            log.warning("skipped an unreadable feature pane (%s)", type(exc).__name__)

    def on_lag(records: int) -> None:
        metrics.FEATURE_REPLICA_LAG.set(records)
        metrics.FEATURE_ENTITIES.set(store.entity_count())

    @app.task
    async def start_replicate_features() -> None:
        source = t["feature_observations"]
        replica = ChangelogReplica(
            s,
            changelog_name(s.app_id),
            source.partitions,
            source.replication_factor,
            s.data_dir / f"{s.app_id}-feature-windows-replica",
            load=load,
            apply=apply,
            on_lag=on_lag,
            cluster_id=lambda: current_cluster_id(app),
            loop=app.loop,
        )
        await app.add_runtime_dependency(replica)
