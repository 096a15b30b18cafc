"""The default demo policy (config/policies.yaml) learns a model per task type
and its call parameters: on the simulator, without a broker, its true regret
per decision at the end of a run is below a third of the context-free
policy's on the same traffic, against the best model at its best call
parameters for each request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from app.cli import main
from app.evaluation.closed_loop import LoopRun, run_loop
from app.evaluation.simulator import SimulatorConfig, TrafficSimulator
from app.policies.config import PoliciesConfig
from app.settings import POLICIES_PATH, SIMULATOR_PATH
from app.tuning.space import DEFAULT_SPACE, ParameterSpace

CONFIG = PoliciesConfig.load(POLICIES_PATH)
RATE, SECONDS, LAST_SECONDS = 300, 60, 20  # 18,000 requests; the last 6,000 judged


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # The optimiser's small GP fits: threads only contend on a shared machine,
    # as in the worker (app/cli.py).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(policy_id: str, seed: int) -> LoopRun:
    pc = CONFIG.policies[policy_id]
    sim = TrafficSimulator(
        SimulatorConfig.from_yaml(SIMULATOR_PATH),
        pc.arms,
        pc.reward,
        seed=seed,
        start_ms=0,
        parameter_space=ParameterSpace.from_config(DEFAULT_SPACE),
    )
    return run_loop(CONFIG, sim, SECONDS, RATE, policy_id=policy_id, seed=seed)


def test_the_default_tunes_per_task_and_the_context_free_policy_is_one_name_away() -> None:
    default = CONFIG.policies[CONFIG.default_policy]
    other = CONFIG.policies["context-free"]
    assert default.algorithm == "parameter_tuner" and default.contextual
    assert other.algorithm == "thompson_sampling" and not other.contextual
    assert other.arms == default.arms and other.reward == default.reward


def test_an_unknown_policy_flag_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMOPT_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("LLMOPT_POLICIES_PATH", str(POLICIES_PATH))
    assert main(["simulate", "--policy", "nope", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmopt: error: --policy nope: no such policy"), err
    assert "context-free, default" in err


@pytest.mark.parametrize("seed", [1, 2])
def test_the_demo_policy_ends_below_a_third_of_the_context_free_regret(seed: int) -> None:
    demo, context_free = run(CONFIG.default_policy, seed), run("context-free", seed)
    assert demo.decisions == context_free.decisions == RATE * SECONDS
    since = SECONDS - LAST_SECONDS
    late_demo = demo.regret_per_decision(since)
    late_free = context_free.regret_per_decision(since)
    assert late_demo < late_free / 3, (late_demo, late_free)
    # It learned, from a start no better than the context-free policy's.
    assert late_demo < demo.regret_per_decision(0) / 2

    # The per-task figures add up to the run's: every decision is counted
    # once, under its own task type.
    for r in (demo, context_free):
        totals = r.tracker.totals()
        assert sum(t["decisions"] for t in totals.values()) == r.decisions
        assert sum(t["regret"] for t in totals.values()) == pytest.approx(sum(r.regrets), abs=1e-4)
        for task, t in totals.items():
            mine = [x for x, k in zip(r.regrets, r.task_types, strict=True) if k == task]
            assert t["decisions"] == len(mine)
            assert t["regret"] == pytest.approx(sum(mine), abs=1e-5)
    # Routing per task type: the context-free policy sends creative writing
    # where it sends everything else; the demo leaves far less regret there.
    free_shares = context_free.tracker.shares()
    assert max(free_shares["creative"], key=free_shares["creative"].__getitem__) == max(
        free_shares["qa"], key=free_shares["qa"].__getitem__
    )
    creative = {
        name: [
            x
            for x, k, t in zip(r.regrets, r.task_types, r.at_ms, strict=True)
            if k == "creative" and t >= since * 1000
        ]
        for name, r in (("demo", demo), ("free", context_free))
    }
    late = {name: sum(xs) / len(xs) for name, xs in creative.items()}
    assert late["demo"] < late["free"] / 3, late
