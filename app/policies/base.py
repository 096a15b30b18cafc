"""The contract every policy keeps (docs/architecture.md#the-policy-contract)."""

from __future__ import annotations

import abc
import copy
import inspect
import math
from bisect import bisect_right
from collections.abc import Sequence
from functools import cache
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


class Selection:
    """What a policy chose: the arm, the probability it had of choosing it,
    a score per allowed arm, and whether it departed from its greedy choice.

    ``scores`` and ``probabilities`` are dictionaries by arm. A selection made
    by :func:`drawn_selection` keeps the lists they come from and builds them
    when first read: on a round of a few µs, two dictionaries nobody reads
    would be a large part of the cost."""

    __slots__ = (
        "_names",
        "_probabilities",
        "_probability_values",
        "_score_values",
        "_scores",
        "arm",
        "explored",
        "propensity",
    )
    _names: Sequence[str]
    _score_values: Sequence[float]
    _probability_values: Sequence[float]

    def __init__(
        self,
        arm: str,
        propensity: float,
        scores: dict[str, float],
        explored: bool,
        probabilities: dict[str, float] | None = None,
    ) -> None:
        self.arm = arm
        self.propensity = propensity
        self.explored = explored
        self._scores: dict[str, float] | None = scores
        self._probabilities: dict[str, float] | None = (
            {} if probabilities is None else probabilities
        )

    @property
    def scores(self) -> dict[str, float]:
        if self._scores is None:
            self._scores = dict(zip(self._names, self._score_values, strict=True))
        return self._scores

    @scores.setter
    def scores(self, value: dict[str, float]) -> None:
        self._scores = value

    @property
    def probabilities(self) -> dict[str, float]:
        if self._probabilities is None:
            self._probabilities = dict(zip(self._names, self._probability_values, strict=True))
        return self._probabilities

    @probabilities.setter
    def probabilities(self, value: dict[str, float]) -> None:
        self._probabilities = value

    def _fields(self) -> tuple[Any, ...]:
        return (self.arm, self.propensity, self.scores, self.explored, self.probabilities)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selection):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"Selection(arm={self.arm!r}, propensity={self.propensity!r}, "
            f"scores={self.scores!r}, explored={self.explored!r}, "
            f"probabilities={self.probabilities!r})"
        )


_new = object.__new__  # a Selection without running __init__


def drawn_selection(
    arm: str,
    propensity: float,
    explored: bool,
    names: Sequence[str],
    scores: Sequence[float],
    probabilities: Sequence[float],
) -> Selection:
    """A :class:`Selection` whose dictionaries are built from ``names`` and
    the values in the same order when first read; the caller never changes
    the three sequences afterwards."""
    selection: Selection = _new(Selection)
    selection.arm = arm
    selection.propensity = propensity
    selection.explored = explored
    selection._scores = selection._probabilities = None
    selection._names = names
    selection._score_values = scores
    selection._probability_values = probabilities
    return selection


def weighted_draw(rng: np.random.Generator, cumulative: Sequence[float]) -> int:
    """A position drawn with probability proportional to its weight, from the
    running sums of the weights: one uniform draw and a bisection."""
    # bisect_right: a weight of 0 (an empty interval) is never drawn, not even at u == 0.
    return min(bisect_right(cumulative, rng.random() * cumulative[-1]), len(cumulative) - 1)


def draw_selection(
    rng: np.random.Generator,
    names: Sequence[str],
    scores: list[float],
    probabilities: list[float],
    *,
    greedy: int | None = None,
    cumulative: Sequence[float] | None = None,
) -> Selection:
    """An arm drawn from ``probabilities`` (one per name), as the
    :class:`Selection` that logs its probability and whether it departs from
    ``greedy`` (the position of the highest score unless given).
    ``cumulative``, when given, are the running sums of the weights the draw
    is made with instead: cached ones, or those of a mixture's component."""
    if greedy is None:
        greedy = max(range(len(names)), key=scores.__getitem__)
    if cumulative is None:
        cumulative = list(accumulate(probabilities))
    choice = weighted_draw(rng, cumulative)
    return Selection(
        arm=names[choice],
        propensity=probabilities[choice],
        scores=dict(zip(names, scores, strict=True)),
        explored=choice != greedy,
        probabilities=dict(zip(names, probabilities, strict=True)),
    )


_NOT_HYPERPARAMETERS = {"self", "arms", "seed"}
_PLACEHOLDER = "\x00adapting"  # holds a lone arm's place while it is rebuilt


@cache
def _hyperparameter_names(cls: type[Policy]) -> tuple[str, ...]:
    """The parameters of ``cls``'s constructor after ``arms`` and ``seed``."""
    return tuple(
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in _NOT_HYPERPARAMETERS
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


def _plain(value: Any) -> Any:
    """A hyperparameter as a snapshot keeps it: a tuple as a list, anything
    else a copy (so that no caller can change the live policy's)."""
    return list(value) if isinstance(value, tuple) else copy.deepcopy(value)


class Policy(abc.ABC):
    """Select an arm from the allowed ones, learn from (arm, reward), and
    round-trip through bytes. Subclasses keep hyperparameters under their
    constructor names (which is how :meth:`_params` finds them) and learned
    state ``_``-prefixed."""

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

    def has_arm(self, arm: str) -> bool:
        """Whether ``arm`` is one of :attr:`arms` (without copying them)."""
        return arm in self._index

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
            return draw_selection(self._rng, names, scores, probs, greedy=greedy)
        probs = [0.0] * len(names)
        probs[greedy] = 1.0
        return Selection(
            arm=names[greedy],
            propensity=1.0,
            scores=dict(zip(names, scores, strict=True)),
            explored=False,
            probabilities=dict(zip(names, probs, strict=True)),
        )

    # -- learning ------------------------------------------------------------
    def update(
        self, arm: str, reward: float, context: Any = None, *, propensity: float | None = None
    ) -> None:
        """Learn from a reward. ``propensity``, when known, is the logged
        probability the arm was chosen with; importance-weighted learners
        (Exp3) use it, the others ignore it."""
        i = self._index.get(arm)
        if i is None:
            i = self.index_of(arm)  # raises UnknownArmError
        # ``type(x) is float`` first: the common case, cheaper than isinstance.
        if type(reward) is not float and not isinstance(reward, int | float):
            raise InvalidRewardError(f"reward must be a finite number, got {reward!r}")
        if not math.isfinite(reward):
            raise InvalidRewardError(f"reward must be a finite number, got {reward!r}")
        if propensity is not None and not (
            (type(propensity) is float or isinstance(propensity, int | float))
            and 0.0 < propensity <= 1.0
        ):
            raise PolicyError(f"propensity must be in (0, 1], got {propensity!r}")
        self._logged_propensity = propensity
        try:
            self._update(i, reward if type(reward) is float else float(reward), context)
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

    # -- forgetting (after a drift, say) ---------------------------------------
    def reset(self) -> None:
        """Forget everything learnt, keeping the arms and hyperparameters: the
        policy decides from now on as a new one built with them and its seed."""
        fresh = type(self)(self._arms, seed=self.seed, **self._params())
        vars(self).clear()
        vars(self).update(vars(fresh))

    def reset_arm(self, arm: str) -> bool:
        """Forget what was learnt about ``arm``. Returns ``True`` when the
        policy resets it in place (its place and its pulls kept). By default
        it is rebuilt instead, and ``False`` returned: removed and added again,
        so it starts from the prior with no pulls and moves to the end of
        :attr:`arms` (decisions address arms by name, so only tie-breaking
        order can change); a lone arm is rebuilt with a placeholder arm held
        in between."""
        self.index_of(arm)
        lone = len(self._arms) == 1
        if lone:
            self.add_arm(_PLACEHOLDER)
        self.remove_arm(arm)
        self.add_arm(arm)
        if lone:
            self.remove_arm(_PLACEHOLDER)
        return False

    def arm_evidence(self, arm: str) -> dict[str, float]:
        """The figures of the evidence about ``arm`` that
        :meth:`discount_evidence` and :meth:`shrink_evidence` act on, by name
        (none by default: the policy keeps no per-arm evidence of that kind)."""
        self.index_of(arm)
        return {}

    def discount_evidence(self, arm: str, factor: float) -> bool:
        """Keep ``factor`` of the evidence about ``arm``, pulled toward the
        prior: each figure of :meth:`arm_evidence` becomes
        ``prior + factor · (value − prior)``; estimates are kept. Returns
        ``False``, having changed nothing, when there is no such evidence."""
        self.index_of(arm)
        return False

    def shrink_evidence(self, arm: str, factor: float) -> bool:
        """Make ``arm`` uncertain again without moving its estimate: keep
        ``factor`` of its evidence, but no less uncertainty than the prior's.
        Returns ``False``, having changed nothing, when there is no such
        evidence."""
        self.index_of(arm)
        return False

    # -- persistence ---------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        """The hyperparameters: each parameter of the constructor after
        ``arms`` and ``seed``, read from the attribute of the same name."""
        return {name: _plain(getattr(self, name)) for name in _hyperparameter_names(type(self))}

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
