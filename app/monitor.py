"""``llmopt monitor``: the dashboard's figures in the terminal, read from the
metrics topic (and the drift and alert topics) like the dashboard is.

:func:`render` is pure: a :meth:`MetricsHistory.view` → a rich renderable.

>>> import io
>>> from rich.console import Console
>>> from app.dashboard.history import MetricsHistory
>>> console = Console(width=100, record=True, file=io.StringIO())
>>> console.print(render(MetricsHistory().view(now_ms=0)))
>>> "waiting for metrics" in console.export_text()
True
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from app.dashboard.feed import MetricsFeed
from app.dashboard.history import MetricsHistory, event_time
from app.records import JSON, now_ms
from app.settings import Settings
from app.topics import TopicCatalog

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None], width: int = 40) -> str:
    """Unicode block sparkline of the last ``width`` values (gaps for None).

    >>> sparkline([0, 1, 2, 3, None, 3])
    '▁▃▅█ █'
    """
    vals = values[-width:]
    present = [v for v in vals if v is not None]
    top = max(present, default=0.0) or 1.0
    return "".join(
        " " if v is None else BLOCKS[min(len(BLOCKS) - 1, int(v / top * (len(BLOCKS) - 1)))]
        for v in vals
    )


def _num(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.1f} ms"


def _clock(ms: int | None) -> str:
    if ms is None:
        return "–"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%H:%M:%S")


def task_lines(tasks: JSON, arms: int = 3) -> list[str]:
    """One line per task type: its true regret per decision and its top arms.

    >>> task_lines({"code": {"regret_per_decision": 0.0123,
    ...                      "shares": {"claude-sonnet": 0.9, "gpt-4o": 0.1}}})
    ['code            regret 0.0123/decision  claude-sonnet 90%  gpt-4o 10%']
    """
    lines = []
    for task, f in tasks.items():
        r = f["regret_per_decision"]
        top = "  ".join(f"{a} {s:.0%}" for a, s in list(f["shares"].items())[:arms])
        lines.append(f"{task:<15} regret {'–' if r is None else f'{r:.4f}'}/decision  {top}")
    return lines


def render(view: JSON) -> Group:
    """The figures of one :meth:`MetricsHistory.view`."""
    points, latest, totals = view["points"], view["latest"], view["totals"]
    if not points:
        return Group(
            Text(f"waiting for metrics… ({view['snapshots']} snapshots read)", style="yellow")
        )
    head = Table(title="LLM Auto-Optimizer", title_justify="left", expand=False)
    head.add_column("figure")
    head.add_column("now", justify="right")
    head.add_column("history")
    head.add_row(
        "decisions/s",
        _num(latest["decisions_per_s"], 0),
        sparkline([p["decisions_per_s"] for p in points]),
    )
    head.add_row(
        "latency p50 / p99",
        f"{_ms(latest['latency_p50_s'])} / {_ms(latest['latency_p99_s'])}",
        sparkline([p["latency_p99_s"] for p in points]),
    )
    for pid, reward in latest["reward_mean"].items():
        head.add_row(
            f"avg reward · {pid}",
            _num(reward, 3),
            sparkline([p["reward_mean"].get(pid) for p in points]),
        )
    if totals["simulator"]:
        head.add_row(
            "true regret",
            f"{_num(totals['true_regret'], 1)} ({_num(totals['mean_regret'], 4)}/decision)",
            sparkline([p["regret_per_decision"] for p in points]),
        )
        head.add_row("best arm by truth", str(totals["best_arm"] or "–"), "")
    head.add_row(
        "dead letters/s · errors/s",
        f"{_num(latest['dead_letters_per_s'])} · {_num(latest['errors_per_s'])}",
        sparkline([p["dead_letters_per_s"] for p in points]),
    )
    head.add_row("consumer lag", _num(latest["lag"], 0), sparkline([p["lag"] for p in points]))
    head.add_row(
        "decisions in total", _num(totals["decisions"], 0), f"{totals['workers']} worker(s)"
    )
    parts: list[Any] = [head]
    if latest["tasks"]:
        t = Table(title=f"per task type (last {len(points[-3:])} points)", title_justify="left")
        t.add_column("task type")
        t.add_column("regret/decision", justify="right")
        t.add_column("arm shares")
        for task, f in latest["tasks"].items():
            shares = "  ".join(f"{a} {s:.0%}" for a, s in list(f["shares"].items())[:3])
            t.add_row(task, _num(f["regret_per_decision"], 4), shares)
        parts.append(t)
    for pid, shares in latest["shares"].items():
        t = Table(
            title=f"arm shares · {pid} (last {len(points[-3:])} points)", title_justify="left"
        )
        t.add_column("arm")
        t.add_column("share", justify="right")
        t.add_column("")
        for arm, share in shares.items():
            t.add_row(arm, f"{share:.1%}", "█" * round(share * 30))
        parts.append(t)
    for kind, title in (("drift", "drift events"), ("alerts", "alerts")):
        events = view["events"][kind]
        t = Table(title=f"{title} ({view['event_counts'][kind]})", title_justify="left")
        t.add_column("time")
        t.add_column("event")
        for doc in events[:8]:
            summary = " ".join(
                f"{k}={v}"
                for k, v in doc.items()
                if k != "schema_version" and not k.endswith("_at")
            )
            t.add_row(_clock(event_time(doc)), summary[:150])
        if not events:
            t.add_row("", Text("none yet", style="dim"))
        parts.append(t)
    return Group(*parts)


async def run_monitor(
    settings: Settings,
    interval: float = 2.0,
    once_after: float | None = None,
    console: Console | None = None,
) -> JSON:
    """Follow the topics and redraw every ``interval`` s until cancelled; with
    ``once_after``, read that long, print one frame and return its view."""
    console = console or Console()
    history = MetricsHistory(bucket_ms=int(settings.metrics_publish_seconds * 1000) or 2_000)
    catalog = TopicCatalog.for_settings(settings)
    feed = MetricsFeed(settings.bootstrap, catalog, history, client_id="llmopt-monitor")
    task = asyncio.create_task(feed.run())
    try:
        await _wait_assigned(feed, catalog.name("metrics"), task)
        if once_after is not None:
            deadline = time.monotonic() + once_after
            while time.monotonic() < deadline and not task.done():
                await asyncio.sleep(0.1)
            if task.done():
                task.result()  # raise what stopped it
            view = history.view(now_ms())
            console.print(render(view))
            return view
        with Live(render(history.view(now_ms())), console=console, auto_refresh=False) as live:
            while not task.done():
                await asyncio.sleep(interval)
                live.update(render(history.view(now_ms())), refresh=True)
            task.result()
        return history.view(now_ms())
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class MonitorError(RuntimeError):
    """The topics cannot be read (missing, or the cluster unreachable)."""


async def _wait_assigned(
    feed: MetricsFeed, topic: str, task: asyncio.Task[None], timeout: float = 5.0
) -> None:
    deadline = time.monotonic() + timeout
    while topic not in feed.assigned:
        if task.done():
            exc = task.exception()
            raise MonitorError(f"cannot read {topic}: {exc}")
        if time.monotonic() > deadline:
            raise MonitorError(f"topic {topic} is missing: run `llmopt topics apply`")
        await asyncio.sleep(0.1)
