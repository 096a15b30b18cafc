"""Event records, one class per JSON Schema in ``schemas/``.

Plain dataclasses rather than ``faust.Record``: the backtester, the SDK and the
benchmarks use them without Faust. Each field states its checks once, in its
metadata (:class:`FieldSpec`: kind, range, length, default); from them each
record gets a ``from_dict`` compiled when this module is imported, several
times faster than a generic validator on the decision hot path, and
:func:`schema_properties`, the JSON Schema they amount to.
``tests/test_contracts.py`` proves that each record and its schema file
accept and emit the same documents, and that the file states the same checks.

Timestamps are epoch milliseconds (``*_at`` fields), UTC.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

import orjson

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 64 * 1024
# A request's deadline_ms is at most an hour: a decision later than that is
# no decision at all.
MAX_DEADLINE_MS = 3_600_000
# Why a decision is a fallback: the request was past its deadline when the
# worker decided it; no arm met the request's cost/latency limits (the one
# that overshoots least); no decision reached the client in time (the SDK's own).
FALLBACK_REASONS = ("deadline", "constraints", "no_answer")

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


def _finite(v: Any) -> bool:
    """A JSON number that is not NaN/±inf; ints are not converted (no OverflowError)."""
    return type(v) is int or (type(v) is float and math.isfinite(v))


# --- field declarations -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What one field of an event may hold, in the field's metadata under
    ``"spec"`` (made by :func:`text`, :func:`integer`, ...). Whether the field
    is required, and its default, are the dataclass field's own."""

    kind: str
    lo: float | None = None  # integer, number: inclusive range
    hi: float | None = None
    min_len: int = 1  # string: characters
    max_len: int | None = 256  # string: characters; strings, numbers: items
    allowed: tuple[str, ...] | None = None  # string, choice
    encoding: str | None = None  # string: contentEncoding
    message: str | None = None  # string: the rejection's wording, when not the usual one
    finite_values: bool = False  # object: every value a finite number
    fields: tuple[tuple[str, FieldSpec, bool], ...] = ()  # nested: (name, spec, required)
    exact: bool = False  # nested: all fields present; the object is kept as it came
    decode: Callable[[JSON], Any] | None = None  # custom
    schema: JSON | None = None  # custom: its JSON Schema (without descriptions)
    # Checked before the other fields: a document with several faults is
    # rejected for the same one as ever.
    first: bool = False


Meta = Mapping[str, FieldSpec]


def _meta(spec: FieldSpec) -> Meta:
    return {"spec": spec}


def text(
    max_len: int | None = 256,
    *,
    min_len: int = 1,
    allowed: tuple[str, ...] | None = None,
    encoding: str | None = None,
    message: str | None = None,
    first: bool = False,
) -> Meta:
    """A string of ``min_len``..``max_len`` characters; ``allowed``: one of
    these, checked after the length."""
    return _meta(
        FieldSpec(
            "string",
            min_len=min_len,
            max_len=max_len,
            allowed=allowed,
            encoding=encoding,
            message=message,
            first=first,
        )
    )


def integer(lo: int, hi: int) -> Meta:
    """An integer in [lo, hi]; an integral float (``3.0``) counts as one, as in JSON Schema."""
    return _meta(FieldSpec("integer", lo=lo, hi=hi))


def number(lo: float, hi: float) -> Meta:
    """A finite number in [lo, hi], decoded as a float; out of range is ``invalid_value``."""
    return _meta(FieldSpec("number", lo=float(lo), hi=float(hi)))


def real() -> Meta:
    """Any finite number, kept as parsed (an int beyond 2**53 stays exact)."""
    return _meta(FieldSpec("real"))


def boolean(first: bool = False) -> Meta:
    return _meta(FieldSpec("boolean", first=first))


def choice(allowed: tuple[str, ...], first: bool = False) -> Meta:
    return _meta(FieldSpec("choice", allowed=allowed, first=first))


def strings(max_items: int = 64) -> Meta:
    """A list of 1..max_items distinct non-empty strings."""
    return _meta(FieldSpec("strings", max_len=max_items))


def numbers(max_items: int = 1024) -> Meta:
    """A list of at most max_items finite numbers."""
    return _meta(FieldSpec("numbers", max_len=max_items))


def obj(finite_values: bool = False, first: bool = False) -> Meta:
    """A JSON object, free-form unless ``finite_values``."""
    return _meta(FieldSpec("object", finite_values=finite_values, first=first))


def nested(
    required: Mapping[str, Meta], optional: Mapping[str, Meta] = {}, *, exact: bool = False
) -> Meta:
    """An object of these fields and no others. ``exact``: all of them, and
    the object is kept as it came; otherwise it is rebuilt, fields in this order."""
    subs = [(k, m["spec"], True) for k, m in required.items()]
    subs += [(k, m["spec"], False) for k, m in optional.items()]
    return _meta(FieldSpec("nested", fields=tuple(subs), exact=exact))


def custom(decode: Callable[[JSON], Any], schema: JSON) -> Meta:
    """Checked by ``decode(document)``, stated as ``schema`` beside it."""
    return _meta(FieldSpec("custom", decode=decode, schema=schema))


TIMESTAMP = integer(0, 2**53)
WORKFLOW = nested(
    {"id": text(), "step": integer(0, 10_000)},
    {"state": numbers(256), "final": boolean()},
)
"""Which multi-step episode a request (and its decision and outcome) belongs
to, for RL policies."""
SPEC_FEATURES = nested(
    {"name": text(), "version": integer(1, 2**31 - 1), "hash": text(64), "values": numbers()},
    exact=True,
)
"""The feature spec's lineage (name, version, content hash) and its values."""
REWARD_TERMS = nested(
    {
        "weights": nested(
            {c: number(0, 1e12) for c in ("quality", "cost", "latency", "feedback")}, exact=True
        )
    },
    {"function": text(), "function_error": text(512)},
)
"""How an outcome's reward was made: the weights in effect, the reward function."""

TRADEOFF_WEIGHTS = ("quality", "cost", "latency")
MAX_TRADEOFF_WEIGHT = 1e6


def _tradeoff(d: JSON) -> Any:
    """A request's trade-off as it came: a preset's name, or weights. Which
    presets exist and whether the weights make a trade-off (not all zero) is
    the decider's to check (app/policies/tradeoff.py): ``invalid_value``."""
    v = d["tradeoff"]
    if isinstance(v, str):
        if not 1 <= len(v) <= 64:
            raise _fail("'tradeoff' must be a preset name of at most 64 characters, or weights")
        return v
    if not isinstance(v, dict) or not v.keys() <= set(TRADEOFF_WEIGHTS):
        raise _fail(
            "'tradeoff' must be a preset name or an object of quality, cost and latency weights"
        )
    for key, w in v.items():
        if not _finite(w) or not 0 <= w <= MAX_TRADEOFF_WEIGHT:
            raise InvalidEvent(
                "invalid_value",
                f"'tradeoff.{key}' must be a number in [0, {MAX_TRADEOFF_WEIGHT:g}]",
            )
    return v


TRADEOFF = custom(
    _tradeoff,
    {
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": 64},
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    k: {"type": "number", "minimum": 0, "maximum": MAX_TRADEOFF_WEIGHT}
                    for k in TRADEOFF_WEIGHTS
                },
            },
        ]
    },
)
"""A request's trade-off: a preset's name, or weights of the objectives."""
TRADEOFF_USED = nested(
    {"weights": nested({k: number(0, 1) for k in TRADEOFF_WEIGHTS}, exact=True)},
    {"preset": text(64)},
)
"""The trade-off a decision was made for: its weights, normalised to sum to
1, and the preset that named them."""


# --- decoding -----------------------------------------------------------------------------

Check = Callable[[JSON], Any]


def _checker(name: str, s: FieldSpec) -> Check:
    """The function that takes field ``name`` from a document (where the
    compiled ``from_dict`` found it, or must have), checked, or raises."""
    required = f"'{name}' is required"
    kind = s.kind
    if kind == "string":
        lo, hi, allowed = s.min_len, sys.maxsize if s.max_len is None else s.max_len, s.allowed
        if s.message is not None:
            bad = f"'{name}' {s.message}"
        elif lo == hi:
            bad = f"'{name}' must be a string of {hi} characters"
        else:
            bad = f"'{name}' must be a non-empty string of at most {s.max_len} characters"
        not_allowed = f"'{name}' must be one of {allowed}"

        def check_string(d: JSON) -> Any:
            if name not in d:
                raise _fail(required)
            v = d[name]
            if not isinstance(v, str) or not lo <= len(v) <= hi:
                raise _fail(bad)
            if allowed is not None and v not in allowed:
                raise _fail(not_allowed)
            return v

        return check_string
    if kind == "integer":
        assert s.lo is not None and s.hi is not None
        ilo, ihi = s.lo, s.hi
        bad = f"'{name}' must be an integer in [{ilo}, {ihi}]"

        def check_integer(d: JSON) -> Any:
            if name not in d:
                raise _fail(required)
            v = d[name]
            if type(v) is float and v.is_integer():
                v = int(v)
            if type(v) is not int or not ilo <= v <= ihi:
                raise _fail(bad)
            return v

        return check_integer
    if kind in ("number", "real"):
        as_float = kind == "number"
        nlo = -math.inf if s.lo is None else s.lo
        nhi = math.inf if s.hi is None else s.hi
        not_finite = f"'{name}' must be a finite number"
        out_of_range = f"'{name}' must be in [{nlo}, {nhi}]"

        def check_number(d: JSON) -> Any:
            if name not in d:
                raise _fail(required)
            v = d[name]
            if not _finite(v):
                raise InvalidEvent("invalid_value", not_finite)
            if not as_float:
                return v
            if not nlo <= v <= nhi:
                raise InvalidEvent("invalid_value", out_of_range)
            return float(v)

        return check_number
    if kind in ("boolean", "choice"):
        options = s.allowed
        choices = options or ()
        bad = (
            f"'{name}' must be a boolean"
            if options is None
            else f"'{name}' must be one of {options}"
        )

        # A missing required boolean or choice has always been reported as a wrong value.
        def check_boolean(d: JSON) -> Any:
            v = d.get(name)
            if type(v) is not bool:
                raise _fail(bad)
            return v

        def check_choice(d: JSON) -> Any:
            v = d.get(name)
            if type(v) is not str or v not in choices:
                raise _fail(bad)
            return v

        return check_boolean if options is None else check_choice
    if kind in ("strings", "numbers"):
        n = s.max_len or 0
        if kind == "strings":
            bad = f"'{name}' must be a list of 1..{n} distinct non-empty strings"
        else:
            bad = f"'{name}' must be a list of at most {n} finite numbers"

        def string_list(d: JSON) -> Any:
            if name not in d:
                raise _fail(required)
            v = d[name]
            if (
                not isinstance(v, list)
                or not 1 <= len(v) <= n
                or not all(isinstance(x, str) and x for x in v)
                or len(set(v)) != len(v)
            ):
                raise _fail(bad)
            return v

        def number_list(d: JSON) -> Any:
            if name not in d:
                raise _fail(required)
            v = d[name]
            if not isinstance(v, list) or len(v) > n or not all(_finite(x) for x in v):
                raise _fail(bad)
            return v

        return string_list if kind == "strings" else number_list
    if kind in ("object", "nested"):
        return _object_checker(name, s, required)
    if kind == "custom" and s.decode is not None:
        return s.decode
    raise TypeError(f"field {name!r}: unknown kind {kind!r}")


def _object_checker(name: str, s: FieldSpec, required: str) -> Check:
    not_object = f"'{name}' must be an object"
    subs = [(k, _checker(k, sub), req) for k, sub, req in s.fields]
    keys = frozenset(k for k, _, _ in subs)
    names = [k for k, _, _ in subs]
    not_exact = f"'{name}' must have exactly " + " and ".join([", ".join(names[:-1]), *names[-1:]])
    finite_values = s.finite_values

    def free(d: JSON) -> Any:
        if name not in d:
            raise _fail(required)
        v = d[name]
        if not isinstance(v, dict):
            raise _fail(not_object)
        if finite_values and not all(_finite(x) for x in v.values()):
            raise _fail(f"'{name}' values must be finite numbers")
        return v

    def exact(d: JSON) -> Any:
        v = free(d)
        if v.keys() != keys:
            raise _fail(not_exact)
        for _, check, _ in subs:
            check(v)
        return v

    def rebuilt(d: JSON) -> Any:
        v = free(d)
        extra = v.keys() - keys
        if extra:
            raise _fail(f"'{name}' has unknown field(s) {sorted(extra)}")
        return {k: check(v) for k, check, req in subs if req or k in v}

    if s.kind == "object":
        return free
    return exact if s.exact else rebuilt


def _version(d: JSON) -> None:
    v = d.get("schema_version")
    if type(v) is bool or v != SCHEMA_VERSION:
        raise _fail(f"'schema_version' must be {SCHEMA_VERSION}, got {v!r}")


def _reject_extra(d: JSON, allowed: frozenset[str]) -> None:
    extra = set(d) - allowed
    if extra:
        raise _fail(f"unknown field(s) {sorted(extra)}")


def _compile_from_dict(cls: type[Record]) -> Callable[[JSON], Any]:
    """``cls.from_dict``, as straight-line code over the fields' checkers
    (as :mod:`dataclasses` compiles ``__init__``): interpreting the
    declarations on every call would slow the decision path."""
    env: dict[str, Any] = {
        "cls": cls,
        "_version": _version,
        "_reject_extra": _reject_extra,
        "_fail": _fail,
        "allowed": frozenset(cls.field_names()),
    }
    declared = list(fields(cls))
    if declared.pop().name != "schema_version":  # the positional arguments below
        raise TypeError(f"{cls.__name__}: schema_version must be the last field")
    order = [f for f in declared if spec_of(f).first] + [
        f for f in declared if not spec_of(f).first
    ]
    body = [
        "    _version(d)",
        "    if not d.keys() <= allowed:",
        "        _reject_extra(d, allowed)",
    ]
    for i, f in enumerate(declared):
        env[f"check_{i}"] = _checker(f.name, spec_of(f))
    for f in order:
        i = declared.index(f)
        if f.default is MISSING and f.default_factory is MISSING:
            body.append(f"    a{i} = check_{i}(d)")
        elif f.default_factory is not MISSING:
            env[f"factory_{i}"] = f.default_factory
            body.append(f"    a{i} = check_{i}(d) if {f.name!r} in d else factory_{i}()")
        else:
            env[f"default_{i}"] = f.default
            body.append(f"    a{i} = check_{i}(d) if {f.name!r} in d else default_{i}")
    for name, (other, value) in cls.required_when.items():
        msg = f"'{name}' is required when '{other}' is {value!r}"
        body.append(f"    if d.get({other!r}) == {value!r} and {name!r} not in d:")
        body.append(f"        raise _fail({msg!r})")
    args = ", ".join(f"a{i}" for i in range(len(declared)))
    source = "\n".join(["def from_dict(d):", *body, f"    return cls({args})"])
    exec(compile(source, f"<{cls.__name__}.from_dict>", "exec"), env)
    fn: Callable[[JSON], Any] = env["from_dict"]
    return fn


def spec_of(f: Any) -> FieldSpec:
    """The :class:`FieldSpec` of a dataclass field of a record."""
    spec: FieldSpec = f.metadata["spec"]
    return spec


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


_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _names(cls: type[Any]) -> tuple[str, ...]:
    """A record class's field names (looked up once per class)."""
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(slots=True)
class Record:
    """Base: ``to_dict``/``dumps`` omit ``None`` so optional fields stay absent."""

    schema_name: ClassVar[str] = ""
    # A field required when another has a value: {field: (other field, value)}.
    required_when: ClassVar[dict[str, tuple[str, str]]] = {}

    def to_dict(self) -> JSON:
        # Shallow, unlike dataclasses.asdict: every field holds JSON values
        # the record owns, and asdict's deep copy cost the join more than
        # decoding the record did.
        return {k: v for k in _names(type(self)) if (v := getattr(self, k)) is not None}

    def dumps(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def loads(cls: type[R], raw: bytes | None, max_bytes: int = MAX_EVENT_BYTES) -> R:
        return cls.from_dict(decode(raw, max_bytes))

    @classmethod
    def from_dict(cls: type[R], d: JSON) -> R:  # pragma: no cover - compiled per record
        raise TypeError(cls.__name__)


@dataclass(slots=True)
class Request(Record):
    """A request for a decision (``llmopt.requests.v1``, key ``tenant_id``)."""

    schema_name: ClassVar[str] = "request"

    request_id: str = field(metadata=text())
    tenant_id: str = field(metadata=text())
    task_type: str = field(metadata=text(64))
    created_at: int = field(metadata=TIMESTAMP)
    input_tokens: int = field(default=0, metadata=integer(0, 10_000_000))
    priority: int = field(default=5, metadata=integer(0, 10))
    policy_id: str | None = field(default=None, metadata=text())
    candidates: list[str] | None = field(default=None, metadata=strings())
    reply_to: str | None = field(default=None, metadata=text(249))  # a Kafka topic name
    metadata: JSON | None = field(default=None, metadata=obj())
    workflow: JSON | None = field(default=None, metadata=WORKFLOW)
    # Ask for the decision's explanation (docs/explanations.md), whatever the
    # policy's own ``explain`` setting.
    explain: bool | None = field(default=None, metadata=boolean())
    # Milliseconds after created_at by which the decision is still useful;
    # a worker that decides later serves the policy's fallback arm
    # (LLMOPT_DECISION_DEADLINE_MS when absent).
    deadline_ms: int | None = field(default=None, metadata=integer(1, MAX_DEADLINE_MS))
    # Decide for this trade-off of quality, cost and latency (a preset or
    # weights; docs/tradeoffs.md) instead of the policy's own choice.
    tradeoff: str | JSON | None = field(default=None, metadata=TRADEOFF)
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class Decision(Record):
    """The arm chosen for a request, with everything off-policy evaluation needs
    (``llmopt.decisions.v1``, key ``request_id``)."""

    schema_name: ClassVar[str] = "decision"

    decision_id: str = field(metadata=text())
    request_id: str = field(metadata=text())
    tenant_id: str = field(metadata=text())
    policy_id: str = field(metadata=text())
    policy_version: int = field(metadata=TIMESTAMP)
    arm: str = field(metadata=text())
    model: str = field(metadata=text())
    parameters: JSON = field(metadata=obj())
    available_arms: list[str] = field(metadata=strings())
    propensity: float = field(metadata=number(0, 1))
    scores: dict[str, float] = field(metadata=obj(finite_values=True, first=True))
    explored: bool = field(metadata=boolean())
    fallback: bool = field(metadata=boolean())
    requested_at: int = field(metadata=TIMESTAMP)
    decided_at: int = field(metadata=TIMESTAMP)
    features: list[float] | None = field(default=None, metadata=numbers())
    spec_features: JSON | None = field(default=None, metadata=SPEC_FEATURES)
    workflow: JSON | None = field(default=None, metadata=WORKFLOW)
    reward_token: str | None = field(default=None, metadata=text(128))
    # The running experiment the request fell in and its variant, whose
    # policy (or fixed arm) decided (docs/experiments.md#live-experiments).
    experiment_id: str | None = field(default=None, metadata=text(128))
    variant: str | None = field(default=None, metadata=text(64))
    # Why this arm, when the request or the policy asked (app/explain.py,
    # docs/explanations.md).
    explanation: JSON | None = field(default=None, metadata=obj())
    # Why fallback is true (FALLBACK_REASONS); absent when it is false.
    fallback_reason: str | None = field(default=None, metadata=choice(FALLBACK_REASONS))
    # The request's task type: the learner keeps each arm's objectives per
    # task type (docs/tradeoffs.md).
    task_type: str | None = field(default=None, metadata=text(64))
    # The trade-off the decision was made for, when the request carried one.
    tradeoff: JSON | None = field(default=None, metadata=TRADEOFF_USED)
    schema_version: int = SCHEMA_VERSION


def decision_doc(
    *,
    decision_id: str,
    request_id: str,
    tenant_id: str,
    policy_id: str,
    policy_version: int,
    arm: str,
    model: str,
    parameters: JSON,
    available_arms: list[str],
    propensity: float,
    scores: JSON,
    explored: bool,
    fallback: bool,
    requested_at: int,
    decided_at: int,
) -> JSON:
    """A :class:`Decision`'s required fields as the document ``to_dict``
    would emit, built as a plain dict: constructing the dataclass and
    ``asdict`` would cost more than the whole selection on the decision path.
    ``tests/test_records.py`` checks it against the declaration."""
    return {
        "decision_id": decision_id,
        "request_id": request_id,
        "tenant_id": tenant_id,
        "policy_id": policy_id,
        "policy_version": policy_version,
        "arm": arm,
        "model": model,
        "parameters": parameters,
        "available_arms": available_arms,
        "propensity": propensity,
        "scores": scores,
        "explored": explored,
        "fallback": fallback,
        "requested_at": requested_at,
        "decided_at": decided_at,
        "schema_version": SCHEMA_VERSION,
    }


@dataclass(slots=True)
class Reward(Record):
    """What happened after a decision (``llmopt.rewards.v1``, key ``request_id``),
    sent by the tenant that owns the request.

    Every component is optional; the policy's reward weights turn the present
    ones into one scalar in [0, 1].
    """

    schema_name: ClassVar[str] = "reward"

    request_id: str = field(metadata=text())
    tenant_id: str = field(metadata=text())
    sent_at: int = field(metadata=TIMESTAMP)
    quality: float | None = field(default=None, metadata=number(0, 1))
    cost_usd: float | None = field(default=None, metadata=number(0, 1e6))
    latency_ms: float | None = field(default=None, metadata=number(0, 1e9))
    error: bool | None = field(default=None, metadata=boolean(first=True))
    feedback: float | None = field(default=None, metadata=number(-1, 1))
    reward_token: str | None = field(default=None, metadata=text(128))
    schema_version: int = SCHEMA_VERSION


REWARD_COMPONENTS = ("quality", "cost_usd", "latency_ms", "error", "feedback")
"""The fields of a :class:`Reward` that its outcome keeps (``components``)."""


@dataclass(slots=True)
class Outcome(Record):
    """A decision joined with its reward, or with the default reward when none
    came in time (``llmopt.outcomes.v1``, key ``policy_id``)."""

    schema_name: ClassVar[str] = "outcome"

    request_id: str = field(metadata=text())
    tenant_id: str = field(metadata=text())
    policy_id: str = field(metadata=text())
    policy_version: int = field(metadata=TIMESTAMP)
    arm: str = field(metadata=text())
    available_arms: list[str] = field(metadata=strings())
    propensity: float = field(metadata=number(0, 1))
    explored: bool = field(metadata=boolean())
    reward: float = field(metadata=number(0, 1))
    defaulted: bool = field(metadata=boolean())
    decided_at: int = field(metadata=TIMESTAMP)
    outcome_at: int = field(metadata=TIMESTAMP)
    components: JSON = field(default_factory=dict, metadata=obj())
    features: list[float] | None = field(default=None, metadata=numbers())
    spec_features: JSON | None = field(default=None, metadata=SPEC_FEATURES)
    workflow: JSON | None = field(default=None, metadata=WORKFLOW)
    # The joined reward's sent_at (absent when defaulted): where the
    # reward→decision lag is counted from.
    rewarded_at: int | None = field(default=None, metadata=TIMESTAMP)
    # How ``reward`` was made when not by the fixed weights alone: the
    # weights in effect at the decision's time, and the reward function and
    # its error when one is named (``RewardSpec.score`` in app/rewards.py).
    reward_terms: JSON | None = field(default=None, metadata=REWARD_TERMS)
    # The call parameters the decision served (a tuning policy's own, or the
    # arm's configured ones): what the tuner learns from, and backtests group by.
    parameters: JSON | None = field(default=None, metadata=obj())
    # The decision's experiment and variant, copied by the join.
    experiment_id: str | None = field(default=None, metadata=text(128))
    variant: str | None = field(default=None, metadata=text(64))
    # The decision's task type, copied by the join.
    task_type: str | None = field(default=None, metadata=text(64))
    schema_version: int = SCHEMA_VERSION


def outcome_doc(
    *,
    request_id: str,
    tenant_id: str,
    policy_id: str,
    policy_version: int,
    arm: str,
    available_arms: list[str],
    propensity: float,
    explored: bool,
    reward: float,
    defaulted: bool,
    decided_at: int,
    outcome_at: int,
    components: JSON,
) -> JSON:
    """An :class:`Outcome`'s required fields and components as the document
    ``to_dict`` would emit, built as a plain dict (one per decision, on the
    join's path). ``tests/test_records.py`` checks it against the declaration."""
    return {
        "request_id": request_id,
        "tenant_id": tenant_id,
        "policy_id": policy_id,
        "policy_version": policy_version,
        "arm": arm,
        "available_arms": available_arms,
        "propensity": propensity,
        "explored": explored,
        "reward": reward,
        "defaulted": defaulted,
        "decided_at": decided_at,
        "outcome_at": outcome_at,
        "components": components,
        "schema_version": SCHEMA_VERSION,
    }


@dataclass(slots=True)
class PolicySnapshot(Record):
    """A policy's state at one version (``llmopt.policy-snapshots.v1``,
    compacted, key ``policy_id``). ``state`` is the policy's own versioned
    snapshot, base64-encoded; ``arm_stats`` is a readable summary."""

    schema_name: ClassVar[str] = "policy_snapshot"

    policy_id: str = field(metadata=text())
    version: int = field(metadata=TIMESTAMP)
    algorithm: str = field(metadata=text(64))
    state: str = field(metadata=text(16 * 1024 * 1024, encoding="base64"))
    updates: int = field(metadata=TIMESTAMP)
    arm_stats: dict[str, JSON] = field(metadata=obj())
    created_at: int = field(metadata=TIMESTAMP)
    # The oldest rewarded_at among the outcomes this version is the first to
    # hold: a decider taking the snapshot measures the reward→decision lag.
    oldest_reward_at: int | None = field(default=None, metadata=TIMESTAMP)
    # A sharded policy's shard (its outcomes partition); the deciders merge
    # the shards' states (docs/architecture.md#sharded-learning).
    shard: int | None = field(default=None, metadata=integer(0, 1_000_000))
    # Set while the policy serves a registry version whose configuration is
    # not the policies file's: {"version", "config", "config_hash",
    # "file_hash"} (app/versions.py); every worker decides, joins and learns
    # with that configuration until the file's entry for the policy changes.
    serving: JSON | None = field(default=None, metadata=obj())
    schema_version: int = SCHEMA_VERSION


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
    "tenant_not_allowed",
)
# Any string, empty too (an empty value or key), worded as it always was.
BASE64 = text(None, min_len=0, encoding="base64",
              message="must be a non-empty string of at most 256 characters")  # fmt: skip


@dataclass(slots=True)
class DeadLetter(Record):
    """An event that could not be used, with where it came from and why
    (``llmopt.dead-letter.v1``, key = the original key).

    The original value and key are kept whole up to a size limit, beyond it
    only their first bytes (``truncated``), with the whole value's size and
    SHA-256: a dead letter stays far below the producer's message limit
    (see :mod:`app.dead_letter`)."""

    schema_name: ClassVar[str] = "dead_letter"

    source_topic: str = field(metadata=text())
    source_partition: int = field(metadata=integer(-1, 2**31 - 1))
    source_offset: int = field(metadata=integer(-1, 2**63 - 1))
    reason: str = field(metadata=text(64, allowed=DEAD_LETTER_REASONS, first=True))
    detail: str = field(metadata=text(4096))
    original_value_b64: str = field(metadata=BASE64)
    failed_at: int = field(metadata=TIMESTAMP)
    original_key_b64: str | None = field(default=None, metadata=BASE64)
    original_size: int | None = field(default=None, metadata=TIMESTAMP)
    original_sha256: str | None = field(default=None, metadata=text(64, min_len=64, first=True))
    truncated: bool | None = field(default=None, metadata=boolean())
    schema_version: int = SCHEMA_VERSION


METRICS_SOURCES = ("worker", "simulator")
MAX_METRIC_SAMPLES = 20_000


def _samples(d: JSON) -> list[JSON]:
    v = d.get("samples")
    if not isinstance(v, list) or len(v) > MAX_METRIC_SAMPLES:
        raise _fail(f"'samples' must be a list of at most {MAX_METRIC_SAMPLES} samples")
    for s in v:
        if not isinstance(s, dict) or s.keys() != {"name", "labels", "value"}:
            raise _fail("each sample must be an object of exactly name, labels and value")
        name = s["name"]
        if not isinstance(name, str) or not name or len(name) > 200:
            raise _fail("'name' must be a non-empty string of at most 200 characters")
        labels = s["labels"]
        if not isinstance(labels, dict) or not all(
            isinstance(x, str) and len(x) <= 256 for x in labels.values()
        ):
            raise _fail("sample 'labels' must map names to strings of at most 256 characters")
        if not _finite(s["value"]):
            raise InvalidEvent("invalid_value", "sample 'value' must be a finite number")
    return v


SAMPLES = custom(
    _samples,
    {
        "type": "array",
        "maxItems": MAX_METRIC_SAMPLES,
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "labels", "value"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "labels": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "maxLength": 256},
                },
                "value": {"type": "number"},
            },
        },
    },
)


@dataclass(slots=True)
class MetricsSnapshot(Record):
    """One process's Prometheus metrics at one moment, under their Prometheus
    names (``llmopt.metrics.v1``, key ``worker_id``)."""

    schema_name: ClassVar[str] = "metrics"

    snapshot_id: str = field(metadata=text())
    source: str = field(metadata=choice(METRICS_SOURCES, first=True))
    worker_id: str = field(metadata=text())
    created_at: int = field(metadata=TIMESTAMP)
    interval_ms: int = field(metadata=integer(1, 86_400_000))
    samples: list[JSON] = field(metadata=SAMPLES)
    schema_version: int = SCHEMA_VERSION


DRIFT_KINDS = ("drift", "input_drift", "anomaly", "adaptation")
DIRECTIONS = ("up", "down")
ADAPTATION_ACTIONS = ("reset", "discount", "explore", "none")


@dataclass(slots=True)
class DriftEvent(Record):
    """A drift, input drift or anomaly seen on a (policy, arm, signal) stream,
    or the learner's adaptation to a drift (``llmopt.drift.v1``, key
    ``policy_id``, co-partitioned with the outcomes)."""

    schema_name: ClassVar[str] = "drift"

    event_id: str = field(metadata=text())
    kind: str = field(metadata=choice(DRIFT_KINDS))
    policy_id: str = field(metadata=text())
    signal: str = field(metadata=text(64))
    detector: str = field(metadata=text(64))
    observed_at: int = field(metadata=TIMESTAMP)
    created_at: int = field(metadata=TIMESTAMP)
    arm: str | None = field(default=None, metadata=text())
    samples: int | None = field(default=None, metadata=TIMESTAMP)
    value: float | None = field(default=None, metadata=real())
    score: float | None = field(default=None, metadata=real())
    threshold: float | None = field(default=None, metadata=real())
    mean_before: float | None = field(default=None, metadata=real())
    mean_after: float | None = field(default=None, metadata=real())
    direction: str | None = field(default=None, metadata=choice(DIRECTIONS))
    action: str | None = field(default=None, metadata=choice(ADAPTATION_ACTIONS))
    applied: str | None = field(default=None, metadata=text(64))
    factor: float | None = field(default=None, metadata=number(0, 1))
    cause_id: str | None = field(default=None, metadata=text())
    policy_version: int | None = field(default=None, metadata=TIMESTAMP)
    detail: str | None = field(default=None, metadata=text(1024))
    # Where it was detected: the offset just after the triggering outcome, on
    # the outcomes partition of this event's number (the learner waits for it).
    outcome_offset: int | None = field(default=None, metadata=TIMESTAMP)
    schema_version: int = SCHEMA_VERSION


ALERT_STATUSES = ("firing", "resolved")
ALERT_SEVERITIES = ("info", "warning", "critical")
ALERT_COMPARISONS = (">", ">=", "<", "<=")


@dataclass(slots=True)
class AlertEvent(Record):
    """An alert rule's state change for a policy (or one of its arms):
    ``firing``, then ``resolved`` under the same ``alert_id``
    (``llmopt.alerts.v1``, key ``policy_id``)."""

    schema_name: ClassVar[str] = "alert"

    alert_id: str = field(metadata=text())
    rule: str = field(metadata=text(128))
    status: str = field(metadata=choice(ALERT_STATUSES))
    severity: str = field(metadata=choice(ALERT_SEVERITIES))
    policy_id: str = field(metadata=text())
    metric: str = field(metadata=text(64))
    comparison: str = field(metadata=choice(ALERT_COMPARISONS))
    threshold: float = field(metadata=real())
    value: float = field(metadata=real())
    window_seconds: float = field(metadata=number(0, 2_592_000))
    samples: int = field(metadata=TIMESTAMP)
    started_at: int = field(metadata=TIMESTAMP)
    created_at: int = field(metadata=TIMESTAMP)
    arm: str | None = field(default=None, metadata=text())
    resolved_at: int | None = field(default=None, metadata=TIMESTAMP)
    summary: str | None = field(default=None, metadata=text(1024))
    schema_version: int = SCHEMA_VERSION


OBSERVATION_KINDS = ("request", "outcome")


@dataclass(slots=True)
class FeatureObservation(Record):
    """What one request or outcome adds to an entity's feature windows
    (``llmopt.feature-observations.v1``, sent as JSON arrays of these, key
    the entity's routing key; see :mod:`app.features.observations`).
    ``time`` is the request's ``created_at`` or the outcome's ``outcome_at``;
    an outcome carries its reward and the components the windows use."""

    schema_name: ClassVar[str] = "feature_observation"
    required_when: ClassVar[dict[str, tuple[str, str]]] = {"reward": ("kind", "outcome")}

    entity: str = field(metadata=text(1024))  # tenant=<256>,arm=<256> at most
    kind: str = field(metadata=choice(OBSERVATION_KINDS))
    time: int = field(metadata=TIMESTAMP)
    input_tokens: int | None = field(default=None, metadata=integer(0, 10_000_000))
    reward: float | None = field(default=None, metadata=number(0, 1))
    cost_usd: float | None = field(default=None, metadata=number(0, 1e6))
    latency_ms: float | None = field(default=None, metadata=number(0, 1e9))
    error: bool | None = field(default=None, metadata=boolean())
    schema_version: int = SCHEMA_VERSION


REGISTRY_KINDS = ("version", "serve", "status", "register")
VERSION_STATUSES = ("development", "shadow", "canary", "champion", "retired")


@dataclass(slots=True)
class RegistryEvent(Record):
    """One record of the policy registry (``llmopt.registry.v1``, compacted,
    on the partition of ``policy_id``; see app/versions.py):

    - ``version``: an immutable version, its configuration (the policy's
      mapping in the policies file), learned state and lineage;
    - ``serve``: make ``version`` the one that serves (a rollback or a
      promotion to champion), applied by the learner that owns the policy;
    - ``status``: ``version`` enters ``status``;
    - ``register``: ask the learner to register the serving state as a version.
    """

    schema_name: ClassVar[str] = "registry"

    event_id: str = field(metadata=text(128))
    kind: str = field(metadata=choice(REGISTRY_KINDS))
    policy_id: str = field(metadata=text())
    created_at: int = field(metadata=TIMESTAMP)
    created_by: str = field(metadata=text(256))
    version: int | None = field(default=None, metadata=TIMESTAMP)
    status: str | None = field(default=None, metadata=choice(VERSION_STATUSES))
    reason: str | None = field(default=None, metadata=text(1024))
    config: JSON | None = field(default=None, metadata=obj())
    config_hash: str | None = field(default=None, metadata=text(64))
    state: JSON | None = field(default=None, metadata=obj())
    parent: int | None = field(default=None, metadata=TIMESTAMP)
    lineage: JSON | None = field(default=None, metadata=obj())
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class ShadowDecision(Record):
    """What a shadow version would have chosen for a live request
    (``llmopt.shadow-decisions.v1``, key ``request_id``): decided by the
    learner when the request's outcome arrives, on the context the serving
    decision saw, just before the shadow learns from it (docs/registry.md)."""

    schema_name: ClassVar[str] = "shadow_decision"

    request_id: str = field(metadata=text())
    tenant_id: str = field(metadata=text())
    policy_id: str = field(metadata=text())
    # The serving decision's policy version, and the shadow's registry version.
    policy_version: int = field(metadata=TIMESTAMP)
    shadow_version: int = field(metadata=TIMESTAMP)
    # The shadow's choice and the exact probability it was drawn with, among
    # ``available_arms`` (the served decision's, less arms the shadow lacks).
    arm: str = field(metadata=text())
    propensity: float = field(metadata=number(0, 1))
    available_arms: list[str] = field(metadata=strings())
    served_arm: str = field(metadata=text())
    served_propensity: float = field(metadata=number(0, 1))
    agreed: bool = field(metadata=boolean())
    # Whether the shadow was imitating the serving policy (apprentice mode).
    apprentice: bool = field(metadata=boolean())
    # The outcome's time: when the shadow decided and learned.
    decided_at: int = field(metadata=TIMESTAMP)
    schema_version: int = SCHEMA_VERSION


EXPERIMENT_KINDS = ("created", "stage", "result", "stopped")
STOP_REASONS = ("manual", "promoted", "rolled_back", "winner")


@dataclass(slots=True)
class ExperimentEvent(Record):
    """One record of an experiment or rollout (``llmopt.experiments.v1``,
    compacted, one partition; keyed ``<experiment_id>/<kind>``; see
    app/experiments/live.py):

    - ``created``: the ``definition`` (app/experiments/definition.py);
    - ``stage``: the variants' traffic ``shares`` from now on, ``stage``
      its index in a rollout's schedule, ``reason`` why;
    - ``result``: the statistics of the current stage (``result``: per
      variant n, mean, interval, decision, gate) and the evaluator's
      ``state`` to carry on from;
    - ``stopped``: the experiment ended, ``stop_reason`` and ``reason``.
    """

    schema_name: ClassVar[str] = "experiment"
    required_when: ClassVar[dict[str, tuple[str, str]]] = {"definition": ("kind", "created")}

    event_id: str = field(metadata=text(128))
    kind: str = field(metadata=choice(EXPERIMENT_KINDS))
    experiment_id: str = field(metadata=text(128))
    created_at: int = field(metadata=TIMESTAMP)
    created_by: str = field(metadata=text(256))
    definition: JSON | None = field(default=None, metadata=obj())
    stage: int | None = field(default=None, metadata=integer(0, 1000))
    shares: dict[str, float] | None = field(default=None, metadata=obj(finite_values=True))
    result: JSON | None = field(default=None, metadata=obj())
    state: JSON | None = field(default=None, metadata=obj())
    stop_reason: str | None = field(default=None, metadata=choice(STOP_REASONS))
    reason: str | None = field(default=None, metadata=text(1024))
    schema_version: int = SCHEMA_VERSION


ALL_RECORDS: tuple[type[Record], ...] = (
    Request,
    Decision,
    Reward,
    Outcome,
    PolicySnapshot,
    DeadLetter,
    MetricsSnapshot,
    RegistryEvent,
    DriftEvent,
    AlertEvent,
    FeatureObservation,
    ExperimentEvent,
    ShadowDecision,
)
for _cls in ALL_RECORDS:
    _cls.from_dict = staticmethod(_compile_from_dict(_cls))  # type: ignore[method-assign,assignment]


# --- the JSON Schema the declarations amount to ------------------------------------------


def _property_schema(s: FieldSpec) -> JSON:
    kind = s.kind
    if kind == "string":
        if s.allowed is not None:
            return {"type": "string", "enum": list(s.allowed)}
        out: JSON = {"type": "string"}
        if s.min_len:
            out["minLength"] = s.min_len
        if s.max_len is not None:
            out["maxLength"] = s.max_len
        if s.encoding is not None:
            out["contentEncoding"] = s.encoding
        return out
    if kind in ("integer", "number"):
        return {"type": kind, "minimum": s.lo, "maximum": s.hi}
    if kind == "real":
        return {"type": "number"}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "choice":
        return {"enum": list(s.allowed or ())}
    if kind == "strings":
        return {"type": "array", "minItems": 1, "maxItems": s.max_len, "uniqueItems": True,
                "items": {"type": "string", "minLength": 1}}  # fmt: skip
    if kind == "numbers":
        return {"type": "array", "maxItems": s.max_len, "items": {"type": "number"}}
    if kind == "object":
        if s.finite_values:
            return {"type": "object", "additionalProperties": {"type": "number"}}
        return {"type": "object"}
    if kind == "nested":
        return {
            "type": "object",
            "additionalProperties": False,
            "required": [k for k, _, req in s.fields if req],
            "properties": {k: _property_schema(sub) for k, sub, _ in s.fields},
        }
    return dict(s.schema or {})


def schema_properties(cls: type[Record]) -> dict[str, JSON]:
    """Each field's JSON Schema (as in ``schemas/``, without descriptions),
    with its default when it has one other than ``None``."""
    props: dict[str, JSON] = {}
    for f in fields(cls):
        if f.name == "schema_version":
            props[f.name] = {"const": SCHEMA_VERSION}
            continue
        p = _property_schema(spec_of(f))
        if f.default_factory is not MISSING:
            p["default"] = f.default_factory()
        elif f.default is not MISSING and f.default is not None:
            p["default"] = f.default
        props[f.name] = p
    return props


def schema_conditions(cls: type[Record]) -> list[JSON]:
    """``required_when`` as JSON Schema ``if``/``then`` pairs."""
    return [
        {
            "if": {"required": [other], "properties": {other: {"const": value}}},
            "then": {"required": [name]},
        }
        for name, (other, value) in cls.required_when.items()
    ]
