"""Dead-letter documents: the original bytes, where they came from, and why."""

from __future__ import annotations

import base64

from app.records import DeadLetter, InvalidEvent, now_ms


def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: InvalidEvent,
) -> bytes:
    return DeadLetter(
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        reason=error.code,
        detail=error.detail[:4096],
        original_value_b64=base64.b64encode(value or b"").decode(),
        original_key_b64=base64.b64encode(key).decode() if key is not None else None,
        failed_at=now_ms(),
    ).dumps()
