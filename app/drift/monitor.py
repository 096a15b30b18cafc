"""Watches outcome streams for drift and anomalies. Pure: ``detect_drift``
feeds it parsed outcomes and sends the events it returns."""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from river.base import DriftDetector

from app.drift.anomaly_detector import AnomalyDetector
from app.drift.config import (
    DRIFT_DETECTORS,
    MULTIVARIATE_ANOMALY,
    SIGNALS,
    UNIVARIATE_ANOMALY,
    DriftConfig,
)
from app.drift.input_drift import InputDrift
from app.features.request_vector import FEATURE_NAMES
from app.records import DriftEvent, Outcome, now_ms

_RECENT = 200  # values kept to report the mean after a change
_AFTER = 50  # values averaged after a change when the detector cannot say when it began
_LOG_SIGNALS = ("latency", "cost")  # watched on a log scale, reported as geometric means


def signal_values(outcome: Outcome) -> dict[str, float]:
    """The watched values of one outcome, on the detectors' scale: scalar
    reward; log latency and log cost (a slowdown ×2 or a price ×1.5 becomes
    a shift of the mean, whatever the usual level, and the skewed raw values
    near-normal); error as 0/1; quality for the multivariate anomalies.
    A defaulted outcome (no reward came) says nothing about the arm and
    gives nothing; missing, non-numeric or out-of-range components are left out.

    >>> o = Outcome(request_id="r", tenant_id="t", policy_id="p", policy_version=1, arm="a",
    ...     available_arms=["a"], propensity=1.0, explored=False, reward=0.7, defaulted=False,
    ...     decided_at=0, outcome_at=1, components={"latency_ms": 1000.0, "error": False})
    >>> {k: round(v, 3) for k, v in signal_values(o).items()}
    {'reward': 0.7, 'error': 0.0, 'latency': 6.908}
    """
    if outcome.defaulted:
        return {}
    c = outcome.components
    out = {"reward": outcome.reward}
    error = c.get("error")
    failed = error is True
    out["error"] = 1.0 if failed else 0.0
    latency = _number(c.get("latency_ms"))
    if latency is not None and latency > 0:
        out["latency"] = math.log(latency)
    cost = _number(c.get("cost_usd"))
    if cost is not None and cost > 0 and not failed:
        out["cost"] = math.log(cost)
    quality = _number(c.get("quality"))
    if quality is not None and not failed:
        out["quality"] = quality
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _change_age(det: DriftDetector) -> int:
    """How many of the latest values a detector puts after the change: CUSUM's
    run length, ADWIN's window (it keeps only the part after the cut)."""
    for name in ("run_length", "width"):
        age = getattr(det, name, None)
        if isinstance(age, int) and age > 0:
            return age
    return _AFTER


def _natural(signal: str, x: float) -> float:
    return math.exp(x) if signal in _LOG_SIGNALS else x


@dataclass
class _Stream:
    """One (policy, arm, signal): its detector and what is needed to say
    from where to where the signal moved."""

    detector: DriftDetector
    samples: int = 0
    older_n: int = 0
    older_mean: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=_RECENT))

    def add(self, x: float) -> None:
        if len(self.recent) == self.recent.maxlen:
            old = self.recent[0]
            self.older_n += 1
            self.older_mean += (old - self.older_mean) / self.older_n
        self.recent.append(x)
        self.samples += 1

    def split(self, age: int) -> tuple[float, float]:
        """Means of the values before and of the last ``age`` values."""
        recent = list(self.recent)
        k = max(1, min(age, len(recent)))
        tail, head = recent[-k:], recent[:-k]
        after = sum(tail) / len(tail)
        n = self.older_n + len(head)
        before = (self.older_mean * self.older_n + sum(head)) / n if n else after
        return before, after

    def restart(self) -> None:
        self.samples, self.older_n, self.older_mean = 0, 0, 0.0
        self.recent.clear()


@dataclass
class _Anomalies:
    detector: AnomalyDetector
    quiet_until: int = 0  # outcomes count of the arm before which events are held back


class DriftMonitor:
    """One drift detector per (policy, arm, signal) for reward, latency, cost
    and error, anomaly detectors per (policy, arm) as configured, and input
    drift per policy over the outcomes' feature vectors.

    ``observe(outcome)`` returns the events it caused. A drift restarts that
    stream's bookkeeping (river's detectors restart themselves), so one
    lasting change is reported once. Anomalies of one (policy, arm, signal)
    are reported at most once per ``anomaly_cooldown_outcomes`` of that arm.
    Arms beyond ``max_arms_per_policy`` of a policy are not watched (bounded
    memory whatever the outcomes name).

    >>> cfg = DriftConfig.from_dict({"signals": {"reward": {"detector": "adwin"}}})
    >>> mon = DriftMonitor(cfg)
    >>> import random
    >>> rng = random.Random(0)
    >>> def outcome(i, p):
    ...     return Outcome(request_id=str(i), tenant_id="t", policy_id="p", policy_version=1,
    ...         arm="a", available_arms=["a"], propensity=1.0, explored=False,
    ...         reward=float(rng.random() < p), defaulted=False, decided_at=i, outcome_at=i)
    >>> events = [e for i in range(4000) for e in mon.observe(outcome(i, 0.8 if i < 2000 else 0.6))]
    >>> [(e.kind, e.signal, e.detector, e.direction) for e in events]
    [('drift', 'reward', 'adwin', 'down')]
    >>> 2000 < events[0].observed_at < 2500
    True
    """

    def __init__(
        self,
        config: DriftConfig,
        clock: Callable[[], int] = now_ms,
        ids: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.config = config
        self._clock = clock
        self._ids = ids
        self._streams: dict[tuple[str, str, str], _Stream] = {}
        self._anomalies: dict[tuple[str, str, str], _Anomalies] = {}
        self._arm_counts: dict[tuple[str, str], int] = {}
        self._arms: dict[str, set[str]] = {}
        self._inputs: dict[str, InputDrift] = {}

    def _watched(self, policy_id: str, arm: str) -> bool:
        arms = self._arms.setdefault(policy_id, set())
        if arm in arms:
            return True
        if len(arms) >= self.config.max_arms_per_policy:
            return False
        arms.add(arm)
        return True

    def observe(self, outcome: Outcome) -> list[DriftEvent]:
        if not self.config.enabled:
            return []
        pid, arm = outcome.policy_id, outcome.arm
        events: list[DriftEvent] = []
        if outcome.features is not None and self.config.input_drift.enabled:
            events += self._input_drift(outcome)
        if not self._watched(pid, arm):
            return events
        values = signal_values(outcome)
        if not values:
            return events
        count = self._arm_counts.get((pid, arm), 0) + 1
        self._arm_counts[(pid, arm)] = count
        for signal in SIGNALS:
            x = values.get(signal)
            if x is not None:
                event = self._drift(pid, arm, signal, x, outcome.outcome_at)
                if event is not None:
                    events.append(event)
        for signal, spec in self.config.anomaly.items():
            point: Any = values if signal == "multivariate" else values.get(signal)
            if point is None:
                continue
            event = self._anomaly(pid, arm, signal, spec.name, point, count, outcome.outcome_at)
            if event is not None:
                events.append(event)
        return events

    def _drift(self, pid: str, arm: str, signal: str, x: float, at: int) -> DriftEvent | None:
        key = (pid, arm, signal)
        stream = self._streams.get(key)
        spec = self.config.signals[signal]
        if stream is None:
            stream = self._streams[key] = _Stream(spec.build(DRIFT_DETECTORS))
        det = stream.detector
        det.update(x)
        stream.add(x)
        if not det.drift_detected:
            return None
        before, after = stream.split(_change_age(det))
        direction = getattr(det, "direction", "") or ("up" if after > before else "down")
        statistic = getattr(det, "statistic", None)
        threshold = getattr(det, "h", getattr(det, "threshold", None))
        mb, ma = _natural(signal, before), _natural(signal, after)
        event = DriftEvent(
            event_id=self._ids(),
            kind="drift",
            policy_id=pid,
            arm=arm,
            signal=signal,
            detector=spec.name,
            observed_at=at,
            created_at=self._clock(),
            samples=stream.samples,
            value=_natural(signal, x),
            score=statistic,
            threshold=threshold,
            mean_before=mb,
            mean_after=ma,
            direction=direction,
            detail=f"{signal} of {arm} moved {direction} from {mb:.4g} to {ma:.4g} "
            f"({spec.name}, {stream.samples} values)",
        )
        stream.restart()
        return event

    def _anomaly(
        self, pid: str, arm: str, signal: str, name: str, point: Any, count: int, at: int
    ) -> DriftEvent | None:
        key = (pid, arm, signal)
        state = self._anomalies.get(key)
        if state is None:
            registry: Mapping[str, Callable[..., Any]] = (
                MULTIVARIATE_ANOMALY if signal == "multivariate" else UNIVARIATE_ANOMALY
            )
            state = self._anomalies[key] = _Anomalies(self.config.anomaly[signal].build(registry))
        if not state.detector.update(point) or count < state.quiet_until:
            return None
        state.quiet_until = count + self.config.anomaly_cooldown_outcomes
        value = None if signal == "multivariate" else _natural(signal, point)
        return DriftEvent(
            event_id=self._ids(),
            kind="anomaly",
            policy_id=pid,
            arm=arm,
            signal=signal,
            detector=name,
            observed_at=at,
            created_at=self._clock(),
            samples=count,
            value=value,
            score=state.detector.score,
            threshold=state.detector.threshold,
            detail=f"{signal} of {arm} scored {state.detector.score:.3g} "
            f"over {state.detector.threshold:.3g} ({name})",
        )

    def _input_drift(self, outcome: Outcome) -> list[DriftEvent]:
        pid = outcome.policy_id
        features = outcome.features or []
        if pid not in self._inputs:
            params = dict(self.config.input_drift.params)
            names = (
                FEATURE_NAMES
                if len(features) == len(FEATURE_NAMES)
                else tuple(f"f{i}" for i in range(len(features)))
            )
            if names is not FEATURE_NAMES:
                params.pop("watch", None)
            self._inputs[pid] = InputDrift(names, **params)
        det = self._inputs[pid]
        if len(features) != len(det.features):
            return []  # the policy's vector changed shape: not comparable
        out = []
        for r in det.update(features):
            if not r.drifted:
                continue
            out.append(
                DriftEvent(
                    event_id=self._ids(),
                    kind="input_drift",
                    policy_id=pid,
                    signal=r.feature,
                    detector="psi_ks",
                    observed_at=outcome.outcome_at,
                    created_at=self._clock(),
                    samples=det.window_size,
                    value=r.ks_statistic,
                    score=r.psi,
                    threshold=det.psi_threshold,
                    detail=f"{r.feature}: PSI {r.psi:.3f}, KS {r.ks_statistic:.3f} "
                    f"(p={r.ks_pvalue:.2g}) against the reference window",
                )
            )
        return out
