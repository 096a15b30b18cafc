"""``create_app(settings)`` → the Faust application with its agents.

The agents of a worker are registered from one table, :data:`AGENTS`: each
entry is an agent's ``register(app, runtime)`` and the condition (a role,
a setting) under which this worker runs it. This factory is the one module
under ``app/`` that imports ``agents``; the agents never import it (what
they share is :class:`~app.stream.runtime.Runtime`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents import (
    aggregate_features,
    archive_outcomes,
    detect_drift,
    evaluate_experiments,
    featurize_outcomes,
    featurize_requests,
    follow_metrics,
    join_rewards,
    learn_from_outcomes,
    publish_metrics,
    replicate_features,
    select_arm,
    serve_features,
    watch_cluster,
)
from app import faults
from app.error_log_counter import ErrorLogCounter
from app.features.runtime import build_features
from app.kafka_security import kafka_security
from app.metrics import EVENT_LOOP_STALL_SECONDS, set_label_values_max
from app.settings import Settings
from app.stream import decide_endpoint, explain_endpoint, faust_transport
from app.stream.agent_sensor import AgentSensor
from app.stream.cluster_watch import health_report
from app.stream.cluster_watcher import cluster_state
from app.stream.runtime import Runtime
from app.web_auth import web_middlewares

# How often the event loop is probed for stalls (llmopt_event_loop_stall_seconds).
LOOP_PROBE_S = 0.1


def _role(name: str) -> Callable[[Settings], bool]:
    return lambda settings: name in settings.roles


def _always(settings: Settings) -> bool:
    return True


# (register(app, runtime), whether this worker runs it), in registration order.
AGENTS: tuple[tuple[Callable[[faust.App, Runtime], Any], Callable[[Settings], bool]], ...] = (
    (watch_cluster.register, _always),  # /health reports what it finds
    # Every worker holds every entity's windows, for its decisions and /features.
    (replicate_features.register, _always),
    (serve_features.register, _always),  # GET /features, /features/history
    (select_arm.register, _role("decide")),
    (decide_endpoint.register, _role("decide")),  # POST /decide, /reward
    (explain_endpoint.register, _role("decide")),  # GET /explain/{policy_id}
    (join_rewards.register, _role("join")),
    (learn_from_outcomes.register, _role("learn")),
    # Beside the learner: same outcome partitions, drifts back to their owner.
    (detect_drift.register, _role("learn")),
    # One worker of the role holds the experiments lease and evaluates them all.
    (evaluate_experiments.register, _role("learn")),
    (featurize_requests.register, _role("features")),
    (featurize_outcomes.register, _role("features")),
    (aggregate_features.register, _role("features")),
    (archive_outcomes.register, _role("archive")),
    (publish_metrics.register, lambda s: s.metrics_publish_seconds > 0),
    (follow_metrics.register, lambda s: s.dashboard_history_points > 0),
)


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
        "producer_linger_ms": settings.agents_linger_ms,
        "producer_max_batch_size": 1024 * 1024,
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
        "broker_credentials": broker_credentials(settings),
    }
    middlewares = web_middlewares(settings)
    if middlewares:
        # Every page (Faust's own included) passes the check; /health stays open.
        conf["web_application_options"] = {"middlewares": middlewares}
    if settings.embedded_broker:
        # docs/architecture.md#the-embedded-broker: its ListOffsets(LATEST) is too low, which trips
        # Faust's recovery check; and it has no standby replicas to speak of.
        conf.update(recovery_consistency_check=False, table_standby_replicas=0)
    return conf


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The security settings as Faust's credentials, which Faust's aiokafka
    transport turns into the same arguments as :func:`kafka_security`."""
    kwargs = kafka_security(settings)
    protocol = kwargs["security_protocol"]
    if protocol == "SSL":
        return faust.SSLCredentials(kwargs["ssl_context"])
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=kwargs["sasl_plain_username"],
            password=kwargs["sasl_plain_password"],
            mechanism=kwargs["sasl_mechanism"],
            ssl_context=kwargs.get("ssl_context"),
        )
    return None


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or Settings.from_env()
    faults.install(settings.faults)
    set_label_values_max(settings.metric_label_values_max)
    runtime = Runtime.for_settings(settings)
    app = faust.App(settings.app_id, **faust_settings(settings))
    # A producer flush that drains (state writes durable before offsets are
    # committed); on the embedded broker, changelog ends from fetches.
    faust_transport.install(app, settings.embedded_broker)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # Ops view: per-agent processing time, logged errors (see app/metrics.py).
    app.sensors.add(AgentSensor())

    @app.task
    async def count_logged_errors() -> None:
        # Here, not earlier: the worker's logging setup clears the root logger's handlers.
        ErrorLogCounter.install()

    @app.task
    async def watch_event_loop() -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LOOP_PROBE_S)
            late = loop.time() - start - LOOP_PROBE_S
            EVENT_LOOP_STALL_SECONDS.observe(max(0.0, late))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        """200 once every role of this worker holds partitions and the
        cluster answers with every topic; 503 with the reason otherwise."""
        held = runtime.holds_partitions.get
        ready = {
            "decide": held("select_arm", False),
            "join": held("join_rewards", False),
            "learn": held("learn_from_outcomes", False),
            "features": held("aggregate_features", False),
            # archive_outcomes is a Faust agent.
            "archive": bool(app.consumer.assignment()) if app.consumer else False,
        }
        cluster = cluster_state(app)
        problem = cluster.problem() if cluster is not None else None
        status, body = health_report({r: ready[r] for r in settings.roles}, problem)
        return web.json(body, status=status)

    @app.timer(settings.policies_reload_seconds)
    async def reload_policies() -> None:
        runtime.reload_policies()

    runtime.feature_spec, runtime.feature_store, runtime.feature_extractor = build_features(
        settings
    )
    for register, runs in AGENTS:
        if runs(settings):
            register(app, runtime)
    return app
