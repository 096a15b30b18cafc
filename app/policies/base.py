"""The contract every policy keeps (ARCHITECTURE.md §4)."""

from __future__ import annotations

import abc
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, ClassVar

import numpy as np
import orjson


class PolicyError(ValueError):
    """Base of the policy errors: bad arm, bad reward, bad snapshot."""


class UnknownArmError(PolicyError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class InvalidRewardError(PolicyError):
    pass


class SnapshotError(PolicyError):
    pass


class ContextError(PolicyError):
    """A context of the wrong shape, or with non-finite values."""


@dataclass(slots=True)
class Selection:
    """What a policy chose: the arm, the probability it had of choosing it,
    a score per allowed arm, and whether it departed from its greedy choice."""

    arm: str
    propensity: float
    scores: dict[str, float]
    explored: bool
    probabilities: dict[str, float] = field(default_factory=dict)


class Policy(abc.ABC):
    """Select an arm from the allowed ones, learn from (arm, reward), and
    round-trip through bytes. Subclasses keep hyperparameters under their
    constructor names and learned state ``_``-prefixed."""

    algorithm: ClassVar[str]
    snapshot_format: ClassVar[int] = 1
    # Contextual policies take ``context_dim`` and need a context of that
    # length in select/update; the others ignore any context.
    contextual: ClassVar[bool] = False
    # Small, fast hyperparameters for the generic contract tests.
    example_params: ClassVar[dict[str, Any]] = {}

    @classmethod
    def contextual_for(cls, hyperparameters: dict[str, Any]) -> bool:
        """Whether a policy built with these hyperparameters needs a context
        (a meta-policy's answer depends on its candidates)."""
        return cls.contextual

    def __init__(self, arms: Sequence[str], seed: int | None = None) -> None:
        if not arms:
            raise PolicyError("a policy needs at least one arm")
        if len(set(arms)) != len(arms):
            raise PolicyError(f"duplicate arm names in {list(arms)}")
        self.seed = seed
        self._arms: list[str] = list(arms)
        self._index = {a: i for i, a in enumerate(self._arms)}
        self._rng = np.random.default_rng(seed)
        # The logged propensity of the outcome being learnt from, during update().
        self._logged_propensity: float | None = None

    # -- arms ---------------------------------------------------------------
    @property
    def arms(self) -> list[str]:
        return list(self._arms)

    def index_of(self, arm: str) -> int:
        try:
            return self._index[arm]
        except KeyError:
            raise UnknownArmError(f"unknown arm {arm!r}; arms are {self._arms}") from None

    def allowed_indices(self, allowed: Sequence[str] | None) -> np.ndarray:
        if allowed is None:
            return np.arange(len(self._arms))
        if not allowed:
            raise PolicyError("the allowed arm set is empty")
        idx = np.fromiter((self.index_of(a) for a in allowed), dtype=np.intp, count=len(allowed))
        if len(set(allowed)) != len(allowed):
            # A repeated arm would split its probability between its copies.
            raise PolicyError(f"the allowed arms repeat a name: {list(allowed)}")
        return idx

    def add_arm(self, arm: str, prior_from: str | None = None) -> None:
        if arm in self._index:
            raise PolicyError(f"arm {arm!r} already exists")
        source = self.index_of(prior_from) if prior_from is not None else None
        self._arms.append(arm)
        self._index[arm] = len(self._arms) - 1
        self._grow(source)

    def remove_arm(self, arm: str) -> None:
        i = self.index_of(arm)
        if len(self._arms) == 1:
            raise PolicyError("cannot remove the last arm")
        del self._arms[i]
        self._index = {a: j for j, a in enumerate(self._arms)}
        self._shrink(i)

    @abc.abstractmethod
    def _grow(self, prior_from: int | None) -> None:
        """Append state for a new arm (copied from ``prior_from`` if given)."""

    @abc.abstractmethod
    def _shrink(self, index: int) -> None:
        """Drop the state of the arm at ``index``."""

    # -- decisions -----------------------------------------------------------
    def check_context(self, context: Any) -> np.ndarray | None:
        """The context as a float vector of ``context_dim`` (contextual
        policies), or ``None`` (the others, which ignore it)."""
        if not self.contextual:
            return None
        dim = getattr(self, "context_dim", None)
        if context is None:
            raise ContextError(f"{self.algorithm} needs a context of length {dim}")
        x = np.asarray(context, dtype=float)
        if x.shape != (dim,):
            raise ContextError(
                f"{self.algorithm} needs a context of length {dim}, got shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ContextError("context values must be finite")
        return x

    @abc.abstractmethod
    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        """The probability of choosing each allowed arm (in ``allowed`` order)."""

    @abc.abstractmethod
    def scores(self, allowed: Sequence[str] | None = None, context: Any = None) -> np.ndarray:
        """The policy's value estimate of each allowed arm."""

    def select(
        self, context: Any = None, allowed: Sequence[str] | None = None, explore: bool = True
    ) -> Selection:
        # Plain lists over the few arms: numpy's per-call overhead would
        # dominate (a round is a few µs).
        names = list(allowed) if allowed is not None else self._arms
        scores = self.scores(names, context).tolist()
        greedy = max(range(len(names)), key=scores.__getitem__)
        if explore:
            probs = self.probabilities(names, context).tolist()
            # bisect_right over the cumulative sums: an arm of probability 0
            # (an empty interval) can never be chosen, not even at u == 0.
            cum = list(accumulate(probs))
            choice = min(bisect_right(cum, self._rng.random() * cum[-1]), len(names) - 1)
        else:
            probs = [0.0] * len(names)
            probs[greedy] = 1.0
            choice = greedy
        return Selection(
            arm=names[choice],
            propensity=probs[choice],
            scores=dict(zip(names, scores, strict=True)),
            explored=choice != greedy,
            probabilities=dict(zip(names, probs, strict=True)),
        )

    # -- learning ------------------------------------------------------------
    def update(
        self, arm: str, reward: float, context: Any = None, *, propensity: float | None = None
    ) -> None:
        """Learn from a reward. ``propensity``, when known, is the logged
        probability the arm was chosen with; importance-weighted learners
        (Exp3) use it, the others ignore it."""
        i = self.index_of(arm)
        if not isinstance(reward, int | float) or not math.isfinite(reward):
            raise InvalidRewardError(f"reward must be a finite number, got {reward!r}")
        if propensity is not None and not (
            isinstance(propensity, int | float) and 0.0 < propensity <= 1.0
        ):
            raise PolicyError(f"propensity must be in (0, 1], got {propensity!r}")
        self._logged_propensity = propensity
        try:
            self._update(i, float(reward), context)
        finally:
            self._logged_propensity = None

    @abc.abstractmethod
    def _update(self, index: int, reward: float, context: Any) -> None: ...

    @abc.abstractmethod
    def stats(self) -> dict[str, dict[str, float]]:
        """Per-arm summary: pulls, mean reward and the algorithm's own figures."""

    def explain(self, selection: Selection) -> str:
        ranked = sorted(selection.scores.items(), key=lambda kv: -kv[1])
        lines = [
            f"{self.algorithm} chose {selection.arm!r} with probability "
            f"{selection.propensity:.3f}" + (" (exploring)" if selection.explored else ""),
        ]
        stats = self.stats()
        for arm, score in ranked:
            s = stats.get(arm, {})
            lines.append(
                f"  {arm}: score {score:.4f}, p={selection.probabilities.get(arm, 0.0):.3f}, "
                f"pulls {s.get('pulls', 0):.0f}"
            )
        return "\n".join(lines)

    # -- persistence ---------------------------------------------------------
    @abc.abstractmethod
    def _params(self) -> dict[str, Any]: ...

    def set_params(self, **params: Any) -> None:
        """Change hyperparameters of a live policy (e.g. a restored one whose
        config changed); learned state is kept."""
        known = self._params()
        unknown = set(params) - set(known)
        if unknown:
            raise PolicyError(f"{self.algorithm} has no hyperparameter(s) {sorted(unknown)}")
        # Validate by construction before touching the live policy.
        extra = {"context_dim": self.context_dim} if self.contextual else {}  # type: ignore[attr-defined]
        type(self)(self._arms, seed=self.seed, **{**extra, **known, **params})
        for name, value in params.items():
            setattr(self, name, value)
        self._params_changed()

    def _params_changed(self) -> None:  # noqa: B027 - an optional hook
        """Hook: drop whatever was derived from the old hyperparameters."""

    @abc.abstractmethod
    def _get_state(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _set_state(self, state: dict[str, Any]) -> None: ...

    def snapshot(self) -> bytes:
        rng_state = self._rng.bit_generator.state
        return orjson.dumps(
            {
                "algorithm": self.algorithm,
                "format": self.snapshot_format,
                "arms": self._arms,
                "seed": self.seed,
                "params": self._params(),
                "state": self._get_state(),
                # 128-bit generator words do not fit JSON numbers: keep them as text.
                "rng": {k: str(v) for k, v in rng_state["state"].items()}
                | {"has_uint32": rng_state["has_uint32"], "uinteger": rng_state["uinteger"]},
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )

    @classmethod
    def restore(cls, data: bytes) -> Policy:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SnapshotError(f"snapshot is not valid JSON: {exc}") from None
        if doc.get("algorithm") != cls.algorithm:
            raise SnapshotError(f"snapshot holds {doc.get('algorithm')!r}, not {cls.algorithm!r}")
        if doc.get("format") != cls.snapshot_format:
            raise SnapshotError(
                f"snapshot format {doc.get('format')!r} is not {cls.snapshot_format} "
                f"(written by another version of {cls.__name__})"
            )
        policy = cls(doc["arms"], seed=doc["seed"], **doc["params"])
        policy._set_state(doc["state"])
        rng = doc["rng"]
        policy._rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(rng["state"]), "inc": int(rng["inc"])},
            "has_uint32": rng["has_uint32"],
            "uinteger": rng["uinteger"],
        }
        return policy
