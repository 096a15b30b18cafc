"""Drift, anomaly, alert and adaptation settings, from ``config/drift.yaml``
(every key checked by app/config_schema.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from river import drift
from river.base import DriftDetector

from app.config_schema import (
    At,
    ConfigError,
    boolean,
    integer,
    known_keys,
    known_parameters,
    load_yaml,
    mapping,
    number,
    one_of,
    required,
    text,
)
from app.drift.anomaly_detector import AnomalyDetector
from app.drift.cusum import CUSUM
from app.drift.half_space_trees import HalfSpaceTrees
from app.drift.iqr import IQR
from app.drift.mad import MAD
from app.drift.mahalanobis import Mahalanobis
from app.drift.z_score import ZScore
from app.settings import DRIFT_PATH

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
SCOPES = ("arm", "policy")
ANOMALY_SIGNALS = ("reward", "latency", "cost", "quality", "multivariate")
TOP_KEYS = ("enabled", "signals", "anomaly", "input_drift", "adaptation", "alerts", "limits")
RULE_KEYS = (
    "name",
    "metric",
    "comparison",
    "threshold",
    "window_seconds",
    "severity",
    "scope",
    "min_samples",
)


class DriftConfigError(ConfigError):
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
    def load(cls, path: Path | str = DRIFT_PATH) -> DriftConfig:
        return cls.from_dict(load_yaml(path, DriftConfigError) or {}, source=str(path))

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<dict>") -> DriftConfig:
        at = At(source, error=DriftConfigError)
        d = mapping(doc, at)
        known_keys(d, at, TOP_KEYS)
        signals = dict(_DEFAULT_SIGNALS)
        sig_at = at / "signals"
        for sig, spec in mapping(d.get("signals"), sig_at, optional=True).items():
            one_of(sig, sig_at / sig, SIGNALS, what="signal")
            signals[sig] = _detector(spec, DRIFT_DETECTORS, sig_at / sig)

        an_at = at / "anomaly"
        an = mapping(d.get("anomaly"), an_at, optional=True)
        known_keys(an, an_at, ("cooldown_outcomes", "detectors"))
        anomaly = {}
        det_at = an_at / "detectors"
        for sig, spec in mapping(an.get("detectors"), det_at, optional=True).items():
            one_of(sig, det_at / sig, ANOMALY_SIGNALS, what="signal")
            registry = MULTIVARIATE_ANOMALY if sig == "multivariate" else UNIVARIATE_ANOMALY
            anomaly[sig] = _detector(spec, registry, det_at / sig)

        ind_at = at / "input_drift"
        ind = mapping(d.get("input_drift"), ind_at, optional=True)
        input_params = {k: v for k, v in ind.items() if k != "enabled"}
        enabled = (
            {"enabled": boolean(ind["enabled"], ind_at / "enabled")} if "enabled" in ind else {}
        )
        input_drift = InputDriftSpec(**enabled, params=input_params)
        from app.drift.input_drift import InputDrift

        known_parameters(input_params, InputDrift, ind_at, "input_drift", skip=("features",))
        if input_drift.enabled:
            from app.features.request_vector import FEATURE_NAMES

            try:
                InputDrift(FEATURE_NAMES, **input_params)
            except (TypeError, ValueError) as exc:
                raise ind_at.fail(str(exc)) from None

        ad_at = at / "adaptation"
        ad = mapping(d.get("adaptation"), ad_at, optional=True)
        known_keys(ad, ad_at, ("default", "policies"))
        default = _adaptation(ad.get("default"), ad_at / "default")
        pol_at = ad_at / "policies"
        by_policy = {
            str(pid): _adaptation(spec, pol_at / pid)
            for pid, spec in mapping(ad.get("policies"), pol_at, optional=True).items()
        }

        al_at = at / "alerts"
        al = mapping(d.get("alerts"), al_at, optional=True)
        known_keys(al, al_at, ("rules", "cooldown_seconds", "evaluate_every_seconds"))
        raw_rules = al.get("rules") or []
        if not isinstance(raw_rules, list):
            raise (al_at / "rules").fail(f"expected a list of rules, got {raw_rules!r}")
        rules = tuple(_rule(r, (al_at / "rules").item(i)) for i, r in enumerate(raw_rules))
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise (al_at / "rules").fail("rule names must be unique")
        lim_at = at / "limits"
        lim = mapping(d.get("limits"), lim_at, optional=True)
        known_keys(lim, lim_at, ("max_arms_per_policy",))
        # Only the keys present: the defaults are the fields' own.
        values: dict[str, Any] = {}
        if "enabled" in d:
            values["enabled"] = boolean(d["enabled"], at / "enabled")
        if "cooldown_outcomes" in an:
            values["anomaly_cooldown_outcomes"] = integer(
                an["cooldown_outcomes"], an_at / "cooldown_outcomes", lo=0
            )
        for key, name in (
            ("cooldown_seconds", "alert_cooldown_seconds"),
            ("evaluate_every_seconds", "alert_evaluate_every_seconds"),
        ):
            if key in al:
                values[name] = number(al[key], al_at / key, 0, lo_open=True)
        if "max_arms_per_policy" in lim:
            values["max_arms_per_policy"] = integer(
                lim["max_arms_per_policy"], lim_at / "max_arms_per_policy", lo=1
            )
        return cls(
            signals=signals,
            anomaly=anomaly,
            input_drift=input_drift,
            adaptation=default,
            adaptation_by_policy=by_policy,
            alert_rules=rules,
            **values,
        )


_DEFAULT_SIGNALS = {
    "reward": DetectorSpec("cusum", {"k": 0.25, "h": 30.0, "warmup": 500}),
    "latency": DetectorSpec("cusum", {"k": 0.25, "h": 30.0, "warmup": 500}),
    "cost": DetectorSpec("cusum", {"k": 0.25, "h": 30.0, "warmup": 500}),
    "error": DetectorSpec("adwin", {}),
}


def _detector(spec: Any, registry: Mapping[str, Callable[..., Any]], at: At) -> DetectorSpec:
    s = dict(mapping(spec, at))
    name = s.pop("detector", None)
    one_of(name, at / "detector", sorted(registry), what="detector")
    known_parameters(s, registry[name], at, name, prefix=f"bad parameters for {name}: ")
    out = DetectorSpec(str(name), s)
    try:
        out.build(registry)  # validate the parameters now, not on the first outcome
    except (TypeError, ValueError) as exc:
        raise at.fail(f"bad parameters for {name}: {exc}") from None
    return out


def _adaptation(spec: Any, at: At) -> AdaptationSpec:
    s = mapping(spec, at, optional=True)
    known_keys(s, at, ("action", "factor", "signals"))
    values: dict[str, Any] = {}
    if "action" in s:
        values["action"] = one_of(s["action"], at / "action", ACTIONS, what="action")
    if "factor" in s:
        values["factor"] = number(s["factor"], at / "factor", 0, 1)
    if "signals" in s:
        raw = s["signals"]
        if not isinstance(raw, list):
            raise (at / "signals").fail(f"expected a list of signals, got {raw!r}")
        values["signals"] = tuple(
            one_of(sig, (at / "signals").item(i), SIGNALS, what="signal")
            for i, sig in enumerate(raw)
        )
    return AdaptationSpec(**values)


def _rule(spec: Any, at: At) -> AlertRule:
    s = mapping(spec, at)
    known_keys(s, at, RULE_KEYS)
    required(s, at, ("name", "metric", "comparison", "threshold", "window_seconds"))
    values: dict[str, Any] = {}
    if "severity" in s:
        values["severity"] = one_of(s["severity"], at / "severity", SEVERITIES, what="severity")
    if "scope" in s:
        values["scope"] = one_of(s["scope"], at / "scope", SCOPES, what="scope")
    if "min_samples" in s:
        values["min_samples"] = integer(s["min_samples"], at / "min_samples", lo=0)
    return AlertRule(
        name=text(s["name"], at / "name"),
        metric=one_of(s["metric"], at / "metric", ALERT_METRICS, what="metric"),
        comparison=one_of(s["comparison"], at / "comparison", COMPARISONS, what="comparison"),
        threshold=number(s["threshold"], at / "threshold"),
        window_seconds=number(
            s["window_seconds"], at / "window_seconds", 0, 2_592_000, lo_open=True
        ),
        **values,
    )
