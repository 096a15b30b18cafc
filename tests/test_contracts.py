"""Contract tests: every record in ``app.records`` and its JSON Schema in ``schemas/``
accept and emit the same documents.

* shape: the dataclass fields are the schema's properties, the fields without a default
  (plus ``schema_version``) are its ``required``, and each property states what the field's
  declaration does (``schema_properties``: kind, range, length, default);
* record → schema: what ``to_dict``/``dumps`` emit validates and parses back to the record;
* schema → record: what the schema accepts, ``from_dict`` accepts (documents drawn from the
  schema by ``from_schema``, a small generator for the keywords these schemas use);
* rejection: each mutation in ``MUTATIONS`` is rejected by both the schema and ``from_dict``.

A record added to ``ALL_RECORDS`` without a schema file and an entry in ``EXAMPLES`` fails here.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from app.records import (
    ALL_RECORDS,
    DEAD_LETTER_REASONS,
    SCHEMA_VERSION,
    VERSION_STATUSES,
    AlertEvent,
    DeadLetter,
    Decision,
    DriftEvent,
    ExperimentEvent,
    FeatureObservation,
    InvalidEvent,
    MetricsSnapshot,
    Outcome,
    PolicySnapshot,
    Record,
    RegistryEvent,
    Request,
    Reward,
    ShadowDecision,
    schema_conditions,
    schema_properties,
)

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
SCHEMA_BASE_URI = "https://llmopt.dev/schemas/"
T0 = 1_700_000_000_000  # a timestamp, epoch milliseconds

# One valid document per record, with every optional field present.
EXAMPLES: dict[type[Record], dict[str, Any]] = {
    Request: {
        "schema_version": 1,
        "request_id": "req-0001",
        "tenant_id": "acme",
        "task_type": "summarize",
        "created_at": T0,
        "input_tokens": 812,
        "priority": 7,
        "policy_id": "summarize-default",
        "candidates": ["gpt-4o-mini/t0.2", "claude-haiku/t0"],
        "reply_to": "acme.decisions",
        "metadata": {"user": "u-42", "tags": ["beta"], "score": 0.5},
        "workflow": {"id": "wf-9", "step": 1, "state": [0.5, 0, 1], "final": False},
        "explain": True,
        "deadline_ms": 250,
        "tradeoff": {"quality": 2, "cost": 1, "latency": 0.5},
    },
    Decision: {
        "schema_version": 1,
        "decision_id": "dec-0001",
        "reward_token": "3f2a9c0d5e7b41a8",
        "experiment_id": "rollout-haiku",
        "variant": "challenger",
        "request_id": "req-0001",
        "tenant_id": "acme",
        "policy_id": "summarize-default",
        "policy_version": 12,
        "arm": "gpt-4o-mini/t0.2",
        "model": "gpt-4o-mini",
        "parameters": {"temperature": 0.2, "max_tokens": 512},
        "available_arms": ["gpt-4o-mini/t0.2", "claude-haiku/t0"],
        "propensity": 0.9,
        "scores": {"gpt-4o-mini/t0.2": 0.71, "claude-haiku/t0": -1},
        "explored": False,
        "fallback": False,
        "requested_at": T0,
        "decided_at": T0 + 3,
        "features": [0.5, 1, -2.25],
        "spec_features": {
            "name": "default",
            "version": 3,
            "hash": "94ebf08435998441",
            "values": [1, 0.25],
        },
        "workflow": {"id": "wf-9", "step": 1},
        "explanation": {"rule": "exploit", "arms": {"gpt-4o-mini/t0.2": {"mean": 0.7}}},
        "fallback_reason": "deadline",
        "task_type": "summarize",
        "tradeoff": {
            "preset": "balanced",
            "weights": {"quality": 0.5, "cost": 0.25, "latency": 0.25},
        },
    },
    Reward: {
        "schema_version": 1,
        "request_id": "req-0001",
        "tenant_id": "acme",
        "reward_token": "3f2a9c0d5e7b41a8",
        "sent_at": T0 + 2_000,
        "quality": 0.8,
        "cost_usd": 0.0012,
        "latency_ms": 843.5,
        "error": False,
        "feedback": -0.5,
    },
    Outcome: {
        "schema_version": 1,
        "request_id": "req-0001",
        "tenant_id": "acme",
        "policy_id": "summarize-default",
        "policy_version": 12,
        "arm": "gpt-4o-mini/t0.2",
        "available_arms": ["gpt-4o-mini/t0.2", "claude-haiku/t0"],
        "propensity": 0.9,
        "explored": False,
        "reward": 0.74,
        "defaulted": False,
        "decided_at": T0 + 3,
        "outcome_at": T0 + 2_100,
        "components": {"quality": 0.8, "cost_usd": 0.0012},
        "features": [0.5, 1, -2.25],
        "spec_features": {
            "name": "default",
            "version": 3,
            "hash": "94ebf08435998441",
            "values": [1, 0.25],
        },
        "workflow": {"id": "wf-9", "step": 1, "final": True},
        "reward_terms": {
            "weights": {"quality": 0.6, "cost": 0.375, "latency": 0.15, "feedback": 0.0},
            "function": "rewards.score:tenant_value",
        },
        "parameters": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 1024},
        "experiment_id": "rollout-haiku",
        "variant": "challenger",
        "task_type": "summarize",
    },
    PolicySnapshot: {
        "schema_version": 1,
        "policy_id": "summarize-default",
        "version": 12,
        "algorithm": "linucb",
        "state": "eyJhIjogMX0=",
        "updates": 1_234,
        "arm_stats": {"gpt-4o-mini/t0.2": {"pulls": 1_000, "mean_reward": 0.7}},
        "created_at": T0 + 60_000,
    },
    DeadLetter: {
        "schema_version": 1,
        "source_topic": "llmopt.rewards.v1",
        "source_partition": 3,
        "source_offset": 41_234,
        "reason": "malformed_json",
        "detail": "unexpected character: line 1 column 2 (char 1)",
        "original_value_b64": "e30s",
        "failed_at": T0 + 5,
        "original_key_b64": "cmVxLTAwMDE=",
        "original_size": 3,
        "original_sha256": "a" * 64,
        "truncated": False,
    },
    RegistryEvent: {
        "schema_version": 1,
        "event_id": "reg-0001",
        "kind": "version",
        "policy_id": "summarize-default",
        "created_at": 1767225600000,
        "created_by": "learner@worker-1",
        "version": 1200,
        "status": "retired",
        "reason": "the policies file changed its algorithm",
        "config": {"algorithm": "thompson_sampling", "arms": [{"name": "a", "model": "m"}]},
        "config_hash": "0123456789abcdef",
        "state": {"algorithm": "thompson_sampling", "policy": "AAAA", "updates": 1200},
        "parent": 600,
        "lineage": {"updates": 600, "first_outcome_at": 1767225000000},
    },
    ExperimentEvent: {
        "schema_version": 1,
        "event_id": "exp-0001",
        "kind": "created",
        "experiment_id": "rollout-haiku",
        "created_at": 1767225600000,
        "created_by": "cli:ops",
        "definition": {"policy": "default", "variants": [{"name": "a", "policy": "default"}]},
        "stage": 2,
        "shares": {"champion": 0.75, "challenger": 0.25},
        "result": {"variants": {"champion": {"n": 800}}},
        "state": {"offsets": {"0": 17}},
        "stop_reason": "rolled_back",
        "reason": "the challenger's reward is worse",
    },
    ShadowDecision: {
        "schema_version": 1,
        "request_id": "req-0001",
        "tenant_id": "acme",
        "policy_id": "summarize-default",
        "policy_version": 12,
        "shadow_version": 1200,
        "arm": "claude-haiku/t0",
        "propensity": 0.25,
        "available_arms": ["gpt-4o-mini/t0.2", "claude-haiku/t0"],
        "served_arm": "gpt-4o-mini/t0.2",
        "served_propensity": 0.9,
        "agreed": False,
        "apprentice": True,
        "decided_at": T0 + 2_000,
    },
    MetricsSnapshot: {
        "schema_version": 1,
        "snapshot_id": "w1-000042",
        "source": "worker",
        "worker_id": "host-a:6066:4242",
        "created_at": T0 + 7_000,
        "interval_ms": 2_000,
        "samples": [
            {
                "name": "llmopt_decisions_total",
                "labels": {"policy_id": "p", "arm": "a"},
                "value": 3,
            },
            {"name": "llmopt_join_pending_decisions", "labels": {}, "value": 12.5},
        ],
    },
    DriftEvent: {
        "schema_version": 1,
        "event_id": "drift-0001",
        "kind": "adaptation",
        "policy_id": "summarize-default",
        "signal": "reward",
        "detector": "cusum",
        "observed_at": T0 + 2_100,
        "created_at": T0 + 2_105,
        "arm": "gpt-4o-mini/t0.2",
        "samples": 1_250,
        "value": 0.41,
        "score": 25.3,
        "threshold": 25,
        "mean_before": 0.8,
        "mean_after": 0.6,
        "direction": "down",
        "action": "discount",
        "applied": "discount_evidence",
        "factor": 0.2,
        "cause_id": "drift-0000",
        "policy_version": 13,
        "detail": "reward fell from 0.80 to 0.60",
    },
    AlertEvent: {
        "schema_version": 1,
        "alert_id": "alert-0001",
        "rule": "high-error-rate",
        "status": "resolved",
        "severity": "critical",
        "policy_id": "summarize-default",
        "metric": "error_rate",
        "comparison": ">",
        "threshold": 0.05,
        "value": 0.01,
        "window_seconds": 60,
        "samples": 480,
        "started_at": T0 + 60_000,
        "created_at": T0 + 180_001,
        "arm": "gpt-4o-mini/t0.2",
        "resolved_at": T0 + 180_000,
        "summary": "error_rate 0.010 back under 0.05 over 60 s",
    },
    FeatureObservation: {
        "schema_version": 1,
        "entity": "tenant=acme,arm=gpt-4o-mini/t0.2",
        "kind": "outcome",
        "time": T0 + 2_100,
        "input_tokens": 812,
        "reward": 0.74,
        "cost_usd": 0.0012,
        "latency_ms": 843.5,
        "error": False,
    },
}


def _spec(**patch: Any) -> dict[str, Any]:
    """A ``spec_features`` object with ``patch`` applied."""
    return {"name": "s", "version": 1, "hash": "h", "values": [0.5], **patch}


DELETE = object()  # a mutation value: remove the field
LONG = "x" * 257

# Documents each record's schema and from_dict must both reject: patches on EXAMPLES.
# Missing required fields, unknown fields and bad schema_version are added for every record
# by ``mutations()``.
MUTATIONS: dict[type[Record], list[tuple[str, dict[str, Any]]]] = {
    Request: [
        ("empty request_id", {"request_id": ""}),
        ("request_id too long", {"request_id": LONG}),
        ("request_id not a string", {"request_id": 123}),
        ("task_type too long", {"task_type": "t" * 65}),
        ("negative created_at", {"created_at": -1}),
        ("created_at above 2**53", {"created_at": 2**53 + 1}),
        ("created_at a string", {"created_at": str(T0)}),
        ("created_at a boolean", {"created_at": True}),
        ("negative input_tokens", {"input_tokens": -1}),
        ("input_tokens too large", {"input_tokens": 10_000_001}),
        ("priority above 10", {"priority": 11}),
        ("priority below 0", {"priority": -1}),
        ("priority fractional", {"priority": 5.5}),
        ("deadline_ms zero", {"deadline_ms": 0}),
        ("deadline_ms negative", {"deadline_ms": -5}),
        ("deadline_ms above an hour", {"deadline_ms": 3_600_001}),
        ("deadline_ms fractional", {"deadline_ms": 2.5}),
        ("deadline_ms a string", {"deadline_ms": "250"}),
        ("deadline_ms null", {"deadline_ms": None}),
        ("tradeoff empty", {"tradeoff": ""}),
        ("tradeoff a number", {"tradeoff": 1}),
        ("tradeoff a list", {"tradeoff": ["balanced"]}),
        ("tradeoff an unknown weight", {"tradeoff": {"quality": 1, "speed": 1}}),
        ("tradeoff weight negative", {"tradeoff": {"cost": -1}}),
        ("tradeoff weight a string", {"tradeoff": {"cost": "1"}}),
        ("tradeoff weight too large", {"tradeoff": {"cost": 1e7}}),
        ("priority a string", {"priority": "5"}),
        ("policy_id empty", {"policy_id": ""}),
        ("candidates empty", {"candidates": []}),
        ("candidates repeated", {"candidates": ["a", "a"]}),
        ("candidates with an empty name", {"candidates": ["a", ""]}),
        ("candidates not strings", {"candidates": ["a", 1]}),
        ("candidates a string", {"candidates": "a"}),
        ("65 candidates", {"candidates": [f"arm-{i}" for i in range(65)]}),
        ("reply_to too long", {"reply_to": "t" * 250}),
        ("metadata an array", {"metadata": ["a"]}),
        ("workflow without an id", {"workflow": {"step": 0}}),
        ("workflow without a step", {"workflow": {"id": "w"}}),
        ("workflow step negative", {"workflow": {"id": "w", "step": -1}}),
        ("workflow with an unknown field", {"workflow": {"id": "w", "step": 0, "x": 1}}),
        ("workflow state with a string", {"workflow": {"id": "w", "step": 0, "state": ["a"]}}),
        ("workflow final a string", {"workflow": {"id": "w", "step": 0, "final": "yes"}}),
        ("workflow a string", {"workflow": "w"}),
    ],
    Decision: [
        ("tradeoff without weights", {"tradeoff": {"preset": "balanced"}}),
        (
            "tradeoff weight above 1",
            {"tradeoff": {"weights": {"quality": 2, "cost": 0, "latency": 0}}},
        ),
        ("tradeoff weights missing one", {"tradeoff": {"weights": {"quality": 1, "cost": 0}}}),
        ("task_type too long", {"task_type": "t" * 65}),
        ("decision_id too long", {"decision_id": LONG}),
        ("arm empty", {"arm": ""}),
        ("model not a string", {"model": ["gpt"]}),
        ("negative policy_version", {"policy_version": -1}),
        ("policy_version fractional", {"policy_version": 1.5}),
        ("parameters an array", {"parameters": []}),
        ("available_arms empty", {"available_arms": []}),
        ("available_arms repeated", {"available_arms": ["a", "b", "a"]}),
        ("propensity above 1", {"propensity": 1.5}),
        ("propensity below 0", {"propensity": -0.1}),
        ("propensity a string", {"propensity": "0.9"}),
        ("propensity a boolean", {"propensity": True}),
        ("scores an array", {"scores": [0.5]}),
        ("scores with a string value", {"scores": {"a": "high"}}),
        ("scores with a boolean value", {"scores": {"a": True}}),
        ("scores with a null value", {"scores": {"a": None}}),
        ("explored an integer", {"explored": 1}),
        ("fallback a string", {"fallback": "false"}),
        ("fallback_reason not a reason", {"fallback_reason": "slow"}),
        ("fallback_reason empty", {"fallback_reason": ""}),
        ("negative decided_at", {"decided_at": -1}),
        ("features a number", {"features": 0.5}),
        ("features with a string", {"features": [0.5, "1"]}),
        ("features with a boolean", {"features": [True]}),
        ("features nested", {"features": [[0.5]]}),
        ("1025 features", {"features": [0.0] * 1025}),
        ("spec_features without a hash", {"spec_features": {"name": "s", "version": 1}}),
        ("spec_features version 0", {"spec_features": _spec(version=0)}),
        ("spec_features with a string value", {"spec_features": _spec(values=["1"])}),
        ("spec_features with an extra key", {"spec_features": _spec(x=1)}),
        ("workflow id empty", {"workflow": {"id": "", "step": 0}}),
    ],
    Reward: [
        ("request_id empty", {"request_id": ""}),
        ("tenant_id empty", {"tenant_id": ""}),
        ("tenant_id a number", {"tenant_id": 7}),
        ("reward_token empty", {"reward_token": ""}),
        ("reward_token too long", {"reward_token": "t" * 129}),
        ("sent_at a string", {"sent_at": "now"}),
        ("quality above 1", {"quality": 1.01}),
        ("quality below 0", {"quality": -0.01}),
        ("quality a string", {"quality": "good"}),
        ("negative cost_usd", {"cost_usd": -1}),
        ("cost_usd above 1e6", {"cost_usd": 1_000_001}),
        ("negative latency_ms", {"latency_ms": -0.5}),
        ("latency_ms above 1e9", {"latency_ms": 1e9 + 1}),
        ("error an integer", {"error": 0}),
        ("error a string", {"error": "yes"}),
        ("feedback below -1", {"feedback": -1.5}),
        ("feedback above 1", {"feedback": 2}),
        ("feedback a boolean", {"feedback": False}),
    ],
    Outcome: [
        ("reward_terms without weights", {"reward_terms": {"function": "m:f"}}),
        (
            "a negative weight",
            {"reward_terms": {"weights": {"quality": -1, "cost": 0, "latency": 0, "feedback": 0}}},
        ),
        ("tenant_id too long", {"tenant_id": LONG}),
        ("available_arms a string", {"available_arms": "a"}),
        ("propensity above 1", {"propensity": 2}),
        ("reward above 1", {"reward": 1.000001}),
        ("reward below 0", {"reward": -1}),
        ("reward a string", {"reward": "0.5"}),
        ("explored a string", {"explored": "no"}),
        ("defaulted an integer", {"defaulted": 0}),
        ("negative outcome_at", {"outcome_at": -5}),
        ("components an array", {"components": [1]}),
        ("components a string", {"components": "quality"}),
        ("features with a null", {"features": [None]}),
        ("spec_features an array", {"spec_features": [1.0]}),
    ],
    PolicySnapshot: [
        ("policy_id not a string", {"policy_id": 7}),
        ("negative version", {"version": -1}),
        ("version a string", {"version": "12"}),
        ("algorithm too long", {"algorithm": "a" * 65}),
        ("state empty", {"state": ""}),
        ("state above 16 MiB", {"state": "A" * (16 * 1024 * 1024 + 1)}),
        ("state an object", {"state": {"a": 1}}),
        ("negative updates", {"updates": -1}),
        ("arm_stats an array", {"arm_stats": []}),
        ("created_at fractional", {"created_at": T0 + 0.5}),
    ],
    DeadLetter: [
        ("source_topic empty", {"source_topic": ""}),
        ("original_size negative", {"original_size": -1}),
        ("original_sha256 too short", {"original_sha256": "ab"}),
        ("truncated a string", {"truncated": "no"}),
        ("source_partition below -1", {"source_partition": -2}),
        ("source_partition above 2**31 - 1", {"source_partition": 2**31}),
        ("source_offset below -1", {"source_offset": -2}),
        ("source_offset above 2**63 - 1", {"source_offset": 2**63}),
        ("source_offset a string", {"source_offset": "41234"}),
        ("unknown reason", {"reason": "because"}),
        ("reason empty", {"reason": ""}),
        ("reason not a string", {"reason": 3}),
        ("reason in upper case", {"reason": "MALFORMED_JSON"}),
        ("detail empty", {"detail": ""}),
        ("detail too long", {"detail": "d" * 4097}),
        ("original_value_b64 not a string", {"original_value_b64": 42}),
        ("original_value_b64 an array", {"original_value_b64": ["e30="]}),
        ("original_key_b64 not a string", {"original_key_b64": 7}),
        ("negative failed_at", {"failed_at": -1}),
    ],
    RegistryEvent: [
        ("unknown kind", {"kind": "delete"}),
        ("unknown status", {"status": "staging"}),
        ("negative version", {"version": -1}),
        ("version fractional", {"version": 1.5}),
        ("config a list", {"config": []}),
        ("state a string", {"state": "s"}),
        ("event_id too long", {"event_id": "e" * 129}),
        ("created_by empty", {"created_by": ""}),
    ],
    ExperimentEvent: [
        ("unknown kind", {"kind": "paused"}),
        ("unknown stop_reason", {"stop_reason": "timeout"}),
        ("negative stage", {"stage": -1}),
        ("shares with a string", {"shares": {"a": "half"}}),
        ("definition a list", {"definition": []}),
        ("experiment_id too long", {"experiment_id": "e" * 129}),
        ("created_by empty", {"created_by": ""}),
    ],
    ShadowDecision: [
        ("propensity above 1", {"propensity": 1.5}),
        ("served_propensity below 0", {"served_propensity": -0.1}),
        ("negative shadow_version", {"shadow_version": -1}),
        ("available_arms empty", {"available_arms": []}),
        ("available_arms repeated", {"available_arms": ["a", "a"]}),
        ("agreed a string", {"agreed": "yes"}),
        ("apprentice an integer", {"apprentice": 1}),
        ("arm empty", {"arm": ""}),
    ],
    MetricsSnapshot: [
        ("unknown source", {"source": "gateway"}),
        ("source not a string", {"source": 1}),
        ("empty snapshot_id", {"snapshot_id": ""}),
        ("worker_id too long", {"worker_id": LONG}),
        ("interval_ms zero", {"interval_ms": 0}),
        ("interval_ms over a day", {"interval_ms": 86_400_001}),
        ("samples an object", {"samples": {"a": 1}}),
        ("sample not an object", {"samples": [1]}),
        ("sample without value", {"samples": [{"name": "m", "labels": {}}]}),
        (
            "sample with an extra field",
            {"samples": [{"name": "m", "labels": {}, "value": 1, "help": "x"}]},
        ),
        ("sample name empty", {"samples": [{"name": "", "labels": {}, "value": 1}]}),
        ("sample value a string", {"samples": [{"name": "m", "labels": {}, "value": "1"}]}),
        ("sample value a boolean", {"samples": [{"name": "m", "labels": {}, "value": True}]}),
        ("sample value null", {"samples": [{"name": "m", "labels": {}, "value": None}]}),
        ("label value a number", {"samples": [{"name": "m", "labels": {"a": 1}, "value": 1}]}),
        ("label value too long", {"samples": [{"name": "m", "labels": {"a": LONG}, "value": 1}]}),
        ("labels a list", {"samples": [{"name": "m", "labels": ["a"], "value": 1}]}),
        ("too many samples", {"samples": [{"name": "m", "labels": {}, "value": 1}] * 20_001}),
    ],
    DriftEvent: [
        ("unknown kind", {"kind": "surprise"}),
        ("kind not a string", {"kind": 1}),
        ("empty event_id", {"event_id": ""}),
        ("signal too long", {"signal": "s" * 65}),
        ("detector empty", {"detector": ""}),
        ("negative observed_at", {"observed_at": -1}),
        ("created_at a string", {"created_at": "now"}),
        ("negative samples", {"samples": -1}),
        ("value a string", {"value": "0.5"}),
        ("score a boolean", {"score": True}),
        ("unknown direction", {"direction": "sideways"}),
        ("unknown action", {"action": "panic"}),
        ("factor above 1", {"factor": 1.5}),
        ("factor below 0", {"factor": -0.1}),
        ("applied too long", {"applied": "a" * 65}),
        ("negative policy_version", {"policy_version": -1}),
        ("detail too long", {"detail": "d" * 1025}),
        ("arm empty", {"arm": ""}),
    ],
    AlertEvent: [
        ("unknown status", {"status": "pending"}),
        ("unknown severity", {"severity": "fatal"}),
        ("severity in upper case", {"severity": "CRITICAL"}),
        ("unknown comparison", {"comparison": "=="}),
        ("rule too long", {"rule": "r" * 129}),
        ("metric empty", {"metric": ""}),
        ("threshold a string", {"threshold": "0.05"}),
        ("value a boolean", {"value": False}),
        ("negative window_seconds", {"window_seconds": -1}),
        ("window_seconds above 30 days", {"window_seconds": 2_592_001}),
        ("negative samples", {"samples": -1}),
        ("samples fractional", {"samples": 1.5}),
        ("negative started_at", {"started_at": -1}),
        ("resolved_at a string", {"resolved_at": "later"}),
        ("summary too long", {"summary": "s" * 1025}),
    ],
    FeatureObservation: [
        ("outcome without a reward", {"reward": DELETE}),
        ("entity empty", {"entity": ""}),
        ("entity too long", {"entity": "e" * 1025}),
        ("kind in its window code", {"kind": "o"}),
        ("kind not a string", {"kind": 1}),
        ("negative time", {"time": -1}),
        ("time a string", {"time": str(T0)}),
        ("time fractional", {"time": T0 + 0.5}),
        ("negative input_tokens", {"input_tokens": -1}),
        ("input_tokens fractional", {"input_tokens": 1.5}),
        ("reward above 1", {"reward": 1.5}),
        ("reward a string", {"reward": "0.5"}),
        ("negative cost_usd", {"cost_usd": -0.01}),
        ("latency_ms above 1e9", {"latency_ms": 1e9 + 1}),
        ("error an integer", {"error": 1}),
    ],
}

# Edge documents both must accept: patches on EXAMPLES at the limits of each check.
BOUNDARIES: dict[type[Record], list[dict[str, Any]]] = {
    Request: [
        {"created_at": 0, "input_tokens": 0, "priority": 0},
        {"tradeoff": "x" * 64},
        {"tradeoff": {}},
        {"tradeoff": {"quality": 0, "cost": 1_000_000}},
        {"created_at": 2**53, "input_tokens": 10_000_000, "priority": 10},
        {"deadline_ms": 1},
        {"deadline_ms": 3_600_000},
        {"request_id": "r" * 256, "task_type": "t" * 64, "reply_to": "t" * 249},
        {"request_id": "é" * 256, "tenant_id": "🙂" * 256},  # lengths in code points
        {"candidates": [f"arm-{i}" for i in range(64)], "metadata": {}},
        {"candidates": ["x" * 1000]},
    ],
    Decision: [
        {"propensity": 0, "scores": {}, "parameters": {}, "features": []},
        {"propensity": 1, "policy_version": 0, "requested_at": 0, "decided_at": 2**53},
        {"available_arms": ["only"], "features": [1e300] * 1024, "scores": {"": 1e-300}},
        {"explored": True, "fallback": True, "fallback_reason": "constraints"},
        {"fallback": True, "fallback_reason": "no_answer"},
        {"tradeoff": {"weights": {"quality": 1, "cost": 0, "latency": 0}}},
    ],
    Reward: [
        {"quality": 0, "cost_usd": 0, "latency_ms": 0, "feedback": -1, "error": True},
        {"quality": 1, "cost_usd": 1_000_000, "latency_ms": 1e9, "feedback": 1},
    ],
    Outcome: [
        {"propensity": 0.0, "reward": 0, "components": {}, "defaulted": True},
        {"propensity": 1.0, "reward": 1, "outcome_at": 2**53},
    ],
    PolicySnapshot: [
        {"version": 0, "updates": 0, "created_at": 0, "arm_stats": {}, "state": "A"},
        {"algorithm": "a" * 64, "version": 2**53, "updates": 2**53},
    ],
    DeadLetter: [
        {"source_partition": -1, "source_offset": -1, "failed_at": 0},
        {"source_partition": 2**31 - 1, "source_offset": 2**63 - 1, "detail": "d" * 4096},
        {"original_value_b64": "", "original_key_b64": ""},  # empty value, empty key
        *({"reason": reason} for reason in DEAD_LETTER_REASONS),
    ],
    RegistryEvent: [
        {"version": 0, "parent": 0, "created_at": 0, "kind": "serve"},
        {
            "version": DELETE,
            "status": DELETE,
            "config": DELETE,
            "state": DELETE,
            "kind": "register",
        },
        *({"status": status, "kind": "status"} for status in VERSION_STATUSES),
    ],
    ExperimentEvent: [
        {"stage": 0, "created_at": 0, "kind": "stage", "definition": DELETE},
        {"stage": 1000, "shares": {}, "kind": "result", "experiment_id": "e" * 128},
        *({"stop_reason": why, "kind": "stopped"} for why in ("manual", "promoted", "winner")),
    ],
    ShadowDecision: [
        {"propensity": 0, "served_propensity": 1, "agreed": True, "apprentice": False},
        {"available_arms": ["only"], "shadow_version": 0, "decided_at": 2**53},
    ],
    MetricsSnapshot: [
        {"samples": [], "interval_ms": 1, "created_at": 0, "source": "simulator"},
        {"interval_ms": 86_400_000, "created_at": 2**53, "worker_id": "w" * 256},
        {"samples": [{"name": "n" * 200, "labels": {"": "", "le": "+Inf"}, "value": -1e300}]},
        {"samples": [{"name": "m", "labels": {"a": "v" * 256}, "value": 0}] * 20_000},
    ],
    DriftEvent: [
        {"samples": 0, "factor": 0, "policy_version": 0, "observed_at": 0, "created_at": 0},
        {"factor": 1, "value": -1e300, "score": 1e300, "signal": "s" * 64, "detail": "d" * 1024},
        *({"kind": kind} for kind in ("drift", "input_drift", "anomaly", "adaptation")),
        {"direction": "up", "action": "none"},
    ],
    AlertEvent: [
        {"window_seconds": 0, "samples": 0, "started_at": 0, "created_at": 0, "status": "firing"},
        {"window_seconds": 2_592_000, "rule": "r" * 128, "comparison": "<=", "severity": "info"},
        {"threshold": -1e300, "value": 1e300, "comparison": ">=", "severity": "warning"},
    ],
    FeatureObservation: [
        {"kind": "request", "reward": DELETE, "cost_usd": DELETE, "latency_ms": DELETE},
        {"kind": "request"},  # a reward is allowed, only not required
        {"time": 0, "input_tokens": 0, "reward": 0, "cost_usd": 0, "latency_ms": 0},
        {"time": 2**53, "input_tokens": 10_000_000, "reward": 1, "cost_usd": 1e6},
        {"entity": "e" * 1024, "latency_ms": 1e9, "error": True},
    ],
}

RECORDS = pytest.mark.parametrize("cls", ALL_RECORDS, ids=lambda c: c.__name__)


# --- helpers ------------------------------------------------------------------------------


@functools.cache
def schema(cls: type[Record]) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{cls.schema_name}.v1.json").read_text())


@functools.cache
def validator(cls: type[Record]) -> Draft202012Validator:
    return Draft202012Validator(schema(cls))


def example(cls: type[Record], **patch: Any) -> dict[str, Any]:
    """A fresh copy of the record's example, with ``patch`` applied (DELETE removes)."""
    doc = copy.deepcopy(EXAMPLES[cls])
    for name, value in patch.items():
        if value is DELETE:
            doc.pop(name, None)
        else:
            doc[name] = value
    return doc


def required_fields(cls: type[Record]) -> set[str]:
    no_default = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    return no_default | {"schema_version"}


def defaults(cls: type[Record]) -> dict[str, Any]:
    """The fields ``to_dict`` emits even when the document left them out."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        if value is not None:
            out[f.name] = value
    return out


def assert_emits_valid_documents(record: Record) -> None:
    """record → schema: to_dict and dumps validate and parse back to an equal record."""
    cls = type(record)
    doc = record.to_dict()
    validator(cls).validate(doc)
    assert cls.from_dict(doc) == record
    raw = record.dumps()
    validator(cls).validate(orjson.loads(raw))
    assert cls.loads(raw, max_bytes=len(raw)) == record


def record_verdict(cls: type[Record], doc: dict[str, Any]) -> bool | str:
    """True if from_dict accepts ``doc``, False if it raises InvalidEvent, else the error."""
    try:
        cls.from_dict(doc)
    except InvalidEvent:
        return False
    except Exception as exc:
        return type(exc).__name__
    return True


def mutations() -> Iterator[Any]:
    """pytest params (cls, doc), id "Record-label", for every document both must reject."""
    for cls in ALL_RECORDS:
        if cls not in EXAMPLES:
            continue  # test_every_record_has_an_example_and_mutations says so
        cases = [(f"missing {name}", {name: DELETE}) for name in sorted(required_fields(cls))]
        cases += [
            ("unknown field", {"unexpected": 1}),
            ("schema_version 2", {"schema_version": 2}),
            ("schema_version 0", {"schema_version": 0}),
            ("schema_version a string", {"schema_version": "1"}),
            ("schema_version null", {"schema_version": None}),
        ]
        cases += MUTATIONS.get(cls, [])
        for label, patch in cases:
            yield pytest.param(cls, example(cls, **patch), id=f"{cls.__name__}-{label}")


# --- shape --------------------------------------------------------------------------------


def test_every_schema_file_belongs_to_a_record() -> None:
    files = {p.name for p in SCHEMA_DIR.glob("*.v1.json")}
    assert files == {f"{cls.schema_name}.v1.json" for cls in ALL_RECORDS}


def test_every_record_has_an_example_and_mutations() -> None:
    assert set(EXAMPLES) == set(ALL_RECORDS)
    assert set(MUTATIONS) == set(ALL_RECORDS)
    assert set(BOUNDARIES) == set(ALL_RECORDS)


def test_dead_letter_reasons_are_the_schema_enum() -> None:
    assert schema(DeadLetter)["properties"]["reason"]["enum"] == list(DEAD_LETTER_REASONS)


@RECORDS
def test_schema_is_valid_draft_2020_12(cls: type[Record]) -> None:
    s = schema(cls)
    Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"] == f"{SCHEMA_BASE_URI}{cls.schema_name}.v1.json"
    assert s["title"] == cls.__name__
    assert s["description"]
    assert s["type"] == "object"
    assert s["additionalProperties"] is False
    assert all(prop.get("description") for prop in s["properties"].values())


@RECORDS
def test_schema_properties_are_the_record_fields(cls: type[Record]) -> None:
    s = schema(cls)
    assert set(s["properties"]) == set(cls.field_names())
    assert set(s["required"]) == required_fields(cls)
    assert len(s["required"]) == len(set(s["required"]))
    assert s["properties"]["schema_version"] == {
        "description": s["properties"]["schema_version"]["description"],
        "const": SCHEMA_VERSION,
    }


def without_descriptions(s: Any) -> Any:
    """A schema (part) with its ``description`` keywords left out."""
    if isinstance(s, dict):
        return {k: without_descriptions(v) for k, v in s.items() if k != "description"}
    if isinstance(s, list):
        return [without_descriptions(v) for v in s]
    return s


@RECORDS
def test_schema_states_the_declared_checks(cls: type[Record]) -> None:
    """Each property is what its field's declaration amounts to: a field declared but
    missing from the schema, a range, length or default that differs, fails here."""
    s = schema(cls)
    props = {name: without_descriptions(p) for name, p in s["properties"].items()}
    declared = schema_properties(cls)
    for name, p in declared.items():
        assert props.get(name) == p, name
    assert set(props) == set(declared)
    conditions = [{"if": s["if"], "then": s["then"]}] if "if" in s else []
    assert conditions == schema_conditions(cls)


@RECORDS
def test_schema_defaults_are_the_record_defaults(cls: type[Record]) -> None:
    props = schema(cls)["properties"]
    expected = {k: v for k, v in defaults(cls).items() if k != "schema_version"}
    documented = {k: p["default"] for k, p in props.items() if "default" in p}
    assert documented == expected


# --- record → schema ----------------------------------------------------------------------


@RECORDS
def test_example_is_valid(cls: type[Record]) -> None:
    validator(cls).validate(example(cls))


@RECORDS
def test_records_emit_valid_documents(cls: type[Record]) -> None:
    """The example built as a record, with every subset of its optional fields left out."""
    optional = sorted(set(cls.field_names()) - required_fields(cls))
    for n in range(len(optional) + 1):
        for dropped in itertools.combinations(optional, n):
            doc = example(cls, **dict.fromkeys(dropped, DELETE))
            if any(
                name not in doc and doc.get(other) == value
                for name, (other, value) in cls.required_when.items()
            ):  # a field required here (required_when) left out: both reject it
                assert not validator(cls).is_valid(doc)
                assert record_verdict(cls, doc) is False
                continue
            assert_emits_valid_documents(cls(**doc))


# --- documents drawn from a schema --------------------------------------------------------

# hypothesis-jsonschema does not work with current Hypothesis (it uses a private API that
# changed), so documents are drawn by this generator. It refuses keywords it does not know,
# so a schema that grows a new kind of check has to grow its generator too.
KEYWORDS = {
    "$schema", "$id", "title", "description", "default", "contentEncoding",
    "type", "const", "enum", "minimum", "maximum", "minLength", "maxLength",
    "items", "minItems", "maxItems", "uniqueItems", "properties", "required",
    "additionalProperties", "if", "then", "anyOf",
}  # fmt: skip
# Free-form JSON (metadata, parameters, ...). Integers stay in the 64-bit range orjson
# parses as integers; larger literals arrive as floats.
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def from_schema(s: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Documents valid against ``s`` (the subset of JSON Schema in ``KEYWORDS``)."""
    unknown = set(s) - KEYWORDS
    assert not unknown, f"from_schema cannot generate for {sorted(unknown)}"
    if "const" in s:
        return st.just(s["const"])
    if "anyOf" in s:
        return st.one_of([from_schema(sub) for sub in s["anyOf"]])
    if "enum" in s:
        return st.sampled_from(s["enum"])
    lo, hi = s.get("minimum"), s.get("maximum")
    match s.get("type"):
        case "boolean":
            return st.booleans()
        case "integer":
            return st.integers(lo, hi)
        case "number":
            ints = st.integers(
                -(2**63) if lo is None else math.ceil(lo),
                2**64 - 1 if hi is None else math.floor(hi),
            )
            return ints | st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        case "string":
            return st.text(
                min_size=s.get("minLength", 0), max_size=min(s.get("maxLength", 300), 300)
            )
        case "array":
            return st.lists(
                from_schema(s["items"]),
                min_size=s.get("minItems", 0),
                max_size=s.get("maxItems"),
                unique=s.get("uniqueItems", False),
            )
        case "object" if "properties" in s:
            assert s.get("additionalProperties") is False
            props = {name: from_schema(sub) for name, sub in s["properties"].items()}
            required = set(s.get("required", ()))
            if "if" not in s:
                return objects(props, required)
            # Only the form required_when makes: {"if": {"required": [k], "properties":
            # {k: {"const": v}}}, "then": {"required": [...]}}.
            ((k, cond),) = s["if"]["properties"].items()
            assert s["if"]["required"] == [k] and set(s["then"]) == {"required"}
            value = cond["const"]
            then = objects({**props, k: st.just(value)}, required | set(s["then"]["required"]))
            otherwise = objects({**props, k: props[k].filter(lambda v: v != value)}, required)
            return then | otherwise
        case "object":
            values = from_schema(s.get("additionalProperties", {}))
            return st.dictionaries(st.text(max_size=16), values, max_size=8)
        case None:
            return ANY_JSON
    raise AssertionError(f"from_schema cannot generate type {s.get('type')!r}")


def objects(
    props: dict[str, st.SearchStrategy[Any]], required: set[str]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {k: v for k, v in props.items() if k in required},
        optional={k: v for k, v in props.items() if k not in required},
    )


@functools.cache
def document_strategy(cls: type[Record]) -> st.SearchStrategy[dict[str, Any]]:
    return from_schema(schema(cls))


# --- schema → record ----------------------------------------------------------------------


def assert_accepted_as_is(cls: type[Record], doc: dict[str, Any]) -> None:
    """from_dict accepts ``doc`` and keeps every value; the record emits it back."""
    record = cls.from_dict(doc)
    assert record.to_dict() == {**defaults(cls), **doc}
    assert_emits_valid_documents(record)


@RECORDS
def test_boundary_documents_are_accepted(cls: type[Record]) -> None:
    for patch in BOUNDARIES[cls]:
        doc = example(cls, **patch)
        validator(cls).validate(doc)
        assert_accepted_as_is(cls, doc)


@RECORDS
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_documents_the_schema_accepts_are_accepted(cls: type[Record], data: st.DataObject) -> None:
    doc = data.draw(document_strategy(cls), label="document")
    assert validator(cls).is_valid(doc)
    assert_accepted_as_is(cls, doc)


# --- rejection ----------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "doc"), list(mutations()))
def test_mutations_are_rejected_by_both(cls: type[Record], doc: dict[str, Any]) -> None:
    assert not validator(cls).is_valid(doc), "the schema accepts it"
    with pytest.raises(InvalidEvent):
        cls.from_dict(doc)


# --- edge cases ---------------------------------------------------------------------------
# Documents on which records.py and the schema could easily disagree; each family must get
# the same verdict from both.

Case = tuple[type[Record], str, dict[str, Any]]  # record, label, document


def _null_optional_fields() -> Iterator[Case]:
    for cls in ALL_RECORDS:
        for name in sorted(set(cls.field_names()) - required_fields(cls)):
            yield cls, f"{name}: null", example(cls, **{name: None})


def _boolean_schema_version() -> Iterator[Case]:
    for cls in ALL_RECORDS:
        yield cls, "schema_version: true", example(cls, schema_version=True)


def _integral_floats() -> Iterator[Case]:
    for cls in ALL_RECORDS:
        for name, prop in schema(cls)["properties"].items():
            if prop.get("type") == "integer" and isinstance(EXAMPLES[cls].get(name), int):
                yield (
                    cls,
                    f"{name}: {EXAMPLES[cls][name]}.0",
                    example(cls, **{name: float(EXAMPLES[cls][name])}),
                )


def _huge_integers() -> Iterator[Case]:
    yield Decision, "propensity: 10**400", example(Decision, propensity=10**400)
    yield Decision, "features: [10**400]", example(Decision, features=[10**400])
    yield Decision, "scores: {a: 10**400}", example(Decision, scores={"a": 10**400})
    yield Reward, "quality: 10**400", example(Reward, quality=10**400)


EDGE_CASES = [
    pytest.param(_null_optional_fields, id="null for an optional field"),
    pytest.param(_boolean_schema_version, id="schema_version true"),
    pytest.param(_integral_floats, id="integral floats count as integers"),
    pytest.param(_huge_integers, id="ints beyond the float range"),
]


@pytest.mark.parametrize("cases", EDGE_CASES)
def test_edge_cases_agree(cases: Callable[[], Iterator[Case]]) -> None:
    disagreements = [
        f"{cls.__name__} {label}: schema {'accepts' if ok else 'rejects'}, from_dict {verdict}"
        for cls, label, doc in cases()
        if (ok := validator(cls).is_valid(doc)) != (verdict := record_verdict(cls, doc))
    ]
    assert not disagreements, "\n".join(disagreements)
