"""Two-sided CUSUM drift detector on river's detector interface."""

from __future__ import annotations

import math

from river.base import DriftDetector


class CUSUM(DriftDetector):
    """Two-sided tabular CUSUM on standardised values (Page, 1954).

    The reference mean and standard deviation are those of every value since
    the last reset, before the current one (self-starting CUSUM, Hawkins
    1987), unless ``mean`` and ``std`` fix them. A reference estimated from a
    short warm-up alone would be off by ``std / sqrt(warmup)`` for good and
    inflate false alarms; the running one keeps improving. After ``warmup``
    values each new value ``z = (x - mean) / std`` feeds two cumulative sums,

        S⁺ ← max(0, S⁺ + z - k)      S⁻ ← max(0, S⁻ - z - k)

    and a drift is signalled when either exceeds ``h``. ``k`` (the allowance)
    and ``h`` (the decision interval) are in units of the reference standard
    deviation, so one setting serves signals of any scale: ``k`` is about half
    the smallest shift worth detecting, ``h`` trades delay for false alarms
    (in-control run length grows roughly like ``exp(2 k h)``). ``mode`` picks
    increases (``up``), decreases (``down``) or ``both``. After a drift the
    detector starts again with a new warm-up, so the new regime becomes the
    reference — as river's Page-Hinkley does.

    ``min_std`` floors the reference standard deviation (a warm-up of identical
    values would otherwise make every later change infinitely significant).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(42)
    >>> cusum = CUSUM(warmup=200, k=0.5, h=8.0)
    >>> stream = [rng.gauss(0, 1) for _ in range(1000)] + [rng.gauss(1, 1) for _ in range(500)]
    >>> for i, x in enumerate(stream):
    ...     cusum.update(x)
    ...     if cusum.drift_detected:
    ...         print(f"drift at {i}, direction {cusum.direction}")
    ...         break
    drift at 1018, direction up
    """

    _MODES = ("up", "down", "both")

    def __init__(
        self,
        warmup: int = 500,
        k: float = 0.25,
        h: float = 30.0,
        mode: str = "both",
        mean: float | None = None,
        std: float | None = None,
        min_std: float = 1e-9,
    ) -> None:
        super().__init__()
        if mode not in self._MODES:
            raise ValueError(f"mode must be one of {self._MODES}, got {mode!r}")
        if warmup < 2 and (mean is None or std is None):
            raise ValueError("warmup must be at least 2 unless mean and std are given")
        if k < 0 or h <= 0:
            raise ValueError("k must be non-negative and h positive")
        if std is not None and std <= 0:
            raise ValueError("std must be positive")
        self.warmup = warmup
        self.k = k
        self.h = h
        self.mode = mode
        self.mean = mean
        self.std = std
        self.min_std = min_std
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._n = 0
        self._w_mean = 0.0  # Welford over the warm-up
        self._w_m2 = 0.0
        fixed = self.mean is not None and self.std is not None
        self._mu: float | None = self.mean if fixed else None
        self._sigma: float | None = self.std if fixed else None
        self._pos = 0.0
        self._neg = 0.0
        self._pos_start = 0  # values seen when each sum last stood at zero
        self._neg_start = 0
        self._direction = ""

    @property
    def reference(self) -> tuple[float, float] | None:
        """(mean, std) the sums are measured against, once known."""
        if self._mu is None or self._sigma is None:
            return None
        return self._mu, self._sigma

    @property
    def statistic(self) -> float:
        """The larger of the two cumulative sums (in standard deviations)."""
        return max(self._pos, self._neg)

    @property
    def run_length(self) -> int:
        """Values since the larger sum last stood at zero: after a drift, the
        usual estimate of how long ago the change happened."""
        start = self._pos_start if self._pos >= self._neg else self._neg_start
        return self._n - start

    @property
    def direction(self) -> str:
        """``up`` or ``down`` after a drift, else empty."""
        return self._direction

    def update(self, x: int | float) -> None:
        if self.drift_detected:
            self._reset()
        x = float(x)
        if not math.isfinite(x):
            return
        if self._n >= max(self.warmup, 2):
            mu = self._w_mean if self.mean is None else self.mean
            std = math.sqrt(self._w_m2 / (self._n - 1)) if self.std is None else self.std
            self._mu, self._sigma = mu, max(self.min_std, std)
        self._n += 1
        delta = x - self._w_mean
        self._w_mean += delta / self._n
        self._w_m2 += delta * (x - self._w_mean)
        if self._mu is None or self._sigma is None:
            return
        z = (x - self._mu) / self._sigma
        if self.mode != "down":
            self._pos = max(0.0, self._pos + z - self.k)
            if self._pos == 0.0:
                self._pos_start = self._n
        if self.mode != "up":
            self._neg = max(0.0, self._neg - z - self.k)
            if self._neg == 0.0:
                self._neg_start = self._n
        if self._pos > self.h:
            self._drift_detected, self._direction = True, "up"
        elif self._neg > self.h:
            self._drift_detected, self._direction = True, "down"
