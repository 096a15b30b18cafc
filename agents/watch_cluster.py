"""watch_cluster: keeps an eye on the Kafka cluster (app/stream/cluster_watcher.py
probes it, app/stream/cluster_watch.py says what the findings mean): ``/health``
reports what it finds."""

from __future__ import annotations

import faust

from app.stream.cluster_watch import ClusterState
from app.stream.cluster_watcher import watch
from app.stream.runtime import Runtime


def register(app: faust.App, runtime: Runtime) -> ClusterState:
    """Start the watcher; the returned state tells ``/health`` about problems."""
    return watch(app, runtime)
