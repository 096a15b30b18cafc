"""Dead letters stay far below the producer's limit, whatever they carry, and
record what they had to leave out; an unexpected exception becomes an
``internal_error`` dead letter."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from app.records import DEAD_LETTER_REASONS, DeadLetter, InvalidEvent, Request, now_ms
from app.stream.dead_letter import (
    MAX_DETAIL_CHARS,
    MAX_KEY_BYTES,
    MAX_ORIGINAL_BYTES,
    dead_letter,
    dead_letter_key,
    internal_error,
    send_dead_letter,
    send_internal_error,
)

PRODUCER_LIMIT = 1_048_576  # Kafka's and aiokafka's default max message / request size
SCHEMA = Draft202012Validator(
    json.loads((Path(__file__).resolve().parents[1] / "schemas/dead_letter.v1.json").read_text())
)


def letter(key: bytes | None, value: bytes | None, error: InvalidEvent) -> DeadLetter:
    raw = dead_letter("llmopt.requests.v1", 2, 40, key, value, error)
    SCHEMA.validate(orjson.loads(raw))
    return DeadLetter.loads(raw, max_bytes=len(raw))


def test_an_800_kb_request_gives_a_dead_letter_under_the_limit() -> None:
    """Issue 10: an ~800 KB request made a dead letter above 1 MB, which the
    producer refused, which crashed select_arm on every restart."""
    request = Request(
        request_id="r-big",
        tenant_id="acme",
        task_type="qa",
        created_at=now_ms(),
        metadata={"blob": "x" * 800_000},
    ).dumps()
    assert len(request) > 800_000
    raw = dead_letter(
        "llmopt.requests.v1", 0, 7, b"acme", request, InvalidEvent("oversize", "too big")
    )
    assert len(raw) + len(dead_letter_key(b"acme") or b"") < PRODUCER_LIMIT // 2
    dl = DeadLetter.loads(raw, max_bytes=len(raw))
    assert dl.original_size == len(request)
    assert dl.original_sha256 == hashlib.sha256(request).hexdigest()
    assert dl.truncated is True
    assert base64.b64decode(dl.original_value_b64) == request[:MAX_ORIGINAL_BYTES]
    assert base64.b64decode(dl.original_key_b64 or "") == b"acme"
    assert (dl.reason, dl.detail, dl.source_offset) == ("oversize", "too big", 7)


def test_an_event_within_the_limit_is_kept_whole() -> None:
    value = b"v" * MAX_ORIGINAL_BYTES
    dl = letter(b"k", value, InvalidEvent("schema_violation", "x"))
    assert base64.b64decode(dl.original_value_b64) == value
    assert (dl.original_size, dl.truncated) == (MAX_ORIGINAL_BYTES, False)
    dl = letter(b"k", value + b"!", InvalidEvent("schema_violation", "x"))
    assert base64.b64decode(dl.original_value_b64) == value
    assert (dl.original_size, dl.truncated) == (MAX_ORIGINAL_BYTES + 1, True)


def test_a_long_key_is_cut_and_so_is_the_key_the_dead_letter_is_sent_under() -> None:
    key = bytes(range(256)) * (MAX_KEY_BYTES // 256 + 10)
    dl = letter(key, b"{}", InvalidEvent("malformed_json", "x"))
    assert base64.b64decode(dl.original_key_b64 or "") == key[:MAX_KEY_BYTES]
    assert dl.truncated is True
    assert dl.original_size == 2
    assert dead_letter_key(key) == key[:MAX_KEY_BYTES]
    assert dead_letter_key(b"acme") == b"acme"
    assert dead_letter_key(None) is None


def test_no_value_and_no_key() -> None:
    dl = letter(None, None, InvalidEvent("malformed_json", "empty message value"))
    assert (dl.original_value_b64, dl.original_key_b64) == ("", None)
    assert (dl.original_size, dl.truncated) == (0, False)
    assert dl.original_sha256 == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    ("code", "detail", "reason", "expected"),
    [
        ("oversize", "", "oversize", "oversize"),  # an empty detail: the schema needs one
        ("oversize", "d" * 10_000, "oversize", "d" * MAX_DETAIL_CHARS),
        ("malformed_json", "x\ud800y", "malformed_json", "x\\ud800y"),  # not encodable as is
        ("no_such_reason", "boom", "internal_error", "unlisted reason 'no_such_reason': boom"),
    ],
)
def test_reason_and_detail_are_always_valid(
    code: str, detail: str, reason: str, expected: str
) -> None:
    dl = letter(b"k", b"{}", InvalidEvent(code, detail))
    assert (dl.reason, dl.detail) == (reason, expected)


def test_every_reason_gives_a_valid_dead_letter() -> None:
    assert {"internal_error", "invalid_reply_to", "unauthorized_policy", "tenant_mismatch"} <= set(
        DEAD_LETTER_REASONS
    )
    for reason in DEAD_LETTER_REASONS:
        assert letter(b"k", b"{}", InvalidEvent(reason, "x")).reason == reason


def test_internal_error_names_the_exception_and_is_bounded() -> None:
    err = internal_error(KeyError("e"), "aggregate_features")
    assert (err.code, err.detail) == ("internal_error", "aggregate_features: KeyError: 'e'")
    assert internal_error(ValueError("v" * 10_000)).detail.startswith("ValueError: vvv")
    assert len(internal_error(ValueError("v" * 10_000)).detail) == MAX_DETAIL_CHARS

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError

    assert internal_error(Unprintable()).detail == "Unprintable: (message unavailable)"


class Sent:
    """A stand-in for a Faust topic's ``send``: records what it is given."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, **kw: Any) -> None:
        self.calls.append(kw)


def test_send_helpers_dead_letter_the_message() -> None:
    msg = SimpleNamespace(topic="t", partition=1, offset=9, key=b"k" * 10_000, value=b"[")
    send = Sent()
    asyncio.run(send_dead_letter(send, "agent", msg, InvalidEvent("malformed_json", "bad")))
    asyncio.run(send_internal_error(send, "agent", msg, TypeError("boom")))
    assert [c["key"] for c in send.calls] == [b"k" * MAX_KEY_BYTES] * 2
    first, second = (DeadLetter.loads(c["value"], 1 << 20) for c in send.calls)
    assert (first.reason, first.detail) == ("malformed_json", "bad")
    assert (second.reason, second.detail) == ("internal_error", "agent: TypeError: boom")
    assert (second.source_topic, second.source_partition, second.source_offset) == ("t", 1, 9)


# --- the new optional fields: record and schema agree -----------------------------------

BASE = {
    "schema_version": 1,
    "source_topic": "llmopt.rewards.v1",
    "source_partition": 0,
    "source_offset": 1,
    "reason": "oversize",
    "detail": "d",
    "original_value_b64": "",
    "failed_at": 1,
}


@pytest.mark.parametrize(
    "patch",
    [
        {"original_size": 0, "original_sha256": "0" * 64, "truncated": False},
        {"original_size": 2**53, "original_sha256": "f" * 64, "truncated": True},
        {"original_size": 5},
    ],
)
def test_new_fields_accepted_by_both(patch: dict[str, Any]) -> None:
    doc = {**BASE, **patch}
    SCHEMA.validate(doc)
    assert DeadLetter.from_dict(doc).to_dict() == doc


@pytest.mark.parametrize(
    "patch",
    [
        {"original_size": -1},
        {"original_size": 2**53 + 1},
        {"original_size": "5"},
        {"original_size": None},
        {"original_sha256": "0" * 63},
        {"original_sha256": "0" * 65},
        {"original_sha256": 7},
        {"truncated": 1},
        {"truncated": "yes"},
        {"truncated": None},
    ],
)
def test_new_fields_rejected_by_both(patch: dict[str, Any]) -> None:
    doc = {**BASE, **patch}
    assert not SCHEMA.is_valid(doc)
    with pytest.raises(InvalidEvent):
        DeadLetter.from_dict(doc)
