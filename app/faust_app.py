"""``create_app(settings)`` → the Faust application with its agents."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import faust_transport, metrics
from app.decider import check_dimensions
from app.features.request_vector import RequestVectorizer
from app.policies.config import PoliciesConfig, PolicyConfigError
from app.settings import Settings
from app.topics import TopicCatalog

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What agents share: settings, topic names, policies."""

    settings: Settings
    topics: TopicCatalog
    policies: PoliciesConfig
    decide_ready: bool = False
    # Features (app/features): the spec (or None), the windowed feature store
    # this worker keeps, and the extractor select_arm decides with (or None).
    feature_spec: Any = None
    feature_store: Any = None
    feature_extractor: Any = None
    # Called with the new config when the policies file changes.
    on_policies_changed: list[Callable[[PoliciesConfig], None]] = field(default_factory=list)
    _policies_mtime: float = 0.0

    def reload_policies(self) -> bool:
        """Re-read the policies file if it changed; a broken file is logged
        and the running config kept."""
        path = self.settings.policies_path
        try:
            mtime = os.stat(path).st_mtime
            if mtime == self._policies_mtime:
                return False
            self._policies_mtime = mtime
            config = PoliciesConfig.load(path)
            check_dimensions(config, getattr(self.feature_extractor, "dim", RequestVectorizer.dim))
        except (OSError, PolicyConfigError) as exc:
            log.error("policies file not reloaded, keeping the running config: %s", exc)
            metrics.CONFIG_RELOADS.labels("error").inc()
            return False
        self.policies = config
        for listener in self.on_policies_changed:
            listener(config)
        log.info("policies reloaded from %s", path)
        metrics.CONFIG_RELOADS.labels("ok").inc()
        return True


def faust_settings(settings: Settings) -> dict[str, Any]:
    profile = settings.broker_profile()
    conf: dict[str, Any] = {
        "broker": f"kafka://{settings.bootstrap}",
        "store": "rocksdb://",
        "datadir": str(settings.data_dir),
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "topic_partitions": 4,
        "topic_replication_factor": 1,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": profile["session_timeout"],
        "broker_heartbeat_interval": profile["heartbeat_interval"],
        "broker_rebalance_timeout": profile["rebalance_timeout"],
        "producer_linger_ms": settings.producer_linger_ms,
        "broker_commit_interval": 0.5,
        # Do not wait for the last record each agent holds to be acked before
        # a rebalance or shutdown: an agent acks a record when it takes the
        # next one, so with no next one a SIGTERM waited 10-15 s. The record
        # is read again by the next owner, and every agent makes a
        # redelivery harmless.
        "stream_wait_empty": False,
        # Events and table values are orjson bytes, encoded by our own code.
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    if settings.embedded_broker:
        # EMBEDDED_BROKER.md: its ListOffsets(LATEST) is too low, which trips
        # Faust's recovery check; and it has no standby replicas to speak of.
        conf.update(recovery_consistency_check=False, table_standby_replicas=0)
    return conf


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or Settings.from_env()
    runtime = Runtime(
        settings=settings,
        topics=TopicCatalog.for_settings(settings),
        policies=PoliciesConfig.load(settings.policies_path),
        _policies_mtime=os.stat(settings.policies_path).st_mtime,
    )
    app = faust.App(settings.app_id, **faust_settings(settings))
    # A producer flush that drains (state writes durable before offsets are
    # committed); on the embedded broker, changelog ends from fetches.
    faust_transport.install(app, settings.embedded_broker)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # Ops view: per-agent processing time, logged errors (see app/metrics.py).
    from app.agent_sensor import AgentSensor
    from app.error_log_counter import ErrorLogCounter

    app.sensors.add(AgentSensor())

    @app.task
    async def count_logged_errors() -> None:
        # Here, not earlier: the worker's logging setup clears the root logger's handlers.
        ErrorLogCounter.install()

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    from agents import watch_cluster

    cluster = watch_cluster.register(app, runtime)  # /health reports what it finds

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        """200 once every role of this worker holds partitions and the
        cluster answers with every topic; 503 with the reason otherwise."""
        from app.cluster_watch import health_report

        assigned = bool(app.consumer.assignment()) if app.consumer else False
        ready = {"decide": runtime.decide_ready, "join": assigned, "learn": assigned}
        ready.update(features=assigned, archive=assigned)
        status, body = health_report({r: ready[r] for r in settings.roles}, cluster.problem())
        return web.json(body, status=status)

    from agents import join_rewards, learn_from_outcomes, select_arm

    @app.timer(settings.policies_reload_seconds)
    async def reload_policies() -> None:
        runtime.reload_policies()

    from agents import (
        aggregate_features,
        archive_outcomes,
        featurize_outcomes,
        featurize_requests,
        serve_features,
    )
    from app.features.runtime import build_features

    runtime.feature_spec, runtime.feature_store, runtime.feature_extractor = build_features(
        settings
    )
    serve_features.register(app, runtime)  # GET /features, /features/history

    roles = settings.roles
    if "decide" in roles:
        select_arm.register(app, runtime)
    if "join" in roles:
        join_rewards.register(app, runtime)
    if "learn" in roles:
        learn_from_outcomes.register(app, runtime)
        # Beside the learner: same outcome partitions, drifts back to their owner.
        from agents import detect_drift

        detect_drift.register(app, runtime)
    if "features" in roles:
        featurize_requests.register(app, runtime)
        featurize_outcomes.register(app, runtime)
        aggregate_features.register(app, runtime)
    if "archive" in roles:
        archive_outcomes.register(app, runtime)
    from agents import follow_metrics, publish_metrics

    if settings.metrics_publish_seconds > 0:
        publish_metrics.register(app, runtime)
    if settings.dashboard_history_points > 0:
        follow_metrics.register(app, runtime)
    return app
