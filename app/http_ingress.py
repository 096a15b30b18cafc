"""What POST /decide and POST /reward take (app/stream/decide_endpoint.py):
one event, or for /decide a JSON array of events, and the HTTP status a
refused one is answered with.

- One event: the body is the event, checked as a message of its topic is
  (app/ingress.py): more than ``max_event_bytes`` is ``oversize``.
- A batch: a body whose first non-blank byte is ``[``, a JSON array of at
  most :data:`MAX_BATCH_ITEMS` events in at most :func:`body_limit` bytes.
  Each element is taken on its own (re-encoded, then checked as one event):
  a bad element costs only its own answer, and it is its bytes that the
  dead letter keeps.

Pure: the endpoint reads the body, and sends what is accepted.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.records import InvalidEvent, decode

MAX_BATCH_ITEMS = 2000
# A batch's body: as many default-sized requests as a gateway would batch.
MAX_BATCH_BYTES = 4 * 1024 * 1024
# Statuses other than 400 (bad input).
_STATUS = {"oversize": 413, "tenant_not_allowed": 403, "internal_error": 500}


def body_limit(max_event_bytes: int) -> int:
    """The most bytes a body may have, batch or not (beyond: 413 unread)."""
    return max(max_event_bytes, MAX_BATCH_BYTES)


def is_batch(body: bytes) -> bool:
    return body.lstrip()[:1] == b"["


def split_batch(body: bytes, max_event_bytes: int) -> list[bytes]:
    """A batch body → its elements as JSON bytes, each to be accepted as one
    event; :class:`InvalidEvent` when the body as a whole is unusable.

    >>> split_batch(b'[{"a": 1}, 2]', 1024)
    [b'{"a":1}', b'2']
    >>> split_batch(b'[{"a": NaN}]', 1024)
    Traceback (most recent call last):
    ...
    app.records.InvalidEvent: invalid_value: NaN, Infinity or a number beyond the float range
    """
    limit = body_limit(max_event_bytes)
    if len(body) > limit:
        raise InvalidEvent("oversize", f"{len(body)} bytes exceeds the {limit}-byte batch limit")
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # The reason one event with these bytes would get (malformed_json, invalid_value).
        decode(body, len(body))
        raise InvalidEvent("malformed_json", str(exc)) from None
    if not isinstance(items, list):
        raise InvalidEvent("malformed_json", "a batch must be a JSON array of events")
    if len(items) > MAX_BATCH_ITEMS:
        raise InvalidEvent(
            "oversize", f"{len(items)} events exceeds the batch limit of {MAX_BATCH_ITEMS}"
        )
    return [orjson.dumps(item) for item in items]


def status_for(error: InvalidEvent) -> int:
    """413 for ``oversize``, 403 for ``tenant_not_allowed``, 500 for
    ``internal_error``, else 400."""
    return _STATUS.get(error.code, 400)


def error_doc(error: InvalidEvent) -> dict[str, Any]:
    """The answer for a refused event: its dead-letter reason and detail."""
    return {"error": error.code, "detail": error.detail}
