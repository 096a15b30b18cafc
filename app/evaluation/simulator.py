"""A seeded LLM traffic simulator with known ground truth.

The simulator generates :class:`~app.records.Request` events (tenants, task
types, input lengths, priorities, a daily rate pattern) and, for a request and
a chosen arm (model + parameters), samples the :class:`~app.records.Reward`
the real system would report: realised quality, cost, latency and errors.
Because it knows the distributions it samples from, it can also give the TRUE
expected scalar reward of every arm and hence the true regret of a policy.

Sampling model of one outcome (request with task ``t`` and ``n_in`` input
tokens, arm with model ``m``):

* the natural output length is one of ``K = output_quantiles`` equiprobable
  values, the mid-quantiles ``(k + 1/2) / K`` of the task's lognormal; the
  arm's ``max_tokens`` caps it, and a capped (truncated) answer has its mean
  quality multiplied by ``truncation_quality_factor``;
* with probability ``error_rate`` the call fails (``error=True``, no
  quality, zero cost);
* otherwise quality ~ ``Beta(q * c, (1 - q) * c)`` with mean ``q`` =
  task quality of the model + parameter effects (times drift and truncation
  factors), so no clipping is needed; cost = ``n_in * price_in / 1000 +
  n_out * price_out / 1000``; latency ~ lognormal with median
  ``(median_ms + per_output_token_ms * n_out) * latency_factor``.

:meth:`TrafficSimulator.expected_reward` is the exact mean of
``reward_spec.scalar(...)`` over that distribution: a finite sum over the
``K`` output lengths, with ``E[max(0, 1 - L / s)]`` for lognormal ``L`` in
closed form. Monte Carlo is never used.

Pure Python + numpy (no Kafka/Faust); per-event sampling uses
:class:`random.Random` streams derived from the seed with
:class:`numpy.random.SeedSequence`, because it is several times faster than
numpy for scalar draws.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import yaml

from app.records import Request, Reward
from app.rewards import RewardSpec

__all__ = [
    "TASK_TYPES",
    "ArmSpec",
    "DriftEvent",
    "LengthSpec",
    "ModelSpec",
    "ParameterEffect",
    "SimulatorConfig",
    "TenantSpec",
    "TrafficSimulator",
    "load_arms",
]

TASK_TYPES: tuple[str, ...] = ("code", "qa", "summarization", "creative", "chat")
"""The task types of the default scenario (a config may define others)."""

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
DEFAULT_SCENARIO = CONFIG_DIR / "simulator.yaml"
DEFAULT_POLICIES = CONFIG_DIR / "policies.yaml"

MAX_INPUT_TOKENS = 200_000
_Q_MIN, _Q_MAX = 0.01, 0.99  # mean quality is kept inside (0, 1) for the Beta law
_SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------- config


def _err(where: str, msg: str) -> ValueError:
    return ValueError(f"simulator config: {where}: {msg}")


def _mapping(v: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise _err(where, f"must be a mapping, got {type(v).__name__}")
    return v


def _no_extra(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(d) - allowed
    if extra:
        raise _err(where, f"unknown key(s) {sorted(extra)}; allowed: {sorted(allowed)}")


def _number(
    v: Any, where: str, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False
) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(where, f"must be a finite number, got {v!r}")
    if v < lo or v > hi or (lo_open and v == lo):
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise _err(where, f"must be in {bound}, got {v!r}")
    return float(v)


def _weights(v: Any, where: str, n: int | None = None) -> tuple[float, ...]:
    if not isinstance(v, Sequence) or isinstance(v, str):
        raise _err(where, "must be a list of non-negative numbers")
    if n is not None and len(v) != n:
        raise _err(where, f"must have exactly {n} values, got {len(v)}")
    out = tuple(_number(x, f"{where}[{i}]", lo=0.0) for i, x in enumerate(v))
    if not out or sum(out) <= 0:
        raise _err(where, "weights must sum to more than 0")
    return out


def _task_weights(v: Any, tasks: Sequence[str], where: str) -> tuple[float, ...]:
    d = _mapping(v, where)
    unknown = set(d) - set(tasks)
    if unknown:
        raise _err(where, f"unknown task type(s) {sorted(unknown)}; known: {list(tasks)}")
    out = tuple(_number(d.get(t, 0.0), f"{where}.{t}", lo=0.0) for t in tasks)
    if sum(out) <= 0:
        raise _err(where, "weights must sum to more than 0")
    return out


@dataclass(frozen=True, slots=True)
class LengthSpec:
    """A lognormal token-length law: ``median`` tokens, log-sd ``sigma``."""

    median: float
    sigma: float

    @classmethod
    def from_dict(cls, d: Any, where: str) -> LengthSpec:
        d = _mapping(d, where)
        _no_extra(d, {"median", "sigma"}, where)
        return cls(
            median=_number(d.get("median"), f"{where}.median", lo=0.0, lo_open=True),
            sigma=_number(d.get("sigma", 0.0), f"{where}.sigma", lo=0.0, hi=5.0),
        )


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """A tenant, its share of traffic and optionally its own task mix."""

    name: str
    weight: float
    task_weights: tuple[float, ...] | None = None  # aligned with SimulatorConfig.task_names


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Ground truth of one model (prices in USD per 1k tokens)."""

    name: str
    quality: dict[str, float]
    price_per_1k_input_usd: float
    price_per_1k_output_usd: float
    latency_median_ms: float
    latency_per_output_token_ms: float
    latency_sigma: float
    error_rate: float


@dataclass(frozen=True, slots=True)
class ParameterEffect:
    """``quality += slopes[task] * (value - reference)`` for one arm parameter."""

    reference: float
    slopes: dict[str, float]


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """From ``start + at_seconds`` on, ``model`` degrades: its mean quality and
    latency are multiplied by the factors, and its error rate is replaced by
    ``error_rate`` unless that is ``None``. Events on a model compound."""

    at_seconds: float
    model: str
    quality_factor: float = 1.0
    latency_factor: float = 1.0
    error_rate: float | None = None


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """A traffic scenario; build it with :meth:`from_yaml` or :meth:`from_dict`."""

    task_names: tuple[str, ...]
    task_weights: tuple[float, ...]
    input_tokens: dict[str, LengthSpec]
    output_tokens: dict[str, LengthSpec]
    tenants: tuple[TenantSpec, ...]
    priority_weights: tuple[float, ...]
    daily_pattern: tuple[float, ...]
    models: dict[str, ModelSpec]
    parameter_effects: dict[str, ParameterEffect] = field(default_factory=dict)
    base_rate_per_second: float = 20.0
    output_quantiles: int = 16
    quality_concentration: float = 12.0
    truncation_quality_factor: float = 0.7
    drift_enabled: bool = False
    drift_events: tuple[DriftEvent, ...] = ()
    mix_sample_size: int = 2000
    mix_sample_seed: int = 0

    _TOP = frozenset(
        {
            "traffic",
            "tasks",
            "models",
            "parameter_effects",
            "output_quantiles",
            "quality_concentration",
            "truncation_quality_factor",
            "drift",
            "evaluation",
        }
    )

    @classmethod
    def from_yaml(cls, path: str | Path = DEFAULT_SCENARIO) -> SimulatorConfig:
        """Load a scenario file (default: ``config/simulator.yaml``)."""
        with Path(path).open() as fh:
            return cls.from_dict(yaml.safe_load(fh))

    @classmethod
    def from_dict(cls, d: Any) -> SimulatorConfig:
        """Parse and validate; every problem is a :class:`ValueError` naming
        the offending key."""
        d = _mapping(d, "top level")
        _no_extra(d, set(cls._TOP), "top level")

        tasks_d = _mapping(d.get("tasks"), "tasks")
        if not tasks_d:
            raise _err("tasks", "at least one task type is required")
        task_names = tuple(str(t) for t in tasks_d)
        input_tokens, output_tokens = {}, {}
        for t in task_names:
            td = _mapping(tasks_d[t], f"tasks.{t}")
            _no_extra(td, {"input_tokens", "output_tokens"}, f"tasks.{t}")
            input_tokens[t] = LengthSpec.from_dict(
                td.get("input_tokens"), f"tasks.{t}.input_tokens"
            )
            output_tokens[t] = LengthSpec.from_dict(
                td.get("output_tokens"), f"tasks.{t}.output_tokens"
            )

        tr = _mapping(d.get("traffic"), "traffic")
        _no_extra(
            tr,
            {
                "base_rate_per_second",
                "daily_pattern",
                "task_weights",
                "priority_weights",
                "tenants",
            },
            "traffic",
        )
        task_weights = _task_weights(tr.get("task_weights"), task_names, "traffic.task_weights")
        tenants_v = tr.get("tenants")
        if not isinstance(tenants_v, list) or not tenants_v:
            raise _err("traffic.tenants", "must be a non-empty list of {name, weight}")
        tenants = []
        for i, tv in enumerate(tenants_v):
            where = f"traffic.tenants[{i}]"
            tv = _mapping(tv, where)
            _no_extra(tv, {"name", "weight", "task_weights"}, where)
            name = tv.get("name")
            if not isinstance(name, str) or not name:
                raise _err(f"{where}.name", "must be a non-empty string")
            tw = tv.get("task_weights")
            tenants.append(
                TenantSpec(
                    name=name,
                    weight=_number(tv.get("weight", 1.0), f"{where}.weight", lo=0.0),
                    task_weights=None
                    if tw is None
                    else _task_weights(tw, task_names, f"{where}.task_weights"),
                )
            )
        if len({t.name for t in tenants}) != len(tenants):
            raise _err("traffic.tenants", "tenant names must be unique")
        if sum(t.weight for t in tenants) <= 0:
            raise _err("traffic.tenants", "tenant weights must sum to more than 0")

        models = {}
        models_d = _mapping(d.get("models"), "models")
        if not models_d:
            raise _err("models", "at least one model is required")
        for m, md in models_d.items():
            where = f"models.{m}"
            md = _mapping(md, where)
            _no_extra(
                md,
                {
                    "quality",
                    "price_per_1k_input_usd",
                    "price_per_1k_output_usd",
                    "latency",
                    "error_rate",
                },
                where,
            )
            qd = _mapping(md.get("quality"), f"{where}.quality")
            missing = [t for t in task_names if t not in qd]
            if missing:
                raise _err(f"{where}.quality", f"missing task type(s) {missing}")
            unknown = set(qd) - set(task_names)
            if unknown:
                raise _err(f"{where}.quality", f"unknown task type(s) {sorted(unknown)}")
            lat = _mapping(md.get("latency"), f"{where}.latency")
            _no_extra(lat, {"median_ms", "per_output_token_ms", "sigma"}, f"{where}.latency")
            models[str(m)] = ModelSpec(
                name=str(m),
                quality={t: _number(qd[t], f"{where}.quality.{t}", 0.0, 1.0) for t in task_names},
                price_per_1k_input_usd=_number(
                    md.get("price_per_1k_input_usd"), f"{where}.price_per_1k_input_usd", lo=0.0
                ),
                price_per_1k_output_usd=_number(
                    md.get("price_per_1k_output_usd"), f"{where}.price_per_1k_output_usd", lo=0.0
                ),
                latency_median_ms=_number(
                    lat.get("median_ms"), f"{where}.latency.median_ms", lo=0.0, lo_open=True
                ),
                latency_per_output_token_ms=_number(
                    lat.get("per_output_token_ms", 0.0),
                    f"{where}.latency.per_output_token_ms",
                    lo=0.0,
                ),
                latency_sigma=_number(lat.get("sigma", 0.0), f"{where}.latency.sigma", 0.0, 5.0),
                error_rate=_number(md.get("error_rate", 0.0), f"{where}.error_rate", 0.0, 1.0),
            )

        effects = {}
        for p, pd in _mapping(d.get("parameter_effects") or {}, "parameter_effects").items():
            where = f"parameter_effects.{p}"
            pd = _mapping(pd, where)
            _no_extra(pd, {"reference", "slopes"}, where)
            sd = _mapping(pd.get("slopes") or {}, f"{where}.slopes")
            unknown = set(sd) - set(task_names)
            if unknown:
                raise _err(f"{where}.slopes", f"unknown task type(s) {sorted(unknown)}")
            effects[str(p)] = ParameterEffect(
                reference=_number(pd.get("reference", 0.0), f"{where}.reference"),
                slopes={t: _number(sd.get(t, 0.0), f"{where}.slopes.{t}") for t in task_names},
            )

        dr = _mapping(d.get("drift") or {}, "drift")
        _no_extra(dr, {"enabled", "events"}, "drift")
        enabled = dr.get("enabled", False)
        if not isinstance(enabled, bool):
            raise _err("drift.enabled", "must be true or false")
        events = []
        for i, ev in enumerate(dr.get("events") or []):
            where = f"drift.events[{i}]"
            ev = _mapping(ev, where)
            _no_extra(
                ev, {"at_seconds", "model", "quality_factor", "latency_factor", "error_rate"}, where
            )
            if ev.get("model") not in models:
                raise _err(
                    f"{where}.model", f"unknown model {ev.get('model')!r}; known: {sorted(models)}"
                )
            er = ev.get("error_rate")
            events.append(
                DriftEvent(
                    at_seconds=_number(ev.get("at_seconds"), f"{where}.at_seconds", lo=0.0),
                    model=ev["model"],
                    quality_factor=_number(
                        ev.get("quality_factor", 1.0), f"{where}.quality_factor", lo=0.0
                    ),
                    latency_factor=_number(
                        ev.get("latency_factor", 1.0),
                        f"{where}.latency_factor",
                        lo=0.0,
                        lo_open=True,
                    ),
                    error_rate=None if er is None else _number(er, f"{where}.error_rate", 0.0, 1.0),
                )
            )
        events.sort(key=lambda e: e.at_seconds)

        ev_d = _mapping(d.get("evaluation") or {}, "evaluation")
        _no_extra(ev_d, {"mix_sample_size", "mix_sample_seed"}, "evaluation")

        kq = d.get("output_quantiles", 16)
        if isinstance(kq, bool) or not isinstance(kq, int) or not 1 <= kq <= 256:
            raise _err("output_quantiles", f"must be an integer in [1, 256], got {kq!r}")
        size = ev_d.get("mix_sample_size", 2000)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise _err("evaluation.mix_sample_size", f"must be a positive integer, got {size!r}")
        mseed = ev_d.get("mix_sample_seed", 0)
        if isinstance(mseed, bool) or not isinstance(mseed, int) or mseed < 0:
            raise _err(
                "evaluation.mix_sample_seed", f"must be a non-negative integer, got {mseed!r}"
            )

        return cls(
            task_names=task_names,
            task_weights=task_weights,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            tenants=tuple(tenants),
            priority_weights=_weights(
                tr.get("priority_weights", [1.0] * 11), "traffic.priority_weights", n=11
            ),
            daily_pattern=_weights(
                tr.get("daily_pattern", [1.0] * 24), "traffic.daily_pattern", n=24
            ),
            models=models,
            parameter_effects=effects,
            base_rate_per_second=_number(
                tr.get("base_rate_per_second", 20.0),
                "traffic.base_rate_per_second",
                lo=0.0,
                lo_open=True,
            ),
            output_quantiles=kq,
            quality_concentration=_number(
                d.get("quality_concentration", 12.0), "quality_concentration", lo=0.0, lo_open=True
            ),
            truncation_quality_factor=_number(
                d.get("truncation_quality_factor", 0.7), "truncation_quality_factor", 0.0, 1.0
            ),
            drift_enabled=enabled,
            drift_events=tuple(events),
            mix_sample_size=size,
            mix_sample_seed=mseed,
        )

    def with_drift(self, enabled: bool = True) -> SimulatorConfig:
        """A copy with scheduled drift switched on (or off)."""
        return replace(self, drift_enabled=enabled)


@dataclass(frozen=True, slots=True)
class ArmSpec:
    """An arm as in ``config/policies.yaml``: a model plus call parameters."""

    name: str
    model: str
    parameters: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArmSpec:
        return cls(
            name=str(d["name"]), model=str(d["model"]), parameters=dict(d.get("parameters") or {})
        )


def load_arms(path: str | Path = DEFAULT_POLICIES, policy_id: str | None = None) -> list[ArmSpec]:
    """The arms of one policy in a policies file (default: its ``default_policy``)."""
    with Path(path).open() as fh:
        doc = yaml.safe_load(fh)
    pid = policy_id or doc.get("default_policy")
    policies = doc.get("policies") or {}
    if pid not in policies:
        raise ValueError(f"policy {pid!r} not found in {path}; known: {sorted(policies)}")
    return [ArmSpec.from_dict(a) for a in policies[pid]["arms"]]


# ----------------------------------------------------------------------- simulator


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def _expected_latency_term(mu: float, sigma: float, scale: float) -> float:
    """``E[max(0, 1 - L / scale)]`` for ``L ~ LogNormal(mu, sigma)``:
    ``P(L < s) - E[L; L < s] / s`` with both parts in closed form."""
    if sigma == 0.0:
        return max(0.0, 1.0 - math.exp(mu) / scale)
    d = (math.log(scale) - mu) / sigma
    return _phi(d) - math.exp(mu + 0.5 * sigma * sigma) / scale * _phi(d - sigma)


@dataclass(frozen=True, slots=True)
class _Profile:
    """Everything about (task, arm, drift phase) that does not depend on the
    request's input length, precomputed once."""

    out_tokens: tuple[int, ...]  # K equiprobable output lengths (after the max_tokens cap)
    alphas: tuple[float, ...]  # Beta parameters of realised quality per length
    betas: tuple[float, ...]
    mus: tuple[float, ...]  # log-median latency per length
    sigma: float
    out_costs: tuple[float, ...]  # output cost in USD per length
    price_in: float  # USD per input token
    error_rate: float
    base_term: float  # mean over lengths of qw*q + lw*E[latency term]


class TrafficSimulator:
    """Seeded request stream + outcome sampler with known expected rewards.

    Three independent :class:`random.Random` streams (requests, outcomes,
    arrivals) are derived from ``seed``, so the request stream does not depend
    on which arms a policy picks: two policies run with the same seed see the
    same requests. ``start_ms`` anchors the drift schedule (default: the wall
    clock at construction).

    >>> sim = TrafficSimulator.default(seed=7, start_ms=0)
    >>> req = sim.next_request(now_ms=1_000)
    >>> req == TrafficSimulator.default(seed=7, start_ms=0).next_request(now_ms=1_000)
    True
    >>> best = sim.best_arm(req, None, now_ms=1_000)
    >>> rew = sim.outcome(req, best, now_ms=1_500)
    >>> rew.request_id == req.request_id and rew.sent_at == 1_500
    True
    >>> sim.record_choice(req, best, now_ms=1_000)
    0.0
    >>> sim.overall_best_arm(now_ms=1_000)
    'claude-haiku'
    """

    def __init__(
        self,
        config: SimulatorConfig,
        arms: list[ArmSpec],
        reward_spec: RewardSpec,
        seed: int = 0,
        start_ms: int | None = None,
    ) -> None:
        if not arms:
            raise ValueError("at least one arm is required")
        names = [a.name for a in arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        for a in arms:
            if a.model not in config.models:
                raise ValueError(
                    f"arm {a.name!r} uses model {a.model!r} that the simulator config does "
                    f"not define; known: {sorted(config.models)}"
                )
            for p in config.parameter_effects:
                v = a.parameters.get(p)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise ValueError(f"arm {a.name!r}: parameter {p!r} must be a number")
            mt = a.parameters.get("max_tokens")
            if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
                raise ValueError(f"arm {a.name!r}: max_tokens must be a positive integer")
        self.config = config
        self.arms: dict[str, ArmSpec] = {a.name: a for a in arms}
        self.arm_names: tuple[str, ...] = tuple(names)
        self.reward_spec = reward_spec
        self.seed = seed
        self.start_ms = time.time_ns() // 1_000_000 if start_ms is None else int(start_ms)

        req_seed, out_seed, arr_seed = np.random.SeedSequence(seed).generate_state(3)
        self._rrng = random.Random(int(req_seed))
        self._orng = random.Random(int(out_seed))
        self._arng = random.Random(int(arr_seed))

        # Traffic samplers (cumulative weights for bisect).
        self._tenant_cum = list(np.cumsum([t.weight for t in config.tenants]))
        self._tenant_names = [t.name for t in config.tenants]
        self._tenant_task_cum = [
            list(np.cumsum(t.task_weights or config.task_weights)) for t in config.tenants
        ]
        self._prio_cum = list(np.cumsum(config.priority_weights))
        self._in_mu = {t: math.log(s.median) for t, s in config.input_tokens.items()}
        self._in_sigma = {t: s.sigma for t, s in config.input_tokens.items()}
        pattern = config.daily_pattern
        mean = sum(pattern) / len(pattern)
        self._pattern = [p / mean for p in pattern]

        # Output-length quadrature: K equiprobable mid-quantiles per task.
        k = config.output_quantiles
        zs = [NormalDist().inv_cdf((i + 0.5) / k) for i in range(k)]
        self._natural_out = {
            t: tuple(max(1, round(s.median * math.exp(s.sigma * z))) for z in zs)
            for t, s in config.output_tokens.items()
        }

        # Drift schedule: phase p = number of events already in effect.
        events = config.drift_events if config.drift_enabled else ()
        self._event_ms = [round(e.at_seconds * 1000) for e in events]
        self._phase_models: list[dict[str, tuple[float, float, float]]] = []
        state = {m: (1.0, 1.0, s.error_rate) for m, s in config.models.items()}
        self._phase_models.append(dict(state))
        for e in events:
            qf, lf, er = state[e.model]
            state[e.model] = (
                qf * e.quality_factor,
                lf * e.latency_factor,
                er if e.error_rate is None else e.error_rate,
            )
            self._phase_models.append(dict(state))

        self._profiles: dict[tuple[str, str, int], _Profile] = {}
        self._mix_sample: list[tuple[str, int]] | None = None
        self._mix_means: dict[int, dict[str, float]] = {}

        self._regret = 0.0
        self._rounds = 0
        self._choices = {a: 0 for a in self.arm_names}
        self._last_ms = self.start_ms

    @classmethod
    def default(
        cls,
        seed: int = 0,
        start_ms: int | None = None,
        drift: bool | None = None,
        reward_spec: RewardSpec | None = None,
    ) -> TrafficSimulator:
        """The default scenario with the default policy's arms and
        ``RewardSpec()``; ``drift`` overrides the file's ``drift.enabled``."""
        cfg = SimulatorConfig.from_yaml(DEFAULT_SCENARIO)
        if drift is not None:
            cfg = cfg.with_drift(drift)
        return cls(cfg, load_arms(DEFAULT_POLICIES), reward_spec or RewardSpec(), seed, start_ms)

    # ------------------------------------------------------------------ traffic

    def rate_multiplier(self, t_ms: int) -> float:
        """Relative request rate at epoch-ms ``t_ms`` (UTC hour of day, linear
        between hours); averages exactly 1 over a day."""
        h = (t_ms % 86_400_000) / 3_600_000.0
        i = int(h)
        f = h - i
        p = self._pattern
        return p[i] * (1.0 - f) + p[(i + 1) % 24] * f

    def next_arrival_ms(self, now_ms: int) -> int:
        """Time of the next request after ``now_ms``: exponential gap at the
        current rate ``base_rate_per_second * rate_multiplier(now_ms)``."""
        rate = self.config.base_rate_per_second * self.rate_multiplier(now_ms)
        if rate <= 0.0:
            return now_ms + 60_000
        return now_ms + max(1, round(self._arng.expovariate(rate) * 1000.0))

    def _draw_fields(self, r: random.Random) -> tuple[str, str, int, int]:
        ti = bisect.bisect_right(self._tenant_cum, r.random() * self._tenant_cum[-1])
        ti = min(ti, len(self._tenant_cum) - 1)
        cum = self._tenant_task_cum[ti]
        ki = min(bisect.bisect_right(cum, r.random() * cum[-1]), len(cum) - 1)
        task = self.config.task_names[ki]
        n_in = round(r.lognormvariate(self._in_mu[task], self._in_sigma[task]))
        n_in = min(MAX_INPUT_TOKENS, max(1, n_in))
        pc = self._prio_cum
        prio = min(bisect.bisect_right(pc, r.random() * pc[-1]), 10)
        return self._tenant_names[ti], task, n_in, prio

    def next_request(
        self, now_ms: int, policy_id: str | None = None, reply_to: str | None = None
    ) -> Request:
        """Sample the next request, created at ``now_ms``."""
        r = self._rrng
        tenant, task, n_in, prio = self._draw_fields(r)
        bits = r.getrandbits(128)
        bits = (bits & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
        return Request(
            request_id=f"{bits:032x}",
            tenant_id=tenant,
            task_type=task,
            created_at=now_ms,
            input_tokens=n_in,
            priority=prio,
            policy_id=policy_id,
            reply_to=reply_to,
        )

    # ---------------------------------------------------------------- outcomes

    def phase(self, now_ms: int) -> int:
        """Number of drift events in effect at ``now_ms``."""
        if not self._event_ms:
            return 0
        return bisect.bisect_right(self._event_ms, now_ms - self.start_ms)

    def _profile(self, task: str, arm: str, phase: int) -> _Profile:
        key = (task, arm, phase)
        prof = self._profiles.get(key)
        if prof is not None:
            return prof
        if task not in self._natural_out:
            raise ValueError(f"unknown task type {task!r}; known: {list(self.config.task_names)}")
        if arm not in self.arms:
            raise ValueError(f"unknown arm {arm!r}; known: {list(self.arm_names)}")
        cfg, spec = self.config, self.reward_spec
        a = self.arms[arm]
        m = cfg.models[a.model]
        qf, lf, er = self._phase_models[phase][a.model]
        q0 = m.quality[task]
        for p, eff in cfg.parameter_effects.items():
            v = a.parameters.get(p)
            if v is not None:
                q0 += eff.slopes[task] * (float(v) - eff.reference)
        q0 *= qf
        cap = a.parameters.get("max_tokens")
        kappa = cfg.quality_concentration
        outs, alphas, betas, mus, out_costs = [], [], [], [], []
        base = 0.0
        for nat in self._natural_out[task]:
            n_out = nat if cap is None else min(nat, cap)
            q = q0 * cfg.truncation_quality_factor if n_out < nat else q0
            q = min(_Q_MAX, max(_Q_MIN, q))
            mu = math.log((m.latency_median_ms + m.latency_per_output_token_ms * n_out) * lf)
            outs.append(n_out)
            alphas.append(q * kappa)
            betas.append((1.0 - q) * kappa)
            mus.append(mu)
            out_costs.append(n_out * m.price_per_1k_output_usd / 1000.0)
            base += spec.quality_weight * q + spec.latency_weight * _expected_latency_term(
                mu, m.latency_sigma, spec.latency_scale_ms
            )
        prof = _Profile(
            out_tokens=tuple(outs),
            alphas=tuple(alphas),
            betas=tuple(betas),
            mus=tuple(mus),
            sigma=m.latency_sigma,
            out_costs=tuple(out_costs),
            price_in=m.price_per_1k_input_usd / 1000.0,
            error_rate=er,
            base_term=base / len(outs),
        )
        self._profiles[key] = prof
        return prof

    def outcome(self, request: Request, arm: str, now_ms: int) -> Reward:
        """Sample what calling ``arm`` for ``request`` reports, sent at ``now_ms``
        (drift phase taken at ``now_ms``). A failed call has ``error=True``,
        no quality and zero cost."""
        prof = self._profile(request.task_type, arm, self.phase(now_ms))
        r = self._orng
        k = int(r.random() * len(prof.out_tokens))
        latency = r.lognormvariate(prof.mus[k], prof.sigma)
        if r.random() < prof.error_rate:
            return Reward(
                request_id=request.request_id,
                tenant_id=request.tenant_id,
                sent_at=now_ms,
                quality=None,
                cost_usd=0.0,
                latency_ms=latency,
                error=True,
            )
        return Reward(
            request_id=request.request_id,
            tenant_id=request.tenant_id,
            sent_at=now_ms,
            quality=r.betavariate(prof.alphas[k], prof.betas[k]),
            cost_usd=request.input_tokens * prof.price_in + prof.out_costs[k],
            latency_ms=latency,
            error=False,
        )

    def _expected(self, task: str, n_in: int, arm: str, phase: int) -> float:
        prof = self._profile(task, arm, phase)
        spec = self.reward_spec
        w = spec.quality_weight + spec.cost_weight + spec.latency_weight
        e = prof.error_rate
        if w == 0.0:  # only feedback is weighted, and the simulator sends none
            return e * spec.error_reward + (1.0 - e) * spec.default_reward
        in_cost = n_in * prof.price_in
        inv = 1.0 / spec.cost_scale_usd
        cost_term = 0.0
        for oc in prof.out_costs:
            x = 1.0 - (in_cost + oc) * inv
            if x > 0.0:
                cost_term += x
        ok = (prof.base_term + spec.cost_weight * cost_term / len(prof.out_costs)) / w
        return e * spec.error_reward + (1.0 - e) * ok

    def expected_reward(self, request: Request, arm: str, now_ms: int) -> float:
        """The exact mean of ``reward_spec.scalar(**components)`` over
        :meth:`outcome`'s distribution for this request and arm at ``now_ms``."""
        return self._expected(request.task_type, request.input_tokens, arm, self.phase(now_ms))

    def expected_components(self, request: Request, arm: str, now_ms: int) -> dict[str, float]:
        """True means of the reward components: ``quality``, ``cost_usd``,
        ``output_tokens`` (given success), ``latency_ms`` and ``error_rate``."""
        prof = self._profile(request.task_type, arm, self.phase(now_ms))
        k = len(prof.out_tokens)
        half_s2 = 0.5 * prof.sigma * prof.sigma
        return {
            "quality": math.fsum(a / (a + b) for a, b in zip(prof.alphas, prof.betas, strict=True))
            / k,
            "cost_usd": request.input_tokens * prof.price_in + math.fsum(prof.out_costs) / k,
            "output_tokens": sum(prof.out_tokens) / k,
            "latency_ms": math.fsum(math.exp(mu + half_s2) for mu in prof.mus) / k,
            "error_rate": prof.error_rate,
        }

    def expected_rewards(
        self, request: Request, arms: Sequence[str] | None, now_ms: int
    ) -> dict[str, float]:
        """:meth:`expected_reward` for each arm (default: the request's
        candidates, else all arms)."""
        arms = arms or request.candidates or self.arm_names
        ph = self.phase(now_ms)
        return {a: self._expected(request.task_type, request.input_tokens, a, ph) for a in arms}

    def best_arm(self, request: Request, arms: list[str] | None, now_ms: int) -> str:
        """The arm with the highest expected reward (ties: first listed)."""
        er = self.expected_rewards(request, arms, now_ms)
        return max(er, key=er.__getitem__)

    # ------------------------------------------------------------------ regret

    def record_choice(self, request: Request, arm: str, now_ms: int) -> float:
        """Count a choice and add its true regret (best expected reward among
        the request's candidates, or all arms, minus the chosen arm's) to the
        running total; returns that instantaneous regret."""
        er = self.expected_rewards(request, None, now_ms)
        if arm not in er:
            raise ValueError(f"arm {arm!r} is not among the candidates {list(er)}")
        regret = max(er.values()) - er[arm]
        self._regret += regret
        self._rounds += 1
        self._choices[arm] += 1
        self._last_ms = now_ms
        return regret

    @property
    def regret(self) -> float:
        """Cumulative true regret of the recorded choices."""
        return self._regret

    @property
    def choices(self) -> dict[str, int]:
        """How often each arm was recorded as chosen."""
        return dict(self._choices)

    @property
    def rounds(self) -> int:
        """Number of recorded choices."""
        return self._rounds

    def mean_expected_rewards(self, now_ms: int) -> dict[str, float]:
        """Each arm's expected reward averaged over a fixed request sample of
        the traffic mix (``evaluation.mix_sample_*``), cached per drift phase."""
        ph = self.phase(now_ms)
        cached = self._mix_means.get(ph)
        if cached is not None:
            return dict(cached)
        if self._mix_sample is None:
            r = random.Random(self.config.mix_sample_seed)
            self._mix_sample = [
                self._draw_fields(r)[1:3] for _ in range(self.config.mix_sample_size)
            ]
        n = len(self._mix_sample)
        means = {
            a: math.fsum(self._expected(t, n_in, a, ph) for t, n_in in self._mix_sample) / n
            for a in self.arm_names
        }
        self._mix_means[ph] = means
        return dict(means)

    def overall_best_arm(self, now_ms: int) -> str:
        """The single arm with the best expected reward on the traffic mix."""
        means = self.mean_expected_rewards(now_ms)
        return max(means, key=means.__getitem__)

    def summary(self) -> dict[str, Any]:
        """Rounds, cumulative and mean regret, arm shares and the overall best
        arm (at the time of the last recorded choice)."""
        n = self._rounds
        best = self.overall_best_arm(self._last_ms)
        shares = {a: (c / n if n else 0.0) for a, c in self._choices.items()}
        return {
            "rounds": n,
            "regret": self._regret,
            "mean_regret": self._regret / n if n else 0.0,
            "choices": dict(self._choices),
            "arm_shares": shares,
            "best_arm": best,
            "best_arm_share": shares[best],
        }
