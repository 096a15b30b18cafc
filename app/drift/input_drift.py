"""Per-feature input-distribution drift: PSI and Kolmogorov–Smirnov against a
reference window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

_EPS = 1e-4  # floor of a bin's share, so an empty bin does not make PSI infinite


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """One feature's comparison of a window with the reference."""

    feature: str
    psi: float
    ks_statistic: float
    ks_pvalue: float
    drifted: bool


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``, over
    ``bins`` quantile bins of the reference (fewer when it has ties, so
    discrete and one-hot features get one bin per value).

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(0, 1, 5000)
    >>> round(psi(ref, rng.normal(0, 1, 5000)), 3) < 0.01, round(psi(ref, ref + 1.0), 1)
    (True, 0.9)
    """
    inner = np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    edges = np.unique(inner)
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    c = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    rp = np.maximum(r / len(reference), _EPS)
    cp = np.maximum(c / len(current), _EPS)
    return float(np.sum((cp - rp) * np.log(cp / rp)))


class InputDrift:
    """Compares tumbling windows of feature vectors with a reference window.

    The first ``reference_size`` vectors form the reference; each following
    ``window_size`` vectors form a window, compared per feature by PSI (over
    ``bins`` reference-quantile bins) and the two-sample KS test (scipy). A
    feature drifted when its PSI exceeds ``psi_threshold`` (0.1 is "some
    shift", 0.25 "major" by the usual rule of thumb) **and** the KS p-value is
    below ``ks_alpha`` — PSI says the shift matters, KS that it is not noise.
    With ``rebase`` a drifted window becomes the new reference, so one
    lasting shift is reported once rather than every window.

    ``features`` names the vector's positions; ``watch`` the ones compared
    (default all: leave out features that drift by design, such as the hour
    of day).

    >>> rng = np.random.default_rng(1)
    >>> det = InputDrift(["tokens", "priority"], reference_size=500, window_size=500)
    >>> reports = [det.update([rng.normal(0, 1), rng.integers(0, 10)]) for _ in range(1000)]
    >>> [r.feature for r in reports[-1] if r.drifted]
    []
    >>> reports = [det.update([rng.normal(1, 1), rng.integers(0, 10)]) for _ in range(500)]
    >>> [r.feature for r in reports[-1] if r.drifted]
    ['tokens']
    """

    def __init__(
        self,
        features: Sequence[str],
        reference_size: int = 2000,
        window_size: int = 2000,
        bins: int = 10,
        psi_threshold: float = 0.25,
        ks_alpha: float = 1e-3,
        watch: Sequence[str] | None = None,
        rebase: bool = True,
    ) -> None:
        if reference_size < 10 or window_size < 10 or bins < 2:
            raise ValueError("reference_size and window_size must be >= 10, bins >= 2")
        unknown = set(watch or ()) - set(features)
        if unknown:
            raise ValueError(f"watch names unknown features {sorted(unknown)}")
        self.features = tuple(features)
        self.reference_size = reference_size
        self.window_size = window_size
        self.bins = bins
        self.psi_threshold = psi_threshold
        self.ks_alpha = ks_alpha
        self.watch = tuple(watch) if watch is not None else self.features
        self.rebase = rebase
        self._cols = [self.features.index(f) for f in self.watch]
        self._reference: np.ndarray | None = None
        self._buffer: list[Sequence[float]] = []

    @property
    def has_reference(self) -> bool:
        return self._reference is not None

    def update(self, x: Sequence[float]) -> list[FeatureDrift]:
        """Add one vector; returns the per-feature comparison when it completes
        a window (else an empty list)."""
        if len(x) != len(self.features):
            raise ValueError(f"expected {len(self.features)} features, got {len(x)}")
        self._buffer.append(x)
        needed = self.window_size if self._reference is not None else self.reference_size
        if len(self._buffer) < needed:
            return []
        window = np.asarray(self._buffer, dtype=float)[:, self._cols]
        self._buffer = []
        if self._reference is None:
            self._reference = window
            return []
        reports = []
        for j, name in enumerate(self.watch):
            ref, cur = self._reference[:, j], window[:, j]
            p = psi(ref, cur, self.bins)
            ks = stats.ks_2samp(ref, cur)
            drifted = p > self.psi_threshold and float(ks.pvalue) < self.ks_alpha
            reports.append(
                FeatureDrift(name, p, float(ks.statistic), float(ks.pvalue), bool(drifted))
            )
        if self.rebase and any(r.drifted for r in reports):
            self._reference = window
        return reports
