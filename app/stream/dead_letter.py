"""Dead-letter documents: the original bytes, where they came from, and why.

A dead letter must always be sendable: if the producer refused it, the event
that caused it would stop its agent on every restart. The value and the key
are therefore kept whole only up to :data:`MAX_ORIGINAL_BYTES` and
:data:`MAX_KEY_BYTES`, beyond that their first bytes (``truncated``), and the
whole value's size and SHA-256 are recorded. The largest dead letter is then
about 0.4 MB: base64 of 260 KiB plus a detail of at most 4,096 characters
(each at most 6 bytes in JSON), far below Kafka's default 1 MB limit.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app import metrics
from app.records import DEAD_LETTER_REASONS, DeadLetter, InvalidEvent, now_ms

log = logging.getLogger(__name__)

# Four times the default event limit (settings.max_event_bytes): an event
# rejected for its content is kept whole unless the limit was raised a lot.
MAX_ORIGINAL_BYTES = 256 * 1024
MAX_KEY_BYTES = 4 * 1024
MAX_DETAIL_CHARS = 4096


def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: InvalidEvent,
) -> bytes:
    """The dead-letter document (JSON bytes) for one consumed event."""
    value = value or b""
    reason, detail = error.code, _text(error.detail)
    if reason not in DEAD_LETTER_REASONS:  # a code without a schema entry is a bug here
        reason, detail = "internal_error", _text(f"unlisted reason {error.code!r}: {detail}")
    kept_key = dead_letter_key(key)
    return DeadLetter(
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        reason=reason,
        detail=detail or reason,
        original_value_b64=base64.b64encode(value[:MAX_ORIGINAL_BYTES]).decode(),
        original_key_b64=base64.b64encode(kept_key).decode() if kept_key is not None else None,
        original_size=len(value),
        original_sha256=hashlib.sha256(value).hexdigest(),
        truncated=len(value) > MAX_ORIGINAL_BYTES or (key is not None and len(key) > MAX_KEY_BYTES),
        failed_at=now_ms(),
    ).dumps()


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The Kafka key to send a dead letter under: the original key, cut
    like ``original_key_b64`` (key and value count towards the same limit)."""
    return key[:MAX_KEY_BYTES] if key is not None else None


def internal_error(exc: BaseException, agent: str = "") -> InvalidEvent:
    """An unexpected exception while processing one event, as the reason
    ``internal_error`` with the exception's type and message."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not hide the original error
        text = "(message unavailable)"
    where = f"{agent}: " if agent else ""
    return InvalidEvent("internal_error", f"{where}{type(exc).__name__}: {text}"[:MAX_DETAIL_CHARS])


Send = Callable[..., Awaitable[Any]]


async def send_dead_letter(send: Send, agent: str, msg: Any, error: InvalidEvent) -> Any:
    """Dead-letter a consumed message (anything with ``topic``, ``partition``,
    ``offset``, ``key`` and ``value``) through ``send(key=..., value=...)``,
    e.g. a Faust topic's ``send``; counted by agent and reason."""
    metrics.DEAD_LETTERS.labels(agent, error.code).inc()
    return await send(
        key=dead_letter_key(msg.key),
        value=dead_letter(msg.topic, msg.partition, msg.offset, msg.key, msg.value, error),
    )


async def send_internal_error(send: Send, agent: str, msg: Any, exc: Exception) -> Any:
    """An exception while processing ``msg``: logged with its traceback,
    counted, and the message dead-lettered as ``internal_error``."""
    log.error(
        "%s: %s while processing %s[%s]@%s; dead-lettered",
        agent,
        type(exc).__name__,
        msg.topic,
        msg.partition,
        msg.offset,
        exc_info=exc,
    )
    metrics.EVENTS.labels(agent, "internal_error").inc()
    return await send_dead_letter(send, agent, msg, internal_error(exc, agent))


def _text(s: str) -> str:
    """``s`` as valid UTF-8 (a lone surrogate becomes ``\\udxxx``), at most
    MAX_DETAIL_CHARS characters."""
    return str(s).encode("utf-8", "backslashreplace").decode("utf-8")[:MAX_DETAIL_CHARS]
