"""What a tuning policy serves for one request: an arm and its call parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the policies import this module
    from app.policies.base import Selection


@dataclass(frozen=True, slots=True)
class TunedChoice:
    """The arm (a model), the parameters to call it with, and the exact
    probabilities they were drawn with: ``propensity`` is the probability of
    the pair, ``arm_propensity × setting_propensity`` (the arm among the
    allowed ones, then the setting among those the arm serves now).
    ``explored``: the arm is not the greedy one, or the setting is not the
    arm's incumbent. ``selection`` is the arm's :class:`Selection`."""

    arm: str
    parameters: dict[str, Any]
    propensity: float
    arm_propensity: float
    setting_propensity: float
    explored: bool
    selection: Selection
