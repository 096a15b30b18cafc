"""Prometheus metrics of every agent. Labels are bounded: agent names,
reason codes, and policy / arm names from the policies config. Values that
come from events or operators (policy, experiment and variant ids, arm names)
are capped as well: each label of a family takes at most
``LLMOPT_METRIC_LABEL_VALUES_MAX`` distinct values, later ones are counted
under ``other`` and in ``llmopt_metric_labels_overflow_total{metric}``, so no
input can grow the exposition without bound. The families below are built
with the capped :class:`Counter`, :class:`Gauge` and :class:`Histogram`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, Self

import prometheus_client

# The value a label takes once its family has seen LABEL_VALUES_MAX others.
OTHER = "other"
LABEL_VALUES_MAX = 1000
LABELS_OVERFLOW = prometheus_client.Counter(
    "llmopt_metric_labels_overflow_total",
    "Label values counted as 'other' because their metric family already had "
    "LLMOPT_METRIC_LABEL_VALUES_MAX distinct values of that label, by metric.",
    ["metric"],
)


def set_label_values_max(n: int) -> None:
    """The cap on distinct values per label of each family (a worker's
    ``metric_label_values_max``); values seen already keep their series."""
    global LABEL_VALUES_MAX
    LABEL_VALUES_MAX = n


class _LabelCap:
    """The values each label of one family has taken, and the cap on them."""

    def __init__(self, name: str, labelnames: Iterable[str]) -> None:
        self.name = name
        self.labelnames = tuple(labelnames)
        self.seen: list[set[str]] = [set() for _ in self.labelnames]
        # Value tuples taken as they are: one per series, so no larger than the
        # family itself; the common case costs one set lookup.
        self.known: set[tuple[object, ...]] = set()

    def cap(self, values: tuple[object, ...], by_name: dict[str, object]) -> tuple[object, ...]:
        if by_name:
            values = tuple(by_name.get(n, "") for n in self.labelnames)
        if values in self.known or len(values) != len(self.seen):
            return values  # seen before, or a wrong count the library reports
        out = tuple(str(v) for v in values)
        capped = None
        for i, v in enumerate(out):
            seen = self.seen[i]
            if v in seen or v == OTHER:
                continue
            if len(seen) < LABEL_VALUES_MAX:
                seen.add(v)
                continue
            capped = capped or list(out)
            capped[i] = OTHER
        if capped is None:
            self.known.add(values)
            return out
        LABELS_OVERFLOW.labels(self.name).inc()
        return tuple(capped)


class _Capped:
    """A metric family whose label values are capped (:class:`_LabelCap`);
    mixed in before the prometheus_client class."""

    def __init__(
        self, name: str, documentation: str, labelnames: Iterable[str] = (), **kw: Any
    ) -> None:
        labelnames = tuple(labelnames)
        super().__init__(name, documentation, labelnames, **kw)  # type: ignore[call-arg]
        self.label_cap = _LabelCap(name, labelnames)

    def labels(self, *labelvalues: object, **labelkwargs: object) -> Self:
        return super().labels(*self.label_cap.cap(labelvalues, labelkwargs))  # type: ignore[misc]


class Counter(_Capped, prometheus_client.Counter):
    """A counter whose label values are capped."""


class Gauge(_Capped, prometheus_client.Gauge):
    """A gauge whose label values are capped."""


class Histogram(_Capped, prometheus_client.Histogram):
    """A histogram whose label values are capped."""


EVENTS = Counter("llmopt_events_total", "Events an agent consumed, by result.", ["agent", "result"])
DEAD_LETTERS = Counter(
    "llmopt_dead_letters_total",
    "Events sent to the dead-letter topic, by reason.",
    ["agent", "reason"],
)
DECISIONS = Counter(
    "llmopt_decisions_total", "Decisions made, by policy and arm.", ["policy_id", "arm"]
)
DECISIONS_FALLBACK = Counter(
    "llmopt_decisions_fallback_total",
    "Decisions that are fallbacks, by policy and reason (app/records.py FALLBACK_REASONS).",
    ["policy_id", "reason"],
)
DECIDE_BATCH_SECONDS = Histogram(
    "llmopt_decide_batch_seconds",
    "Time to parse, decide and enqueue one batch of requests.",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
DECIDE_BATCH_SIZE = Histogram(
    "llmopt_decide_batch_size",
    "Requests per decision batch.",
    buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 2000, 5000),
)
OUTCOMES = Counter(
    "llmopt_outcomes_total", "Outcomes emitted, rewarded or defaulted.", ["policy_id", "kind"]
)
OUTCOME_REWARD = Counter(
    "llmopt_outcome_reward_total", "Sum of scalar rewards of emitted outcomes.", ["policy_id"]
)
POLICY_UPDATES = Counter(
    "llmopt_policy_updates_total", "Outcomes applied to a policy.", ["policy_id"]
)
POLICY_UPDATES_SKIPPED = Counter(
    "llmopt_policy_updates_skipped_total",
    "Outcomes not applied: redelivered, duplicate or for a removed arm.",
    ["policy_id", "reason"],
)
SNAPSHOTS = Counter("llmopt_policy_snapshots_total", "Policy snapshots published.", ["policy_id"])
PENDING_DECISIONS = Gauge(
    "llmopt_join_pending_decisions", "Decisions waiting for a reward on this worker."
)
JOIN_AT_BOUND = Counter(
    "llmopt_join_hold_bound_total",
    "Entries resolved because join_max_hold_seconds ran out before the join read far "
    "enough (kind: defaulted, unknown_request).",
    ["kind"],
)
POISONED_STATE = Counter(
    "llmopt_poisoned_state_total",
    "Unreadable records in a table, changelog or the snapshots topic, skipped.",
    ["store"],
)
STATE_REGRESSIONS = Counter(
    "llmopt_policy_state_regressions_total",
    "Policy states recovered at a lower version than a snapshot already published.",
    ["policy_id"],
)
REPLIES_DROPPED = Counter(
    "llmopt_replies_dropped_total",
    "Decisions not sent to a request's reply_to topic, by reason (the decision still "
    "goes to the decisions topic).",
    ["reason"],
)
POLICY_VERSION = Gauge(
    "llmopt_decider_policy_version", "Snapshot version each policy decides from.", ["policy_id"]
)
CONFIG_RELOADS = Counter(
    "llmopt_config_reloads_total", "Policies file reloads, by result.", ["result"]
)

# -- every agent: processing time, errors, lag; the ops view ----------------------------
AGENT_PROCESSING_SECONDS = Histogram(
    "llmopt_agent_processing_seconds",
    "Time an agent spends on one event (Faust agents) or one batch (select_arm).",
    ["agent"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0),
)
ERRORS = Counter(
    "llmopt_errors_total",
    "Errors logged, by logger (agents, faust, aiokafka, ...): crashes, failed commits and sends.",
    ["logger"],
)
CONSUMER_LAG = Gauge(
    "llmopt_consumer_lag_messages",
    "Messages not yet committed by this worker's consumer, summed over its partitions "
    "(high-water mark minus committed offset).",
    ["consumer", "topic"],
)
# Request created_at → decision enqueued. One request in DECISION_LATENCY_SAMPLE_EVERY
# is observed: a histogram observation costs ~1 µs, a few % of the decision itself.
DECISION_LATENCY_SAMPLE_EVERY = 8
DECISION_LATENCY_SECONDS = Histogram(
    "llmopt_decision_latency_seconds",
    f"Request creation to decision, one request in {DECISION_LATENCY_SAMPLE_EVERY} sampled.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EVENT_LOOP_STALL_SECONDS = Histogram(
    "llmopt_event_loop_stall_seconds",
    "How late the worker's event loop ran a probe that sleeps 100 ms: every service on "
    "the loop (deciders, HTTP endpoints, group heartbeats) waited as long.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
METRICS_SNAPSHOTS = Counter(
    "llmopt_metrics_snapshots_total", "Metric snapshots published to the metrics topic."
)
DASHBOARD_EVENTS = Counter(
    "llmopt_dashboard_events_total",
    "Events read from the metrics, drift and alert topics for the dashboard, by result.",
    ["topic", "result"],
)

# -- limits: web callers, bounded state, circuit breakers (docs/security.md, docs/ops.md) --
WEB_AUTH_REFUSED = Counter(
    "llmopt_web_auth_refused_total",
    "Web requests refused by the token check: unauthorized (no known token, 401), "
    "forbidden (a tenant-limited token outside /decide and /reward, 403).",
    ["reason"],
)
STATE_EVICTIONS = Counter(
    "llmopt_state_evictions_total",
    "Per-key entries dropped because their state reached its cap, least recently used "
    "first, by state (exploration_budgets, open_workflows, workflow_steps).",
    ["state"],
)
CIRCUIT_STATE = Gauge(
    "llmopt_circuit_state",
    "Each circuit breaker's state: 0 closed (calls go through), 1 half-open (one trial "
    "call), 2 open (calls are skipped and their fallback used).",
    ["name"],
)
CIRCUIT_SKIPPED = Counter(
    "llmopt_circuit_skipped_total",
    "Calls a circuit breaker skipped while open (the fallback was used), by breaker.",
    ["name"],
)


ASSIGNED_PARTITIONS = Gauge(
    "llmopt_assigned_partitions",
    "Partitions this worker's consumer holds and has made ready (its state recovered), "
    "per topic role: which member owns what after a rebalance.",
    ["consumer", "topic"],
)


def set_per_topic(gauge: Gauge, consumer: str, by_topic: dict[str, int]) -> None:
    """Set one consumer's gauges of a (consumer, topic) family, one value per
    topic role (``CONSUMER_LAG``, ``ASSIGNED_PARTITIONS``), none below 0."""
    for topic, value in by_topic.items():
        gauge.labels(consumer, topic).set(max(0, value))


def set_consumer_lag(consumer: str, lag_by_topic: dict[str, int]) -> None:
    """Set the lag gauges of one consumer, one value per topic role."""
    set_per_topic(CONSUMER_LAG, consumer, lag_by_topic)


# -- features (app/features, agents/featurize_*, agents/aggregate_features) --------------
FEATURE_DEFAULTS = Counter(
    "llmopt_feature_defaults_total",
    "Spec feature values replaced by the spec's default, by reason.",
    ["spec", "feature", "reason"],
)
# "count" is exposed as ..._values: a gauge must not end in _count (promtool).
FEATURE_SUMMARY = {
    stat: Gauge(
        f"llmopt_feature_{'values' if stat == 'count' else stat}",
        f"{stat} of each extracted feature column over the last summary interval.",
        ["spec", "feature"],
    )
    for stat in ("count", "mean", "std", "min", "max")
}
FEATURE_OBSERVATIONS = Counter(
    "llmopt_feature_observations_total",
    "Observations applied to the windowed feature tables, by result.",
    ["result"],
)
FEATURE_ENTITIES = Gauge(
    "llmopt_feature_entities", "Entities with windowed features held by this worker."
)
FEATURE_WINDOW_MISSES = Counter(
    "llmopt_feature_window_misses_total",
    "Window lookups on the decision path that found no value, by reason: no_window "
    "(the entity has no final window yet) or not_caught_up (this worker's copy of the "
    "feature windows had not yet read their changelog to where it ended at the start).",
    ["reason"],
)
FEATURE_REPLICA_LAG = Gauge(
    "llmopt_feature_replica_lag_records",
    "Records of the feature-windows changelog this worker's copy has yet to read.",
)


# -- drift (app/drift, agents/detect_drift, the learner's adaptations) -------------------
DRIFT_EVENTS = Counter(
    "llmopt_drift_events_total",
    "Drift, input-drift and anomaly events sent, by policy, kind and signal.",
    ["policy_id", "kind", "signal"],
)
ALERTS = Counter(
    "llmopt_alerts_total",
    "Alert state changes sent, by policy, rule and status (firing, resolved).",
    ["policy_id", "rule", "status"],
)
ADAPTATIONS = Counter(
    "llmopt_adaptations_total",
    "Policy adaptations to a drift, by policy and what was applied.",
    ["policy_id", "applied"],
)


# -- the Kafka cluster (agents/watch_cluster) --------------------------------------------
KAFKA_REACHABLE = Gauge(
    "llmopt_kafka_cluster_reachable",
    "1 while this worker's probes reach the Kafka cluster, 0 while it is unreachable.",
)
BROKER_DATA_LOSS = Counter(
    "llmopt_broker_data_loss_total",
    "Partitions found restarted below a consumer's position (the broker lost their log), "
    "read again from offset 0, by consumer and topic role.",
    ["consumer", "topic"],
)
TOPICS_RECREATED = Counter(
    "llmopt_topics_recreated_total",
    "Topics this worker created again after finding them missing on the cluster.",
)
APPLIED_EXPIRED = Counter(
    "llmopt_applied_requests_expired_total",
    "Applied request ids the learner forgot after applied_requests_retention_seconds.",
)
LEARNING_LAG_SECONDS = Histogram(
    "llmopt_learning_lag_seconds",
    "Reward sent to the decider taking the first snapshot that holds it, per snapshot: "
    "the oldest reward each snapshot is the first to hold (worst case of the snapshot).",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0),
)
SENDS_RETRIED = Counter(
    "llmopt_sends_retried_total",
    "Records the broker refused that an agent sent again before acknowledging their "
    "source events, by agent.",
    ["agent"],
)
REGISTRY_RECORDS = Counter(
    "llmopt_registry_records_total",
    "Registry records the learner wrote: versions by the status they start in, and status changes.",
    ["policy_id", "status"],
)
SHADOW_VALUE = Gauge(
    "llmopt_shadow_value",
    "Off-policy estimate of a shadow version's mean reward on the policy's live outcomes "
    "(ips, snips), and the serving policy's own mean on them (on_policy), with the bounds "
    "of their 95% intervals (bound: value, low, high).",
    ["policy_id", "version", "estimator", "bound"],
)
SHADOW_OUTCOMES = Gauge(
    "llmopt_shadow_outcomes",
    "Outcomes a shadow version has scored and learned from since it started.",
    ["policy_id", "version"],
)
SHADOW_AGREEMENT = Gauge(
    "llmopt_shadow_agreement",
    "Share of a shadow version's recent decisions (its apprentice window, 200 outcomes "
    "by default) that chose the arm the serving policy served.",
    ["policy_id", "version"],
)


# The shadow versions whose gauges this worker shows, per policy.
_SHADOWS_SHOWN: dict[str, set[str]] = {}
_SHADOW_ESTIMATORS = ("ips", "snips", "on_policy")


def set_shadow_values(policy_id: str, values: dict[int, dict[str, Any]]) -> None:
    """The learner's shadows of one policy (app/shadow.py summaries); the
    gauges of a shadow that has ended are removed, not left at its last values."""
    shown = {str(n) for n in values}
    for version in _SHADOWS_SHOWN.get(policy_id, set()) - shown:
        series: list[tuple[Gauge, tuple[str, ...]]] = [
            (SHADOW_OUTCOMES, (policy_id, version)),
            (SHADOW_AGREEMENT, (policy_id, version)),
        ]
        series += [
            (SHADOW_VALUE, (policy_id, version, estimator, bound))
            for estimator in _SHADOW_ESTIMATORS
            for bound in ("value", "low", "high")
        ]
        for gauge, labels in series:
            with contextlib.suppress(KeyError):  # never set, or counted under "other"
                gauge.remove(*labels)
    _SHADOWS_SHOWN[policy_id] = shown
    for number, summary in values.items():
        version = str(number)
        SHADOW_OUTCOMES.labels(policy_id, version).set(summary["outcomes"])
        if summary.get("agreement") is not None:
            SHADOW_AGREEMENT.labels(policy_id, version).set(summary["agreement"])
        for estimator in _SHADOW_ESTIMATORS:
            found = summary.get(estimator)
            if found is None:
                continue
            for bound in ("value", "low", "high"):
                SHADOW_VALUE.labels(policy_id, version, estimator, bound).set(found[bound])


# Experiments and rollouts (docs/experiments.md#live-experiments). Experiment
# ids and variant names are an operator's, a few at a time.
EXPERIMENT_SHARE = Gauge(
    "llmopt_experiment_share",
    "Each variant's share of its experiment's traffic as this worker's decider assigns it "
    "(0 once the experiment stops, but for the challenger of a promoted rollout).",
    ["experiment", "variant"],
)
EXPERIMENT_UNITS = Gauge(
    "llmopt_experiment_units",
    "Outcomes counted for each variant in its experiment's current stage (primary metric).",
    ["experiment", "variant"],
)
EXPERIMENT_MEAN = Gauge(
    "llmopt_experiment_mean",
    "Each variant's mean of each metric (reward, cost_usd, latency_ms) in the current stage.",
    ["experiment", "variant", "metric"],
)
EXPERIMENT_GATE = Gauge(
    "llmopt_experiment_gate",
    "Each treatment's rollout gate at the last look: 1 pass, 0 pending, -1 fail.",
    ["experiment", "variant"],
)
EXPERIMENT_STOPS = Counter(
    "llmopt_experiment_stops_total",
    "Experiments this worker's evaluator stopped, by reason (promoted, rolled_back, winner).",
    ["reason"],
)
GATE_VALUES = {"pass": 1, "pending": 0, "fail": -1}


def set_experiment_result(experiment: str, result: dict[str, Any]) -> None:
    """The gauges of one result event's ``result`` (app/experiments/evaluator.py)."""
    primary = result.get("primary", "reward")
    for variant, by_metric in result.get("variants", {}).items():
        for metric, cell in by_metric.items():
            if cell.get("mean") is not None:
                EXPERIMENT_MEAN.labels(experiment, variant, metric).set(cell["mean"])
            if metric == primary:
                EXPERIMENT_UNITS.labels(experiment, variant).set(cell.get("n", 0))
    for variant, t in result.get("treatments", {}).items():
        EXPERIMENT_GATE.labels(experiment, variant).set(GATE_VALUES.get(t.get("gate"), 0))


# Trade-off decisions (docs/tradeoffs.md): the learned front per policy and
# task type (task types are the closed set of app/features/request_vector.py).
TRADEOFF_OBJECTIVE = Gauge(
    "llmopt_tradeoff_objective",
    "Each arm's learned objective (quality, cost_usd, latency_ms) per task type: the mean "
    "of its outcomes and that mean's standard error (stat: mean, stderr).",
    ["policy_id", "task_type", "arm", "objective", "stat"],
)
TRADEOFF_ON_FRONT = Gauge(
    "llmopt_tradeoff_on_front",
    "1 when an arm is on its task type's learned Pareto front of quality, cost and latency "
    "(no arm dominates it with confidence), else 0.",
    ["policy_id", "task_type", "arm"],
)


def set_tradeoff_front(policy_id: str, front: dict[str, Any]) -> None:
    """The decider's learned front of one policy (``Decider.front``): per task
    type, rows with the arm, its objectives' means and standard errors, and
    whether it is on the front."""
    for task_type, rows in front.items():
        for row in rows:
            for i, objective in enumerate(("quality", "cost_usd", "latency_ms")):
                labels = (policy_id, task_type, row.arm, objective)
                TRADEOFF_OBJECTIVE.labels(*labels, "mean").set(row.means[i])
                TRADEOFF_OBJECTIVE.labels(*labels, "stderr").set(row.stderrs[i])
            TRADEOFF_ON_FRONT.labels(policy_id, task_type, row.arm).set(int(row.on_front))
