"""A metric compared between variants."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    """A metric compared between variants: the primary reward, or a guardrail
    (cost, latency) where ``higher_is_better`` is False. ``margin`` is the
    non-inferiority margin of rollout gates (a fraction of the control's mean
    with ``relative_margin``); ``bounds`` the range of its values, if any."""

    name: str
    higher_is_better: bool = True
    margin: float = 0.0
    relative_margin: bool = False
    bounds: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "higher_is_better": self.higher_is_better,
            "margin": self.margin,
            "relative_margin": self.relative_margin,
            "bounds": None if self.bounds is None else list(self.bounds),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Metric:
        b = d.get("bounds")
        return cls(
            name=str(d["name"]),
            higher_is_better=bool(d.get("higher_is_better", True)),
            margin=float(d.get("margin", 0.0)),
            relative_margin=bool(d.get("relative_margin", False)),
            bounds=None if b is None else (float(b[0]), float(b[1])),
        )


REWARD = Metric("reward", bounds=(0.0, 1.0))
