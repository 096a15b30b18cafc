"""archive_outcomes: outcomes → Parquet files (date × policy partitions),
for backtests and training sets (see app/features/archive.py).

Batches of up to ``archive_batch_max`` outcomes or ``archive_flush_seconds``
are written (in a thread: file I/O must not block the event loop) before the
batch's offsets are acknowledged: at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import faust
import orjson

from app import metrics
from app.faust_app import Runtime
from app.features.archive import OutcomeArchive
from app.records import InvalidEvent, Outcome

log = logging.getLogger(__name__)
AGENT = "archive_outcomes"


def register(app: faust.App, runtime: Runtime) -> None:
    s = runtime.settings
    source = app.topic(
        runtime.topics.name("outcomes"), key_type=bytes, value_type=bytes, value_serializer="raw"
    )
    archive = OutcomeArchive(Path(s.archive_dir) if s.archive_dir else s.data_dir / "archive")

    @app.agent(source, name=AGENT)
    async def archive_outcomes(stream: Any) -> None:
        async for events in stream.take_events(s.archive_batch_max, within=s.archive_flush_seconds):
            rows = []
            for event in events:
                try:
                    Outcome.loads(event.message.value, s.max_event_bytes)  # validate
                except InvalidEvent:  # learn_from_outcomes dead-letters it
                    metrics.EVENTS.labels(AGENT, "invalid").inc()
                    continue
                rows.append(orjson.loads(event.message.value))
            if rows:
                await asyncio.to_thread(archive.write, rows)
            metrics.EVENTS.labels(AGENT, "ok").inc(len(rows))
