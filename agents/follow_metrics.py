"""follow_metrics: the metrics topic (and the drift and alert topics) → this
worker's in-memory dashboard history, served at ``/dashboard`` (the page) and
``/dashboard/data`` (its JSON), so any worker can serve the dashboard.

The reader is a plain consumer of every partition, not a consumer-group
member (see :mod:`app.dashboard.feed`); it runs as a task of the worker and
stops with it.
"""

from __future__ import annotations

from typing import Any

import faust

from app.dashboard.feed import MetricsFeed
from app.dashboard.history import MetricsHistory
from app.dashboard.page import page_html
from app.faust_app import Runtime
from app.records import now_ms


def register(app: faust.App, runtime: Runtime) -> None:
    s = runtime.settings
    bucket_ms = int(max(0.5, s.metrics_publish_seconds or 2.0) * 1000)
    history = MetricsHistory(bucket_ms=bucket_ms, max_points=s.dashboard_history_points)
    feed = MetricsFeed(
        s.bootstrap, runtime.topics, history, client_id=f"{s.app_id}-metrics-follower"
    )

    @app.task
    async def follow_metrics() -> None:
        await feed.run()

    @app.page("/dashboard")
    async def dashboard(web: Any, request: Any) -> Any:
        return web.html(page_html())

    @app.page("/dashboard/data")
    async def dashboard_data(web: Any, request: Any) -> Any:
        return web.json(history.view(now_ms()))
