"""Policies configured per ``policy_id`` in a YAML file (config/policies.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app.features.request_vector import RequestVectorizer
from app.policies.base import Policy
from app.policies.guardrails import GuardrailError, Guardrails, reconcile_arms
from app.policies.registry import algorithms
from app.rewards import RewardSpec

ALGORITHMS: dict[str, type[Policy]] = algorithms()


CONTEXTS = ("request", "workflow")


class PolicyConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Arm:
    """A named configuration: a model and its call parameters."""

    name: str
    model: str
    parameters: dict[str, Any]


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
    def load(cls, path: Path | str) -> PoliciesConfig:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise PolicyConfigError(f"policies file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise PolicyConfigError(f"policies file {path} is not valid YAML: {exc}") from None
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str = "<dict>") -> PoliciesConfig:
        if not isinstance(doc, dict) or not isinstance(doc.get("policies"), dict):
            raise PolicyConfigError(f"{source}: expected a mapping with a 'policies' mapping")
        policies = {pid: _policy(pid, p, source) for pid, p in doc["policies"].items()}
        default = doc.get("default_policy", next(iter(policies), ""))
        if default not in policies:
            raise PolicyConfigError(f"{source}: default_policy {default!r} is not defined")
        return cls(default_policy=default, policies=policies)


def _policy(pid: str, p: dict[str, Any], source: str) -> PolicyConfig:
    where = f"{source}: policy {pid!r}"
    algorithm = p.get("algorithm")
    if algorithm not in ALGORITHMS:
        raise PolicyConfigError(
            f"{where}: unknown algorithm {algorithm!r}; known: {sorted(ALGORITHMS)}"
        )
    raw_arms = p.get("arms") or []
    if not raw_arms:
        raise PolicyConfigError(f"{where}: needs at least one arm")
    try:
        arms = tuple(
            Arm(
                name=str(a["name"]), model=str(a["model"]), parameters=dict(a.get("parameters", {}))
            )
            for a in raw_arms
        )
    except (KeyError, TypeError) as exc:
        raise PolicyConfigError(f"{where}: each arm needs a name and a model ({exc})") from None
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise PolicyConfigError(f"{where}: duplicate arm names")
    r = p.get("reward", {})
    weights = r.get("weights", {})
    try:
        reward = RewardSpec(
            quality_weight=float(weights.get("quality", 0.6)),
            cost_weight=float(weights.get("cost", 0.25)),
            latency_weight=float(weights.get("latency", 0.15)),
            feedback_weight=float(weights.get("feedback", 0.0)),
            cost_scale_usd=float(r.get("cost_scale_usd", 0.02)),
            latency_scale_ms=float(r.get("latency_scale_ms", 8000)),
            error_reward=float(r.get("error_reward", 0.0)),
            wait_seconds=float(r.get("wait_seconds", 30)),
            default_reward=float(r.get("default_reward", 0.0)),
        )
    except ValueError as exc:
        raise PolicyConfigError(f"{where}: reward: {exc}") from None
    fallback = p.get("fallback_arm", names[0])
    if fallback not in names:
        raise PolicyConfigError(f"{where}: fallback_arm {fallback!r} is not one of its arms")
    snap = p.get("snapshot", {})
    hyperparameters = dict(p.get("hyperparameters", {}))
    context = p.get("context", "request")
    if context not in CONTEXTS:
        raise PolicyConfigError(f"{where}: context must be one of {CONTEXTS}, got {context!r}")
    contextual = ALGORITHMS[algorithm].contextual_for(hyperparameters)
    if context == "workflow":
        if not contextual or "context_dim" not in hyperparameters:
            raise PolicyConfigError(
                f"{where}: context: workflow needs a contextual algorithm and its "
                "hyperparameters.context_dim (the length of the workflow state)"
            )
    elif contextual:
        # Contextual policies see the request's engineered feature vector,
        # plus the feature spec's columns when the spec says policy_vector
        # (the decider checks the length against the configured extractor).
        dim = hyperparameters.setdefault("context_dim", RequestVectorizer.dim)
        if not isinstance(dim, int) or dim < RequestVectorizer.dim:
            raise PolicyConfigError(
                f"{where}: context_dim {dim} is below the request vector's "
                f"{RequestVectorizer.dim} features"
            )
    episode = dict(p.get("episode") or {})
    terminal = tuple(str(a) for a in episode.get("terminal_arms", ()))
    stray_terminal = [a for a in terminal if a not in names]
    if stray_terminal:
        raise PolicyConfigError(f"{where}: episode.terminal_arms {stray_terminal} are not arms")
    timeout_s = float(episode.get("timeout_seconds", 600))
    if not timeout_s > 0:
        raise PolicyConfigError(f"{where}: episode.timeout_seconds must be positive")
    raw_guardrails = dict(p.get("guardrails") or {})
    try:
        guardrails = Guardrails.from_config(raw_guardrails)
    except GuardrailError as exc:
        raise PolicyConfigError(f"{where}: guardrails: {exc}") from None
    stray = [a for a in guardrails.prior_from if a not in names]
    if stray:
        raise PolicyConfigError(f"{where}: guardrails.prior_from names unconfigured arms {stray}")
    config = PolicyConfig(
        policy_id=pid,
        algorithm=algorithm,
        arms=arms,
        hyperparameters=hyperparameters,
        reward=reward,
        max_explore_priority=guardrails.max_explore_priority,
        guardrails=raw_guardrails,
        fallback_arm=fallback,
        snapshot_every_updates=int(snap.get("every_updates", 100)),
        snapshot_every_ms=int(snap.get("every_ms", 250)),
        seed=int(p.get("seed", 0)),
        context=context,
        terminal_arms=terminal,
        episode_timeout_ms=int(timeout_s * 1000),
        tenants=_tenants(where, p.get("tenants")),
    )
    try:
        config.build()
    except (TypeError, ValueError) as exc:
        raise PolicyConfigError(f"{where}: bad hyperparameters: {exc}") from None
    return config


def _tenants(where: str, raw: Any) -> frozenset[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) and t for t in raw):
        raise PolicyConfigError(f"{where}: tenants must be a non-empty list of tenant ids")
    return frozenset(raw)
