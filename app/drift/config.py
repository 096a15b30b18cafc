"""Drift, anomaly, alert and adaptation settings, from ``config/drift.yaml``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from river import drift
from river.base import DriftDetector

from app.drift.anomaly_detector import AnomalyDetector
from app.drift.cusum import CUSUM
from app.drift.half_space_trees import HalfSpaceTrees
from app.drift.iqr import IQR
from app.drift.mad import MAD
from app.drift.mahalanobis import Mahalanobis
from app.drift.z_score import ZScore
from app.settings import ROOT

DEFAULT_PATH = ROOT / "config" / "drift.yaml"

SIGNALS = ("reward", "latency", "cost", "error")
"""The per-(policy, arm) streams: scalar reward, log latency, log cost, error 0/1."""

DRIFT_DETECTORS: dict[str, Callable[..., DriftDetector]] = {
    "adwin": drift.ADWIN,
    "page_hinkley": drift.PageHinkley,
    "kswin": drift.KSWIN,
    "cusum": CUSUM,
}
UNIVARIATE_ANOMALY: dict[str, Callable[..., AnomalyDetector]] = {
    "zscore": ZScore,
    "iqr": IQR,
    "mad": MAD,
}
MULTIVARIATE_ANOMALY: dict[str, Callable[..., AnomalyDetector]] = {
    "mahalanobis": Mahalanobis,
    "half_space_trees": HalfSpaceTrees,
}
ACTIONS = ("reset", "discount", "explore", "none")
ALERT_METRICS = (
    "reward_mean",
    "error_rate",
    "latency_ms_mean",
    "latency_ms_p95",
    "cost_usd_mean",
    "drift_events",
    "anomaly_events",
)
COMPARISONS = (">", ">=", "<", "<=")
SEVERITIES = ("info", "warning", "critical")


class DriftConfigError(ValueError):
    pass


@dataclass(frozen=True)
class DetectorSpec:
    """A detector by name and its constructor arguments."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self, registry: Mapping[str, Callable[..., Any]]) -> Any:
        return registry[self.name](**self.params)


@dataclass(frozen=True)
class AdaptationSpec:
    """What the learner does to an arm when one of ``signals`` drifts:
    ``reset`` its estimates, ``discount`` them (keep ``factor`` of the
    evidence, pulled toward the prior), ``explore`` (keep ``factor`` of the
    evidence, estimate unchanged: more uncertainty, so more exploration), or
    ``none``."""

    action: str = "reset"
    factor: float = 0.2
    signals: tuple[str, ...] = ("reward",)


@dataclass(frozen=True)
class AlertRule:
    name: str
    metric: str
    comparison: str
    threshold: float
    window_seconds: float
    severity: str = "warning"
    scope: str = "arm"  # arm | policy
    min_samples: int = 30

    def breached(self, value: float) -> bool:
        c = self.comparison
        t = self.threshold
        return (
            value > t
            if c == ">"
            else value >= t
            if c == ">="
            else value < t
            if c == "<"
            else value <= t
        )


@dataclass(frozen=True)
class InputDriftSpec:
    enabled: bool = True
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftConfig:
    """Everything ``detect_drift`` and the learner's adaptation need.

    >>> cfg = DriftConfig.from_dict({"signals": {"reward": {"detector": "adwin"}}})
    >>> cfg.signals["reward"].name, cfg.signals["latency"].name, cfg.adaptation_for("p").action
    ('adwin', 'cusum', 'reset')
    """

    enabled: bool = True
    signals: dict[str, DetectorSpec] = field(default_factory=dict)
    anomaly: dict[str, DetectorSpec] = field(default_factory=dict)
    anomaly_cooldown_outcomes: int = 1000
    input_drift: InputDriftSpec = field(default_factory=InputDriftSpec)
    adaptation: AdaptationSpec = field(default_factory=AdaptationSpec)
    adaptation_by_policy: dict[str, AdaptationSpec] = field(default_factory=dict)
    alert_rules: tuple[AlertRule, ...] = ()
    alert_cooldown_seconds: float = 300.0
    alert_evaluate_every_seconds: float = 1.0
    max_arms_per_policy: int = 64

    def adaptation_for(self, policy_id: str) -> AdaptationSpec:
        return self.adaptation_by_policy.get(policy_id, self.adaptation)

    @classmethod
    def load(cls, path: Path | str = DEFAULT_PATH) -> DriftConfig:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise DriftConfigError(f"drift config {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise DriftConfigError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_dict(doc or {}, source=str(path))

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<dict>") -> DriftConfig:
        d = _mapping(doc, source)
        _no_extra(
            d,
            {"enabled", "signals", "anomaly", "input_drift", "adaptation", "alerts", "limits"},
            source,
        )
        signals = dict(_DEFAULT_SIGNALS)
        for sig, spec in _mapping(d.get("signals") or {}, f"{source}: signals").items():
            if sig not in SIGNALS:
                raise DriftConfigError(
                    f"{source}: signals: unknown signal {sig!r}; known {SIGNALS}"
                )
            signals[sig] = _detector(spec, DRIFT_DETECTORS, f"{source}: signals.{sig}")

        an = _mapping(d.get("anomaly") or {}, f"{source}: anomaly")
        _no_extra(an, {"cooldown_outcomes", "detectors"}, f"{source}: anomaly")
        anomaly = {}
        for sig, spec in _mapping(an.get("detectors") or {}, f"{source}: anomaly").items():
            where = f"{source}: anomaly.detectors.{sig}"
            if sig == "multivariate":
                anomaly[sig] = _detector(spec, MULTIVARIATE_ANOMALY, where)
            elif sig in ("reward", "latency", "cost", "quality"):
                anomaly[sig] = _detector(spec, UNIVARIATE_ANOMALY, where)
            else:
                raise DriftConfigError(
                    f"{where}: unknown signal (reward, latency, cost, quality, multivariate)"
                )

        ind = _mapping(d.get("input_drift") or {}, f"{source}: input_drift")
        input_params = {k: v for k, v in ind.items() if k != "enabled"}
        input_drift = InputDriftSpec(bool(ind.get("enabled", True)), input_params)
        if input_drift.enabled:
            from app.drift.input_drift import InputDrift
            from app.features.request_vector import FEATURE_NAMES

            try:
                InputDrift(FEATURE_NAMES, **input_params)
            except (TypeError, ValueError) as exc:
                raise DriftConfigError(f"{source}: input_drift: {exc}") from None

        ad = _mapping(d.get("adaptation") or {}, f"{source}: adaptation")
        _no_extra(ad, {"default", "policies"}, f"{source}: adaptation")
        default = _adaptation(ad.get("default") or {}, f"{source}: adaptation.default")
        by_policy = {
            str(pid): _adaptation(spec, f"{source}: adaptation.policies.{pid}")
            for pid, spec in _mapping(ad.get("policies") or {}, f"{source}: adaptation").items()
        }

        al = _mapping(d.get("alerts") or {}, f"{source}: alerts")
        _no_extra(al, {"rules", "cooldown_seconds", "evaluate_every_seconds"}, f"{source}: alerts")
        rules = tuple(
            _rule(r, f"{source}: alerts.rules[{i}]") for i, r in enumerate(al.get("rules") or [])
        )
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise DriftConfigError(f"{source}: alerts.rules: rule names must be unique")
        lim = _mapping(d.get("limits") or {}, f"{source}: limits")
        return cls(
            enabled=bool(d.get("enabled", True)),
            signals=signals,
            anomaly=anomaly,
            anomaly_cooldown_outcomes=int(an.get("cooldown_outcomes", 1000)),
            input_drift=input_drift,
            adaptation=default,
            adaptation_by_policy=by_policy,
            alert_rules=rules,
            alert_cooldown_seconds=_positive(al.get("cooldown_seconds", 300.0), "cooldown"),
            alert_evaluate_every_seconds=_positive(al.get("evaluate_every_seconds", 1.0), "every"),
            max_arms_per_policy=int(lim.get("max_arms_per_policy", 64)),
        )


_DEFAULT_SIGNALS = {
    "reward": DetectorSpec("cusum", {"k": 0.25, "h": 30.0, "warmup": 500}),
    "latency": DetectorSpec("cusum", {"k": 0.25, "h": 30.0, "warmup": 500}),
    "cost": DetectorSpec("cusum", {"k": 0.25, "h": 30.0, "warmup": 500}),
    "error": DetectorSpec("adwin", {}),
}


def _mapping(v: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise DriftConfigError(f"{where}: expected a mapping, got {type(v).__name__}")
    return v


def _no_extra(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(d) - allowed
    if extra:
        raise DriftConfigError(
            f"{where}: unknown key(s) {sorted(extra)}; allowed {sorted(allowed)}"
        )


def _positive(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise DriftConfigError(f"alerts: {what} must be a positive number, got {v!r}")
    return float(v)


def _detector(spec: Any, registry: Mapping[str, Callable[..., Any]], where: str) -> DetectorSpec:
    s = dict(_mapping(spec, where))
    name = s.pop("detector", None)
    if name not in registry:
        raise DriftConfigError(f"{where}: unknown detector {name!r}; known {sorted(registry)}")
    out = DetectorSpec(str(name), s)
    try:
        out.build(registry)  # validate the parameters now, not on the first outcome
    except (TypeError, ValueError) as exc:
        raise DriftConfigError(f"{where}: bad parameters for {name}: {exc}") from None
    return out


def _adaptation(spec: Any, where: str) -> AdaptationSpec:
    s = _mapping(spec, where)
    _no_extra(s, {"action", "factor", "signals"}, where)
    action = s.get("action", "reset")
    if action not in ACTIONS:
        raise DriftConfigError(f"{where}: action must be one of {ACTIONS}, got {action!r}")
    factor = s.get("factor", 0.2)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 <= factor <= 1:
        raise DriftConfigError(f"{where}: factor must be in [0, 1], got {factor!r}")
    signals = tuple(s.get("signals", ("reward",)))
    unknown = set(signals) - set(SIGNALS)
    if unknown:
        raise DriftConfigError(f"{where}: unknown signals {sorted(unknown)}; known {SIGNALS}")
    return AdaptationSpec(str(action), float(factor), signals)


def _rule(spec: Any, where: str) -> AlertRule:
    s = _mapping(spec, where)
    _no_extra(
        s,
        {
            "name",
            "metric",
            "comparison",
            "threshold",
            "window_seconds",
            "severity",
            "scope",
            "min_samples",
        },
        where,
    )
    for key in ("name", "metric", "comparison", "threshold", "window_seconds"):
        if key not in s:
            raise DriftConfigError(f"{where}: '{key}' is required")
    if s["metric"] not in ALERT_METRICS:
        raise DriftConfigError(f"{where}: metric must be one of {ALERT_METRICS}")
    if s["comparison"] not in COMPARISONS:
        raise DriftConfigError(f"{where}: comparison must be one of {COMPARISONS}")
    severity = s.get("severity", "warning")
    if severity not in SEVERITIES:
        raise DriftConfigError(f"{where}: severity must be one of {SEVERITIES}")
    scope = s.get("scope", "arm")
    if scope not in ("arm", "policy"):
        raise DriftConfigError(f"{where}: scope must be arm or policy")
    try:
        threshold = float(s["threshold"])
        window = float(s["window_seconds"])
        min_samples = int(s.get("min_samples", 30))
    except (TypeError, ValueError):
        raise DriftConfigError(
            f"{where}: threshold, window_seconds, min_samples: numbers"
        ) from None
    if not 0 < window <= 2_592_000 or min_samples < 0:
        raise DriftConfigError(f"{where}: window_seconds in (0, 30 days], min_samples >= 0")
    return AlertRule(
        str(s["name"]),
        s["metric"],
        s["comparison"],
        threshold,
        window,
        severity,
        scope,
        min_samples,
    )
