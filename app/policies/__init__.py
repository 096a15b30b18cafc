"""Policies: choose an arm per request and learn from rewards.

Every policy keeps the contract in :mod:`app.policies.base`.
"""

from app.policies.base import (
    InvalidRewardError,
    Policy,
    PolicyError,
    Selection,
    SnapshotError,
    UnknownArmError,
)
from app.policies.config import Arm, PoliciesConfig, PolicyConfig, PolicyConfigError
from app.policies.thompson_sampling import ThompsonSampling

__all__ = [
    "Arm",
    "InvalidRewardError",
    "PoliciesConfig",
    "Policy",
    "PolicyConfig",
    "PolicyConfigError",
    "PolicyError",
    "Selection",
    "SnapshotError",
    "ThompsonSampling",
    "UnknownArmError",
]
