"""archive_outcomes: outcomes → Parquet files (date × policy partitions),
for backtests and training sets (see app/features/archive.py).

Batches of up to ``archive_batch_max`` outcomes or ``archive_flush_seconds``
are written (in a thread: file I/O must not block the event loop) before the
batch's offsets are acknowledged: at-least-once.

An outcome that fails validation is counted here and dead-lettered by
``learn_from_outcomes``. A valid outcome that cannot be archived — a date
beyond year 9999, a policy id that is not a safe directory name — is
dead-lettered here (``invalid_value``); if writing a batch fails anyway, its
outcomes are written one at a time and those that still fail are
dead-lettered as ``internal_error`` (the others may then be archived twice,
which readers already dedupe).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import faust

from app import metrics
from app.features.archive import OutcomeArchive, archive_row
from app.records import InvalidEvent, Outcome
from app.stream.dead_letter import send_dead_letter, send_internal_error
from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
AGENT = "archive_outcomes"


def register(app: faust.App, runtime: Runtime) -> None:
    s = runtime.settings
    source = app.topic(
        runtime.topics.name("outcomes"), key_type=bytes, value_type=bytes, value_serializer="raw"
    )
    dead = app.topic(
        runtime.topics.name("dead_letter"), key_serializer="raw", value_serializer="raw"
    )
    archive = OutcomeArchive(Path(s.archive_dir) if s.archive_dir else s.data_dir / "archive")

    @app.agent(source, name=AGENT)
    async def archive_outcomes(stream: Any) -> None:
        async for events in stream.take_events(s.archive_batch_max, within=s.archive_flush_seconds):
            rows, msgs = [], []
            for event in events:
                msg = event.message
                try:
                    Outcome.loads(msg.value, s.max_event_bytes)
                except InvalidEvent:  # learn_from_outcomes dead-letters it
                    metrics.EVENTS.labels(AGENT, "invalid").inc()
                    continue
                try:
                    rows.append(archive_row(msg.value))
                    msgs.append(msg)
                except InvalidEvent as exc:
                    await send_dead_letter(dead.send, AGENT, msg, exc)
                    metrics.EVENTS.labels(AGENT, "dead_letter").inc()
                except Exception as exc:
                    await send_internal_error(dead.send, AGENT, msg, exc)
            written = await write(rows, msgs) if rows else 0
            metrics.EVENTS.labels(AGENT, "ok").inc(written)

    async def write(rows: list[dict[str, Any]], msgs: list[Any]) -> int:
        """Write ``rows``; returns how many were archived."""
        try:
            await asyncio.to_thread(archive.write, rows)
            return len(rows)
        except Exception:
            log.warning("an archive batch of %d outcomes failed; writing one at a time", len(rows))
        written = 0
        for row, msg in zip(rows, msgs, strict=True):
            try:
                await asyncio.to_thread(archive.write, [row])
                written += 1
            except Exception as exc:
                await send_internal_error(dead.send, AGENT, msg, exc)
        return written
