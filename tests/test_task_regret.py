"""True regret per task type: the optimum over call parameters, the tracker
behind the live summary, the simulator's metrics, and what the dashboard and
``llmopt monitor`` make of them."""

from __future__ import annotations

import io
import itertools
import random

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from app.dashboard.history import MetricsHistory
from app.evaluation.simulator import TrafficSimulator
from app.evaluation.task_regret import TaskRegret
from app.monitor import render, task_lines
from app.records import MetricsSnapshot
from app.topics import TopicCatalog
from app.traffic import TrafficDriver
from app.tuning.space import DEFAULT_SPACE, ParameterSpace

SPACE = ParameterSpace.from_config(DEFAULT_SPACE)


def tuned_sim(seed: int = 0) -> TrafficSimulator:
    sim = TrafficSimulator.default(seed=seed, start_ms=0)
    return TrafficSimulator(
        sim.config, list(sim.arms.values()), sim.reward_spec, seed, 0, parameter_space=SPACE
    )


def grid_settings(task_out: tuple[int, ...]) -> list[dict[str, float | int]]:
    temps = [0.0, 0.5, 1.0, 1.5]
    tops = [0.7, 0.85, 1.0]
    caps = sorted({256, 512, 1024, 2048, 4096, *(n for n in task_out if 256 <= n <= 4096)})
    return [
        {"temperature": t, "top_p": p, "max_tokens": c}
        for t, p, c in itertools.product(temps, tops, caps)
    ]


def test_the_optimum_is_the_best_arm_at_its_best_setting_in_the_space() -> None:
    sim = tuned_sim()
    plain = TrafficSimulator.default(seed=0, start_ms=0)
    for _ in range(25):
        req = sim.next_request(0)
        settings = grid_settings(sim._natural_out[req.task_type])
        grid_best = max(
            sim.expected_reward(req, arm, 0, s) for arm in sim.arm_names for s in settings
        )
        configured = max(plain.expected_rewards(req, None, 0).values())
        # No setting of a grid (bounds and natural lengths included) beats it,
        # and the best of the grid reaches it: the optimum is exact, not a bound.
        assert sim.optimum(req, 0) == pytest.approx(grid_best, abs=1e-12)
        assert sim.optimum(req, 0) >= configured
        assert plain.optimum(req, 0) == pytest.approx(configured, abs=1e-12)


def test_no_served_setting_in_the_space_has_negative_regret() -> None:
    sim = tuned_sim(seed=4)
    r = random.Random(4)
    for _ in range(300):
        req = sim.next_request(0)
        setting = {
            "temperature": r.uniform(0.0, 1.5),
            "top_p": r.uniform(0.7, 1.0),
            "max_tokens": r.randint(256, 4096),
        }
        assert sim.record_choice(req, r.choice(sim.arm_names), 0, setting) >= -1e-12
    # Creative writing gains most from parameters: its configured best arm
    # leaves regret against the tuned optimum, the other tasks' little.
    creative = next(q for q in iter(lambda: sim.next_request(0), None) if q.task_type == "creative")
    configured = max(sim.expected_rewards(creative, None, 0).values())
    assert sim.optimum(creative, 0) - configured > 0.05


def test_the_tracker_keeps_totals_a_trailing_window_and_shares_per_task() -> None:
    tr = TaskRegret(["code", "qa"], window_seconds=10, share_window=3)
    for i, (task, arm, regret) in enumerate(
        [("code", "a", 0.3), ("code", "a", 0.1), ("qa", "b", 0.0), ("code", "b", 0.2)]
    ):
        tr.record(task, arm, regret, now_ms=i * 4_000)  # 0, 4, 8, 12 s
    totals = tr.totals()
    assert totals["code"] == {"decisions": 3, "regret": 0.6, "regret_per_decision": 0.2}
    # At 12 s the window (2, 12] holds the decisions at 4, 8 and 12 s.
    recent = tr.recent(now_ms=12_000)
    assert recent["code"]["decisions"] == 2
    assert recent["code"]["regret_per_decision"] == pytest.approx(0.15)
    assert tr.recent_overall(now_ms=12_000)["decisions"] == 3
    # Long after, the window is empty: no figure rather than a stale one.
    assert tr.recent(now_ms=60_000)["qa"] == {
        "decisions": 0,
        "regret": 0.0,
        "regret_per_decision": None,
    }
    assert tr.shares()["code"] == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    with pytest.raises(KeyError):
        tr.record("poetry", "a", 0.0, now_ms=0)


def test_the_driver_counts_regret_and_arms_per_task_type() -> None:
    sim = tuned_sim(seed=2)
    driver = TrafficDriver("127.0.0.1:1", TopicCatalog.load(), sim, rate_per_second=1)
    expected: dict[str, float] = {}
    arms: dict[tuple[str, str], int] = {}
    for i in range(200):
        req = sim.next_request(i)
        arm = sim.arm_names[i % len(sim.arm_names)]
        params = {"temperature": 1.5, "top_p": 0.7, "max_tokens": 4096} if i % 2 else None
        truth = sim.optimum(req, i) - sim.expected_reward(req, arm, i, params)
        expected[req.task_type] = expected.get(req.task_type, 0.0) + max(0.0, truth)
        arms[req.task_type, arm] = arms.get((req.task_type, arm), 0) + 1
        decision = {"arm": arm, "parameters": params} if params else {"arm": arm}
        driver._observe(req, decision, i)

    families = text_string_to_metric_families(generate_latest(driver.metrics.registry).decode())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    for task, regret in expected.items():
        regret_key = ("llmopt_simulator_true_regret_total", (("task_type", task),))
        assert samples[regret_key] == pytest.approx(regret)
    for (task, arm), n in arms.items():
        count_key = ("llmopt_simulator_decisions_total", (("arm", arm), ("task_type", task)))
        assert samples[count_key] == n
    # Every task type of the scenario has a regret series, traffic or not.
    tasks = {
        dict(k[1])["task_type"] for k in samples if k[0] == "llmopt_simulator_true_regret_total"
    }
    assert tasks == set(sim.config.task_names)
    summary = driver.summary()["tasks"]
    assert sum(t["decisions"] for t in summary.values()) == 200
    for t in summary.values():
        assert t["decisions"] == 0 or sum(t["shares"].values()) == pytest.approx(1.0, abs=0.01)


def sim_snapshot(
    t: int, counts: dict[tuple[str, str], float], regret: dict[str, float]
) -> MetricsSnapshot:
    samples = [
        {
            "name": "llmopt_simulator_decisions_total",
            "labels": {"task_type": task, "arm": arm},
            "value": n,
        }
        for (task, arm), n in counts.items()
    ] + [
        {"name": "llmopt_simulator_true_regret_total", "labels": {"task_type": task}, "value": r}
        for task, r in regret.items()
    ]
    return MetricsSnapshot("id", "simulator", "sim-1", t, 2_000, samples)


def test_the_dashboard_history_and_the_monitor_show_each_task_type() -> None:
    h = MetricsHistory(bucket_ms=2_000)
    h.add(
        sim_snapshot(0, {("code", "a"): 0, ("code", "b"): 0, ("qa", "a"): 0}, {"code": 0, "qa": 0})
    )
    h.add(
        sim_snapshot(
            2_000, {("code", "a"): 30, ("code", "b"): 10, ("qa", "a"): 60}, {"code": 2.0, "qa": 0.6}
        )
    )
    view = h.view(now_ms=2_000)
    tasks = view["latest"]["tasks"]
    assert tasks["code"] == {
        "decisions": 40,
        "regret_per_decision": 0.05,
        "shares": {"a": 0.75, "b": 0.25},
    }
    assert tasks["qa"]["regret_per_decision"] == pytest.approx(0.01)
    # The overall regret per decision is the task types' together.
    assert view["latest"]["regret_per_decision"] == pytest.approx(2.6 / 100)

    console = Console(width=120, record=True, file=io.StringIO())
    console.print(render(view))
    text = console.export_text()
    assert "per task type" in text and "0.0500" in text and "a 75%" in text
    assert task_lines(tasks) == [
        "code            regret 0.0500/decision  a 75%  b 25%",
        "qa              regret 0.0100/decision  a 100%",
    ]
