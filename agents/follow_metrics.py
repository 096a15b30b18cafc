"""follow_metrics: the metrics topic (and the drift and alert topics) → this
worker's in-memory dashboard history, served at ``/dashboard`` (the page) and
``/dashboard/data`` (its JSON), so any worker can serve the dashboard.

The reader is a plain consumer of every partition, not a consumer-group
member (see :mod:`app.dashboard.feed`); it runs as a task of the worker and
stops with it. If the reader fails (the cluster unreachable, a bug), it is
logged and started again: an exception in a Faust task would stop the worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from app.dashboard.feed import MetricsFeed
from app.dashboard.history import MetricsHistory
from app.dashboard.page import page_html
from app.records import now_ms
from app.stream.runtime import Runtime

log = logging.getLogger(__name__)
RESTART_SECONDS = 5.0


def register(app: faust.App, runtime: Runtime) -> None:
    s = runtime.settings
    bucket_ms = int(max(0.5, s.metrics_publish_seconds or 2.0) * 1000)
    history = MetricsHistory(bucket_ms=bucket_ms, max_points=s.dashboard_history_points)

    @app.task
    async def follow_metrics() -> None:
        while True:
            # A new reader each time: it assigns itself every partition afresh.
            feed = MetricsFeed(
                s.bootstrap, runtime.topics, history, client_id=f"{s.app_id}-metrics-follower"
            )
            try:
                await feed.run()
            except Exception:
                log.exception("the metrics reader failed; restarting in %.0f s", RESTART_SECONDS)
            await asyncio.sleep(RESTART_SECONDS)

    @app.page("/dashboard")
    async def dashboard(web: Any, request: Any) -> Any:
        return web.html(page_html())

    @app.page("/dashboard/data")
    async def dashboard_data(web: Any, request: Any) -> Any:
        return web.json(history.view(now_ms()))
