"""The learned trade-off fronts on the ops view: the decider's front as
gauges, through a metrics snapshot (what llmopt.metrics.v1 carries) into the
dashboard's history, and drawn by the page in headless Chromium."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from app import metrics
from app.dashboard import MetricsHistory, page_html
from app.metrics_snapshot import build_snapshot
from app.records import MetricsSnapshot
from tests.test_dashboard_integration import dump_dom
from tests.test_tradeoff import TABLE, decider_with


def view_with_front() -> dict:
    """The history's view after one worker published the front of TABLE
    plus a dominated arm (decided by a decider holding their estimates)."""
    d = decider_with({**TABLE})
    metrics.set_tradeoff_front("p", d.front("p"))
    rows = d.front("p")["qa"]
    worse = type(rows[0])("worse", 10, (0.7, 0.006, 2000.0), (0.001, 1e-5, 5.0), False)
    metrics.set_tradeoff_front("p", {"qa": [worse]})
    snap = build_snapshot(REGISTRY, "worker", "w1", now_ms=1_000, interval_ms=2_000)
    wire = MetricsSnapshot.loads(snap.dumps())  # as the metrics topic carries it
    history = MetricsHistory()
    history.add(wire)
    return history.view(now_ms=1_000)


def test_the_history_shows_each_task_types_front() -> None:
    fronts = view_with_front()["tradeoffs"]["p"]["qa"]
    assert {a for a, c in fronts.items() if c["on_front"]} >= set(TABLE)
    assert fronts["worse"]["on_front"] is False
    assert fronts["strong"]["quality"] == pytest.approx(0.95)
    assert fronts["cheap"]["cost_usd"] == pytest.approx(0.0005)
    assert 0 < fronts["middle"]["latency_ms_se"] < 20


@pytest.fixture
def served() -> Iterator[str]:
    body = json.dumps(view_with_front())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = body if self.path.endswith("/data") else page_html()
            kind = "application/json" if self.path.endswith("/data") else "text/html"
            payload = data.encode()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dashboard"
    finally:
        server.shutdown()


def test_the_page_draws_the_front(served: str) -> None:
    dom = dump_dom(served, budget_ms=3000)
    table = re.search(r'<table id="tradeoffs">.*?</table>', dom, re.S)
    assert table, "no trade-off table on the page"
    rows = re.findall(
        r'<tr class="(on-front|off-front)" data-task="qa">(.*?)</tr>', table.group(0), re.S
    )
    on = [r for kind, r in rows if kind == "on-front"]
    off = [r for kind, r in rows if kind == "off-front"]
    assert len(on) >= 3 and all(">on<" in r for r in on)
    assert len(off) >= 1 and any("worse" in r and "dominated" in r for r in off)
    strong = next(r for r in on if ">strong<" in r)
    assert "0.95 ±" in strong
