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
"""

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

__all__ = [
    "TASK_TYPES",
    "ArmSpec",
    "DriftEvent",
    "Environment",
    "LLMWorkflowEnv",
    "LengthSpec",
    "ModelSpec",
    "ParameterEffect",
    "SimulatorConfig",
    "TenantSpec",
    "TrafficSimulator",
    "average_return",
    "load_arms",
    "run_episode",
]
