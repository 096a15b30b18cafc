"""Evaluation tools: simulated traffic with known ground truth.

Simulation
----------
TrafficSimulator
    Seeded request stream, outcome sampler, exact expected rewards and true
    regret (used by ``llmopt run``, the integration tests and the benchmarks).
SimulatorConfig
    A traffic scenario (tenants, task mix, models, parameter effects, drift);
    ``SimulatorConfig.from_yaml("config/simulator.yaml")``.
ArmSpec
    An arm as in ``config/policies.yaml``: name, model, parameters.
load_arms
    The arms of one policy in a policies file.

Scenario parts
--------------
DriftEvent, LengthSpec, ModelSpec, ParameterEffect, TenantSpec

Multi-step environments (reinforcement learning)
------------------------------------------------
Environment, run_episode, average_return
    A dependency-free, gym-like environment contract.
LLMWorkflowEnv
    Episodes of one request: call models, escalate or retry, accept.

Off-policy evaluation (backtests)
---------------------------------
LoggedData, ColumnMapping, DataQuality, read_file, read_archive, read_outcomes_topic
    Logged bandit feedback as numpy arrays, from files, the Parquet archive or
    the outcomes topic; unusable rows dropped and counted.
IPS, SNIPS, DirectMethod, DoublyRobust, SelfNormalizedDoublyRobust,
SwitchDoublyRobust, Replay, RidgeRewardModel, Estimate
    Vectorised estimators with clipping, bootstrap intervals and effective
    sample size.
Backtest, PolicySpec, BacktestResult
    Several policies (library, logging, uniform, fixed, best fixed) in one
    run, frozen or learning while they replay.
render_table, render_json, render_html
    Reports: terminal table, JSON, self-contained HTML with SVG plots.
"""

from typing import TYPE_CHECKING, Any

from app.evaluation.environment import Environment, average_return, run_episode
from app.evaluation.simulator import (
    TASK_TYPES,
    ArmSpec,
    DriftEvent,
    LengthSpec,
    ModelSpec,
    ParameterEffect,
    SimulatorConfig,
    TenantSpec,
    TrafficSimulator,
    load_arms,
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
        read_outcomes_topic,
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
            "read_outcomes_topic",
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
    "ArmSpec",
    "Backtest",
    "BacktestResult",
    "ColumnMapping",
    "DataQuality",
    "DirectMethod",
    "DoublyRobust",
    "DriftEvent",
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
    "SelfNormalizedDoublyRobust",
    "SimulatorConfig",
    "SwitchDoublyRobust",
    "TenantSpec",
    "TrafficSimulator",
    "average_return",
    "load_arms",
    "read_archive",
    "read_file",
    "read_outcomes_topic",
    "render_html",
    "render_json",
    "render_table",
    "run_episode",
]
