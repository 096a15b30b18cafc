"""Off-policy estimators over :class:`~app.evaluation.logged_data.LoggedData`.

Each estimator answers: what mean reward would the evaluation policy have
earned on the logged requests? The evaluation policy enters as
``action_dist``, an ``[n, k]`` array of its probabilities of each arm at
each logged row (zero on arms that were not available), as in Open Bandit
Pipeline; estimators that use a reward model also take ``reward_hat``, the
model's ``[n, k]`` predicted rewards (see :class:`RidgeRewardModel`).

With ``w_i = π(a_i | x_i) / p_i`` (optionally clipped at ``clip``) and
``q̂_π(x_i) = Σ_a π(a | x_i) q̂(x_i, a)``:

=======  ==========================================================  ==========
name     value                                                       class
=======  ==========================================================  ==========
replay   mean reward of the rows kept by rejection sampling           Replay
ips      ``1/n Σ w_i r_i``                                            IPS
snips    ``Σ w_i r_i / Σ w_i``                                        SNIPS
dm       ``1/n Σ q̂_π(x_i)``                                           DirectMethod
dr       ``1/n Σ [q̂_π(x_i) + w_i (r_i - q̂(x_i, a_i))]``               DoublyRobust
sndr     ``1/n Σ q̂_π(x_i) + Σ w_i (r_i - q̂(x_i, a_i)) / Σ w_i``       SelfNormalizedDoublyRobust
switch   dr, with the correction only where ``w_i <= tau``            SwitchDoublyRobust
=======  ==========================================================  ==========

Every estimator is written as ``1/n Σ a_i + Σ b_i / Σ c_i`` of per-row terms,
so one vectorised bootstrap serves all of them: resampled rows are drawn as a
``[B, n]`` index matrix in chunks (memory bounded), turned into per-row draw
counts, and the three sums of every resample come from one matrix product;
the interval is the percentile interval.

Two estimators get other intervals, because resampling the per-row terms
misdescribes them:

* ``dm``: its terms are the reward model's predictions, whose error the row
  bootstrap cannot see unless the model is refitted on every resample —
  :func:`refit_bootstrap_interval` does that.
* ``replay``: the mean of the kept rows, often few; a bootstrap of a handful
  of equal rewards has zero width. :func:`replay_interval` is the Wilson
  score interval on rewards rescaled to the logged reward range.

IPS, SNIPS and replay only need ``π(a_i | x_i)`` at the logged action:
:meth:`OffPolicyEstimator.factual_terms` takes just that, for a policy given
as a column of target propensities.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from app.evaluation.logged_data import LoggedData

__all__ = [
    "ESTIMATORS",
    "IPS",
    "SNIPS",
    "DirectMethod",
    "DoublyRobust",
    "Estimate",
    "OffPolicyEstimator",
    "Replay",
    "RidgeRewardModel",
    "SelfNormalizedDoublyRobust",
    "SwitchDoublyRobust",
    "Terms",
    "bootstrap_interval",
    "bootstrap_intervals",
    "check_action_dist",
    "check_target_propensities",
    "default_estimators",
    "effective_sample_size",
    "importance_weights",
    "make_estimator",
    "refit_bootstrap_interval",
    "replay_interval",
]

# Bootstrap chunks hold at most this many resampled indices (8 bytes each).
_BOOTSTRAP_CHUNK = 2_000_000


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate, its interval and the effective sample size; ``note``
    says why a value or interval is missing or how it was made."""

    estimator: str
    value: float
    low: float = math.nan
    high: float = math.nan
    ess: float = math.nan
    n: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "estimator": self.estimator,
            "value": _json_float(self.value),
            "low": _json_float(self.low),
            "high": _json_float(self.high),
            "ess": _json_float(self.ess),
            "n": self.n,
        }
        if self.note:
            out["note"] = self.note
        return out


def _json_float(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


@dataclass(frozen=True, slots=True)
class Terms:
    """Per-row terms of ``value = 1/n Σ mean + Σ num / Σ den`` (absent parts are 0)."""

    mean: np.ndarray | None = None
    num: np.ndarray | None = None
    den: np.ndarray | None = None

    def value(self) -> float:
        v = 0.0
        if self.mean is not None:
            v += float(self.mean.mean()) if len(self.mean) else math.nan
        if self.num is not None and self.den is not None:
            d = float(self.den.sum())
            v += float(self.num.sum()) / d if d > 0 else math.nan
        return v

    def rows(self) -> np.ndarray:
        """Per-row contributions whose running mean tracks the estimate over
        time (the self-normalised part spread by its weights)."""
        parts = []
        if self.mean is not None:
            parts.append(self.mean)
        if self.num is not None and self.den is not None:
            d = self.den.mean()
            parts.append(self.num / d if d > 0 else np.zeros_like(self.num))
        return np.sum(parts, axis=0)


# -- shared pieces ------------------------------------------------------------------------


def check_action_dist(data: LoggedData, action_dist: np.ndarray, atol: float = 1e-6) -> np.ndarray:
    """``action_dist`` as a float ``[n, k]`` array after checking that its rows
    are probability vectors with no mass on unavailable arms."""
    pi = np.asarray(action_dist, dtype=np.float64)
    if pi.shape != (data.n_events, data.n_arms):
        raise ValueError(f"action_dist must have shape ({data.n_events}, {data.n_arms})")
    if data.n_events == 0:
        return pi
    if not np.isfinite(pi).all() or pi.min() < -atol:
        raise ValueError("action_dist must hold finite, non-negative probabilities")
    sums = pi.sum(axis=1)
    if np.abs(sums - 1.0).max() > atol:
        raise ValueError("every row of action_dist must sum to 1")
    if data.available is not None and (pi[~data.available] > atol).any():
        raise ValueError("action_dist gives probability to arms that were not available")
    return pi


def _factual(data: LoggedData, table: np.ndarray) -> np.ndarray:
    return table[np.arange(data.n_events), data.actions]


def check_target_propensities(data: LoggedData, target: np.ndarray) -> np.ndarray:
    """A policy's probabilities of the logged actions, checked to be in [0, 1]."""
    t = np.asarray(target, dtype=np.float64)
    if t.shape != (data.n_events,):
        raise ValueError(f"target propensities must have shape ({data.n_events},)")
    if len(t) and (not np.isfinite(t).all() or t.min() < 0 or t.max() > 1 + 1e-9):
        raise ValueError("target propensities must be probabilities in [0, 1]")
    return t


def _weights(data: LoggedData, factual: np.ndarray, clip: float | None) -> np.ndarray:
    data.check_propensities()
    w = factual / data.propensities
    if clip is not None:
        np.minimum(w, clip, out=w)
    return w


def importance_weights(
    data: LoggedData, action_dist: np.ndarray, clip: float | None = None
) -> np.ndarray:
    """``π(a_i | x_i) / p_i``, clipped at ``clip`` when given.

    >>> d = LoggedData(actions=np.array([0, 1]), rewards=np.array([1.0, 0.0]),
    ...                propensities=np.array([0.5, 0.25]), arm_names=("a", "b"))
    >>> importance_weights(d, np.array([[1.0, 0.0], [0.5, 0.5]])).tolist()
    [2.0, 2.0]
    """
    return _weights(data, _factual(data, action_dist), clip)


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(Σ w)² / Σ w²``: how many on-policy
    rows the weighted sample is worth.

    >>> effective_sample_size(np.array([1.0, 1.0, 1.0, 1.0]))
    4.0
    >>> effective_sample_size(np.array([4.0, 0.0, 0.0, 0.0]))
    1.0
    """
    s2 = float(np.dot(weights, weights))
    return float(weights.sum()) ** 2 / s2 if s2 > 0 else 0.0


def bootstrap_interval(
    terms: Terms, n_bootstrap: int = 1000, alpha: float = 0.05, seed: int | None = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``terms.value()`` over resampled rows."""
    return bootstrap_intervals([terms], n_bootstrap, alpha, seed)[0]


def bootstrap_intervals(
    terms: Sequence[Terms], n_bootstrap: int = 1000, alpha: float = 0.05, seed: int | None = 0
) -> list[tuple[float, float]]:
    """:func:`bootstrap_interval` of several estimators' terms over the same
    rows, from one set of resampling draws (the same draws each would get
    alone with this seed): drawing dominates the cost."""
    parts_of = [[t for t in (x.mean, x.num, x.den) if t is not None] for x in terms]
    parts = [p for ps in parts_of for p in ps]
    nothing = [(math.nan, math.nan)] * len(terms)
    if not parts or n_bootstrap <= 0:
        return nothing
    n = len(parts[0])
    if n == 0:
        return nothing
    m = np.vstack(parts)  # [parts, n]
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_bootstrap, _BOOTSTRAP_CHUNK // n))
    sums = np.empty((len(parts), n_bootstrap))
    for lo in range(0, n_bootstrap, chunk):
        b = min(n_bootstrap, lo + chunk) - lo
        idx = rng.integers(0, n, size=(b, n))
        # How often each row is drawn, per resample, then one matrix product:
        # several times faster than gathering the terms at the drawn indices.
        idx += (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        sums[:, lo : lo + b] = m @ counts.T
    out = []
    j = 0
    for x, ps in zip(terms, parts_of, strict=True):
        if not ps:
            out.append((math.nan, math.nan))
            continue
        values = np.zeros(n_bootstrap)
        if x.mean is not None:
            values += sums[j] / n
            j += 1
        if x.num is not None and x.den is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                values += sums[j] / sums[j + 1]
            j += 2
        elif x.num is not None or x.den is not None:
            j += 1
        values = values[np.isfinite(values)]
        if len(values) == 0:
            out.append((math.nan, math.nan))
            continue
        low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
        out.append((float(low), float(high)))
    return out


def replay_interval(
    rewards: np.ndarray, alpha: float = 0.05, reward_range: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float]:
    """Wilson score interval for the mean of ``rewards`` (the rows replay
    kept), rescaled to ``reward_range``. A reward in ``[0, 1]`` has variance
    at most ``μ(1 − μ)``, which is what the Wilson interval assumes, so it is
    honest for any bounded reward, and unlike a bootstrap it keeps a width
    when a handful of kept rows all have the same reward.

    >>> low, high = replay_interval(np.zeros(3))
    >>> round(low, 3), round(high, 3)
    (0.0, 0.561)
    """
    from scipy.stats import norm

    m = len(rewards)
    lo, hi = reward_range
    if m == 0:
        return math.nan, math.nan
    if hi <= lo:
        return lo, lo
    p = float(np.clip((np.mean(rewards) - lo) / (hi - lo), 0.0, 1.0))
    z = float(norm.ppf(1 - alpha / 2))
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z / (1 + z * z / m) * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m))
    return lo + (hi - lo) * max(0.0, centre - half), lo + (hi - lo) * min(1.0, centre + half)


def refit_bootstrap_interval(
    data: LoggedData,
    action_dist: np.ndarray,
    model: RidgeRewardModel,
    n_bootstrap: int = 200,
    alpha: float = 0.05,
    seed: int | None = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the direct method that refits the
    reward model on every resample, so that the interval includes the
    model's estimation error (resampling fixed predictions would not)."""
    pi = check_action_dist(data, action_dist)
    n = data.n_events
    if n_bootstrap <= 0 or n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    x = model._design(data)
    values = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        coef = model._fit_rows(data, slice(None), weights=counts)  # [k, d]
        # Σ_i c_i Σ_a π_ia x_i·β_a = Σ_a β_a · (Σ_i c_i π_ia x_i)
        m = (pi * counts[:, None]).T @ x  # [k, d]
        values[b] = float(np.einsum("ad,ad->", m, coef)) / n
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# -- reward model --------------------------------------------------------------------------


class RidgeRewardModel:
    """Per-arm ridge regression of the reward on ``[1, context]`` (just the
    intercept — the arm's mean reward — without contexts), fitted in closed
    form with numpy: ``n·d²`` work, a million rows in well under a second.
    ``n_folds > 1`` cross-fits (each row predicted by a model that did not
    see it), which keeps the DR correction unbiased by the model's overfit.
    ``repeats`` draws that many random fold splits and averages the
    cross-fitted predictions (each still from models that did not see the
    row): with few positive rewards over many arms one split decides which
    model sees the rare positives, and DR can move several-fold with the seed.

    >>> d = LoggedData(actions=np.array([0, 0, 1, 1]), rewards=np.array([1.0, 0.0, 1.0, 1.0]),
    ...                propensities=np.full(4, 0.5), arm_names=("a", "b"))
    >>> RidgeRewardModel(alpha=0.0).fit_predict(d)[0].round(6).tolist()
    [0.5, 1.0]
    """

    def __init__(
        self, alpha: float = 1.0, n_folds: int = 1, seed: int | None = 0, repeats: int = 1
    ) -> None:
        if alpha < 0:
            raise ValueError("alpha must be non-negative")
        if n_folds < 1:
            raise ValueError("n_folds must be at least 1")
        if repeats < 1:
            raise ValueError("repeats must be at least 1")
        self.alpha = alpha
        self.n_folds = n_folds
        self.seed = seed
        self.repeats = repeats
        self._coef: np.ndarray | None = None  # [k, d + 1]

    @staticmethod
    def _design(data: LoggedData, rows: Any = slice(None)) -> np.ndarray:
        n = len(data.actions[rows])
        if data.contexts is None:
            return np.ones((n, 1))
        x = data.contexts[rows]
        return np.hstack([np.ones((n, 1)), x])

    def _fit_rows(
        self, data: LoggedData, rows: Any, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """``[k, d + 1]`` coefficients fitted on ``rows`` (``weights``: a
        weight per row of ``data``, e.g. bootstrap draw counts)."""
        x = self._design(data, rows)
        a, r = data.actions[rows], data.rewards[rows]
        wt = np.ones(len(r)) if weights is None else weights[rows]
        d = x.shape[1]
        coef = np.zeros((data.n_arms, d))
        ridge = self.alpha * np.eye(d)
        ridge[0, 0] = 0.0  # the intercept is not shrunk toward 0
        total = float(wt.sum())
        fallback = float(wt @ r) / total if total > 0 else 0.0
        for arm in range(data.n_arms):
            sel = (a == arm) & (wt > 0)
            if not sel.any():
                coef[arm, 0] = fallback  # never logged: predict the overall mean
                continue
            xa, wa = x[sel], wt[sel]
            gram = xa.T @ (xa * wa[:, None]) + ridge
            coef[arm] = np.linalg.lstsq(gram, xa.T @ (wa * r[sel]), rcond=None)[0]
        return coef

    def fit(self, data: LoggedData) -> RidgeRewardModel:
        self._coef = self._fit_rows(data, slice(None))
        return self

    def predict(self, data: LoggedData) -> np.ndarray:
        """``[n, k]`` predicted rewards."""
        if self._coef is None:
            raise RuntimeError("fit the reward model first")
        return self._design(data) @ self._coef.T

    def fit_predict(self, data: LoggedData) -> np.ndarray:
        """Cross-fitted ``[n, k]`` predictions (averaged over ``repeats``
        splits); afterwards the model is fitted on every row.

        Each split sums the data once into per-(arm, fold) Gram matrices; a
        fold's model solves with the totals minus its own fold's, so more
        folds and repeats cost little more than one pass each."""
        n, k, folds_n = data.n_events, data.n_arms, self.n_folds
        if folds_n == 1 or n < 2 * folds_n:
            return self.fit(data).predict(data)
        rng = np.random.default_rng(self.seed)
        x, r, a = self._design(data), data.rewards, data.actions
        d = x.shape[1]
        ridge = self.alpha * np.eye(d)
        ridge[0, 0] = 0.0
        out = np.zeros((n, k))
        for _ in range(self.repeats):
            folds = rng.integers(0, folds_n, n)
            key = a * folds_n + folds
            order = np.argsort(key, kind="stable")
            bounds = np.searchsorted(key[order], np.arange(k * folds_n + 1))
            xs, rs = x[order], r[order]
            gram = np.zeros((k, folds_n, d, d))
            rhs = np.zeros((k, folds_n, d))
            for g in range(k * folds_n):
                xg = xs[bounds[g] : bounds[g + 1]]
                gram[divmod(g, folds_n)] = xg.T @ xg
                rhs[divmod(g, folds_n)] = xg.T @ rs[bounds[g] : bounds[g + 1]]
            counts = np.diff(bounds).reshape(k, folds_n)
            sums = np.bincount(key, weights=r, minlength=k * folds_n).reshape(k, folds_n)
            for f in range(folds_n):
                seen = counts.sum(axis=1) - counts[:, f]
                total = seen.sum()
                fallback = float(sums.sum() - sums[:, f].sum()) / total if total else 0.0
                coef = np.zeros((k, d))
                for arm in range(k):
                    if not seen[arm]:
                        coef[arm, 0] = fallback  # never logged outside the fold
                        continue
                    g_arm = gram[arm].sum(axis=0) - gram[arm, f] + ridge
                    b_arm = rhs[arm].sum(axis=0) - rhs[arm, f]
                    coef[arm] = np.linalg.lstsq(g_arm, b_arm, rcond=None)[0]
                rows = folds == f
                out[rows] += x[rows] @ coef.T
        out /= self.repeats
        self._coef = self._fit_rows(data, slice(None))
        return out


# -- estimators ----------------------------------------------------------------------------


class OffPolicyEstimator(abc.ABC):
    """Estimate a policy's value from logged data (see the module table)."""

    name: ClassVar[str]
    uses_reward_model: ClassVar[bool] = False

    def estimate(
        self, data: LoggedData, action_dist: np.ndarray, reward_hat: np.ndarray | None = None
    ) -> float:
        return self.terms(data, action_dist, reward_hat).value()

    def interval(
        self,
        data: LoggedData,
        action_dist: np.ndarray,
        reward_hat: np.ndarray | None = None,
        n_bootstrap: int = 1000,
        alpha: float = 0.05,
        seed: int | None = 0,
    ) -> Estimate:
        """The estimate with a ``1 - alpha`` percentile bootstrap interval."""
        terms = self.terms(data, action_dist, reward_hat)
        low, high = bootstrap_interval(terms, n_bootstrap, alpha, seed)
        return Estimate(self.name, terms.value(), low, high, self._ess(data, action_dist))

    def _ess(self, data: LoggedData, action_dist: np.ndarray) -> float:
        return effective_sample_size(importance_weights(data, action_dist))

    def factual_terms(self, data: LoggedData, target: np.ndarray) -> Terms:
        """Terms from the policy's probabilities of the logged actions alone
        (``target[i] = π(a_i | x_i)``); only estimators that need nothing else
        (ips, snips, replay) have them."""
        raise ValueError(
            f"{self.name} needs the policy's probabilities of every arm, not only of the logged one"
        )

    def terms(
        self, data: LoggedData, action_dist: np.ndarray, reward_hat: np.ndarray | None = None
    ) -> Terms:
        pi = check_action_dist(data, action_dist)
        if self.uses_reward_model:
            if reward_hat is None:
                raise ValueError(f"{self.name} needs reward_hat (a reward model's predictions)")
            reward_hat = np.asarray(reward_hat, dtype=np.float64)
            if reward_hat.shape != pi.shape:
                raise ValueError(f"reward_hat must have shape {pi.shape}")
        return self._terms(data, pi, reward_hat)

    @abc.abstractmethod
    def _terms(self, data: LoggedData, pi: np.ndarray, reward_hat: np.ndarray | None) -> Terms: ...


class _Weighted(OffPolicyEstimator):
    def __init__(self, clip: float | None = None) -> None:
        if clip is not None and clip <= 0:
            raise ValueError("clip must be positive")
        self.clip = clip

    def _ess(self, data: LoggedData, action_dist: np.ndarray) -> float:
        return effective_sample_size(importance_weights(data, action_dist, self.clip))


class IPS(_Weighted):
    """Inverse propensity scoring: unbiased when propensities are right and
    ``clip`` is ``None``; clipping trades that for less variance.

    >>> d = LoggedData(actions=np.array([0, 1]), rewards=np.array([1.0, 0.5]),
    ...                propensities=np.array([0.5, 0.5]), arm_names=("a", "b"))
    >>> IPS().estimate(d, np.array([[1.0, 0.0], [1.0, 0.0]]))
    1.0
    """

    name = "ips"

    def _terms(self, data: LoggedData, pi: np.ndarray, reward_hat: np.ndarray | None) -> Terms:
        return self.factual_terms(data, _factual(data, pi))

    def factual_terms(self, data: LoggedData, target: np.ndarray) -> Terms:
        w = _weights(data, check_target_propensities(data, target), self.clip)
        return Terms(mean=w * data.rewards)


class SNIPS(_Weighted):
    """Self-normalised IPS: divides by the sum of the weights instead of
    ``n`` — a little bias, much less variance, never outside the reward range.

    >>> d = LoggedData(actions=np.array([0, 1]), rewards=np.array([1.0, 0.5]),
    ...                propensities=np.array([0.5, 0.5]), arm_names=("a", "b"))
    >>> SNIPS().estimate(d, np.array([[0.5, 0.5], [0.5, 0.5]]))
    0.75
    """

    name = "snips"

    def _terms(self, data: LoggedData, pi: np.ndarray, reward_hat: np.ndarray | None) -> Terms:
        return self.factual_terms(data, _factual(data, pi))

    def factual_terms(self, data: LoggedData, target: np.ndarray) -> Terms:
        w = _weights(data, check_target_propensities(data, target), self.clip)
        return Terms(num=w * data.rewards, den=w)


class DirectMethod(OffPolicyEstimator):
    """The reward model's prediction averaged under the policy: low variance,
    biased by whatever the model gets wrong.

    >>> d = LoggedData(actions=np.array([0]), rewards=np.array([1.0]),
    ...                propensities=np.array([1.0]), arm_names=("a", "b"))
    >>> DirectMethod().estimate(d, np.array([[0.5, 0.5]]), np.array([[0.2, 0.6]]))
    0.4
    """

    name = "dm"
    uses_reward_model = True

    def interval(
        self,
        data: LoggedData,
        action_dist: np.ndarray,
        reward_hat: np.ndarray | None = None,
        n_bootstrap: int = 1000,
        alpha: float = 0.05,
        seed: int | None = 0,
        model: RidgeRewardModel | None = None,
    ) -> Estimate:
        """With ``model``, the refitting bootstrap interval
        (:func:`refit_bootstrap_interval`); without it, no interval: resampling
        fixed predictions gives a near-zero width that excludes the truth."""
        value = self.estimate(data, action_dist, reward_hat)
        low = high = math.nan
        if model is not None:
            low, high = refit_bootstrap_interval(data, action_dist, model, n_bootstrap, alpha, seed)
        return Estimate(self.name, value, low, high, self._ess(data, action_dist), data.n_events)

    def _terms(self, data: LoggedData, pi: np.ndarray, reward_hat: np.ndarray | None) -> Terms:
        assert reward_hat is not None
        return Terms(mean=np.einsum("ij,ij->i", pi, reward_hat))


class DoublyRobust(_Weighted):
    """The direct method plus an importance-weighted correction of the
    model's error on the logged arm: unbiased if either the propensities or
    the reward model are right (Dudík et al., 2011)."""

    name = "dr"
    uses_reward_model = True

    def _parts(
        self, data: LoggedData, pi: np.ndarray, reward_hat: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = importance_weights(data, pi, self.clip)
        dm = np.einsum("ij,ij->i", pi, reward_hat)
        residual = data.rewards - _factual(data, reward_hat)
        return w, dm, residual

    def _terms(self, data: LoggedData, pi: np.ndarray, reward_hat: np.ndarray | None) -> Terms:
        assert reward_hat is not None
        w, dm, residual = self._parts(data, pi, reward_hat)
        return Terms(mean=dm + w * residual)


class SelfNormalizedDoublyRobust(DoublyRobust):
    """DR with the correction self-normalised by the weights' sum, as SNIPS."""

    name = "sndr"

    def _terms(self, data: LoggedData, pi: np.ndarray, reward_hat: np.ndarray | None) -> Terms:
        assert reward_hat is not None
        w, dm, residual = self._parts(data, pi, reward_hat)
        return Terms(mean=dm, num=w * residual, den=w)


class SwitchDoublyRobust(DoublyRobust):
    """DR that drops the correction on rows whose weight exceeds ``tau``
    (there the direct method alone is used; Wang et al., 2017)."""

    name = "switch-dr"

    def __init__(self, tau: float = 10.0) -> None:
        if tau <= 0:
            raise ValueError("tau must be positive")
        super().__init__(clip=None)
        self.tau = tau

    def _terms(self, data: LoggedData, pi: np.ndarray, reward_hat: np.ndarray | None) -> Terms:
        assert reward_hat is not None
        w, dm, residual = self._parts(data, pi, reward_hat)
        return Terms(mean=dm + np.where(w <= self.tau, w * residual, 0.0))


class Replay(OffPolicyEstimator):
    """Rejection sampling (Li et al., 2011, with Dudík et al.'s correction
    for a non-uniform logging policy): row ``i`` is kept with probability
    ``π(a_i | x_i) · scale / p_i``, so kept rows look like the evaluation
    policy's own traffic; the estimate is their mean reward. ``scale``
    defaults to the largest that keeps every acceptance probability ≤ 1,
    ``min_i p_i / π(a_i | x_i)``, which keeps as many rows as the data allow
    (all of them for a policy evaluated on itself; a larger scale caps the
    acceptance of some rows at 1, a bias). Its interval is
    :func:`replay_interval`. Seeded.

    >>> d = LoggedData(actions=np.array([0, 1, 0, 1]), rewards=np.array([1.0, 0.0, 0.5, 0.0]),
    ...                propensities=np.full(4, 0.5), arm_names=("a", "b"))
    >>> Replay(seed=0).estimate(d, np.array([[1.0, 0.0]] * 4))
    0.75
    """

    name = "replay"

    def __init__(self, scale: float | None = None, seed: int | None = 0) -> None:
        if scale is not None and not 0 < scale <= 1:
            raise ValueError("scale must be in (0, 1]")
        self.scale = scale
        self.seed = seed

    def accepted(self, data: LoggedData, action_dist: np.ndarray) -> np.ndarray:
        """The boolean mask of kept rows."""
        return self.accepted_factual(data, _factual(data, action_dist))

    def accepted_factual(self, data: LoggedData, target: np.ndarray) -> np.ndarray:
        """The kept rows, from the policy's probabilities of the logged actions."""
        w = _weights(data, check_target_propensities(data, target), None)
        top = float(w.max(initial=0.0))
        scale = self.scale if self.scale is not None else (1.0 / top if top > 0 else 1.0)
        keep_p = np.minimum(1.0, w * scale)
        u = np.random.default_rng(self.seed).random(data.n_events)
        return u < keep_p

    def interval(
        self,
        data: LoggedData,
        action_dist: np.ndarray,
        reward_hat: np.ndarray | None = None,
        n_bootstrap: int = 1000,
        alpha: float = 0.05,
        seed: int | None = 0,
    ) -> Estimate:
        """The estimate with a ``1 - alpha`` Wilson interval over the kept rows
        (rewards rescaled to the logged range; ``n_bootstrap`` is not used)."""
        kept = self.accepted(data, action_dist)
        low, high = replay_interval(data.rewards[kept], alpha, _reward_range(data))
        value = Terms(num=kept * data.rewards, den=kept * 1.0).value()
        return Estimate(self.name, value, low, high, float(kept.sum()), data.n_events)

    def _terms(self, data: LoggedData, pi: np.ndarray, reward_hat: np.ndarray | None) -> Terms:
        return self.factual_terms(data, _factual(data, pi))

    def factual_terms(self, data: LoggedData, target: np.ndarray) -> Terms:
        kept = self.accepted_factual(data, target).astype(np.float64)
        return Terms(num=kept * data.rewards, den=kept)

    def _ess(self, data: LoggedData, action_dist: np.ndarray) -> float:
        return float(self.accepted(data, action_dist).sum())


def _reward_range(data: LoggedData) -> tuple[float, float]:
    if data.n_events == 0:
        return 0.0, 1.0
    return float(data.rewards.min()), float(data.rewards.max())


ESTIMATORS: dict[str, type[OffPolicyEstimator]] = {
    cls.name: cls
    for cls in (
        Replay,
        IPS,
        SNIPS,
        DirectMethod,
        DoublyRobust,
        SelfNormalizedDoublyRobust,
        SwitchDoublyRobust,
    )
}


def make_estimator(
    name: str, clip: float | None = None, tau: float = 10.0, seed: int | None = 0
) -> OffPolicyEstimator:
    """An estimator by its table name, with the clip / tau / seed that apply to it."""
    cls = ESTIMATORS.get(name)
    if cls is None:
        raise ValueError(f"unknown estimator {name!r}; known: {sorted(ESTIMATORS)}")
    if cls is Replay:
        return Replay(seed=seed)
    if cls is SwitchDoublyRobust:
        return SwitchDoublyRobust(tau=tau)
    if cls is DirectMethod:
        return DirectMethod()
    return cls(clip=clip)  # type: ignore[call-arg]


def default_estimators(names: Sequence[str] | None = None, **kw: Any) -> list[OffPolicyEstimator]:
    return [make_estimator(n, **kw) for n in (names or list(ESTIMATORS))]
