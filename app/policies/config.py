"""Policies configured per ``policy_id`` in a YAML file (config/policies.yaml).

Every key is checked (app/config_schema.py): an unknown key, hyperparameter
or reward weight, a wrong type or a value out of range is a
:class:`PolicyConfigError` naming the file and the key path."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from app.config_schema import (
    At,
    ConfigError,
    boolean,
    did_you_mean,
    integer,
    known_keys,
    known_parameters,
    load_yaml,
    mapping,
    number,
    one_of,
    text,
)
from app.features.request_vector import TASK_TYPES, RequestVectorizer
from app.policies.base import Policy
from app.policies.guardrails import _BUDGET_KEYS as BUDGET_KEYS
from app.policies.guardrails import _KEYS as GUARDRAIL_KEYS
from app.policies.guardrails import GuardrailError, Guardrails, reconcile_arms
from app.policies.per_task_type import SIMILAR_MODES, PerTaskType
from app.policies.registry import algorithms
from app.policies.sharding import order_dependence
from app.rewards import (
    COMPONENTS,
    DAYS,
    RewardFunctionError,
    RewardSpec,
    WeightWindow,
    zone,
)
from app.settings import POLICIES_PATH

ALGORITHMS: dict[str, type[Policy]] = algorithms()


CONTEXTS = ("request", "workflow")
POLICY_KEYS = (
    "algorithm",
    "arms",
    "hyperparameters",
    "reward",
    "guardrails",
    "fallback_arm",
    "snapshot",
    "seed",
    "context",
    "episode",
    "tenants",
    "learning",
    "explain",
    "cold_start",
)
# How a policy learns: one writer, or shards whose states merge (app/policies/sharding.py).
LEARNING_MODES = ("single", "sharded")
ARM_KEYS = ("name", "model", "parameters")
# One state per task type, a new one started from similar ones (app/policies/per_task_type.py).
COLD_START_KEYS = ("similar", "neighbours", "prior_strength", "settle_outcomes")
SNAPSHOT_KEYS = ("every_updates", "every_ms")
EPISODE_KEYS = ("terminal_arms", "timeout_seconds")
# ``reward.weights.<c>`` sets RewardSpec's ``<c>_weight``; every other key of
# ``reward`` the RewardSpec field of its name (whose defaults apply).
_WEIGHT = "_weight"
REWARD_WEIGHTS = tuple(
    f.name.removesuffix(_WEIGHT) for f in fields(RewardSpec) if f.name.endswith(_WEIGHT)
)
REWARD_KEYS = (
    "weights",
    *(f.name for f in fields(RewardSpec) if f.init and not f.name.endswith(_WEIGHT)),
)
SCHEDULE_KEYS = ("component", "factor", "from", "to", "days", "timezone")
_NOT_NUMBERS = ("function", "schedule", "timezone", "tenant_timezones")
# Constructor arguments the config sets from keys of its own, not hyperparameters.
_NOT_HYPERPARAMETERS = ("arms", "seed")


class PolicyConfigError(ConfigError):
    pass


@dataclass(frozen=True, slots=True)
class Arm:
    """A named configuration: a model and its call parameters."""

    name: str
    model: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyConfig:
    policy_id: str
    algorithm: str
    arms: tuple[Arm, ...]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    reward: RewardSpec = field(default_factory=RewardSpec)
    max_explore_priority: int = 11
    fallback_arm: str = ""
    snapshot_every_updates: int = 100
    snapshot_every_ms: int = 250
    seed: int = 0
    guardrails: dict[str, Any] = field(default_factory=dict)  # validated at load
    # What a contextual policy decides on: "request" (the request's engineered
    # vector) or "workflow" (the state vector the request's workflow carries).
    context: str = "request"
    # Multi-step episodes (RL policies): arms whose outcome ends the episode,
    # and how long an episode may wait for its next step before it is closed.
    terminal_arms: tuple[str, ...] = ()
    episode_timeout_ms: int = 600_000
    # The tenants allowed to be decided for by this policy; None: every tenant.
    tenants: frozenset[str] | None = None
    # "single": every outcome applied by one writer, on the partition of the
    # policy id; "sharded": on the partition of the request, one state per
    # partition, merged by the deciders (docs/architecture.md#sharded-learning).
    learning: str = "single"
    # Every decision carries its explanation (app/explain.py); a request can
    # also ask for its own with ``explain: true``.
    explain: bool = False
    # The policy's mapping as written in the policies file (or in the
    # registry version it was restored from): what a registry version keeps.
    source: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def config_hash(self) -> str:
        """Identifies ``source``: equal mappings, equal hashes (key order aside)."""
        return mapping_hash(self.source)

    def allows(self, tenant_id: str) -> bool:
        return self.tenants is None or tenant_id in self.tenants

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)

    def build(self) -> Policy:
        """A fresh policy in its prior state."""
        return ALGORITHMS[self.algorithm](self.arm_names, seed=self.seed, **self.hyperparameters)

    @property
    def contextual(self) -> bool:
        return ALGORITHMS[self.algorithm].contextual_for(self.hyperparameters)

    def build_guardrails(self) -> Guardrails:
        return Guardrails.from_config(self.guardrails, seed=self.seed)

    def restore(self, state: bytes) -> Policy:
        """A policy from a snapshot, reconciled with the config: its
        hyperparameters apply, arms added start from the prior, removed ones
        are dropped."""
        policy = ALGORITHMS[self.algorithm].restore(state)
        policy.set_params(**self.hyperparameters)
        reconcile_arms(policy, self.arm_names, self.guardrails.get("prior_from", {}))
        return policy


@dataclass(frozen=True)
class PoliciesConfig:
    default_policy: str
    policies: dict[str, PolicyConfig]

    def get(self, policy_id: str | None) -> PolicyConfig | None:
        return self.policies.get(policy_id or self.default_policy)

    @classmethod
    def load(cls, path: Path | str = POLICIES_PATH) -> PoliciesConfig:
        return cls.from_dict(load_yaml(path, PolicyConfigError), source=str(path))

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<dict>") -> PoliciesConfig:
        at = At(source, error=PolicyConfigError)
        if not isinstance(doc, Mapping) or not isinstance(doc.get("policies"), Mapping):
            raise at.fail("expected a mapping with a 'policies' mapping")
        known_keys(doc, at, ("default_policy", "policies"))
        policies = {
            str(pid): _policy(str(pid), p, at / "policies" / pid)
            for pid, p in doc["policies"].items()
        }
        default = doc.get("default_policy", next(iter(policies), ""))
        if default not in policies:
            raise (at / "default_policy").fail(
                f"default_policy {default!r} is not defined{did_you_mean(default, policies)}; "
                f"policies: {', '.join(policies) or 'none'}"
            )
        return cls(default_policy=default, policies=policies)


def mapping_hash(raw: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``raw`` as sorted-key JSON."""
    body = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(body).hexdigest()[:16]


def policy_from_mapping(pid: str, raw: Any, source: str) -> PolicyConfig:
    """One policy from its mapping (as under ``policies.<pid>`` in the file),
    checked as strictly as the file is; ``source`` names where it came from."""
    return _policy(pid, raw, At(source, error=PolicyConfigError) / "policies" / pid)


def _policy(pid: str, raw: Any, at: At) -> PolicyConfig:
    p = mapping(raw, at)
    if not pid or any(not ch.isprintable() for ch in pid):
        raise at.fail(f"policy id {pid!r} must be non-empty printable text")
    known_keys(p, at, POLICY_KEYS)
    algorithm = one_of(p.get("algorithm"), at / "algorithm", ALGORITHMS, what="algorithm")
    arms = _arms(p.get("arms"), at / "arms")
    names = [a.name for a in arms]
    values: dict[str, Any] = {"reward": _reward(p.get("reward"), at / "reward")}
    fallback = p.get("fallback_arm", names[0])
    if fallback not in names:
        raise (at / "fallback_arm").fail(
            f"fallback_arm {fallback!r} is not one of its arms{did_you_mean(fallback, names)}; "
            f"arms: {', '.join(names)}"
        )
    snap = mapping(p.get("snapshot"), at / "snapshot", optional=True)
    known_keys(snap, at / "snapshot", SNAPSHOT_KEYS)
    if "every_updates" in snap:
        values["snapshot_every_updates"] = integer(
            snap["every_updates"], at / "snapshot" / "every_updates", lo=1
        )
    if "every_ms" in snap:
        values["snapshot_every_ms"] = integer(snap["every_ms"], at / "snapshot" / "every_ms", lo=1)
    if "seed" in p:
        values["seed"] = integer(p["seed"], at / "seed", lo=0)
    hyperparameters = _hyperparameters(algorithm, p.get("hyperparameters"), at)
    if "cold_start" in p:
        algorithm, hyperparameters = _cold_start(algorithm, hyperparameters, p, at / "cold_start")
    context = p.get("context", "request")
    if context not in CONTEXTS:
        hint = did_you_mean(context, CONTEXTS) if isinstance(context, str) else ""
        raise (at / "context").fail(f"context must be one of {CONTEXTS}, got {context!r}{hint}")
    contextual = ALGORITHMS[algorithm].contextual_for(hyperparameters)
    if context == "workflow":
        if not contextual or "context_dim" not in hyperparameters:
            raise (at / "context").fail(
                "context: workflow needs a contextual algorithm and its "
                "hyperparameters.context_dim (the length of the workflow state)"
            )
    elif contextual:
        # Contextual policies see the request's engineered feature vector,
        # plus the feature spec's columns when the spec says policy_vector
        # (the decider checks the length against the configured extractor).
        dim = hyperparameters.setdefault("context_dim", RequestVectorizer.dim)
        if not isinstance(dim, int) or dim < RequestVectorizer.dim:
            raise (at / "hyperparameters" / "context_dim").fail(
                f"context_dim {dim} is below the request vector's {RequestVectorizer.dim} features"
            )
    episode = mapping(p.get("episode"), at / "episode", optional=True)
    known_keys(episode, at / "episode", EPISODE_KEYS)
    terminal = _terminal_arms(episode.get("terminal_arms", []), names, at / "episode")
    if "timeout_seconds" in episode:
        timeout_s = number(
            episode["timeout_seconds"], at / "episode" / "timeout_seconds", lo=0, lo_open=True
        )
        values["episode_timeout_ms"] = int(timeout_s * 1000)
    learning = p.get("learning", "single")
    if learning not in LEARNING_MODES:
        hint = did_you_mean(learning, LEARNING_MODES) if isinstance(learning, str) else ""
        raise (at / "learning").fail(
            f"learning must be one of {LEARNING_MODES}, got {learning!r}{hint}"
        )
    if learning == "sharded":
        why = order_dependence(algorithm, hyperparameters)
        if why is None and context == "workflow":
            why = "multi-step workflows are learned in order"
        if why is not None:
            raise (at / "learning").fail(
                f"learning: sharded needs shard states that merge, and {algorithm} cannot: "
                f"{why}; use learning: single"
            )
        values["learning"] = learning
    if "explain" in p:
        values["explain"] = boolean(p["explain"], at / "explain")
    raw_guardrails = dict(_guardrails(p.get("guardrails"), names, at / "guardrails"))
    try:
        guardrails = Guardrails.from_config(raw_guardrails)
    except GuardrailError as exc:
        raise (at / "guardrails").fail(str(exc)) from None
    config = PolicyConfig(
        policy_id=pid,
        algorithm=algorithm,
        arms=arms,
        hyperparameters=hyperparameters,
        max_explore_priority=guardrails.max_explore_priority,
        guardrails=raw_guardrails,
        fallback_arm=fallback,
        context=context,
        terminal_arms=terminal,
        tenants=_tenants(p.get("tenants"), at / "tenants"),
        source=copy.deepcopy(dict(p)),
        **values,
    )
    try:
        config.build()
    except (TypeError, ValueError) as exc:
        raise (at / "hyperparameters").fail(f"bad hyperparameters: {exc}") from None
    return config


def _arms(raw: Any, at: At) -> tuple[Arm, ...]:
    if raw is None or raw == []:
        raise at.fail("needs at least one arm")
    if not isinstance(raw, list):
        raise at.fail(f"expected a list of arms, got {type(raw).__name__}")
    arms = []
    for i, a in enumerate(raw):
        where = at.item(i)
        if not isinstance(a, Mapping):
            raise where.fail(f"each arm needs a name and a model, got {a!r}")
        known_keys(a, where, ARM_KEYS)
        missing = [k for k in ("name", "model") if k not in a]
        if missing:
            raise (where / missing[0]).fail("each arm needs a name and a model")
        parameters = mapping(a.get("parameters"), where / "parameters", optional=True)
        arms.append(
            Arm(
                name=text(a["name"], where / "name"),
                model=text(a["model"], where / "model"),
                parameters=dict(parameters),
            )
        )
    names = [a.name for a in arms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise at.fail(f"duplicate arm names {duplicates}")
    return tuple(arms)


def _reward(raw: Any, at: At) -> RewardSpec:
    r = mapping(raw, at, optional=True)
    known_keys(r, at, REWARD_KEYS)
    weights = mapping(r.get("weights"), at / "weights", optional=True)
    known_keys(weights, at / "weights", REWARD_WEIGHTS, noun="reward weight")
    values: dict[str, Any] = {
        k + _WEIGHT: number(v, at / "weights" / k) for k, v in weights.items()
    }
    values.update(
        {k: number(v, at / k) for k, v in r.items() if k != "weights" and k not in _NOT_NUMBERS}
    )
    if "function" in r:
        values["function"] = text(r["function"], at / "function")
    if "timezone" in r:
        values["timezone"] = _timezone(r["timezone"], at / "timezone")
    zones = mapping(r.get("tenant_timezones"), at / "tenant_timezones", optional=True)
    values["tenant_timezones"] = {
        str(t): _timezone(z, at / "tenant_timezones" / t) for t, z in zones.items()
    }
    values["schedule"] = _schedule(r.get("schedule", []), at / "schedule")
    try:
        return RewardSpec(**values)
    except RewardFunctionError as exc:
        raise (at / "function").fail(str(exc)) from None
    except ValueError as exc:
        raise at.fail(str(exc)) from None


def _timezone(raw: Any, at: At) -> str:
    name = text(raw, at)
    try:
        zone(name)
    except ValueError as exc:
        raise at.fail(str(exc)) from None
    return name


def _schedule(raw: Any, at: At) -> tuple[WeightWindow, ...]:
    """``- {component: cost, factor: 1.5, from: "09:00", to: "17:00",
    days: [mon, tue, wed, thu, fri], timezone: tenant}``"""
    if not isinstance(raw, list):
        raise at.fail(f"expected a list of weight windows, got {type(raw).__name__}")
    out = []
    for i, item in enumerate(raw):
        where = at.item(i)
        w = mapping(item, where)
        known_keys(w, where, SCHEDULE_KEYS)
        for key in ("component", "factor", "from", "to"):
            if key not in w:
                raise (where / key).fail(f"a weight window needs {key!r}")
        component = one_of(w["component"], where / "component", COMPONENTS, what="component")
        days = w.get("days", list(DAYS))
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
            raise (where / "days").fail(f"days must be a non-empty list of {', '.join(DAYS)}")
        zone_name = w.get("timezone", "tenant")
        if zone_name != "tenant":
            zone_name = _timezone(zone_name, where / "timezone")
        out.append(
            WeightWindow(
                component=component,
                factor=number(w["factor"], where / "factor", lo=0),
                start_minute=_minute(w["from"], where / "from"),
                end_minute=_minute(w["to"], where / "to"),
                days=frozenset(DAYS.index(d) for d in days),
                timezone=zone_name,
            )
        )
    return tuple(out)


def _minute(raw: Any, at: At) -> int:
    """``"HH:MM"`` → minutes after midnight (``"24:00"`` is the day's end)."""
    text_ = raw if isinstance(raw, str) else ""
    hh, sep, mm = text_.partition(":")
    if sep and hh.isdigit() and mm.isdigit() and len(mm) == 2:
        minute = int(hh) * 60 + int(mm)
        if int(mm) < 60 and minute <= 24 * 60:
            return minute
    raise at.fail(f'expected a time of day as "HH:MM" (in quotes), got {raw!r}')


def _hyperparameters(algorithm: str, raw: Any, at: At) -> dict[str, Any]:
    """The policy's hyperparameters, each one its algorithm's constructor takes."""
    hyperparameters = dict(mapping(raw, at / "hyperparameters", optional=True))
    known_parameters(
        hyperparameters,
        ALGORITHMS[algorithm],
        at / "hyperparameters",
        owner=algorithm,
        skip=_NOT_HYPERPARAMETERS,
        noun="hyperparameter",
        prefix="bad hyperparameters: ",
    )
    return hyperparameters


def _cold_start(
    algorithm: str, hyperparameters: dict[str, Any], p: Mapping[str, Any], at: At
) -> tuple[str, dict[str, Any]]:
    """``algorithm`` with its hyperparameters kept per task type, a new task
    type started from similar ones: the per_task_type algorithm wrapping it."""
    c = mapping(p["cold_start"], at)
    known_keys(c, at, COLD_START_KEYS)
    if algorithm == PerTaskType.algorithm:
        raise at.fail(f"cold_start wraps an algorithm; {algorithm} is already the wrapper")
    if p.get("context", "request") != "request":
        raise at.fail("cold_start reads the task type from the request vector: context: request")
    wrapped: dict[str, Any] = {
        "policy": {"algorithm": algorithm, "hyperparameters": hyperparameters}
    }
    if "context_dim" in hyperparameters:
        wrapped["context_dim"] = hyperparameters["context_dim"]
    if "similar" in c:
        wrapped["similar"] = _similar(c["similar"], at / "similar")
    if "neighbours" in c:
        wrapped["neighbours"] = integer(c["neighbours"], at / "neighbours", lo=1)
    if "prior_strength" in c:
        wrapped["prior_strength"] = number(
            c["prior_strength"], at / "prior_strength", lo=0, lo_open=True
        )
    if "settle_outcomes" in c:
        wrapped["settle_outcomes"] = integer(c["settle_outcomes"], at / "settle_outcomes", lo=1)
    return PerTaskType.algorithm, wrapped


def _similar(raw: Any, at: At) -> str | dict[str, list[str]]:
    """``auto``, ``none``, or ``{new task type: known task type or a list of them}``."""
    if isinstance(raw, str):
        return one_of(raw, at, SIMILAR_MODES, what="similar")
    declared = mapping(raw, at)
    out = {}
    for new, known in declared.items():
        one_of(new, at, TASK_TYPES, what="task type")
        names = [known] if isinstance(known, str) else known
        if not isinstance(names, list) or not names:
            raise (at / new).fail(f"expected a task type or a list of them, got {known!r}")
        out[new] = [
            one_of(t, (at / new).item(i), TASK_TYPES, what="task type") for i, t in enumerate(names)
        ]
    return out


def _terminal_arms(raw: Any, names: list[str], at: At) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise (at / "terminal_arms").fail(f"expected a list of arm names, got {raw!r}")
    stray = [a for a in raw if a not in names]
    if stray:
        raise (at / "terminal_arms").fail(f"episode.terminal_arms {stray} are not arms")
    return tuple(raw)


def _guardrails(raw: Any, names: list[str], at: At) -> Mapping[str, Any]:
    """The ``guardrails:`` mapping, its keys and types checked; the rules
    between them are :meth:`Guardrails.from_config`'s."""
    g = mapping(raw, at, optional=True)
    known_keys(g, at, GUARDRAIL_KEYS, noun="guardrail")
    for key in ("max_explore_priority", "min_pulls"):
        if key in g:
            integer(g[key], at / key, lo=0)
    budget = g.get("exploration_budget")
    if budget is not None:
        known_keys(
            mapping(budget, at / "exploration_budget"), at / "exploration_budget", BUDGET_KEYS
        )
    priors = mapping(g.get("prior_from"), at / "prior_from", optional=True)
    stray = [new for new in priors if new not in names]
    if stray:
        raise (at / "prior_from").fail(f"guardrails.prior_from names unconfigured arms {stray}")
    return g


def _tenants(raw: Any, at: At) -> frozenset[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) and t for t in raw):
        raise at.fail(f"tenants must be a non-empty list of tenant ids, got {raw!r}")
    return frozenset(raw)
