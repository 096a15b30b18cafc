"""log(1 + x) scaling, for long-tailed counts such as token lengths."""

from __future__ import annotations

import math
from typing import Any


class LogTransform:
    """``log1p(x) / log1p(scale_max)``: ``scale_max`` maps to 1.0 (no scaling
    when it is ``None``). Defined for x ≥ 0; the inverse is exact.

    >>> t = LogTransform(scale_max=200_000)
    >>> t.transform(200_000.0), round(t.inverse(t.transform(812.0)), 6)
    (1.0, 812.0)
    """

    def __init__(self, scale_max: float | None = None) -> None:
        if scale_max is not None and not scale_max > 0:
            raise ValueError(f"scale_max must be positive, got {scale_max}")
        self.scale_max = scale_max
        self._div = math.log1p(scale_max) if scale_max else 1.0

    def transform(self, x: float) -> float:
        return math.log1p(x) / self._div

    def inverse(self, y: float) -> float:
        return math.expm1(y * self._div)

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> LogTransform:
        s = c.get("scale_max")
        return cls(float(s) if s is not None else None)
