"""The interface every anomaly detector in this package keeps."""

from __future__ import annotations

import abc
from typing import Any


class AnomalyDetector(abc.ABC):
    """Scores a value against what was learnt so far, then learns from it.

    River's anomaly detectors split ``score_one`` and ``learn_one``; these do
    too, and ``update`` does both in the usual streaming order (score first,
    so a value never vouches for itself). A score above ``threshold`` is an
    anomaly. Until ``warmup`` values were learnt every score is 0: there is
    no reference yet. Univariate detectors take a number; multivariate ones
    a ``{feature: value}`` mapping over their ``features``.
    """

    threshold: float
    warmup: int

    def __init__(self) -> None:
        self._seen = 0
        self._score = 0.0

    @abc.abstractmethod
    def score_one(self, x: Any) -> float:
        """The anomaly score of ``x`` (higher is more anomalous)."""

    @abc.abstractmethod
    def learn_one(self, x: Any) -> None:
        """Add ``x`` to the reference."""

    @property
    def ready(self) -> bool:
        return self._seen >= self.warmup

    @property
    def score(self) -> float:
        """The score of the value given to the last ``update``."""
        return self._score

    def update(self, x: Any) -> bool:
        """Score ``x``, learn from it, and say whether it was an anomaly."""
        self._score = self.score_one(x) if self.ready else 0.0
        self.learn_one(x)
        self._seen += 1
        return self._score > self.threshold
