"""Prometheus metrics of every agent. Labels are bounded: agent names,
reason codes, and policy / arm names from the policies config."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("llmopt_events_total", "Events an agent consumed, by result.", ["agent", "result"])
DEAD_LETTERS = Counter(
    "llmopt_dead_letters_total",
    "Events sent to the dead-letter topic, by reason.",
    ["agent", "reason"],
)
DECISIONS = Counter(
    "llmopt_decisions_total", "Decisions made, by policy and arm.", ["policy_id", "arm"]
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
POLICY_VERSION = Gauge(
    "llmopt_decider_policy_version", "Snapshot version each policy decides from.", ["policy_id"]
)
CONFIG_RELOADS = Counter(
    "llmopt_config_reloads_total", "Policies file reloads, by result.", ["result"]
)
