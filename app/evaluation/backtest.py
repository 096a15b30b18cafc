"""Backtest several policies on one log of bandit feedback.

Logged data (:class:`~app.evaluation.logged_data.LoggedData`), policies
under test (:class:`PolicySpec`) and estimators
(:mod:`app.evaluation.estimators`) stay apart: a policy is turned into its
``[n, k]`` action distribution over the logged rows, and every estimator
reads the same arrays.

Policies under test: any library policy (by algorithm name with any
hyperparameters, or a ``policy_id`` of a policies YAML) — built and called
through the same :class:`~app.policies.base.Policy` code the live path
uses —, the logging policy itself, uniform random, a fixed arm, the best
fixed arm, and a policy evaluated elsewhere: a Python callable that returns
its action distribution, or a target carried by the data
(``LoggedData.targets``: its probabilities of the logged actions, for ips,
snips and replay, or of every arm, for every estimator).

Modes:

* ``frozen`` — the policy as configured (its prior, or trained on the first
  ``train_fraction`` of the log, in time order), not learning while
  evaluated: ``probabilities(allowed, context)`` at each row.
* ``progressive`` — progressive validation: rows in time order; at each row
  the policy's current distribution is recorded (so IPS/SNIPS/DR estimate
  the mean value of the policy as it learns), then the policy ``select``-s;
  when its choice equals the logged arm the row is kept with probability
  ``scale / p_i`` (rejection sampling, ``scale`` = smallest propensity) and
  the policy learns from it, as it would have live. ``replay`` is then the
  mean reward of the kept rows.

Request guardrails (priority, budgets, cost limits) are not replayed: the
log holds what the policy saw, not the request metadata.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.evaluation.estimators import (
    ESTIMATORS,
    Estimate,
    OffPolicyEstimator,
    Replay,
    RidgeRewardModel,
    Terms,
    bootstrap_interval,
    bootstrap_intervals,
    check_action_dist,
    effective_sample_size,
    importance_weights,
    make_estimator,
    refit_bootstrap_interval,
    replay_interval,
)
from app.evaluation.logged_data import DataQuality, LoggedData, LoggedDataError
from app.policies.base import Policy, PolicyError
from app.policies.config import PolicyConfig
from app.policies.registry import algorithms

__all__ = ["Backtest", "BacktestResult", "PolicyResult", "PolicySpec", "parse_policy_spec"]

MODES = ("frozen", "progressive")
SPECIAL = ("logging", "uniform", "best-fixed", "fixed", "python")
Progress = Callable[[int, int, str], None]
ActionDistFn = Callable[[LoggedData], np.ndarray]
# The refitting bootstrap of dm refits the reward model per resample: capped.
DM_RESAMPLES = 200
# Cross-fitting of the reward model: folds, and random splits averaged (DR's stability).
DEFAULT_FOLDS = 5
DEFAULT_REPEATS = 5
# Estimators that need nothing but the policy's probabilities of the logged actions.
FACTUAL = ("ips", "snips", "replay")


@dataclass(frozen=True)
class PolicySpec:
    """A policy under test. Build with the class methods:

    >>> PolicySpec.library("epsilon_greedy", epsilon=0.2).name
    'epsilon_greedy(epsilon=0.2)'
    >>> PolicySpec.uniform().kind, PolicySpec.fixed("gpt-4o").name
    ('uniform', 'fixed(gpt-4o)')
    """

    name: str
    kind: str  # library | config | logging | uniform | fixed | best-fixed | callable | target
    algorithm: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    config: PolicyConfig | None = None
    arm: str | None = None
    function: ActionDistFn | None = None
    target: str | None = None

    @classmethod
    def library(cls, algorithm: str, seed: int = 0, **hyperparameters: Any) -> PolicySpec:
        known = algorithms()
        if algorithm not in known:
            raise ValueError(f"unknown policy {algorithm!r}; known: {sorted(known)}")
        args = ",".join(f"{k}={v}" for k, v in hyperparameters.items())
        name = f"{algorithm}({args})" if args else algorithm
        return cls(name, "library", algorithm, dict(hyperparameters), seed)

    @classmethod
    def from_config(cls, config: PolicyConfig, name: str | None = None) -> PolicySpec:
        """A ``policy_id`` of a policies YAML: its algorithm, hyperparameters,
        arms and seed."""
        return cls(
            name or f"{config.policy_id} ({config.algorithm})",
            "config",
            config.algorithm,
            dict(config.hyperparameters),
            config.seed,
            config,
        )

    @classmethod
    def logging(cls) -> PolicySpec:
        return cls("logging", "logging")

    @classmethod
    def uniform(cls) -> PolicySpec:
        return cls("uniform", "uniform")

    @classmethod
    def fixed(cls, arm: str) -> PolicySpec:
        return cls(f"fixed({arm})", "fixed", arm=arm)

    @classmethod
    def best_fixed(cls) -> PolicySpec:
        return cls("best-fixed", "best-fixed")

    @classmethod
    def from_callable(cls, function: ActionDistFn, name: str | None = None) -> PolicySpec:
        """A policy trained elsewhere: ``function(data)`` returns its ``[n, k]``
        action distribution over the logged rows (arms in ``data.arm_names``
        order, zero where an arm was not available)."""
        label = name or str(getattr(function, "__name__", "callable"))
        return cls(label, "callable", function=function)

    @classmethod
    def from_target(cls, target: str) -> PolicySpec:
        """The policy whose probabilities the data carries as ``data.targets[target]``:
        of the logged actions (``[n]``) or of every arm (``[n, k]``)."""
        return cls(f"target({target})", "target", target=target)

    def build(self, data: LoggedData) -> Policy:
        """A fresh library policy over the data's arms (a config's own arms)."""
        if self.config is not None:
            return self.config.build()
        assert self.algorithm is not None
        cls = algorithms()[self.algorithm]
        hp = dict(self.hyperparameters)
        if cls.contextual_for(hp):
            if data.contexts is None:
                raise LoggedDataError(
                    f"{self.name} is contextual and the data has no contexts; map context columns"
                )
            hp.setdefault("context_dim", data.context_dim)
        try:
            return cls(list(data.arm_names), seed=self.seed, **hp)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}: bad hyperparameters: {exc}") from None


def _value(text: str) -> Any:
    low = text.lower()
    if low in {"true", "false"}:
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def load_callable(ref: str) -> ActionDistFn:
    """``module:function`` or ``path/to/file.py:function`` → the function."""
    where, _, attr = ref.rpartition(":")
    if not where or not attr:
        raise ValueError(
            f"python policy {ref!r}: use python:MODULE:FUNCTION or python:FILE.py:FUNCTION"
        )
    try:
        if where.endswith(".py"):
            path = Path(where)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None or not path.exists():
                raise ValueError(f"python policy: no file {where}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")  # modules of the working directory, as `python -m` finds
            module = importlib.import_module(where)
    except ImportError as exc:
        raise ValueError(f"python policy {ref!r}: cannot import {where}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"python policy {ref!r}: {where} has no function {attr!r}")
    return fn


def parse_policy_spec(text: str, seed: int = 0) -> PolicySpec:
    """``logging``, ``uniform``, ``best-fixed``, ``fixed:ARM``,
    ``python:MODULE:FUNCTION`` (a callable returning the action distribution),
    or a library algorithm with optional hyperparameters:
    ``lin_ucb:alpha=0.5,ridge=1``.

    >>> parse_policy_spec("lin_ucb:alpha=0.5").hyperparameters
    {'alpha': 0.5}
    >>> parse_policy_spec("fixed:gpt-4o").arm
    'gpt-4o'
    """
    name, colon, rest = text.strip().partition(":")
    plain = {"logging": PolicySpec.logging, "uniform": PolicySpec.uniform}
    plain |= {"best-fixed": PolicySpec.best_fixed, "best_fixed": PolicySpec.best_fixed}
    if name in plain:
        if colon:
            raise ValueError(f"{name} takes no options, got {text!r}; write --policy {name}")
        return plain[name]()
    if name == "fixed":
        if not rest:
            raise ValueError("fixed needs an arm: fixed:ARM")
        return PolicySpec.fixed(rest)
    if name == "python":
        return PolicySpec.from_callable(load_callable(rest), f"python:{rest}")
    hp: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, eq, val = part.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"bad hyperparameter {part!r} in {text!r}: use name=value")
        hp[key.strip()] = _value(val.strip())
    known = algorithms()
    if name not in known:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join([*SPECIAL, *sorted(known)])}")
    return PolicySpec.library(name, seed=seed, **hp)


@dataclass
class PolicyResult:
    """One policy's estimates and time series."""

    name: str
    kind: str
    estimates: dict[str, Estimate]
    ess: float
    cumulative_reward: np.ndarray  # estimated cumulative reward at each bin's end
    arm_shares: np.ndarray  # [bins, k] mean action probabilities per bin
    accepted: int | None = None  # rows kept by replay (rejection sampling)
    uncovered: int = 0  # rows where none of the policy's arms was available
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "estimates": {k: e.to_dict() for k, e in self.estimates.items()},
            "ess": self.ess if math.isfinite(self.ess) else None,
            "accepted": self.accepted,
            "uncovered": self.uncovered,
            "seconds": round(self.seconds, 4),
            "cumulative_reward": [round(float(x), 6) for x in self.cumulative_reward],
            "arm_shares": [[round(float(x), 5) for x in row] for row in self.arm_shares],
        }


@dataclass
class BacktestResult:
    """Everything a report shows."""

    mode: str
    arm_names: tuple[str, ...]
    n_events: int
    quality: DataQuality
    estimators: list[str]
    primary: str
    bin_ends: list[int]  # timestamp (ms) or row count at each bin's end
    time_axis: str  # "timestamp_ms" | "row"
    policies: list[PolicyResult]
    settings: dict[str, Any]
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "arm_names": list(self.arm_names),
            "n_events": self.n_events,
            "data_quality": self.quality.to_dict(),
            "estimators": self.estimators,
            "primary_estimator": self.primary,
            "time_axis": self.time_axis,
            "bin_ends": self.bin_ends,
            "settings": self.settings,
            "seconds": round(self.seconds, 3),
            "policies": [p.to_dict() for p in self.policies],
        }

    def best(self, estimator: str | None = None) -> PolicyResult:
        est = estimator or self.primary
        return max(self.policies, key=lambda p: _finite_or_low(p.estimates[est].value))


def _finite_or_low(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


class Backtest:
    """Evaluate policies on logged data.

    >>> rng = np.random.default_rng(0)
    >>> n = 400
    >>> a = rng.integers(0, 2, n)
    >>> data = LoggedData(actions=a, rewards=(rng.random(n) < np.where(a == 0, 0.8, 0.3)) * 1.0,
    ...                   propensities=np.full(n, 0.5), arm_names=("good", "bad"))
    >>> bt = Backtest([PolicySpec.fixed("good"), PolicySpec.uniform()], n_bootstrap=0)
    >>> res = bt.run(data)
    >>> [(p.name, round(p.estimates["snips"].value, 2)) for p in res.policies]
    [('fixed(good)', 0.77), ('uniform', 0.48)]
    """

    def __init__(
        self,
        policies: Sequence[PolicySpec],
        estimators: Sequence[str] = tuple(ESTIMATORS),
        mode: str = "frozen",
        clip: float | None = None,
        tau: float = 10.0,
        n_bootstrap: int = 500,
        alpha: float = 0.05,
        reward_model: RidgeRewardModel | None = None,
        train_fraction: float = 0.0,
        n_bins: int = 40,
        seed: int = 0,
    ) -> None:
        if not policies:
            raise ValueError("no policies to evaluate")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= train_fraction < 1.0:
            raise ValueError("train_fraction must be in [0, 1)")
        if not estimators:
            raise ValueError("no estimators")
        names = [p.name for p in policies]
        if len(set(names)) != len(names):
            raise ValueError(f"policy names repeat: {names}")
        self.policies = list(policies)
        self.estimators = list(estimators)
        self.mode = mode
        self.clip = clip
        self.tau = tau
        self.n_bootstrap = n_bootstrap
        self.alpha = alpha
        self.reward_model = reward_model or RidgeRewardModel(
            alpha=1.0, n_folds=DEFAULT_FOLDS, repeats=DEFAULT_REPEATS, seed=seed
        )
        self.train_fraction = train_fraction
        self.n_bins = n_bins
        self.seed = seed
        self._estimators: dict[str, OffPolicyEstimator] = {
            n: make_estimator(n, clip=clip, tau=tau, seed=seed) for n in self.estimators
        }
        # Per run: the ranking estimator, and the reward model fitted on every row.
        self._run_primary = self.primary
        self._reward_full: np.ndarray | None = None

    @property
    def primary(self) -> str:
        """The estimator the series, the ranking and the best fixed arm use."""
        return self._primary()

    def _primary(self, data: LoggedData | None = None) -> str:
        # With a policy known only by its probabilities of the logged actions,
        # the first estimator that every policy has.
        factual_only = data is not None and any(
            s.kind == "target" and data.targets.get(str(s.target), np.empty((0, 0))).ndim == 1
            for s in self.policies
        )
        for name in ("dr", "snips", "ips", "dm", "sndr", "switch-dr", "replay"):
            if name in self.estimators and (name in FACTUAL or not factual_only):
                return name
        return self.estimators[0]

    # -- running -----------------------------------------------------------------------------
    def run(self, data: LoggedData, progress: Progress | None = None) -> BacktestResult:
        started = time.perf_counter()
        data.check_propensities()
        data = data.time_ordered()
        train = None
        if self.train_fraction > 0:
            cut = int(data.n_events * self.train_fraction)
            train, data = data.take(np.arange(cut)), data.take(np.arange(cut, data.n_events))
        if data.n_events == 0:
            raise LoggedDataError("no logged rows to evaluate")
        for spec in self.policies:
            if spec.kind == "target" and spec.target not in data.targets:
                raise LoggedDataError(
                    f"{spec.name}: the data carries no target {spec.target!r}; "
                    f"it has {sorted(data.targets) or 'none'}"
                )
        self._run_primary = self._primary(data)
        needs_model = any(e.uses_reward_model for e in self._estimators.values())
        reward_hat = self.reward_model.fit_predict(data) if needs_model else None
        # dm is the plug-in model fitted on every row (cross-fitting is for
        # the DR correction); fit_predict leaves the model fitted so.
        self._reward_full = self.reward_model.predict(data) if needs_model else None
        bins = _bins(data.n_events, self.n_bins)
        results = []
        for spec in self.policies:
            t0 = time.perf_counter()
            if spec.kind == "logging":
                res = self._logging(spec, data, bins)
            elif spec.kind == "target" and data.targets[str(spec.target)].ndim == 1:
                res = self._evaluate_factual(spec, data, data.targets[str(spec.target)], bins)
            else:
                pi, accepted, uncovered = self._action_dist(spec, data, train, reward_hat, progress)
                res = self._evaluate(spec, data, pi, reward_hat, bins, accepted)
                res.uncovered = uncovered
            res.seconds = time.perf_counter() - t0
            results.append(res)
        if data.timestamps is not None:
            bin_ends, axis = [int(data.timestamps[e - 1]) for e in bins], "timestamp_ms"
        else:
            bin_ends, axis = [int(e) for e in bins], "row"
        return BacktestResult(
            mode=self.mode,
            arm_names=data.arm_names,
            n_events=data.n_events,
            quality=data.quality,
            estimators=self.estimators,
            primary=self._run_primary,
            bin_ends=bin_ends,
            time_axis=axis,
            policies=results,
            settings={
                "clip": self.clip,
                "tau": self.tau,
                "n_bootstrap": self.n_bootstrap,
                "alpha": self.alpha,
                "train_fraction": self.train_fraction,
                "train_rows": 0 if train is None else train.n_events,
                "reward_model": {
                    "kind": "ridge",
                    "alpha": self.reward_model.alpha,
                    "n_folds": self.reward_model.n_folds,
                    "repeats": self.reward_model.repeats,
                },
                "dm_resamples": min(self.n_bootstrap, DM_RESAMPLES),
                "seed": self.seed,
            },
            seconds=time.perf_counter() - started,
        )

    def _evaluate(
        self,
        spec: PolicySpec,
        data: LoggedData,
        pi: np.ndarray,
        reward_hat: np.ndarray | None,
        bins: np.ndarray,
        accepted: np.ndarray | None,
    ) -> PolicyResult:
        estimates: dict[str, Estimate] = {}
        resampled: dict[str, Terms] = {}
        series_terms: Terms | None = None
        for name, est in self._estimators.items():
            note = ""
            if name == "replay":
                if accepted is None:
                    assert isinstance(est, Replay)
                    accepted = est.accepted(data, pi)
                estimates[name], terms = self._replay(data, accepted)
            elif name == "dm":
                assert self._reward_full is not None
                terms = est.terms(data, pi, self._reward_full)
                b = min(self.n_bootstrap, DM_RESAMPLES)
                low, high = refit_bootstrap_interval(
                    data, pi, self.reward_model, b, self.alpha, self.seed
                )
                note = f"interval: bootstrap refitting the reward model ({b} resamples)"
                estimates[name] = Estimate(
                    name, terms.value(), low, high, est._ess(data, pi), data.n_events, note
                )
            else:
                terms = est.terms(data, pi, reward_hat)
                ess = est._ess(data, pi)
                estimates[name] = Estimate(name, terms.value(), ess=ess, n=data.n_events)
                resampled[name] = terms
            if name == self._run_primary:
                series_terms = terms
        self._intervals(estimates, resampled)
        assert series_terms is not None
        res = PolicyResult(
            name=spec.name,
            kind=spec.kind,
            estimates=estimates,
            ess=effective_sample_size(importance_weights(data, pi, self.clip)),
            cumulative_reward=np.cumsum(series_terms.rows())[bins - 1],
            arm_shares=_bin_means(pi, bins),
            accepted=None if accepted is None else int(accepted.sum()),
        )
        if spec.kind == "best-fixed":
            res.name = f"best-fixed ({data.arm_names[int(pi.sum(axis=0).argmax())]})"
        return res

    def _intervals(self, estimates: dict[str, Estimate], terms: dict[str, Terms]) -> None:
        """Percentile bootstrap intervals of ``terms``, from one set of draws."""
        bounds = bootstrap_intervals(list(terms.values()), self.n_bootstrap, self.alpha, self.seed)
        for name, (low, high) in zip(terms, bounds, strict=True):
            estimates[name] = replace(estimates[name], low=low, high=high)

    def _replay(self, data: LoggedData, accepted: np.ndarray) -> tuple[Estimate, Terms]:
        kept = accepted.astype(np.float64)
        terms = Terms(num=kept * data.rewards, den=kept)
        m = int(accepted.sum())
        rng = (float(data.rewards.min()), float(data.rewards.max()))
        low, high = replay_interval(data.rewards[accepted], self.alpha, rng)
        note = f"{m} rows kept; Wilson interval"
        if m == 0:
            note = "no row kept: the policy never chose the logged arm where it was logged"
        return Estimate("replay", terms.value(), low, high, float(m), data.n_events, note), terms

    def _evaluate_factual(
        self, spec: PolicySpec, data: LoggedData, target: np.ndarray, bins: np.ndarray
    ) -> PolicyResult:
        """A policy known only by its probabilities of the logged actions:
        ips, snips and replay; the others need every arm's probability."""
        estimates: dict[str, Estimate] = {}
        resampled: dict[str, Terms] = {}
        series_terms: Terms | None = None
        w = target / data.propensities
        for name, est in self._estimators.items():
            if name not in FACTUAL:
                note = "needs the policy's probabilities of every arm (--target-dist)"
                estimates[name] = Estimate(name, math.nan, n=data.n_events, note=note)
                continue
            if name == "replay":
                assert isinstance(est, Replay)
                estimates[name], terms = self._replay(data, est.accepted_factual(data, target))
            else:
                terms = est.factual_terms(data, target)
                ess = effective_sample_size(np.minimum(w, self.clip) if self.clip else w)
                estimates[name] = Estimate(name, terms.value(), ess=ess, n=data.n_events)
                resampled[name] = terms
            if name == self._run_primary:
                series_terms = terms
        self._intervals(estimates, resampled)
        series = np.zeros(data.n_events) if series_terms is None else series_terms.rows()
        # Arm shares: the self-normalised estimate from the weighted logged actions.
        onehot = np.zeros((data.n_events, data.n_arms))
        onehot[np.arange(data.n_events), data.actions] = w
        sums = np.add.reduceat(onehot, np.concatenate([[0], bins[:-1]]), axis=0)
        totals = sums.sum(axis=1, keepdims=True)
        shares = np.divide(sums, totals, out=np.zeros_like(sums), where=totals > 0)
        replay = estimates.get("replay")
        return PolicyResult(
            name=spec.name,
            kind=spec.kind,
            estimates=estimates,
            ess=effective_sample_size(w),
            cumulative_reward=np.cumsum(series)[bins - 1],
            arm_shares=shares,
            accepted=None if replay is None else int(replay.ess),
        )

    def _logging(self, spec: PolicySpec, data: LoggedData, bins: np.ndarray) -> PolicyResult:
        """The logging policy is evaluated on-policy: its importance weights
        are 1 by definition, so every estimator reduces to the mean reward."""
        terms = Terms(mean=data.rewards)
        low, high = bootstrap_interval(terms, self.n_bootstrap, self.alpha, self.seed)
        est = {
            n: Estimate(n, terms.value(), low, high, float(data.n_events), data.n_events)
            for n in self.estimators
        }
        onehot = np.zeros((data.n_events, data.n_arms))
        onehot[np.arange(data.n_events), data.actions] = 1.0
        return PolicyResult(
            name=spec.name,
            kind=spec.kind,
            estimates=est,
            ess=float(data.n_events),
            cumulative_reward=np.cumsum(data.rewards)[bins - 1],
            arm_shares=_bin_means(onehot, bins),
            accepted=data.n_events if "replay" in est else None,
        )

    # -- action distributions ----------------------------------------------------------------
    def _action_dist(
        self,
        spec: PolicySpec,
        data: LoggedData,
        train: LoggedData | None,
        reward_hat: np.ndarray | None,
        progress: Progress | None,
    ) -> tuple[np.ndarray, np.ndarray | None, int]:
        mask = data.allowed_mask()
        if spec.kind == "uniform":
            return mask / mask.sum(axis=1, keepdims=True), None, 0
        if spec.kind == "fixed":
            assert spec.arm is not None
            return _fixed(data, mask, spec.arm), None, 0
        if spec.kind == "callable":
            assert spec.function is not None
            try:
                pi = check_action_dist(data, spec.function(data))
            except ValueError as exc:
                raise ValueError(f"{spec.name}: {exc}") from None
            return pi, None, 0
        if spec.kind == "target":
            try:
                pi = check_action_dist(data, data.targets[str(spec.target)])
            except ValueError as exc:
                raise ValueError(f"{spec.name}: {exc}") from None
            return pi, None, 0
        if spec.kind == "best-fixed":
            best, best_value = None, -math.inf
            primary = self._run_primary
            est = self._estimators[primary]
            q = self._reward_full if primary == "dm" else reward_hat
            for arm in data.arm_names:
                pi = _fixed(data, mask, arm)
                value = est.estimate(data, pi, q)
                if math.isfinite(value) and value > best_value:
                    best, best_value = pi, value
            assert best is not None
            return best, None, 0
        policy = spec.build(data)
        if train is not None:
            _train(policy, train)
        if self.mode == "progressive":
            return self._progressive(spec, policy, data, mask, progress)
        return self._frozen(spec, policy, data, mask, progress)

    def _frozen(
        self,
        spec: PolicySpec,
        policy: Policy,
        data: LoggedData,
        mask: np.ndarray,
        progress: Progress | None,
    ) -> tuple[np.ndarray, None, int]:
        n, k = data.n_events, data.n_arms
        cols = _columns(policy, data)
        pi = np.zeros((n, k))
        cache: dict[bytes, np.ndarray] = {}
        uncovered = 0
        step = max(1, n // 100)
        for i in range(n):
            allowed, idx = _allowed(mask[i], cols)
            if not allowed:
                uncovered += 1
                pi[i] = mask[i] / mask[i].sum()
                continue
            if policy.contextual:
                pi[i, idx] = policy.probabilities(allowed, data.contexts[i])  # type: ignore[index]
            else:
                key = mask[i].tobytes()
                cached = cache.get(key)
                if cached is None:
                    cached = cache[key] = np.asarray(policy.probabilities(allowed), dtype=float)
                pi[i, idx] = cached
            if progress is not None and (i % step == 0 or i == n - 1):
                progress(i + 1, n, spec.name)
        return pi, None, uncovered

    def _progressive(
        self,
        spec: PolicySpec,
        policy: Policy,
        data: LoggedData,
        mask: np.ndarray,
        progress: Progress | None,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        n, k = data.n_events, data.n_arms
        cols = _columns(policy, data)
        pi = np.zeros((n, k))
        accepted = np.zeros(n, dtype=bool)
        scale = float(data.propensities.min())
        u = np.random.default_rng(self.seed).random(n)
        names = data.arm_names
        uncovered = 0
        step = max(1, n // 100)
        for i in range(n):
            allowed, idx = _allowed(mask[i], cols)
            if not allowed:
                uncovered += 1
                pi[i] = mask[i] / mask[i].sum()
                continue
            ctx = None if data.contexts is None or not policy.contextual else data.contexts[i]
            sel = policy.select(ctx, allowed)
            pi[i, idx] = [sel.probabilities[a] for a in allowed]
            logged = names[data.actions[i]]
            if sel.arm == logged and u[i] < scale / data.propensities[i]:
                accepted[i] = True
                try:
                    policy.update(logged, float(data.rewards[i]), ctx, propensity=sel.propensity)
                except PolicyError as exc:
                    raise ValueError(f"{spec.name} refused row {i}: {exc}") from None
            if progress is not None and (i % step == 0 or i == n - 1):
                progress(i + 1, n, spec.name)
        return pi, accepted, uncovered


# -- helpers --------------------------------------------------------------------------------


def _bins(n: int, n_bins: int) -> np.ndarray:
    """Exclusive end row of each of (at most) ``n_bins`` equal-count bins."""
    b = max(1, min(n_bins, n))
    return np.unique(np.linspace(0, n, b + 1)[1:].round().astype(np.int64))


def _bin_means(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    sums = np.add.reduceat(values, np.concatenate([[0], bins[:-1]]), axis=0)
    counts = np.diff(np.concatenate([[0], bins]))
    return sums / counts[:, None]


def _fixed(data: LoggedData, mask: np.ndarray, arm: str) -> np.ndarray:
    """Always ``arm`` where it was available, else uniform over what was."""
    if arm not in data.arm_names:
        # Suggestions among short names such as "2" or "10" are noise.
        long_names = [a for a in data.arm_names if len(a) > 3]
        close = difflib.get_close_matches(arm, long_names, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}?" if close else ""
        names = list(data.arm_names)
        shown = names if len(names) <= 12 else [*names[:10], "…", names[-1]]
        raise ValueError(
            f"unknown arm {arm!r}; {hint + ' ' if hint else ''}arms are {', '.join(shown)} "
            f"({len(names)} arms)"
        )
    j = data.arm_names.index(arm)
    pi = mask / mask.sum(axis=1, keepdims=True)
    has = mask[:, j]
    pi[has] = 0.0
    pi[has, j] = 1.0
    return pi


def _columns(policy: Policy, data: LoggedData) -> np.ndarray:
    """For each data arm, the arm's name if the policy has it, else ''."""
    arms = set(policy.arms)
    if not arms & set(data.arm_names):
        raise ValueError(
            f"the policy's arms {sorted(arms)} share none with the data's {list(data.arm_names)}"
        )
    return np.array([a if a in arms else "" for a in data.arm_names], dtype=object)


def _allowed(row_mask: np.ndarray, cols: np.ndarray) -> tuple[list[str], np.ndarray]:
    idx = np.flatnonzero(row_mask & (cols != ""))
    return [str(a) for a in cols[idx]], idx


def _train(policy: Policy, data: LoggedData) -> None:
    """Update the policy with every logged (arm, reward, context) of ``data``,
    in time order, with the logged propensity."""
    names = data.arm_names
    known = set(policy.arms)
    for i in range(data.n_events):
        arm = names[data.actions[i]]
        if arm not in known:
            continue
        ctx = data.contexts[i] if (policy.contextual and data.contexts is not None) else None
        policy.update(arm, float(data.rewards[i]), ctx, propensity=float(data.propensities[i]))
