"""What an experiment or rollout is: its policy, variants, split key,
shares or stages, metrics and alpha, read strictly from a mapping (a YAML
file, flags, or the ``definition`` of a ``created`` event)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.config_schema import At, ConfigError, boolean, integer, known_keys, mapping, number, text
from app.experiments.experiment import Experiment
from app.experiments.metric import Metric
from app.experiments.traffic_split import TrafficSplit

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
TOP_KEYS = (
    "id",
    "policy",
    "variants",
    "split_key",
    "shares",
    "stages",
    "metrics",
    "alpha",
    "tuning_n",
    "min_samples",
)
GUARDRAILS = ("cost_usd", "latency_ms")
"""Metrics besides the reward, read from an outcome's components: lower is better."""
DEFAULT_REWARD_MARGIN = 0.02
"""How much worse (in reward, which is in [0, 1]) a challenger may be and
still pass its gate: with no margin a challenger equal to the champion could
never be shown non-inferior."""


class DefinitionError(ConfigError):
    """An experiment definition that cannot run."""


@dataclass(frozen=True)
class Variant:
    """One arm of the experiment: a configured ``policy`` decides for it, or
    it always serves the fixed ``arm`` (an arm of the experiment's policy)."""

    name: str
    policy: str | None = None
    arm: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return (
            {"name": self.name, "policy": self.policy}
            if self.policy
            else {
                "name": self.name,
                "arm": self.arm,
            }
        )


@dataclass(frozen=True)
class ExperimentDefinition:
    """An experiment (``shares``: fixed traffic shares of two or more
    variants) or a rollout (``stages``: the challenger's share in percent,
    stage by stage, ending at 100; exactly two variants, champion first).

    The first variant is the control (the champion). ``split_key`` is
    ``tenant`` or the name of a request metadata field (``user_id``) whose
    value a request is assigned by.

    >>> d = ExperimentDefinition.from_mapping({"id": "r1", "policy": "p",
    ...     "variants": [{"name": "champion", "policy": "p"}, {"name": "challenger", "arm": "b"}],
    ...     "stages": [5, 50, 100]})
    >>> d.rollout, d.stage_shares(1), d.statistics_alpha
    (True, {'champion': 0.5, 'challenger': 0.5}, 0.025)
    """

    experiment_id: str
    policy: str
    variants: tuple[Variant, ...]
    split_key: str = "tenant"
    shares: tuple[float, ...] | None = None
    stages: tuple[float, ...] | None = None
    metrics: tuple[Metric, ...] = ()
    alpha: float = 0.05
    tuning_n: int = 10_000
    min_samples: int = 100

    @property
    def rollout(self) -> bool:
        return self.stages is not None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    @property
    def control(self) -> str:
        return self.variants[0].name

    @property
    def challenger(self) -> Variant:
        """A rollout's second variant."""
        return self.variants[1]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def last_stage(self) -> int:
        return len(self.stages) - 1 if self.stages is not None else 0

    def stage_shares(self, stage: int) -> dict[str, float]:
        """Every variant's share of the traffic at ``stage`` (an experiment
        has one stage, 0)."""
        if self.stages is None:
            assert self.shares is not None
            return dict(zip(self.names, self.shares, strict=True))
        treated = self.stages[stage] / 100
        return {self.control: 1.0 - treated, self.challenger.name: treated}

    def split(self, shares: Mapping[str, float]) -> TrafficSplit:
        """The sticky split of these shares; the control gets the rest."""
        return TrafficSplit(
            self.experiment_id,
            self.control,
            {v: float(shares.get(v, 0.0)) for v in self.names[1:]},
        )

    @property
    def statistics_alpha(self) -> float:
        """The level of each stage's test. A rollout's stages test fresh
        data one after another, each may roll a good challenger back
        wrongly; Bonferroni over its stages keeps that chance ≤ ``alpha``
        for the whole rollout."""
        return self.alpha / (len(self.stages) - 1 if self.stages and len(self.stages) > 1 else 1)

    def statistics(self) -> Experiment:
        """Fresh statistics for one stage (the shares must not change while
        one Experiment runs: docs/experiments.md#the-confidence-sequence)."""
        return Experiment(
            list(self.names),
            list(self.metrics),
            alpha=self.statistics_alpha,
            tuning_n=self.tuning_n,
            min_samples=self.min_samples,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.experiment_id,
            "policy": self.policy,
            "variants": [v.to_dict() for v in self.variants],
            "split_key": self.split_key,
        }
        if self.stages is not None:
            d["stages"] = list(self.stages)
        else:
            assert self.shares is not None
            d["shares"] = dict(zip(self.names, self.shares, strict=True))
        metrics: dict[str, Any] = {}
        for m in self.metrics:
            metrics[m.name] = {"margin": m.margin, "relative": m.relative_margin}
        d.update(
            metrics=metrics, alpha=self.alpha, tuning_n=self.tuning_n, min_samples=self.min_samples
        )
        return d

    @classmethod
    def from_mapping(cls, doc: Any, source: str = "experiment") -> ExperimentDefinition:
        """Read and check a definition; an unknown key, a wrong type or a
        value out of range is a :class:`DefinitionError` naming it."""
        at = At(source, error=DefinitionError)
        d = mapping(doc, at)
        known_keys(d, at, TOP_KEYS)
        for key in ("id", "policy", "variants"):
            if key not in d:
                raise (at / key).fail(f"'{key}' is required")
        experiment_id = _name(d["id"], at / "id", 128)
        policy = text(d["policy"], at / "policy")
        variants = _variants(d["variants"], at / "variants")
        split_key = text(d.get("split_key", "tenant"), at / "split_key")
        names = [v.name for v in variants]
        stages = shares = None
        if "stages" in d and "shares" in d:
            raise at.fail("give either stages (a rollout) or shares (an experiment), not both")
        if "stages" in d:
            stages = _stages(d["stages"], at / "stages")
            if len(variants) != 2:
                raise (at / "variants").fail(
                    f"a rollout has exactly two variants (champion, challenger), got {len(names)}"
                )
        else:
            shares = _shares(d.get("shares"), names, at / "shares")
        alpha = number(d.get("alpha", 0.05), at / "alpha", 0, 0.5, lo_open=True)
        return cls(
            experiment_id=experiment_id,
            policy=policy,
            variants=variants,
            split_key=split_key,
            shares=shares,
            stages=stages,
            metrics=_metrics(d.get("metrics"), at / "metrics"),
            alpha=alpha,
            tuning_n=integer(d.get("tuning_n", 10_000), at / "tuning_n", 2, 10**9),
            min_samples=integer(d.get("min_samples", 100), at / "min_samples", 2, 10**9),
        )

    def check_policies(self, policies: Any, source: str = "experiment") -> None:
        """Refuse a policy or arm the policies config (a PoliciesConfig) does not have."""
        at = At(source, error=DefinitionError)
        pc = policies.get(self.policy)
        if pc is None:
            raise (at / "policy").fail(
                f"unknown policy {self.policy!r}; known: {', '.join(sorted(policies.policies))}"
            )
        for i, v in enumerate(self.variants):
            if v.policy is not None and policies.get(v.policy) is None:
                raise (at / "variants").item(i).fail(f"unknown policy {v.policy!r}")
            if v.arm is not None and v.arm not in pc.arm_names:
                raise (
                    (at / "variants")
                    .item(i)
                    .fail(
                        f"{v.arm!r} is not an arm of policy {self.policy!r}; "
                        f"its arms: {', '.join(pc.arm_names)}"
                    )
                )


def _name(value: Any, at: At, max_len: int) -> str:
    s = text(value, at)
    if len(s) > max_len or not NAME.fullmatch(s):
        raise at.fail(
            f"must be letters, digits, '.', '_' or '-' (at most {max_len}, no '/'), got {s!r}"
        )
    return s


def _variants(value: Any, at: At) -> tuple[Variant, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise at.fail("must be a list of two or more variants, the control first")
    out = []
    for i, item in enumerate(value):
        vat = at.item(i)
        v = mapping(item, vat)
        known_keys(v, vat, ("name", "policy", "arm"))
        if "name" not in v:
            raise (vat / "name").fail("'name' is required")
        if ("policy" in v) == ("arm" in v):
            raise vat.fail("give a variant either a policy or a fixed arm")
        name = _name(v["name"], vat / "name", 64)
        if "policy" in v:
            out.append(Variant(name, policy=text(v["policy"], vat / "policy")))
        else:
            out.append(Variant(name, arm=text(v["arm"], vat / "arm")))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise at.fail(f"variant names must be distinct, got {names}")
    return tuple(out)


def _stages(value: Any, at: At) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise at.fail("must be a list of the challenger's shares in percent, ending at 100")
    stages = tuple(number(x, at.item(i), 0, 100, lo_open=True) for i, x in enumerate(value))
    if any(b <= a for a, b in itertools.pairwise(stages)):
        raise at.fail(f"must rise stage by stage, got {list(stages)}")
    if stages[-1] != 100:
        raise at.fail(f"must end at 100 (the promotion), got {list(stages)}")
    if len(stages) < 2:
        raise at.fail("needs a stage below 100 to test the challenger at")
    return stages


def _shares(value: Any, names: list[str], at: At) -> tuple[float, ...]:
    if value is None:
        return tuple(1.0 / len(names) for _ in names)
    d = mapping(value, at)
    known_keys(d, at, names, noun="variant")
    shares = tuple(number(d.get(n, 0.0), at / n, 0, 1) for n in names)
    if abs(sum(shares) - 1.0) > 1e-9:
        raise at.fail(f"must add up to 1, got {sum(shares):g}")
    if shares[0] <= 0:
        raise (at / names[0]).fail("the control needs a share above 0")
    return shares


def _metrics(value: Any, at: At) -> tuple[Metric, ...]:
    d = mapping(value, at, optional=True)
    known_keys(d, at, ("reward", *GUARDRAILS), noun="metric")
    out = []
    for name in ("reward", *GUARDRAILS):
        if name not in d and name != "reward":
            continue
        mat = at / name
        m = mapping(d.get(name), mat, optional=True)
        known_keys(m, mat, ("margin", "relative"))
        relative = boolean(m.get("relative", name != "reward"), mat / "relative")
        default = DEFAULT_REWARD_MARGIN if name == "reward" else 0.1
        margin = number(m.get("margin", default), mat / "margin", 0, 1e9)
        if name == "reward":
            out.append(Metric("reward", True, margin, relative, bounds=(0.0, 1.0)))
        else:
            out.append(Metric(name, False, margin, relative))
    return tuple(out)
