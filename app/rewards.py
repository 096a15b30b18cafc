"""Reward components → one scalar reward in [0, 1], by a policy's weights,
which may change with the time of day in the tenant's time zone
(:class:`WeightWindow`), or by a function the user names
(:func:`load_reward_function`)."""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.metadata
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.circuit_breaker import CircuitBreaker

COMPONENTS = ("quality", "cost", "latency", "feedback")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Entry points a package declares for its reward functions.
ENTRY_POINT_GROUP = "llmopt.rewards"
RewardFunction = Callable[[Mapping[str, Any], Mapping[str, Any]], float]
# A reward function that fails (raises, returns a value outside [0, 1], or
# takes longer than REWARD_FUNCTION_SLOW_SECONDS) this many times in a row is
# not called for REWARD_FUNCTION_RESET_SECONDS: the weighted sum stands in
# (app/circuit_breaker.py), and the join is not held up by it.
REWARD_FUNCTION_FAILURES = 5
REWARD_FUNCTION_RESET_SECONDS = 30.0
REWARD_FUNCTION_SLOW_SECONDS = 0.1


class RewardFunctionError(ValueError):
    """A reward function that cannot be loaded, or a result it may not give."""


@dataclass(frozen=True, slots=True)
class WeightWindow:
    """``component``'s weight times ``factor`` from ``start_minute`` to
    ``end_minute`` (minutes after midnight; a window past midnight wraps) on
    ``days`` (0 = Monday), in ``timezone`` (``"tenant"``: the tenant's, from
    the spec's ``tenant_timezones``, else the spec's ``timezone``)."""

    component: str
    factor: float
    start_minute: int
    end_minute: int
    days: frozenset[int] = frozenset(range(7))
    timezone: str = ""

    def covers(self, local: dt.datetime) -> bool:
        minute = local.hour * 60 + local.minute
        if self.start_minute <= self.end_minute:
            inside = self.start_minute <= minute < self.end_minute
            day = local.weekday()
        else:  # e.g. 22:00–06:00: the day is the one the window started on
            inside = minute >= self.start_minute or minute < self.end_minute
            day = local.weekday() if minute >= self.start_minute else (local.weekday() - 1) % 7
        return inside and day in self.days


def zone(name: str) -> ZoneInfo:
    """A time zone by its IANA name; ValueError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Europe/Paris)") from None


def load_reward_function(name: str) -> RewardFunction:
    """``package.module:function`` (imported), or the name of an entry point
    in the ``llmopt.rewards`` group (an installed package's)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            found: Any = importlib.import_module(module)
            for part in attr.split("."):
                found = getattr(found, part)
        except ImportError as exc:
            raise RewardFunctionError(f"cannot import {module!r}: {exc}") from None
        except AttributeError:
            raise RewardFunctionError(f"module {module!r} has no {attr!r}") from None
    else:
        points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
        if not points:
            raise RewardFunctionError(
                f"no reward function {name!r}: name one as package.module:function, or an "
                f"entry point of the {ENTRY_POINT_GROUP!r} group"
            )
        try:
            found = next(iter(points)).load()
        except Exception as exc:
            raise RewardFunctionError(f"entry point {name!r} does not load: {exc}") from None
    if not callable(found):
        raise RewardFunctionError(f"{name!r} is not a function")
    return found


@dataclass(frozen=True, slots=True)
class RewardSpec:
    """How a policy scores an outcome. Terms whose component is absent are
    left out and the remaining weights renormalised, so a reward carrying only
    user feedback still yields a scalar."""

    quality_weight: float = 0.6
    cost_weight: float = 0.25
    latency_weight: float = 0.15
    feedback_weight: float = 0.0
    cost_scale_usd: float = 0.02
    latency_scale_ms: float = 8000.0
    error_reward: float = 0.0
    wait_seconds: float = 30.0
    default_reward: float = 0.0
    # A user's function of the components and the context, in place of the
    # weighted sum (which it is given as ``context["weighted"]``).
    function: str = ""
    # Weights that change with the time of day (:class:`WeightWindow`).
    schedule: tuple[WeightWindow, ...] = ()
    timezone: str = "UTC"
    tenant_timezones: Mapping[str, str] = field(default_factory=dict, compare=False)
    _call: RewardFunction | None = field(default=None, init=False, repr=False, compare=False)
    _breaker: CircuitBreaker | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.type != "float":
                continue
            if not math.isfinite(getattr(self, f.name)):
                # NaN passes every comparison below and would silently score 0.
                raise ValueError(f"{f.name} must be a finite number, got {getattr(self, f.name)}")
        weights = (self.quality_weight, self.cost_weight, self.latency_weight, self.feedback_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("reward weights must be non-negative and not all zero")
        if self.cost_scale_usd <= 0 or self.latency_scale_ms <= 0:
            raise ValueError("cost_scale_usd and latency_scale_ms must be positive")
        for name in ("error_reward", "default_reward"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.wait_seconds <= 0:
            raise ValueError("wait_seconds must be positive")
        for name in (self.timezone, *self.tenant_timezones.values()):
            zone(name)
        for w in self.schedule:
            if w.component not in COMPONENTS:
                raise ValueError(f"schedule component must be one of {COMPONENTS}")
            if not (math.isfinite(w.factor) and w.factor >= 0):
                raise ValueError("a schedule factor must be a non-negative number")
        if self.function:
            object.__setattr__(self, "_call", load_reward_function(self.function))
            breaker = CircuitBreaker(
                f"reward_function:{self.function}",
                failures=REWARD_FUNCTION_FAILURES,
                reset_seconds=REWARD_FUNCTION_RESET_SECONDS,
                slow_seconds=REWARD_FUNCTION_SLOW_SECONDS,
            )
            object.__setattr__(self, "_breaker", breaker)

    def weights_at(self, at_ms: int, tenant_id: str | None = None) -> dict[str, float]:
        """The weights in effect at ``at_ms`` for ``tenant_id``."""
        weights = {
            "quality": self.quality_weight,
            "cost": self.cost_weight,
            "latency": self.latency_weight,
            "feedback": self.feedback_weight,
        }
        if self.schedule:
            utc = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)
            tenant_zone = self.tenant_timezones.get(tenant_id or "", self.timezone)
            for w in self.schedule:
                name = tenant_zone if w.timezone in ("", "tenant") else w.timezone
                if w.covers(utc.astimezone(zone(name))):
                    weights[w.component] *= w.factor
        return weights

    @property
    def plain(self) -> bool:
        """The fixed weighted sum (no schedule, no function)."""
        return not self.schedule and not self.function

    def score(
        self,
        components: Mapping[str, Any],
        at_ms: int,
        context: Mapping[str, Any],
    ) -> tuple[float, dict[str, Any]]:
        """The scalar reward of an outcome's ``components`` (quality,
        cost_usd, latency_ms, error, feedback) and how it was made (the
        outcome's ``reward_terms``: the weights in effect, and the function
        when one is named; ``function_error`` when it failed or its circuit
        breaker is open, in which case the weighted sum is used).
        ``context``: the decision's tenant_id, policy_id, arm, model,
        decided_at and the like."""
        weights = self.weights_at(at_ms, context.get("tenant_id"))
        weighted = self._weighted(weights, **{k: components.get(k) for k in _SCALAR_ARGS})
        terms: dict[str, Any] = {"weights": weights}
        if self._call is None or self._breaker is None:
            return weighted, terms
        terms["function"] = self.function
        breaker = self._breaker
        if not breaker.allow():
            terms["function_error"] = (
                f"CircuitOpen: not called for {breaker.reset_seconds:g} s after "
                f"{breaker.failures} failures in a row"
            )
            return weighted, terms
        started = breaker.clock()
        try:
            value = float(self._call(components, {**context, "weighted": weighted}))
            if not 0.0 <= value <= 1.0:  # NaN fails too
                raise RewardFunctionError(f"returned {value}, not a number in [0, 1]")
        except Exception as exc:  # a user's function never stops the join
            breaker.failed()
            terms["function_error"] = f"{type(exc).__name__}: {exc}"[:512]
            return weighted, terms
        breaker.finished(started)
        return value, terms

    def scalar(
        self,
        quality: float | None = None,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
        error: bool | None = None,
        feedback: float | None = None,
    ) -> float:
        """The weighted sum with the base weights (no schedule, no function)."""
        base = {
            "quality": self.quality_weight,
            "cost": self.cost_weight,
            "latency": self.latency_weight,
            "feedback": self.feedback_weight,
        }
        return self._weighted(base, quality, cost_usd, latency_ms, error, feedback)

    def _weighted(
        self,
        weights: Mapping[str, float],
        quality: float | None = None,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
        error: bool | None = None,
        feedback: float | None = None,
    ) -> float:
        if error:
            return self.error_reward
        total = weight = 0.0
        if quality is not None:
            total += weights["quality"] * quality
            weight += weights["quality"]
        if cost_usd is not None:
            total += weights["cost"] * max(0.0, 1.0 - cost_usd / self.cost_scale_usd)
            weight += weights["cost"]
        if latency_ms is not None:
            total += weights["latency"] * max(0.0, 1.0 - latency_ms / self.latency_scale_ms)
            weight += weights["latency"]
        if feedback is not None:
            total += weights["feedback"] * (feedback + 1.0) / 2.0
            weight += weights["feedback"]
        if weight == 0.0:
            return self.default_reward
        return min(1.0, max(0.0, total / weight))


_SCALAR_ARGS = ("quality", "cost_usd", "latency_ms", "error", "feedback")
