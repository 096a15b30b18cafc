"""One look at a comparison."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Decision = Literal["better", "worse", "inconclusive"]
Gate = Literal["pass", "fail", "pending"]


@dataclass(frozen=True)
class ComparisonResult:
    """One look at a comparison. ``estimate``, ``low`` and ``high`` are of
    treatment − control in the metric's units; ``decision`` and ``gate`` are
    the first conclusive answers reached so far (they do not change once
    reached), ``p_value`` the always-valid p-value of "no difference"."""

    n_control: int
    n_treatment: int
    mean_control: float
    mean_treatment: float
    estimate: float
    low: float
    high: float
    p_value: float
    margin: float
    decision: Decision
    gate: Gate
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }
