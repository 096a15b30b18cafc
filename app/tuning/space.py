"""A parameter space: named call parameters, each a range, mapped to the unit cube.

The optimiser works in ``[0, 1]^d``; a dimension on a log scale is uniform
in the logarithm of its value, and an integer one is rounded after mapping
back. A space is declared in a policy's hyperparameters (YAML), checked
strictly: unknown keys, empty or inverted ranges and log scales that touch
zero are errors that name the key.

>>> space = ParameterSpace.from_config({
...     "temperature": {"low": 0.0, "high": 1.5},
...     "max_tokens": {"low": 256, "high": 4096, "log": True, "integer": True},
... })
>>> space.names
('temperature', 'max_tokens')
>>> space.decode([0.5, 0.5])
{'temperature': 0.75, 'max_tokens': 1024}
>>> [round(v, 6) for v in space.encode({"temperature": 1.5, "max_tokens": 256})]
[1.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_SPACE", "Dimension", "ParameterSpace", "SpaceError"]

DIMENSION_KEYS = ("low", "high", "log", "integer")

# The call parameters of the simulator's arms, with ranges an LLM API accepts.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "temperature": {"low": 0.0, "high": 1.5},
    "top_p": {"low": 0.7, "high": 1.0},
    "max_tokens": {"low": 256, "high": 4096, "log": True, "integer": True},
}


class SpaceError(ValueError):
    """A parameter space that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def to_unit(self, value: float) -> float:
        lo, hi, v = self.low, self.high, float(value)
        if self.log:
            lo, hi, v = math.log(lo), math.log(hi), math.log(v)
        return (v - lo) / (hi - lo)

    def from_unit(self, u: float) -> float | int:
        u = min(1.0, max(0.0, float(u)))
        if self.log:
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        if self.integer:
            return min(int(self.high), max(int(self.low), round(v)))
        return min(self.high, max(self.low, v))


class ParameterSpace:
    """The dimensions of a space, in declaration order."""

    def __init__(self, dimensions: Sequence[Dimension]) -> None:
        if not dimensions:
            raise SpaceError("a parameter space needs at least one parameter")
        self.dimensions = tuple(dimensions)
        self.names = tuple(d.name for d in self.dimensions)

    @property
    def dim(self) -> int:
        return len(self.dimensions)

    @classmethod
    def from_config(cls, raw: Any) -> ParameterSpace:
        """A space from ``{name: {low, high, log?, integer?}}``."""
        if not isinstance(raw, Mapping) or not raw:
            raise SpaceError(f"space must be a non-empty mapping of parameters, got {raw!r}")
        dims = []
        for name, spec in raw.items():
            at = f"space.{name}"
            if not isinstance(name, str) or not name:
                raise SpaceError(f"space: parameter names must be non-empty text, got {name!r}")
            if not isinstance(spec, Mapping):
                raise SpaceError(f"{at}: expected a mapping with low and high, got {spec!r}")
            unknown = sorted(set(spec) - set(DIMENSION_KEYS))
            if unknown:
                raise SpaceError(f"{at}: unknown key(s) {unknown}; known: {list(DIMENSION_KEYS)}")
            for key in ("low", "high"):
                v = spec.get(key)
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise SpaceError(f"{at}.{key}: expected a finite number, got {v!r}")
            for key in ("log", "integer"):
                if not isinstance(spec.get(key, False), bool):
                    raise SpaceError(f"{at}.{key}: expected true or false, got {spec[key]!r}")
            low, high = float(spec["low"]), float(spec["high"])
            if not low < high:
                raise SpaceError(f"{at}: low ({low}) must be below high ({high})")
            log, integer = bool(spec.get("log", False)), bool(spec.get("integer", False))
            if log and low <= 0:
                raise SpaceError(f"{at}: a log scale needs low > 0, got {low}")
            if integer and (low != int(low) or high != int(high)):
                raise SpaceError(f"{at}: an integer parameter needs integer bounds")
            dims.append(Dimension(name, low, high, log, integer))
        return cls(dims)

    def decode(self, u: Sequence[float] | np.ndarray) -> dict[str, float | int]:
        """The parameters at unit point ``u``."""
        return {d.name: d.from_unit(v) for d, v in zip(self.dimensions, u, strict=True)}

    def encode(self, parameters: Mapping[str, Any]) -> list[float] | None:
        """The unit point of ``parameters``, or ``None`` when one is missing,
        not a number or outside its range (a setting the space cannot hold)."""
        out = []
        for d in self.dimensions:
            v = parameters.get(d.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                return None
            if not d.low <= v <= d.high:
                return None
            out.append(d.to_unit(v))
        return out

    def snap(self, u: Sequence[float] | np.ndarray) -> list[float]:
        """``u`` moved onto the point its decoded parameters encode to (integer
        dimensions rounded), so that a served setting and the point told for it agree."""
        p = self.decode(u)
        return [round(d.to_unit(p[d.name]), 9) for d in self.dimensions]
