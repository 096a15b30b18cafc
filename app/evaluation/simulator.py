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

The **optimum** a choice's true regret is measured against is the best
expected reward among the request's candidate arms as configured; given a
``parameter_space`` (the call parameters a tuning policy may set), it is
the best over every candidate arm at every setting of that space as well,
found exactly (:meth:`TrafficSimulator.optimum`): a parameter with a
declared effect moves mean quality linearly, so its best value is a bound
of its range; ``max_tokens`` only caps the answer, so its best value is
the range's low bound, a natural output length of the task, or the high
bound, and a cap whose quality loss outweighs its largest possible cost
saving at any input length is never the best.

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
from typing import TYPE_CHECKING, Any

import numpy as np

from app.config_schema import (
    At,
    ConfigError,
    boolean,
    integer,
    known_keys,
    load_yaml,
    mapping,
    number,
    one_of,
    required,
    text,
)
from app.records import Request, Reward
from app.rewards import RewardSpec
from app.settings import POLICIES_PATH, SIMULATOR_PATH

if TYPE_CHECKING:
    from app.policies.config import Arm
    from app.tuning.space import ParameterSpace

__all__ = [
    "TASK_TYPES",
    "LengthSpec",
    "ModelSpec",
    "ParameterEffect",
    "ScheduledDrift",
    "SimulatorConfig",
    "SimulatorConfigError",
    "TenantSpec",
    "TrafficSimulator",
]

TASK_TYPES: tuple[str, ...] = ("code", "qa", "summarization", "creative", "chat")
"""The task types of the default scenario (a config may define others)."""

MAX_INPUT_TOKENS = 200_000
_Q_MIN, _Q_MAX = 0.01, 0.99  # mean quality is kept inside (0, 1) for the Beta law
_SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------- config


class SimulatorConfigError(ConfigError):
    """A scenario the simulator cannot use; the message names the key."""


def _weights(v: Any, at: At, n: int | None = None) -> tuple[float, ...]:
    if not isinstance(v, Sequence) or isinstance(v, str):
        raise at.fail("must be a list of non-negative numbers")
    if n is not None and len(v) != n:
        raise at.fail(f"must have exactly {n} values, got {len(v)}")
    out = tuple(number(x, at.item(i), lo=0.0) for i, x in enumerate(v))
    if not out or sum(out) <= 0:
        raise at.fail("weights must sum to more than 0")
    return out


def _task_weights(v: Any, tasks: Sequence[str], at: At) -> tuple[float, ...]:
    d = mapping(v, at)
    known_keys(d, at, tasks, noun="task type")
    out = tuple(number(d.get(t, 0.0), at / t, lo=0.0) for t in tasks)
    if sum(out) <= 0:
        raise at.fail("weights must sum to more than 0")
    return out


@dataclass(frozen=True, slots=True)
class LengthSpec:
    """A lognormal token-length law: ``median`` tokens, log-sd ``sigma``."""

    median: float
    sigma: float = 0.0

    @classmethod
    def from_dict(cls, d: Any, at: At) -> LengthSpec:
        d = mapping(d, at)
        known_keys(d, at, ("median", "sigma"))
        required(d, at, ("median",))
        sigma = {"sigma": number(d["sigma"], at / "sigma", 0.0, 5.0)} if "sigma" in d else {}
        return cls(median=number(d["median"], at / "median", 0.0, lo_open=True), **sigma)


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """A tenant, its share of traffic and optionally its own task mix."""

    name: str
    weight: float = 1.0
    task_weights: tuple[float, ...] | None = None  # aligned with SimulatorConfig.task_names


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Ground truth of one model (prices in USD per 1k tokens)."""

    name: str
    quality: dict[str, float]
    price_per_1k_input_usd: float
    price_per_1k_output_usd: float
    latency_median_ms: float
    latency_per_output_token_ms: float = 0.0
    latency_sigma: float = 0.0
    error_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class ParameterEffect:
    """``quality += slopes[task] * (value - reference)`` for one arm parameter."""

    reference: float
    slopes: dict[str, float]


@dataclass(frozen=True, slots=True)
class ScheduledDrift:
    """From ``start + at_seconds`` on, ``model`` degrades: its mean quality and
    latency are multiplied by the factors, and its error rate is replaced by
    ``error_rate`` unless that is ``None``. Events on a model compound."""

    at_seconds: float
    model: str
    quality_factor: float = 1.0
    latency_factor: float = 1.0
    error_rate: float | None = None


TOP_KEYS = (
    "traffic",
    "tasks",
    "models",
    "parameter_effects",
    "output_quantiles",
    "quality_concentration",
    "truncation_quality_factor",
    "drift",
    "evaluation",
)
TRAFFIC_KEYS = (
    "base_rate_per_second",
    "daily_pattern",
    "task_weights",
    "priority_weights",
    "tenants",
)
MODEL_KEYS = (
    "quality",
    "price_per_1k_input_usd",
    "price_per_1k_output_usd",
    "latency",
    "error_rate",
)
DRIFT_EVENT_KEYS = ("at_seconds", "model", "quality_factor", "latency_factor", "error_rate")


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
    drift_events: tuple[ScheduledDrift, ...] = ()
    mix_sample_size: int = 2000
    mix_sample_seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | Path = SIMULATOR_PATH) -> SimulatorConfig:
        """Load a scenario file (default: ``config/simulator.yaml``)."""
        return cls.from_dict(load_yaml(path, SimulatorConfigError), source=str(path))

    @classmethod
    def from_dict(cls, d: Any, source: str = "simulator config") -> SimulatorConfig:
        """Parse and validate; every problem is a :class:`SimulatorConfigError`
        (a ``ValueError``) naming the offending key. A key left out takes the
        field's default."""
        at = At(source, error=SimulatorConfigError)
        d = mapping(d, at)
        known_keys(d, at, TOP_KEYS)
        values: dict[str, Any] = {}

        tasks_d = mapping(d.get("tasks"), at / "tasks")
        if not tasks_d:
            raise (at / "tasks").fail("at least one task type is required")
        task_names = tuple(str(t) for t in tasks_d)
        input_tokens, output_tokens = {}, {}
        for t in task_names:
            t_at = at / "tasks" / t
            td = mapping(tasks_d[t], t_at)
            known_keys(td, t_at, ("input_tokens", "output_tokens"))
            input_tokens[t] = LengthSpec.from_dict(td.get("input_tokens"), t_at / "input_tokens")
            output_tokens[t] = LengthSpec.from_dict(td.get("output_tokens"), t_at / "output_tokens")

        tr_at = at / "traffic"
        tr = mapping(d.get("traffic"), tr_at)
        known_keys(tr, tr_at, TRAFFIC_KEYS)
        task_weights = _task_weights(tr.get("task_weights"), task_names, tr_at / "task_weights")
        if "base_rate_per_second" in tr:
            values["base_rate_per_second"] = number(
                tr["base_rate_per_second"], tr_at / "base_rate_per_second", 0.0, lo_open=True
            )
        tenants_v = tr.get("tenants")
        if not isinstance(tenants_v, list) or not tenants_v:
            raise (tr_at / "tenants").fail("must be a non-empty list of {name, weight}")
        tenants = []
        for i, tv in enumerate(tenants_v):
            t_at = (tr_at / "tenants").item(i)
            tv = mapping(tv, t_at)
            known_keys(tv, t_at, ("name", "weight", "task_weights"))
            tw = tv.get("task_weights")
            tenant: dict[str, Any] = {"name": text(tv.get("name"), t_at / "name")}
            if "weight" in tv:
                tenant["weight"] = number(tv["weight"], t_at / "weight", lo=0.0)
            if tw is not None:
                tenant["task_weights"] = _task_weights(tw, task_names, t_at / "task_weights")
            tenants.append(TenantSpec(**tenant))
        if len({t.name for t in tenants}) != len(tenants):
            raise (tr_at / "tenants").fail("tenant names must be unique")
        if sum(t.weight for t in tenants) <= 0:
            raise (tr_at / "tenants").fail("tenant weights must sum to more than 0")

        models = {}
        models_d = mapping(d.get("models"), at / "models")
        if not models_d:
            raise (at / "models").fail("at least one model is required")
        for m, md in models_d.items():
            models[str(m)] = _model(str(m), md, task_names, at / "models" / m)

        effects = {}
        pe_at = at / "parameter_effects"
        for p, pd in mapping(d.get("parameter_effects"), pe_at, optional=True).items():
            p_at = pe_at / p
            pd = mapping(pd, p_at)
            known_keys(pd, p_at, ("reference", "slopes"))
            sd = mapping(pd.get("slopes"), p_at / "slopes", optional=True)
            known_keys(sd, p_at / "slopes", task_names, noun="task type")
            effects[str(p)] = ParameterEffect(
                reference=number(pd.get("reference", 0.0), p_at / "reference"),
                slopes={t: number(sd.get(t, 0.0), p_at / "slopes" / t) for t in task_names},
            )

        dr_at = at / "drift"
        dr = mapping(d.get("drift"), dr_at, optional=True)
        known_keys(dr, dr_at, ("enabled", "events"))
        if "enabled" in dr:
            values["drift_enabled"] = boolean(dr["enabled"], dr_at / "enabled")
        raw_events = dr.get("events") or []
        if not isinstance(raw_events, list):
            raise (dr_at / "events").fail(f"expected a list of events, got {raw_events!r}")
        events = [
            _drift_event(ev, models, (dr_at / "events").item(i)) for i, ev in enumerate(raw_events)
        ]
        events.sort(key=lambda e: e.at_seconds)

        ev_at = at / "evaluation"
        ev_d = mapping(d.get("evaluation"), ev_at, optional=True)
        known_keys(ev_d, ev_at, ("mix_sample_size", "mix_sample_seed"))
        if "mix_sample_size" in ev_d:
            values["mix_sample_size"] = integer(
                ev_d["mix_sample_size"], ev_at / "mix_sample_size", lo=1
            )
        if "mix_sample_seed" in ev_d:
            values["mix_sample_seed"] = integer(
                ev_d["mix_sample_seed"], ev_at / "mix_sample_seed", lo=0
            )
        if "output_quantiles" in d:
            values["output_quantiles"] = integer(
                d["output_quantiles"], at / "output_quantiles", 1, 256
            )
        if "quality_concentration" in d:
            values["quality_concentration"] = number(
                d["quality_concentration"], at / "quality_concentration", 0.0, lo_open=True
            )
        if "truncation_quality_factor" in d:
            values["truncation_quality_factor"] = number(
                d["truncation_quality_factor"], at / "truncation_quality_factor", 0.0, 1.0
            )

        return cls(
            task_names=task_names,
            task_weights=task_weights,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            tenants=tuple(tenants),
            priority_weights=_weights(
                tr.get("priority_weights", [1.0] * 11), tr_at / "priority_weights", n=11
            ),
            daily_pattern=_weights(
                tr.get("daily_pattern", [1.0] * 24), tr_at / "daily_pattern", n=24
            ),
            models=models,
            parameter_effects=effects,
            drift_events=tuple(events),
            **values,
        )

    def with_drift(self, enabled: bool = True) -> SimulatorConfig:
        """A copy with scheduled drift switched on (or off)."""
        return replace(self, drift_enabled=enabled)


def _model(name: str, md: Any, task_names: Sequence[str], at: At) -> ModelSpec:
    md = mapping(md, at)
    known_keys(md, at, MODEL_KEYS)
    required(md, at, ("quality", "price_per_1k_input_usd", "price_per_1k_output_usd", "latency"))
    qd = mapping(md["quality"], at / "quality")
    missing = [t for t in task_names if t not in qd]
    if missing:
        raise (at / "quality").fail(f"missing task type(s) {missing}")
    known_keys(qd, at / "quality", task_names, noun="task type")
    lat_at = at / "latency"
    lat = mapping(md["latency"], lat_at)
    known_keys(lat, lat_at, ("median_ms", "per_output_token_ms", "sigma"))
    required(lat, lat_at, ("median_ms",))
    values: dict[str, Any] = {}
    if "per_output_token_ms" in lat:
        values["latency_per_output_token_ms"] = number(
            lat["per_output_token_ms"], lat_at / "per_output_token_ms", lo=0.0
        )
    if "sigma" in lat:
        values["latency_sigma"] = number(lat["sigma"], lat_at / "sigma", 0.0, 5.0)
    if "error_rate" in md:
        values["error_rate"] = number(md["error_rate"], at / "error_rate", 0.0, 1.0)
    return ModelSpec(
        name=name,
        quality={t: number(qd[t], at / "quality" / t, 0.0, 1.0) for t in task_names},
        price_per_1k_input_usd=number(
            md["price_per_1k_input_usd"], at / "price_per_1k_input_usd", lo=0.0
        ),
        price_per_1k_output_usd=number(
            md["price_per_1k_output_usd"], at / "price_per_1k_output_usd", lo=0.0
        ),
        latency_median_ms=number(lat["median_ms"], lat_at / "median_ms", 0.0, lo_open=True),
        **values,
    )


def _drift_event(ev: Any, models: Mapping[str, ModelSpec], at: At) -> ScheduledDrift:
    ev = mapping(ev, at)
    known_keys(ev, at, DRIFT_EVENT_KEYS)
    required(ev, at, ("at_seconds", "model"))
    values: dict[str, Any] = {}
    if "quality_factor" in ev:
        values["quality_factor"] = number(ev["quality_factor"], at / "quality_factor", lo=0.0)
    if "latency_factor" in ev:
        values["latency_factor"] = number(
            ev["latency_factor"], at / "latency_factor", 0.0, lo_open=True
        )
    if ev.get("error_rate") is not None:
        values["error_rate"] = number(ev["error_rate"], at / "error_rate", 0.0, 1.0)
    return ScheduledDrift(
        at_seconds=number(ev["at_seconds"], at / "at_seconds", lo=0.0),
        model=one_of(ev["model"], at / "model", sorted(models), what="model"),
        **values,
    )


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
    mean_out_cost: float
    max_out_cost: float
    price_in: float  # USD per input token
    error_rate: float
    base_term: float  # mean over lengths of qw*q + lw*E[latency term]


class TrafficSimulator:
    """Seeded request stream + outcome sampler with known expected rewards.

    Three independent :class:`random.Random` streams (requests, outcomes,
    arrivals) are derived from ``seed``, so the request stream does not depend
    on which arms a policy picks: two policies run with the same seed see the
    same requests. ``start_ms`` anchors the drift schedule (default: the wall
    clock at construction). ``parameter_space``: the call parameters a
    decision may set beyond the arms' configured ones; the optimum of the
    true regret then includes the best setting in it (see the module's
    docstring).

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
        arms: Sequence[Arm],
        reward_spec: RewardSpec,
        seed: int = 0,
        start_ms: int | None = None,
        parameter_space: ParameterSpace | None = None,
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
        self.arms: dict[str, Arm] = {a.name: a for a in arms}
        self.arm_names: tuple[str, ...] = tuple(names)
        self.reward_spec = reward_spec
        self.parameter_space = parameter_space
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

        self._profiles: dict[tuple[str, str, int, tuple[Any, ...]], _Profile] = {}
        self._mix_sample: list[tuple[str, int]] | None = None
        self._mix_means: dict[int, dict[str, float]] = {}
        self._tuned: dict[tuple[str, str, int], tuple[dict[str, Any], ...]] = {}
        self._optima: dict[tuple[str, int, int, tuple[str, ...]], float] = {}
        self._contenders_of: dict[
            tuple[str, int, tuple[str, ...]], list[tuple[str, dict[str, Any] | None]]
        ] = {}

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
        """The default scenario with the default policy's arms (of
        ``config/policies.yaml``) and ``RewardSpec()``; ``drift`` overrides
        the file's ``drift.enabled``."""
        from app.policies.config import PoliciesConfig  # loads every algorithm: only when needed

        cfg = SimulatorConfig.from_yaml(SIMULATOR_PATH)
        if drift is not None:
            cfg = cfg.with_drift(drift)
        policies = PoliciesConfig.load(POLICIES_PATH)
        arms = policies.policies[policies.default_policy].arms
        return cls(cfg, arms, reward_spec or RewardSpec(), seed, start_ms)

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

    def _profile(
        self, task: str, arm: str, phase: int, parameters: Mapping[str, Any] | None = None
    ) -> _Profile:
        """``parameters``: the call parameters a decision served, in place of
        the arm's configured ones (a tuning policy's)."""
        params_key = tuple(sorted(parameters.items())) if parameters else ()
        key = (task, arm, phase, params_key)
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
        served = {**a.parameters, **parameters} if parameters else a.parameters
        for p, eff in cfg.parameter_effects.items():
            v = served.get(p)
            if v is not None:
                q0 += eff.slopes[task] * (float(v) - eff.reference)
        q0 *= qf
        cap = served.get("max_tokens")
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
            mean_out_cost=sum(out_costs) / len(out_costs),
            max_out_cost=max(out_costs),
            price_in=m.price_per_1k_input_usd / 1000.0,
            error_rate=er,
            base_term=base / len(outs),
        )
        self._profiles[key] = prof
        return prof

    def outcome(
        self,
        request: Request,
        arm: str,
        now_ms: int,
        parameters: Mapping[str, Any] | None = None,
    ) -> Reward:
        """Sample what calling ``arm`` for ``request`` reports, sent at ``now_ms``
        (drift phase taken at ``now_ms``), with the decision's ``parameters``
        when they are not the arm's. A failed call has ``error=True``,
        no quality and zero cost."""
        prof = self._profile(request.task_type, arm, self.phase(now_ms), parameters)
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

    def _expected(
        self,
        task: str,
        n_in: int,
        arm: str,
        phase: int,
        parameters: Mapping[str, Any] | None = None,
    ) -> float:
        prof = self._profile(task, arm, phase, parameters)
        spec = self.reward_spec
        w = spec.quality_weight + spec.cost_weight + spec.latency_weight
        e = prof.error_rate
        if w == 0.0:  # only feedback is weighted, and the simulator sends none
            return e * spec.error_reward + (1.0 - e) * spec.default_reward
        in_cost = n_in * prof.price_in
        inv = 1.0 / spec.cost_scale_usd
        if in_cost + prof.max_out_cost <= spec.cost_scale_usd:  # no cost term is cut at 0
            cost_term = 1.0 - (in_cost + prof.mean_out_cost) * inv
        else:
            cost_term = 0.0
            for oc in prof.out_costs:
                x = 1.0 - (in_cost + oc) * inv
                if x > 0.0:
                    cost_term += x
            cost_term /= len(prof.out_costs)
        ok = (prof.base_term + spec.cost_weight * cost_term) / w
        return e * spec.error_reward + (1.0 - e) * ok

    def expected_reward(
        self,
        request: Request,
        arm: str,
        now_ms: int,
        parameters: Mapping[str, Any] | None = None,
    ) -> float:
        """The exact mean of ``reward_spec.scalar(**components)`` over
        :meth:`outcome`'s distribution for this request and arm at ``now_ms``
        (with ``parameters`` in place of the arm's)."""
        return self._expected(
            request.task_type, request.input_tokens, arm, self.phase(now_ms), parameters
        )

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

    def _tuned_settings(self, task: str, arm: str, phase: int) -> tuple[dict[str, Any], ...]:
        """The settings of ``parameter_space`` at which ``arm`` may have its
        best expected reward for ``task``, for some input length."""
        key = (task, arm, phase)
        cached = self._tuned.get(key)
        if cached is not None:
            return cached
        space, cfg = self.parameter_space, self.config
        assert space is not None
        best = dict(self.arms[arm].parameters)
        caps: list[int] = []
        for d in space.dimensions:
            effect = cfg.parameter_effects.get(d.name)
            if d.name == "max_tokens":
                low, high = math.ceil(d.low), math.floor(d.high)
                natural = {n for n in self._natural_out[task] if low < n < high}
                caps = sorted({low, high} | natural)
            elif effect is not None:  # linear in the value: a bound is best
                best[d.name] = d.high if effect.slopes[task] > 0 else d.low
            elif best.get(d.name) is None or not d.low <= best[d.name] <= d.high:
                best[d.name] = d.low  # no effect: any value in range
        if not caps:
            settings: tuple[dict[str, Any], ...] = (best,)
        else:
            full = {**best, "max_tokens": caps[-1]}
            top = self._profile(task, arm, phase, full)
            spec = self.reward_spec
            kept = [full]
            for cap in caps[:-1]:
                setting = {**best, "max_tokens": cap}
                prof = self._profile(task, arm, phase, setting)
                # The cost term is 1-Lipschitz in the cost: a cap saves at
                # most its mean output cost difference over the cost scale.
                saving = (
                    spec.cost_weight
                    * math.fsum(a - b for a, b in zip(top.out_costs, prof.out_costs, strict=True))
                    / len(prof.out_costs)
                    / spec.cost_scale_usd
                )
                if prof.base_term + saving > top.base_term:
                    kept.append(setting)
            settings = tuple(kept)
        self._tuned[key] = settings
        return settings

    def _contenders(
        self, task: str, phase: int, arms: tuple[str, ...]
    ) -> list[tuple[str, dict[str, Any] | None]]:
        """The (arm, setting) pairs the optimum is the best of: each arm as
        configured (setting ``None``) and at its settings from
        :meth:`_tuned_settings`, less those another pair beats at every
        input length (as good a quality and latency term, no higher cost, the
        same error rate)."""
        key = (task, phase, arms)
        cached = self._contenders_of.get(key)
        if cached is not None:
            return cached
        pairs: list[tuple[str, dict[str, Any] | None]] = [(a, None) for a in arms]
        if self.parameter_space is not None:
            pairs += [(a, p) for a in arms for p in self._tuned_settings(task, a, phase)]
        profs = [self._profile(task, a, phase, p) for a, p in pairs]

        def beats(x: _Profile, y: _Profile) -> bool:
            return (
                x.error_rate == y.error_rate
                and x.base_term >= y.base_term
                and x.price_in <= y.price_in
                and all(a <= b for a, b in zip(x.out_costs, y.out_costs, strict=True))
            )

        kept: list[int] = []
        for i, prof in enumerate(profs):
            if any(beats(profs[j], prof) for j in kept):
                continue
            kept = [j for j in kept if not beats(prof, profs[j])] + [i]
        out = [pairs[i] for i in sorted(kept)]
        self._contenders_of[key] = out
        return out

    def optimum(self, request: Request, now_ms: int) -> float:
        """The best expected reward for ``request`` at ``now_ms``: among its
        candidates (or all arms) as configured, and with ``parameter_space``
        also at each one's best setting in it."""
        arms = tuple(request.candidates or self.arm_names)
        ph = self.phase(now_ms)
        key = (request.task_type, request.input_tokens, ph, arms)
        best = self._optima.get(key)
        if best is not None:
            return best
        task, n_in = request.task_type, request.input_tokens
        best = max(
            self._expected(task, n_in, a, ph, p) for a, p in self._contenders(task, ph, arms)
        )
        if len(self._optima) >= 200_000:
            self._optima.clear()
        self._optima[key] = best
        return best

    # ------------------------------------------------------------------ regret

    def record_choice(
        self,
        request: Request,
        arm: str,
        now_ms: int,
        parameters: Mapping[str, Any] | None = None,
    ) -> float:
        """Count a choice and add its true regret (:meth:`optimum` minus the
        chosen arm's expected reward, at the decision's ``parameters`` when
        given) to the running total; returns that instantaneous regret."""
        allowed = request.candidates or self.arm_names
        if arm not in allowed:
            raise ValueError(f"arm {arm!r} is not among the candidates {list(allowed)}")
        chosen = self._expected(
            request.task_type, request.input_tokens, arm, self.phase(now_ms), parameters
        )
        regret = self.optimum(request, now_ms) - chosen
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
