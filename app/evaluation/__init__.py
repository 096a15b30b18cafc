"""Evaluation tools: simulated traffic with known ground truth.

Simulation
----------
TrafficSimulator
    Seeded request stream, outcome sampler, exact expected rewards and true
    regret (used by ``llmopt run``, the integration tests and the benchmarks).
SimulatorConfig
    A traffic scenario (tenants, task mix, models, parameter effects, drift);
    ``SimulatorConfig.from_yaml("config/simulator.yaml")``.

Scenario parts
--------------
ScheduledDrift, LengthSpec, ModelSpec, ParameterEffect, TenantSpec

Multi-step environments (reinforcement learning)
------------------------------------------------
Environment, run_episode, average_return
    A dependency-free, gym-like environment contract.
LLMWorkflowEnv
    Episodes of one request: call models, escalate or retry, accept.

Off-policy evaluation (backtests)
---------------------------------
LoggedData, ColumnMapping, DataQuality, read_file, read_archive
    Logged bandit feedback as numpy arrays, from files, the Parquet archive or
    the outcomes topic (app/stream/kafka_io.py reads it); unusable rows
    dropped and counted.
IPS, SNIPS, DirectMethod, DoublyRobust, SelfNormalizedDoublyRobust,
SwitchDoublyRobust, Replay, RidgeRewardModel, Estimate
    Vectorised estimators with clipping, bootstrap intervals and effective
    sample size.
Backtest, PolicySpec, BacktestResult
    Several policies (library, logging, uniform, fixed, best fixed) in one
    run, frozen or learning while they replay.
render_table, render_json, render_html
    Reports: terminal table, JSON, self-contained HTML with SVG plots.

Closed loops without a broker (modules, imported by name)
---------------------------------------------------------
closed_loop
    ``llmopt run``'s loop in process: decider, simulator, learner, snapshots.
task_regret
    True regret and arm shares per task type, in total and over a minute.
tradeoff_loop
    The simulator's true objectives per arm, and a loop of trade-off decisions.
"""

from typing import TYPE_CHECKING, Any

from app.evaluation.environment import Environment, average_return, run_episode
from app.evaluation.simulator import (
    TASK_TYPES,
    LengthSpec,
    ModelSpec,
    ParameterEffect,
    ScheduledDrift,
    SimulatorConfig,
    TenantSpec,
    TrafficSimulator,
)
from app.evaluation.workflow_env import LLMWorkflowEnv

if TYPE_CHECKING:
    from app.evaluation.backtest import Backtest, BacktestResult, PolicySpec
    from app.evaluation.estimators import (
        IPS,
        SNIPS,
        DirectMethod,
        DoublyRobust,
        Estimate,
        Replay,
        RidgeRewardModel,
        SelfNormalizedDoublyRobust,
        SwitchDoublyRobust,
    )
    from app.evaluation.logged_data import (
        ColumnMapping,
        DataQuality,
        LoggedData,
        read_archive,
        read_file,
    )
    from app.evaluation.report import render_html, render_json, render_table

# The backtest side imports every policy (torch among them): loaded on first
# use, so that importing the simulator stays cheap.
_LAZY = {
    **dict.fromkeys(("Backtest", "BacktestResult", "PolicySpec"), "backtest"),
    **dict.fromkeys(
        (
            "IPS",
            "SNIPS",
            "DirectMethod",
            "DoublyRobust",
            "Estimate",
            "Replay",
            "RidgeRewardModel",
            "SelfNormalizedDoublyRobust",
            "SwitchDoublyRobust",
        ),
        "estimators",
    ),
    **dict.fromkeys(
        (
            "ColumnMapping",
            "DataQuality",
            "LoggedData",
            "read_archive",
            "read_file",
        ),
        "logged_data",
    ),
    **dict.fromkeys(("render_html", "render_json", "render_table"), "report"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "IPS",
    "SNIPS",
    "TASK_TYPES",
    "Backtest",
    "BacktestResult",
    "ColumnMapping",
    "DataQuality",
    "DirectMethod",
    "DoublyRobust",
    "Environment",
    "Estimate",
    "LLMWorkflowEnv",
    "LengthSpec",
    "LoggedData",
    "ModelSpec",
    "ParameterEffect",
    "PolicySpec",
    "Replay",
    "RidgeRewardModel",
    "ScheduledDrift",
    "SelfNormalizedDoublyRobust",
    "SimulatorConfig",
    "SwitchDoublyRobust",
    "TenantSpec",
    "TrafficSimulator",
    "average_return",
    "read_archive",
    "read_file",
    "render_html",
    "render_json",
    "render_table",
    "run_episode",
]
