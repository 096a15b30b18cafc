"""The dashboard end to end: a worker and simulated traffic on the test broker,
the page loaded in headless Chromium, and what it shows checked against the
simulator's ground truth and the worker's own /metrics.

Needs Chromium (Debian: ``apt-get install -y chromium``); without it the test
fails and says so. promtool (Debian: ``prometheus``) is used when installed.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.evaluation.simulator import SimulatorConfig, TrafficSimulator
from app.policies.config import PoliciesConfig
from app.records import now_ms
from app.traffic import TrafficDriver
from tests.conftest import TEST_POLICIES, Deployment
from tests.kafka_io import produce

RATE = 150.0
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "headless Chromium is needed to test the dashboard and none was found "
        f"(looked for {', '.join(CHROMIUM_NAMES)}); on Debian: apt-get install -y chromium"
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def dump_dom(url: str, budget_ms: int = 6000) -> str:
    """The page's DOM after ``budget_ms`` of virtual time (its scripts have run)."""
    with tempfile.TemporaryDirectory(prefix="llmopt-chromium-") as profile:
        out = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def text_of(dom: str, element_id: str) -> str:
    m = re.search(rf'id="{element_id}"[^>]*>(.*?)</', dom, re.S)
    assert m, f"no element #{element_id} in the page"
    return html.unescape(m.group(1)).strip()


def number(text: str) -> float:
    m = re.search(r"-?[\d,]+(?:\.\d+)?", text)
    assert m, f"no number in {text!r}"
    return float(m.group(0).replace(",", ""))


def ops_events() -> dict[str, dict[str, Any]]:
    t = now_ms()
    drift = {
        "schema_version": 1,
        "event_id": "e-1",
        "kind": "drift",
        "policy_id": "default",
        "signal": "reward",
        "detector": "adwin",
        "observed_at": t,
        "created_at": t,
        "arm": "claude-haiku",
        "mean_before": 0.8,
        "mean_after": 0.6,
    }
    alert = {
        "schema_version": 1, "alert_id": "a-1", "rule": "reward-low", "status": "firing",
        "severity": "critical", "policy_id": "default", "metric": "reward", "comparison": "<",
        "threshold": 0.7, "value": 0.6, "window_seconds": 60, "samples": 500,
        "started_at": t, "created_at": t,
    }  # fmt: skip
    return {"drift": drift, "alerts": alert}


def make_driver(d: Deployment) -> TrafficDriver:
    policies = PoliciesConfig.load(TEST_POLICIES)
    pc = policies.get(None)
    assert pc is not None
    config = SimulatorConfig.from_yaml(d.settings.simulator_path).with_drift(False)
    sim = TrafficSimulator(config, pc.arms, pc.reward, seed=3)
    return TrafficDriver(d.broker.bootstrap, d.topics, sim, RATE)


def test_dashboard_shows_live_decisions_shares_reward_and_true_regret(
    deployment: Deployment,
) -> None:
    chromium()  # fail early, before starting anything
    deployment.env["LLMOPT_METRICS_PUBLISH_SECONDS"] = "1"
    worker = deployment.start_worker()
    base = f"http://127.0.0.1:{worker.port}"
    driver = make_driver(deployment)
    arms = {a.name for a in PoliciesConfig.load(TEST_POLICIES).get(None).arms}  # type: ignore[union-attr]

    # A drift event and an alert, as the drift detector would send them (when
    # topics.yaml has those topics: the dashboard reads whatever exists).
    events = {role: doc for role, doc in ops_events().items() if role in deployment.topics.topics}

    async def scenario() -> tuple[dict[str, Any], str, str]:
        run = asyncio.create_task(driver.run(duration_seconds=60))
        for role, doc in events.items():
            await produce(
                deployment.broker.bootstrap,
                deployment.topics.name(role),
                [(b"default", json.dumps(doc).encode())],
            )
        try:
            deadline = time.monotonic() + 45
            while True:  # live data: several points from the worker and the simulator
                data = await asyncio.to_thread(get_json, f"{base}/dashboard/data")
                sources = {p["source"] for p in data["publishers"]}
                steady = data["latest"]["decisions_per_s"] >= 0.6 * RATE  # past the ramp-up
                if len(data["points"]) >= 4 and sources == {"worker", "simulator"} and steady:
                    break
                assert time.monotonic() < deadline, f"no live dashboard data: {data}"
                assert not run.done(), run.exception()
                await asyncio.sleep(0.5)
            dom = await asyncio.to_thread(dump_dom, f"{base}/dashboard")
            exposition = await asyncio.to_thread(worker.metrics)
            data = await asyncio.to_thread(get_json, f"{base}/dashboard/data")
            return data, dom, exposition
        finally:
            driver.stop()
            await run

    data, dom, exposition = asyncio.run(scenario())

    # The page rendered live data, without a script error.
    assert re.search(r'id="status" data-state="live"', dom), text_of(dom, "status")

    # Decisions per second: the offered rate (the page shows the last few seconds).
    shown_rate = number(text_of(dom, "kpi-decisions"))
    assert 0.5 * RATE <= shown_rate <= 1.5 * RATE, shown_rate

    # Latency p50 / p99 in ms, ordered and plausible for a local broker.
    p50, p99 = (float(x) for x in re.findall(r"[\d.]+", text_of(dom, "kpi-latency"))[:2])
    assert 0 < p50 <= p99 < 5_000

    # Arm shares of the one policy in use: every arm is a configured one, the
    # shares add up to 100%.
    legend = re.findall(r'class="arm-share" data-arm="([^"]+)".*?<b>([\d.]+)%</b>', dom, re.S)
    assert legend, "no arm shares shown"
    assert {arm for arm, _ in legend} <= arms
    assert sum(float(p) for _, p in legend) == pytest.approx(100, abs=1)
    assert 'data-policy="default"' in dom

    # Reward: a mean in [0, 1], equal to the JSON's.
    reward = number(text_of(dom, "kpi-reward"))
    assert 0 < reward <= 1

    # True regret: the simulator's own total (published by the driver) and its best arm.
    regret = number(text_of(dom, "kpi-regret"))
    assert 0 <= regret <= driver.sim.regret + 1e-6
    assert f"best arm by truth: {driver.sim.overall_best_arm(int(time.time() * 1000))}" in (
        text_of(dom, "kpi-regret-sub")
    )
    assert data["totals"]["mean_regret"] == pytest.approx(
        data["totals"]["true_regret"] / data["totals"]["sim_decisions"]
    )

    # Per task type: a row per task type of the scenario that had traffic, with
    # its regret per decision and its arm shares (configured arms, adding up
    # to 100%); per point the task types' figures make up the overall regret.
    page = re.sub(r"<script.*?</script>", "", dom, flags=re.S)  # not the templates
    body = re.search(r'id="tasks".*?<tbody>(.*?)</tbody>', page, re.S)
    assert body, "no #tasks"
    rows = re.findall(r'<tr class="task-row" data-task="([^"]+)">(.*?)</tr>', body.group(1), re.S)
    assert rows, "no per-task rows shown"
    assert {task for task, _ in rows} <= set(driver.sim.config.task_names)
    for task, row in rows:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        assert 0 <= number(cells[1]) <= 1 and number(cells[2]) > 0, (task, cells)
        shares = re.findall(r'class="task-share" data-arm="([^"]+)">[^<]*<b>([\d.]+)%</b>', row)
        assert shares and {arm for arm, _ in shares} <= arms
        assert sum(float(p) for _, p in shares) == pytest.approx(100, abs=1)
    for point in data["points"]:
        tasks = point["tasks"]
        n = sum(t["decisions"] for t in tasks.values())
        if n:
            regret = sum(t["decisions"] * t["regret_per_decision"] for t in tasks.values())
            assert regret / n == pytest.approx(point["regret_per_decision"], abs=1e-5)
    # The live summary's per-task totals are the driver's decisions and regret.
    totals = driver.tasks.totals()
    assert sum(t["decisions"] for t in totals.values()) == driver.sim.rounds
    assert sum(t["regret"] for t in totals.values()) == pytest.approx(driver.sim.regret, abs=1e-3)

    # Drift events and alerts: the ones sent are listed, with what they are about.
    for role, table, cells in (
        ("drift", "drift-table", ["drift", "default", "claude-haiku", "reward", "adwin"]),
        ("alerts", "alerts-table", ["critical", "firing", "reward-low", "default"]),
    ):
        body = re.search(rf'id="{table}".*?<tbody>(.*?)</tbody>', dom, re.S)
        assert body, f"no #{table}"
        if role in events:
            # (the learner may answer the drift with an adaptation event: listed too)
            rows = [
                re.findall(r"<td[^>]*>(.*?)</td>", tr)
                for tr in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)
            ]
            assert any(row[1 : 1 + len(cells)] == cells for row in rows), rows
            assert data["event_counts"][role] >= 1
        else:
            assert "none yet" in body.group(1)

    # Trade-off fronts: per task type with traffic, the arms' learned objectives,
    # at least one arm on the front, each drawn as a row of the table.
    fronts = data["tradeoffs"]["default"]
    assert fronts and set(fronts) <= set(driver.sim.config.task_names), fronts
    for task, per_arm in fronts.items():
        assert set(per_arm) <= arms and any(c["on_front"] for c in per_arm.values()), task
        assert all(0 <= c["quality"] <= 1 and c["cost_usd"] >= 0 for c in per_arm.values())
    drawn = re.findall(r'<tr class="(?:on|off)-front" data-task="([^"]+)">', dom)
    assert set(drawn) == set(fronts)

    # Fed from the metrics topic under the Prometheus names: the worker's
    # decision counter seen by the dashboard is at most what /metrics says
    # now, and at most a few publishing intervals behind.
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    now_total = sum(
        s.value for s in families["llmopt_decisions"].samples if s.name == "llmopt_decisions_total"
    )
    assert data["totals"]["decisions"] <= now_total <= data["totals"]["decisions"] + 6 * RATE

    # The live exposition passes promtool when it is installed.
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run(
            [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True
        )
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr


def test_logged_errors_are_counted(deployment: Deployment, tmp_path: Path) -> None:
    """A broken policies file is logged as an error (the running config is
    kept): llmopt_errors_total counts it under the logger that logged it."""
    policies = tmp_path / "policies.yaml"
    policies.write_text(TEST_POLICIES.read_text())
    deployment.env.update(LLMOPT_POLICIES_PATH=str(policies), LLMOPT_POLICIES_RELOAD_SECONDS="0.5")
    worker = deployment.start_worker()

    def errors() -> float:
        text = worker.metrics()
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "llmopt_errors_total" and s.labels["logger"] == "app.stream"
        )

    assert errors() == 0
    policies.write_text("policies: 42\n")  # valid YAML, not a policies file
    deadline = time.monotonic() + 20
    while errors() < 1:
        assert time.monotonic() < deadline, "the broken policies file was not counted"
        time.sleep(0.5)
    assert worker.alive()
