"""Every decoder is total: any bytes end as a value or as an :class:`InvalidEvent`
whose code is a dead-letter reason, never as another exception; and the dead
letter of any message is valid and sendable.

Decoders: ``records.decode``, ``Record.loads`` of every record,
``app.join.parse_decision``, the feature-observation decoder of
``aggregate_features`` (and the store it feeds), the archive's row check and
the dashboard's metrics/drift/alert reader. Inputs: arbitrary bytes, hostile
JSON (NaN, Infinity, 1e400, lone surrogates, NUL, invalid UTF-8, duplicate
keys), valid events with one field made hostile, deep nesting, and sizes at
the limits ±1.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from app.dashboard.feed import MetricsFeed
from app.dashboard.history import MetricsHistory
from app.features.archive import archive_row
from app.features.observations import parse_observations
from app.features.store import FeatureStore
from app.join import parse_decision
from app.records import (
    ALL_RECORDS,
    DEAD_LETTER_REASONS,
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    DeadLetter,
    Decision,
    InvalidEvent,
    MetricsSnapshot,
    Outcome,
    Request,
    decode,
)
from app.settings import Settings
from app.stream.dead_letter import MAX_KEY_BYTES, MAX_ORIGINAL_BYTES, dead_letter
from app.topics import TopicCatalog
from tests.test_contracts import EXAMPLES

MAX_BYTES = Settings().max_event_bytes
DEAD_LETTER_SCHEMA = Draft202012Validator(
    json.loads((Path(__file__).resolve().parents[1] / "schemas/dead_letter.v1.json").read_text())
)
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _archive(raw: bytes) -> Any:
    """archive_outcomes: validation, then the archive's own checks."""
    Outcome.loads(raw, MAX_BYTES)
    return archive_row(raw)


def _observations(raw: bytes) -> Any:
    """aggregate_features: every observation the decoder keeps can be applied
    and persisted (a pane survives its table round trip)."""
    valid, skipped = parse_observations(raw)
    store = FeatureStore()
    for i, entity, obs in valid:
        start = store.observe(entity, obs, i)
        if start is not None:
            FeatureStore().load(f"{entity}@{start}".encode(), store.pane_value(entity, start))
    return valid, skipped


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "decode": decode,
    "decode(settings.max_event_bytes)": functools.partial(decode, max_bytes=MAX_BYTES),
    **{f"{cls.__name__}.loads": cls.loads for cls in ALL_RECORDS},
    "Request(settings.max_event_bytes)": lambda raw: Request.from_dict(decode(raw, MAX_BYTES)),
    "parse_decision": parse_decision,
    "observations": _observations,
    "archive_row": _archive,
}


def verdicts(raw: bytes) -> dict[str, str]:
    """Decoder → "ok" or the InvalidEvent code; any other exception fails the
    test. Each rejection's dead letter is checked too."""
    out = {}
    for name, decoder in DECODERS.items():
        try:
            decoder(raw)
            out[name] = "ok"
        except InvalidEvent as exc:
            assert exc.code in DEAD_LETTER_REASONS, (name, exc.code)
            assert exc.detail, name
            out[name] = exc.code
            error = exc
    if any(v != "ok" for v in out.values()):
        assert_sendable(raw, b"tenant", error)
    return out


def assert_sendable(value: bytes | None, key: bytes | None, error: InvalidEvent) -> DeadLetter:
    doc = dead_letter("llmopt.requests.v1", 3, 17, key, value, error)
    assert len(doc) < 1_000_000
    DEAD_LETTER_SCHEMA.validate(orjson.loads(doc))
    dl = DeadLetter.loads(doc, max_bytes=1 << 20)
    whole = value or b""
    assert dl.original_size == len(whole)
    assert dl.original_sha256 == hashlib.sha256(whole).hexdigest()
    assert base64.b64decode(dl.original_value_b64) == whole[:MAX_ORIGINAL_BYTES]
    if key is None:
        assert dl.original_key_b64 is None
    else:
        assert base64.b64decode(dl.original_key_b64 or "") == key[:MAX_KEY_BYTES]
    long_key = key is not None and len(key) > MAX_KEY_BYTES
    assert dl.truncated == (len(whole) > MAX_ORIGINAL_BYTES or long_key)
    return dl


# --- hostile JSON -------------------------------------------------------------------------

HOSTILE_LEAVES = [
    b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" + b"0" * 400, b"1e-400",
    b"18446744073709551616", b"-9223372036854775809", b"1.0", b"-0", b"true", b"null",
    b'"\\ud800"', b'"x\\udc00"', b'"\\ud83d\\ude00"', b'"a\x00b"', b'"\\u0000"', b'"\xff"',
    b'"\xed\xa0\x80"', b'""', b'"x"', b"{}", b"[]", b"[1e400]", b'{"a": NaN}',
]  # fmt: skip
KEYS = sorted(
    {k for doc in EXAMPLES.values() for k in doc} | {"e", "k", "t", "reward", "samples", ""}
)


def _obj(items: list[tuple[str, bytes]]) -> bytes:
    return b"{" + b",".join(orjson.dumps(k) + b":" + v for k, v in items) + b"}"


json_values = st.recursive(
    st.sampled_from(HOSTILE_LEAVES)
    | st.integers(-(2**70), 2**70).map(lambda i: str(i).encode())
    | st.text(max_size=6).map(orjson.dumps),
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda xs: b"[" + b",".join(xs) + b"]")
        # duplicate keys are likely: the keys come from a small set
        | st.lists(st.tuples(st.sampled_from(KEYS), inner), max_size=5).map(_obj)
    ),
    max_leaves=20,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A valid event of some record with one field replaced, repeated,
    dropped or given a wrong schema_version, or the bytes cut or extended."""
    doc = EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES, key=lambda c: c.__name__)))]
    items = [(k, orjson.dumps(v)) for k, v in doc.items()]
    i = draw(st.integers(0, len(items) - 1))
    how = draw(st.sampled_from(["replace", "repeat", "drop", "version", "cut", "append"]))
    if how == "replace":
        items[i] = (items[i][0], draw(json_values))
    elif how == "repeat":
        items.insert(draw(st.integers(0, len(items))), (items[i][0], draw(json_values)))
    elif how == "drop":
        del items[i]
    elif how == "version":
        version = draw(st.sampled_from([b"2", b"0", b'"1"', b"true", b"null", b"1.0", b"1e400"]))
        items = [(k, version if k == "schema_version" else v) for k, v in items]
    raw = _obj(items)
    if how == "cut":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif how == "append":
        raw += draw(st.sampled_from([b"\x00", b" ", b"}", b",", b"\xff", b"\n{}"]))
    return raw


def nested(n: int, open_: bytes = b"[", close: bytes = b"]", inner: bytes = b"") -> bytes:
    return open_ * n + inner + close * n


@FUZZ
@given(raw=st.binary(max_size=2048))
def test_arbitrary_bytes(raw: bytes) -> None:
    assert verdicts(raw)


@FUZZ
@given(raw=json_values)
def test_hostile_json(raw: bytes) -> None:
    got = verdicts(raw)
    if got["decode"] == "ok":
        assert isinstance(decode(raw), dict)


@FUZZ
@given(raw=mutated_events())
def test_mutated_valid_events(raw: bytes) -> None:
    assert verdicts(raw)


OBSERVATIONS = [
    {"e": "tenant=acme", "k": "r", "t": 1_700_000_000_000, "input_tokens": 812},
    {"e": "tenant=acme,arm=a", "k": "o", "t": 1_700_000_000_500, "reward": 0.5,
     "cost_usd": 0.001, "latency_ms": 840.0, "error": False},
]  # fmt: skip


@st.composite
def observation_messages(draw: st.DrawFn) -> tuple[bytes, int]:
    """(an observations message with some observations made hostile, how
    many observations it holds)."""
    items = []
    for _ in range(draw(st.integers(0, 6))):
        obs = [(k, orjson.dumps(v)) for k, v in draw(st.sampled_from(OBSERVATIONS)).items()]
        if draw(st.booleans()):
            i = draw(st.integers(0, len(obs) - 1))
            obs[i] = (obs[i][0], draw(json_values))
        items.append(_obj(obs) if draw(st.integers(0, 9)) else draw(json_values))
    return b"[" + b",".join(items) + b"]", len(items)


@FUZZ
@given(message=observation_messages())
def test_observation_messages(message: tuple[bytes, int]) -> None:
    raw, n = message
    try:
        valid, skipped = _observations(raw)
    except InvalidEvent as exc:  # a hostile leaf made the whole message unparseable
        assert exc.code == "malformed_json"
        assert_sendable(raw, b"acme", exc)
        return
    assert len(valid) + skipped == n


def test_observation_decoder_keeps_valid_and_skips_the_rest() -> None:
    good = [*OBSERVATIONS, {**OBSERVATIONS[1], "cost_usd": None}]
    bad = [
        {k: v for k, v in OBSERVATIONS[0].items() if k != "e"},  # the KeyError of issue 10
        {**OBSERVATIONS[1], "latency_ms": -1.0},  # the latency sketch raises on it
        {**OBSERVATIONS[1], "latency_ms": "slow"},
        {**OBSERVATIONS[1], "reward": None},
        {**OBSERVATIONS[0], "t": 1.5},
        {**OBSERVATIONS[0], "t": True},
        {**OBSERVATIONS[0], "k": "x"},
        {**OBSERVATIONS[0], "e": ""},
        {**OBSERVATIONS[1], "error": 1},
        [1, 2],
    ]
    valid, skipped = _observations(orjson.dumps(bad[:5] + good + bad[5:]))
    assert skipped == len(bad)
    assert [(i, e) for i, e, _ in valid] == [
        (5, "tenant=acme"),
        (6, "tenant=acme,arm=a"),
        (7, "tenant=acme,arm=a"),
    ]
    assert all("e" not in obs for _, _, obs in valid)


NESTED_IN = {"metadata": Request, "parameters": Decision, "components": Outcome}


@FUZZ
@given(
    depth=st.integers(1, 3000) | st.sampled_from([MAX_DEPTH - 1, MAX_DEPTH, 1024, 1025, 50_000]),
    where=st.sampled_from(["top", *NESTED_IN]),
    brackets=st.sampled_from([(b"[", b"]", b""), (b'{"a":', b"}", b"1")]),
)
def test_deep_nesting(depth: int, where: str, brackets: tuple[bytes, bytes, bytes]) -> None:
    deep = nested(depth, *brackets)
    if where == "top":
        raw, levels = deep, depth
    else:
        doc = EXAMPLES[NESTED_IN[where]]
        raw, levels = (
            _obj([(k, deep if k == where else orjson.dumps(v)) for k, v in doc.items()]),
            depth + 1,
        )
    got = verdicts(raw)
    if len(raw) > MAX_EVENT_BYTES:
        assert got["decode"] == "oversize"
    elif levels > MAX_DEPTH or (where == "top" and brackets[0] == b"["):
        assert got["decode"] == "malformed_json"
    else:
        assert got["decode"] == "ok"


# --- dead letters of any size -------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(0, 10 * 1024 * 1024)
    | st.sampled_from([MAX_ORIGINAL_BYTES + d for d in (-1, 0, 1)]),
    key_size=st.none() | st.integers(0, 2 * 1024 * 1024),
    seed=st.integers(0, 255),
    reason=st.sampled_from(DEAD_LETTER_REASONS),
    detail=st.text(max_size=6000) | st.just("a\ud800b" * 2000),  # lone surrogates too
)
def test_dead_letter_of_any_original_is_sendable(
    size: int, key_size: int | None, seed: int, reason: str, detail: str
) -> None:
    value = bytes((seed + i) % 256 for i in range(min(size, 4096))) * (size // 4096 + 1)
    value = value[:size]
    key = None if key_size is None else b"k" * key_size
    dl = assert_sendable(value, key, InvalidEvent(reason, detail))
    assert dl.reason == reason
    assert 1 <= len(dl.detail) <= 4096


# --- the dashboard reader -----------------------------------------------------------------


@functools.cache
def feed() -> MetricsFeed:
    return MetricsFeed("unused:9092", TopicCatalog.load(), MetricsHistory(bucket_ms=1000))


@FUZZ
@given(
    raw=st.binary(max_size=512) | json_values | mutated_events(),
    kind=st.sampled_from(["metrics", "drift", "alerts"]),
)
def test_dashboard_reader_takes_anything(raw: bytes, kind: str) -> None:
    f = feed()
    assert f.take(kind, raw) in (True, False)
    json.dumps(f.history.view(1_700_000_000_000))


def test_dashboard_reader_takes_a_valid_snapshot() -> None:
    assert feed().take("metrics", orjson.dumps(EXAMPLES[MetricsSnapshot])) is True
    assert feed().take("metrics", b'{"samples": [') is False


# --- defined results ----------------------------------------------------------------------

REQUEST = orjson.dumps(EXAMPLES[Request])


def _request_with(field: str, value: bytes) -> bytes:
    return REQUEST[:-1] + b',"' + field.encode() + b'":' + value + b"}"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (nested(1025), "malformed_json"),  # the crash loop of issue 10
        (nested(1024), "malformed_json"),  # an array, not an object
        (nested(100_000)[:MAX_EVENT_BYTES], "malformed_json"),
        (nested(1025, b'{"a":', b"}", b"1"), "malformed_json"),
        (b'{"a":' + nested(MAX_DEPTH) + b"}", "malformed_json"),  # depth MAX_DEPTH + 1
        (_request_with("x", b"1e400"), "invalid_value"),
        (_request_with("x", b"-1e400"), "invalid_value"),
        (_request_with("x", b"1" + b"0" * 400), "invalid_value"),
        (_request_with("x", b"NaN"), "invalid_value"),
        (_request_with("x", b"[Infinity]"), "invalid_value"),
        (_request_with("x", b"-Infinity"), "invalid_value"),
        (_request_with("x", b'"\\ud800"'), "malformed_json"),  # lone surrogate
        (_request_with("x", b'"\xed\xa0\x80"'), "malformed_json"),  # a surrogate as UTF-8
        (_request_with("x", b'"a\x00b"'), "malformed_json"),  # raw NUL in a string
        (_request_with("x", b'"\xff"'), "malformed_json"),  # invalid UTF-8
        (b"\xef\xbb\xbf" + REQUEST, "malformed_json"),  # byte-order mark
        (REQUEST + b"\x00", "malformed_json"),
        (b"", "malformed_json"),
        (None, "malformed_json"),
    ],
)
def test_decode_defined_results(raw: bytes | None, code: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(raw)
    assert info.value.code == code
    assert_sendable(raw, None, info.value)


def _with_deep_metadata(levels: int) -> bytes:
    """The example request with an object nested ``levels`` deep in total."""
    deep = nested(levels - 2, b'{"a":', b"}", b"1")  # metadata itself is level 2
    return REQUEST.replace(b'"metadata":{', b'"metadata":{"deep":' + deep + b",", 1)


def test_nesting_is_kept_up_to_max_depth_and_records_can_walk_it() -> None:
    r = Request.loads(_with_deep_metadata(MAX_DEPTH))
    assert r.to_dict()["metadata"]["deep"]["a"]  # asdict walks it without RecursionError
    assert orjson.loads(r.dumps()) == orjson.loads(_with_deep_metadata(MAX_DEPTH))
    with pytest.raises(InvalidEvent) as info:
        Request.loads(_with_deep_metadata(MAX_DEPTH + 1))
    assert info.value.code == "malformed_json"
    assert "deeper" in info.value.detail


def test_escaped_nul_and_duplicate_keys_are_defined() -> None:
    doc = decode(b'{"a": "x\\u0000y", "b": 1, "b": 2}')
    assert doc == {"a": "x\x00y", "b": 2}  # the NUL is kept; the last duplicate wins
    raw = REQUEST[:-1] + b',"tenant_id":"other"}'
    assert Request.loads(raw).tenant_id == "other"


@pytest.mark.parametrize("limit", sorted({MAX_EVENT_BYTES, MAX_BYTES}))
@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_size_limit_plus_minus_one(limit: int, delta: int) -> None:
    def padded(n: int) -> bytes:
        return REQUEST.replace(b'"metadata":{', b'"metadata":{"pad":"' + b"x" * n + b'",', 1)

    pad = limit + delta - len(padded(0))
    raw = padded(pad)
    assert len(raw) == limit + delta
    if delta > 0:
        with pytest.raises(InvalidEvent) as info:
            Request.from_dict(decode(raw, limit))
        assert info.value.code == "oversize"
        assert_sendable(raw, b"tenant", info.value)
    else:
        assert Request.from_dict(decode(raw, limit)).metadata["pad"] == "x" * pad
