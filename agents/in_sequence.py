"""Keeps a Faust agent's records in offset order (see app/offset_sequence.py):
a record after a gap is passed over and the partition sought back to the
missing offset, so nothing a stream skipped is lost."""

from __future__ import annotations

import logging
from typing import Any

from faust.types import TP

from app import metrics
from app.offset_sequence import OffsetSequence
from app.records import now_ms

log = logging.getLogger(__name__)


async def in_sequence(app: Any, seq: OffsetSequence, agent: str, msg: Any) -> str:
    """``first``, ``next`` or ``behind`` for a record to handle (``behind``:
    a redelivery the agent's own checks recognise), ``gap`` for one to pass
    over (the partition is being read again from the missing offset)."""
    now = now_ms()
    found = seq.check((msg.topic, msg.partition), msg.offset, now)
    if found != "gap":
        return found
    back_to = seq.seek_to((msg.topic, msg.partition), now)
    if back_to is not None:
        metrics.STREAM_GAPS.labels(agent).inc()
        log.warning(
            "%s: %s[%d] jumped to offset %d; reading again from %d",
            agent,
            msg.topic,
            msg.partition,
            msg.offset,
            back_to,
        )
        try:
            await app.consumer.seek(TP(msg.topic, msg.partition), back_to)
        except Exception as exc:  # revoked meanwhile: its next owner reads it
            log.warning("%s: could not seek back: %s", agent, exc)
    return found
