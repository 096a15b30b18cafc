"""Event records, one class per JSON Schema in ``schemas/``.

Plain dataclasses rather than ``faust.Record``: the backtester, the SDK and the
benchmarks use them without Faust, and parsing them by hand is several times
faster than a generic validator on the decision hot path. ``tests/test_contracts.py``
proves that each record and its schema accept and emit the same documents.

Timestamps are epoch milliseconds (``*_at`` fields), UTC.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

import orjson

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 64 * 1024

JSON = dict[str, Any]
R = TypeVar("R", bound="Record")


class InvalidEvent(ValueError):
    """An event that cannot be accepted; ``code`` is its dead-letter reason code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _fail(detail: str) -> InvalidEvent:
    return InvalidEvent("schema_violation", detail)


def _str(d: JSON, name: str, required: bool = True, max_len: int = 256) -> Any:
    if name not in d:
        if required:
            raise _fail(f"'{name}' is required")
        return None
    v = d[name]
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise _fail(f"'{name}' must be a non-empty string of at most {max_len} characters")
    return v


def _int(d: JSON, name: str, lo: int, hi: int, required: bool = True) -> Any:
    if name not in d:
        if required:
            raise _fail(f"'{name}' is required")
        return None
    v = d[name]
    if type(v) is float and v.is_integer():
        v = int(v)
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(f"'{name}' must be an integer in [{lo}, {hi}]")
    return v


def _finite(v: Any) -> bool:
    """A JSON number that is not NaN/±inf; ints are not converted (no OverflowError)."""
    return type(v) is int or (type(v) is float and math.isfinite(v))


def _num(d: JSON, name: str, lo: float, hi: float, required: bool = False) -> Any:
    if name not in d:
        if required:
            raise _fail(f"'{name}' is required")
        return None
    v = d[name]
    if not _finite(v):
        raise InvalidEvent("invalid_value", f"'{name}' must be a finite number")
    if not lo <= v <= hi:
        raise InvalidEvent("invalid_value", f"'{name}' must be in [{lo}, {hi}]")
    return float(v)


def _bool(d: JSON, name: str, default: bool | None = None) -> Any:
    v = d.get(name, default)
    if type(v) is not bool:
        raise _fail(f"'{name}' must be a boolean")
    return v


def _str_list(d: JSON, name: str, required: bool = True, max_items: int = 64) -> Any:
    if name not in d:
        if required:
            raise _fail(f"'{name}' is required")
        return None
    v = d[name]
    if (
        not isinstance(v, list)
        or not 1 <= len(v) <= max_items
        or not all(isinstance(x, str) and x for x in v)
        or len(set(v)) != len(v)
    ):
        raise _fail(f"'{name}' must be a list of 1..{max_items} distinct non-empty strings")
    return v


def _float_list(d: JSON, name: str, max_items: int = 1024) -> Any:
    if name not in d:
        return None
    v = d[name]
    if not isinstance(v, list) or len(v) > max_items or not all(_finite(x) for x in v):
        raise _fail(f"'{name}' must be a list of at most {max_items} finite numbers")
    return v


def _spec_features(d: JSON) -> Any:
    """The feature spec's lineage (name, version, content hash) and its values."""
    v = _dict(d, "spec_features")
    if v is None:
        return None
    if set(v) != {"name", "version", "hash", "values"}:
        raise _fail("'spec_features' must have exactly name, version, hash and values")
    _str(v, "name")
    _int(v, "version", 1, 2**31 - 1)
    _str(v, "hash", max_len=64)
    if _float_list(v, "values") is None:
        raise _fail("'spec_features.values' is required")
    return v


def _dict(d: JSON, name: str, required: bool = False) -> Any:
    if name not in d:
        if required:
            raise _fail(f"'{name}' is required")
        return None
    v = d[name]
    if not isinstance(v, dict):
        raise _fail(f"'{name}' must be an object")
    return v


_WORKFLOW_KEYS = frozenset({"id", "step", "state", "final"})


def _workflow(d: JSON) -> Any:
    """The optional ``workflow`` object: which multi-step episode a request
    (and its decision and outcome) belongs to, for RL policies."""
    w = _dict(d, "workflow")
    if w is None:
        return None
    extra = w.keys() - _WORKFLOW_KEYS
    if extra:
        raise _fail(f"'workflow' has unknown field(s) {sorted(extra)}")
    out: JSON = {"id": _str(w, "id"), "step": _int(w, "step", 0, 10_000)}
    if "state" in w:
        state = _float_list(w, "state", max_items=256)
        out["state"] = state
    if "final" in w:
        out["final"] = _bool(w, "final")
    return out


def _version(d: JSON) -> None:
    v = d.get("schema_version")
    if type(v) is bool or v != SCHEMA_VERSION:
        raise _fail(f"'schema_version' must be {SCHEMA_VERSION}, got {v!r}")


MAX_DEPTH = 64
"""Deepest nesting an event may have (the top-level object is level 1).
Deeper documents would reach Python's recursion limit in code that walks
them (``dataclasses.asdict``, ``repr``, ``orjson.dumps`` stops at 254)."""


def decode(raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> JSON:
    """Bytes → JSON object, or :class:`InvalidEvent` saying why not; any
    bytes end as one or the other.

    - ``oversize``: more than ``max_bytes`` bytes;
    - ``invalid_value``: otherwise valid JSON with ``NaN``, ``Infinity`` or
      a number beyond the float range (``1e400``);
    - ``malformed_json``: no value, not JSON (invalid UTF-8, a byte-order
      mark, a lone surrogate escape such as ``"\\ud800"``, a raw control
      character such as NUL inside a string, trailing bytes), not an
      object, or nested deeper than :data:`MAX_DEPTH`.

    An escaped NUL (``"\\u0000"``) is valid JSON and stays in the string.
    A repeated key keeps its last value, as orjson and Python's json do.
    """
    if raw is None:
        raise InvalidEvent("malformed_json", "empty message value")
    if len(raw) > max_bytes:
        raise InvalidEvent("oversize", f"{len(raw)} bytes exceeds the {max_bytes}-byte limit")
    try:
        d = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        # NaN / Infinity are not JSON, but some encoders emit them: name the real problem.
        if _has_non_finite(raw):
            raise InvalidEvent(
                "invalid_value", "NaN, Infinity or a number beyond the float range"
            ) from None
        raise InvalidEvent("malformed_json", str(exc)) from None
    if not isinstance(d, dict):
        raise InvalidEvent("malformed_json", "event must be a JSON object")
    # Counting brackets is cheap and bounds the depth; only documents with
    # many of them are walked.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(d):
        raise InvalidEvent("malformed_json", f"nested deeper than {MAX_DEPTH} levels")
    return d


def _too_deep(doc: JSON) -> bool:
    """Whether ``doc`` has containers below level :data:`MAX_DEPTH`
    (breadth-first: no recursion, whatever the depth)."""
    level: list[Any] = [doc]
    for _ in range(MAX_DEPTH):
        nested: list[Any] = []
        for v in level:
            for c in v.values() if type(v) is dict else v:
                if type(c) is dict or type(c) is list:
                    nested.append(c)
        if not nested:
            return False
        level = nested
    return True


def _has_non_finite(raw: bytes) -> bool:
    """Whether ``raw``, which orjson rejected, is JSON but for non-finite
    numbers. Python's json accepts those; it recurses, so a document too
    deep for it (orjson stops at depth 1024) is simply not that case."""
    found = False

    def number(s: str) -> float:
        nonlocal found
        v = float(s)
        found = found or not math.isfinite(v)
        return v

    try:
        json.loads(raw.decode("utf-8"), parse_constant=number, parse_float=number, parse_int=number)
    except (ValueError, RecursionError, AttributeError):
        return False
    return found


_FIELD_SETS: dict[type, frozenset[str]] = {}


@dataclass(slots=True)
class Record:
    """Base: ``to_dict``/``dumps`` omit ``None`` so optional fields stay absent."""

    schema_name: ClassVar[str] = ""

    def to_dict(self) -> JSON:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def loads(cls: type[R], raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> R:
        return cls.from_dict(decode(raw, max_bytes))

    @classmethod
    def from_dict(cls: type[R], d: JSON) -> R:  # pragma: no cover - overridden
        raise TypeError(cls.__name__)

    @classmethod
    def _check_extra(cls, d: JSON) -> None:
        allowed = _FIELD_SETS.get(cls)
        if allowed is None:
            allowed = _FIELD_SETS[cls] = frozenset(cls.field_names())
        if d.keys() <= allowed:
            return
        extra = set(d) - allowed
        if extra:
            raise _fail(f"unknown field(s) {sorted(extra)}")


@dataclass(slots=True)
class Request(Record):
    """A request for a decision (``llmopt.requests.v1``, key ``tenant_id``)."""

    schema_name: ClassVar[str] = "request"

    request_id: str
    tenant_id: str
    task_type: str
    created_at: int
    input_tokens: int = 0
    priority: int = 5
    policy_id: str | None = None
    candidates: list[str] | None = None
    reply_to: str | None = None
    metadata: JSON | None = None
    workflow: JSON | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: JSON) -> Request:
        _version(d)
        cls._check_extra(d)
        return cls(
            request_id=_str(d, "request_id"),
            tenant_id=_str(d, "tenant_id"),
            task_type=_str(d, "task_type", max_len=64),
            created_at=_int(d, "created_at", 0, 2**53),
            input_tokens=_int(d, "input_tokens", 0, 10_000_000, required=False) or 0,
            priority=_int(d, "priority", 0, 10, required=False) if "priority" in d else 5,
            policy_id=_str(d, "policy_id", required=False),
            candidates=_str_list(d, "candidates", required=False),
            reply_to=_str(d, "reply_to", required=False, max_len=249),
            metadata=_dict(d, "metadata"),
            workflow=_workflow(d) if "workflow" in d else None,
        )


@dataclass(slots=True)
class Decision(Record):
    """The arm chosen for a request, with everything off-policy evaluation needs
    (``llmopt.decisions.v1``, key ``request_id``)."""

    schema_name: ClassVar[str] = "decision"

    decision_id: str
    request_id: str
    tenant_id: str
    policy_id: str
    policy_version: int
    arm: str
    model: str
    parameters: JSON
    available_arms: list[str]
    propensity: float
    scores: dict[str, float]
    explored: bool
    fallback: bool
    requested_at: int
    decided_at: int
    features: list[float] | None = None
    spec_features: JSON | None = None
    workflow: JSON | None = None
    reward_token: str | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: JSON) -> Decision:
        _version(d)
        cls._check_extra(d)
        scores = _dict(d, "scores", required=True)
        if not all(_finite(v) for v in scores.values()):
            raise _fail("'scores' values must be finite numbers")
        return cls(
            decision_id=_str(d, "decision_id"),
            request_id=_str(d, "request_id"),
            tenant_id=_str(d, "tenant_id"),
            policy_id=_str(d, "policy_id"),
            policy_version=_int(d, "policy_version", 0, 2**53),
            arm=_str(d, "arm"),
            model=_str(d, "model"),
            parameters=_dict(d, "parameters", required=True),
            available_arms=_str_list(d, "available_arms"),
            propensity=_num(d, "propensity", 0.0, 1.0, required=True),
            scores=scores,
            explored=_bool(d, "explored"),
            fallback=_bool(d, "fallback"),
            requested_at=_int(d, "requested_at", 0, 2**53),
            decided_at=_int(d, "decided_at", 0, 2**53),
            features=_float_list(d, "features"),
            spec_features=_spec_features(d),
            workflow=_workflow(d) if "workflow" in d else None,
            reward_token=_str(d, "reward_token", required=False, max_len=128),
        )


@dataclass(slots=True)
class Reward(Record):
    """What happened after a decision (``llmopt.rewards.v1``, key ``request_id``),
    sent by the tenant that owns the request.

    Every component is optional; the policy's reward weights turn the present
    ones into one scalar in [0, 1].
    """

    schema_name: ClassVar[str] = "reward"

    request_id: str
    tenant_id: str
    sent_at: int
    quality: float | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    error: bool | None = None
    feedback: float | None = None
    reward_token: str | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: JSON) -> Reward:
        _version(d)
        cls._check_extra(d)
        error = d.get("error")
        if "error" in d and type(error) is not bool:
            raise _fail("'error' must be a boolean")
        return cls(
            request_id=_str(d, "request_id"),
            tenant_id=_str(d, "tenant_id"),
            sent_at=_int(d, "sent_at", 0, 2**53),
            quality=_num(d, "quality", 0.0, 1.0),
            cost_usd=_num(d, "cost_usd", 0.0, 1e6),
            latency_ms=_num(d, "latency_ms", 0.0, 1e9),
            error=error,
            feedback=_num(d, "feedback", -1.0, 1.0),
            reward_token=_str(d, "reward_token", required=False, max_len=128),
        )


@dataclass(slots=True)
class Outcome(Record):
    """A decision joined with its reward, or with the default reward when none
    came in time (``llmopt.outcomes.v1``, key ``policy_id``)."""

    schema_name: ClassVar[str] = "outcome"

    request_id: str
    tenant_id: str
    policy_id: str
    policy_version: int
    arm: str
    available_arms: list[str]
    propensity: float
    explored: bool
    reward: float
    defaulted: bool
    decided_at: int
    outcome_at: int
    components: JSON = field(default_factory=dict)
    features: list[float] | None = None
    spec_features: JSON | None = None
    workflow: JSON | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: JSON) -> Outcome:
        _version(d)
        cls._check_extra(d)
        return cls(
            request_id=_str(d, "request_id"),
            tenant_id=_str(d, "tenant_id"),
            policy_id=_str(d, "policy_id"),
            policy_version=_int(d, "policy_version", 0, 2**53),
            arm=_str(d, "arm"),
            available_arms=_str_list(d, "available_arms"),
            propensity=_num(d, "propensity", 0.0, 1.0, required=True),
            explored=_bool(d, "explored"),
            reward=_num(d, "reward", 0.0, 1.0, required=True),
            defaulted=_bool(d, "defaulted"),
            decided_at=_int(d, "decided_at", 0, 2**53),
            outcome_at=_int(d, "outcome_at", 0, 2**53),
            components=_dict(d, "components") or {},
            features=_float_list(d, "features"),
            spec_features=_spec_features(d),
            workflow=_workflow(d) if "workflow" in d else None,
        )


@dataclass(slots=True)
class PolicySnapshot(Record):
    """A policy's state at one version (``llmopt.policy-snapshots.v1``,
    compacted, key ``policy_id``). ``state`` is the policy's own versioned
    snapshot, base64-encoded; ``arm_stats`` is a readable summary."""

    schema_name: ClassVar[str] = "policy_snapshot"

    policy_id: str
    version: int
    algorithm: str
    state: str
    updates: int
    arm_stats: dict[str, JSON]
    created_at: int
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: JSON) -> PolicySnapshot:
        _version(d)
        cls._check_extra(d)
        return cls(
            policy_id=_str(d, "policy_id"),
            version=_int(d, "version", 0, 2**53),
            algorithm=_str(d, "algorithm", max_len=64),
            state=_str(d, "state", max_len=16 * 1024 * 1024),
            updates=_int(d, "updates", 0, 2**53),
            arm_stats=_dict(d, "arm_stats", required=True),
            created_at=_int(d, "created_at", 0, 2**53),
        )


DEAD_LETTER_REASONS = (
    "malformed_json",
    "schema_violation",
    "oversize",
    "invalid_value",
    "unknown_policy",
    "unknown_arm",
    "unknown_request",
    "expired_request",
    "duplicate_reward",
    "internal_error",
    "invalid_reply_to",
    "unauthorized_policy",
    "tenant_mismatch",
    "invalid_reward_token",
)


@dataclass(slots=True)
class DeadLetter(Record):
    """An event that could not be used, with where it came from and why
    (``llmopt.dead-letter.v1``, key = the original key).

    The original value and key are kept whole up to a size limit, beyond it
    only their first bytes (``truncated``), with the whole value's size and
    SHA-256: a dead letter stays far below the producer's message limit
    (see :mod:`app.dead_letter`)."""

    schema_name: ClassVar[str] = "dead_letter"

    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    detail: str
    original_value_b64: str
    failed_at: int
    original_key_b64: str | None = None
    original_size: int | None = None
    original_sha256: str | None = None
    truncated: bool | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: JSON) -> DeadLetter:
        _version(d)
        cls._check_extra(d)
        reason = _str(d, "reason", max_len=64)
        if reason not in DEAD_LETTER_REASONS:
            raise _fail(f"'reason' must be one of {DEAD_LETTER_REASONS}")
        sha = d.get("original_sha256")
        if "original_sha256" in d and (type(sha) is not str or len(sha) != 64):
            raise _fail("'original_sha256' must be a string of 64 characters")
        return cls(
            source_topic=_str(d, "source_topic"),
            source_partition=_int(d, "source_partition", -1, 2**31 - 1),
            source_offset=_int(d, "source_offset", -1, 2**63 - 1),
            reason=reason,
            detail=_str(d, "detail", max_len=4096),
            original_value_b64=d["original_value_b64"]
            if isinstance(d.get("original_value_b64"), str)
            else _str(d, "original_value_b64"),
            failed_at=_int(d, "failed_at", 0, 2**53),
            original_key_b64=d.get("original_key_b64")
            if isinstance(d.get("original_key_b64"), str)
            else _str(d, "original_key_b64", required=False),
            original_size=_int(d, "original_size", 0, 2**53, required=False),
            original_sha256=sha,
            truncated=_bool(d, "truncated") if "truncated" in d else None,
        )


METRICS_SOURCES = ("worker", "simulator")
MAX_METRIC_SAMPLES = 20_000


def _samples(d: JSON) -> list[JSON]:
    v = d.get("samples")
    if not isinstance(v, list) or len(v) > MAX_METRIC_SAMPLES:
        raise _fail(f"'samples' must be a list of at most {MAX_METRIC_SAMPLES} samples")
    for s in v:
        if not isinstance(s, dict) or s.keys() != {"name", "labels", "value"}:
            raise _fail("each sample must be an object of exactly name, labels and value")
        _str(s, "name", max_len=200)
        labels = s["labels"]
        if not isinstance(labels, dict) or not all(
            isinstance(x, str) and len(x) <= 256 for x in labels.values()
        ):
            raise _fail("sample 'labels' must map names to strings of at most 256 characters")
        if not _finite(s["value"]):
            raise InvalidEvent("invalid_value", "sample 'value' must be a finite number")
    return v


@dataclass(slots=True)
class MetricsSnapshot(Record):
    """One process's Prometheus metrics at one moment, under their Prometheus
    names (``llmopt.metrics.v1``, key ``worker_id``)."""

    schema_name: ClassVar[str] = "metrics"

    snapshot_id: str
    source: str
    worker_id: str
    created_at: int
    interval_ms: int
    samples: list[JSON]
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: JSON) -> MetricsSnapshot:
        _version(d)
        cls._check_extra(d)
        if d.get("source") not in METRICS_SOURCES or type(d.get("source")) is not str:
            raise _fail(f"'source' must be one of {METRICS_SOURCES}")
        return cls(
            snapshot_id=_str(d, "snapshot_id"),
            source=d["source"],
            worker_id=_str(d, "worker_id"),
            created_at=_int(d, "created_at", 0, 2**53),
            interval_ms=_int(d, "interval_ms", 1, 86_400_000),
            samples=_samples(d),
        )


DRIFT_KINDS = ("drift", "input_drift", "anomaly", "adaptation")
DIRECTIONS = ("up", "down")
ADAPTATION_ACTIONS = ("reset", "discount", "explore", "none")


def _real(d: JSON, name: str, required: bool = False) -> Any:
    """Any finite JSON number, kept as parsed (an int beyond 2**53 stays exact)."""
    if name not in d:
        if required:
            raise _fail(f"'{name}' is required")
        return None
    v = d[name]
    if not _finite(v):
        raise InvalidEvent("invalid_value", f"'{name}' must be a finite number")
    return v


def _choice(d: JSON, name: str, allowed: tuple[str, ...], required: bool = True) -> Any:
    if name not in d and not required:
        return None
    v = d.get(name)
    if type(v) is not str or v not in allowed:
        raise _fail(f"'{name}' must be one of {allowed}")
    return v


@dataclass(slots=True)
class DriftEvent(Record):
    """A drift, input drift or anomaly seen on a (policy, arm, signal) stream,
    or the learner's adaptation to a drift (``llmopt.drift.v1``, key
    ``policy_id``, co-partitioned with the outcomes)."""

    schema_name: ClassVar[str] = "drift"

    event_id: str
    kind: str
    policy_id: str
    signal: str
    detector: str
    observed_at: int
    created_at: int
    arm: str | None = None
    samples: int | None = None
    value: float | None = None
    score: float | None = None
    threshold: float | None = None
    mean_before: float | None = None
    mean_after: float | None = None
    direction: str | None = None
    action: str | None = None
    applied: str | None = None
    factor: float | None = None
    cause_id: str | None = None
    policy_version: int | None = None
    detail: str | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: JSON) -> DriftEvent:
        _version(d)
        cls._check_extra(d)
        return cls(
            event_id=_str(d, "event_id"),
            kind=_choice(d, "kind", DRIFT_KINDS),
            policy_id=_str(d, "policy_id"),
            signal=_str(d, "signal", max_len=64),
            detector=_str(d, "detector", max_len=64),
            observed_at=_int(d, "observed_at", 0, 2**53),
            created_at=_int(d, "created_at", 0, 2**53),
            arm=_str(d, "arm", required=False),
            samples=_int(d, "samples", 0, 2**53, required=False),
            value=_real(d, "value"),
            score=_real(d, "score"),
            threshold=_real(d, "threshold"),
            mean_before=_real(d, "mean_before"),
            mean_after=_real(d, "mean_after"),
            direction=_choice(d, "direction", DIRECTIONS, required=False),
            action=_choice(d, "action", ADAPTATION_ACTIONS, required=False),
            applied=_str(d, "applied", required=False, max_len=64),
            factor=_num(d, "factor", 0.0, 1.0),
            cause_id=_str(d, "cause_id", required=False),
            policy_version=_int(d, "policy_version", 0, 2**53, required=False),
            detail=_str(d, "detail", required=False, max_len=1024),
        )


ALERT_STATUSES = ("firing", "resolved")
ALERT_SEVERITIES = ("info", "warning", "critical")
ALERT_COMPARISONS = (">", ">=", "<", "<=")


@dataclass(slots=True)
class AlertEvent(Record):
    """An alert rule's state change for a policy (or one of its arms):
    ``firing``, then ``resolved`` under the same ``alert_id``
    (``llmopt.alerts.v1``, key ``policy_id``)."""

    schema_name: ClassVar[str] = "alert"

    alert_id: str
    rule: str
    status: str
    severity: str
    policy_id: str
    metric: str
    comparison: str
    threshold: float
    value: float
    window_seconds: float
    samples: int
    started_at: int
    created_at: int
    arm: str | None = None
    resolved_at: int | None = None
    summary: str | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, d: JSON) -> AlertEvent:
        _version(d)
        cls._check_extra(d)
        return cls(
            alert_id=_str(d, "alert_id"),
            rule=_str(d, "rule", max_len=128),
            status=_choice(d, "status", ALERT_STATUSES),
            severity=_choice(d, "severity", ALERT_SEVERITIES),
            policy_id=_str(d, "policy_id"),
            metric=_str(d, "metric", max_len=64),
            comparison=_choice(d, "comparison", ALERT_COMPARISONS),
            threshold=_real(d, "threshold", required=True),
            value=_real(d, "value", required=True),
            window_seconds=_num(d, "window_seconds", 0.0, 2_592_000.0, required=True),
            samples=_int(d, "samples", 0, 2**53),
            started_at=_int(d, "started_at", 0, 2**53),
            created_at=_int(d, "created_at", 0, 2**53),
            arm=_str(d, "arm", required=False),
            resolved_at=_int(d, "resolved_at", 0, 2**53, required=False),
            summary=_str(d, "summary", required=False, max_len=1024),
        )


ALL_RECORDS: tuple[type[Record], ...] = (
    Request,
    Decision,
    Reward,
    Outcome,
    PolicySnapshot,
    DeadLetter,
    MetricsSnapshot,
    DriftEvent,
    AlertEvent,
)
