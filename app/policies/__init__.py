"""Policies: choose an arm per request and learn from rewards.

Every policy keeps the contract in :mod:`app.policies.base` and is found by
:func:`app.policies.registry.algorithms` (by its ``algorithm`` name), so the
policies YAML can name any of them.

Non-contextual: ThompsonSampling, GaussianThompson, EpsilonGreedy, Softmax,
UCB1, UCBV, UCBTuned, DiscountedUCB, SlidingWindowUCB, Exp3.
Contextual: LinUCB, HybridLinUCB, LinearThompson, RiverEpsilonGreedy,
NeuralArmValue; ParameterTuner (per task type, the model and its tuned call
parameters: docs/tuning.md). Reinforcement learning: QLearning, DQN,
Reinforce, ActorCritic (with ReplayBuffer).
"""

from app.policies.actor_critic import ActorCritic
from app.policies.base import (
    ContextError,
    InvalidRewardError,
    Policy,
    PolicyError,
    Selection,
    SnapshotError,
    UnknownArmError,
)
from app.policies.config import Arm, PoliciesConfig, PolicyConfig, PolicyConfigError
from app.policies.discounted_ucb import DiscountedUCB
from app.policies.dqn import DQN
from app.policies.epsilon_greedy import EpsilonGreedy
from app.policies.exp3 import Exp3
from app.policies.gaussian_thompson import GaussianThompson
from app.policies.hybrid_lin_ucb import HybridLinUCB
from app.policies.lin_ucb import LinUCB
from app.policies.linear_thompson import LinearThompson
from app.policies.neural_arm_value import NeuralArmValue
from app.policies.parameter_tuner import ParameterTuner
from app.policies.q_learning import QLearning
from app.policies.registry import algorithms
from app.policies.reinforce import Reinforce
from app.policies.replay_buffer import ReplayBuffer
from app.policies.river_epsilon_greedy import RiverEpsilonGreedy
from app.policies.sliding_window_ucb import SlidingWindowUCB
from app.policies.softmax import Softmax
from app.policies.thompson_sampling import ThompsonSampling
from app.policies.ucb1 import UCB1
from app.policies.ucb_tuned import UCBTuned
from app.policies.ucb_v import UCBV

__all__ = [
    "DQN",
    "UCB1",
    "UCBV",
    "ActorCritic",
    "Arm",
    "ContextError",
    "DiscountedUCB",
    "EpsilonGreedy",
    "Exp3",
    "GaussianThompson",
    "HybridLinUCB",
    "InvalidRewardError",
    "LinUCB",
    "LinearThompson",
    "NeuralArmValue",
    "ParameterTuner",
    "PoliciesConfig",
    "Policy",
    "PolicyConfig",
    "PolicyConfigError",
    "PolicyError",
    "QLearning",
    "Reinforce",
    "ReplayBuffer",
    "RiverEpsilonGreedy",
    "Selection",
    "SlidingWindowUCB",
    "SnapshotError",
    "Softmax",
    "ThompsonSampling",
    "UCBTuned",
    "UnknownArmError",
    "algorithms",
]
