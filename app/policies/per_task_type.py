"""One policy per task type; a new task type starts from the most similar known ones."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import orjson

from app.features.request_vector import FEATURE_NAMES, TASK_TYPES, RequestVectorizer
from app.policies.base import Policy, PolicyError, SnapshotError
from app.policies.cold_start import copy_of, nearest, pooled, shrunk

_TASK_OFFSET = FEATURE_NAMES.index(f"task_{TASK_TYPES[0]}")
# What says what a task type is like: its requests' size and priority, and any
# feature-spec column after the request vector. The bias says nothing, and the
# hour and weekday say when a task type appeared, not what it is.
_DESCRIPTIVE = (FEATURE_NAMES.index("log_input_tokens"), FEATURE_NAMES.index("priority"))
SIMILAR_MODES = ("auto", "none")
DEFAULT_POLICY: dict[str, Any] = {"algorithm": "thompson_sampling", "hyperparameters": {}}


class PerTaskType(Policy):
    """Keeps one policy of the wrapped ``policy`` (an algorithm and its
    hyperparameters) per task type, read from the request vector's one-hot
    ``task_*`` columns (``app/features/request_vector.py``; unknown task types
    share ``other``), and decides and learns each request with its task
    type's policy: the logged propensity is that policy's probability, drawn
    with this policy's generator.

    **Cold start.** A task type with no state yet decides from a prior made
    of the most similar task types that have one (app/policies/cold_start.py):
    their states pooled and each arm's evidence shrunk to at most
    ``prior_strength`` pulls. Which ones:

    - ``similar: auto`` — the ``neighbours`` task types whose mean request
      features (size and priority, and the feature spec's extra columns)
      are nearest. A new task type's own mean is that of its first
      ``settle_outcomes`` outcomes (before any, the request's own
      features): until then its prior is chosen again at every outcome and
      those outcomes are replayed on it, after which its state is its own;
    - ``similar: {new: known, ...}`` (a name or a list) — the declared
      ones, once they have a state; a task type not named starts from the
      algorithm's prior;
    - ``similar: none`` — every task type starts from the algorithm's prior.

    The prior is a function of this policy's state, so a decider holding a
    snapshot decides from the prior the learner would build from it: the
    propensity stays exact. Learning is in the order of the outcomes (a prior
    is taken from the state at that time): single writer.

    >>> import numpy as np
    >>> from app.features.request_vector import FEATURE_NAMES
    >>> def req(task, size):
    ...     x = np.zeros(len(FEATURE_NAMES)); x[0] = 1.0; x[1] = size
    ...     x[FEATURE_NAMES.index(f"task_{task}")] = 1.0
    ...     return x
    >>> p = PerTaskType(["a", "b"], seed=1, neighbours=1, prior_strength=10.0)
    >>> for _ in range(300):
    ...     p.update("a", 1.0, req("qa", 0.4)); p.update("b", 0.0, req("qa", 0.4))
    ...     p.update("a", 0.0, req("code", 0.9)); p.update("b", 1.0, req("code", 0.9))
    >>> p.neighbours_of("chat", req("chat", 0.45))
    ['qa']
    >>> p.select(req("chat", 0.45), explore=False).arm
    'a'
    """

    algorithm = "per_task_type"
    contextual = True
    example_params: ClassVar[dict[str, Any]] = {
        "policy": {"algorithm": "thompson_sampling", "hyperparameters": {"propensity_samples": 0}},
        "prior_strength": 10.0,
        "settle_outcomes": 3,
    }

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        policy: Mapping[str, Any] | None = None,
        similar: str | Mapping[str, str | Sequence[str]] = "auto",
        neighbours: int = 2,
        prior_strength: float = 50.0,
        settle_outcomes: int = 20,
        context_dim: int = RequestVectorizer.dim,
    ) -> None:
        super().__init__(arms, seed)
        self.policy = _normalise(policy)
        self.similar = copy.deepcopy(similar)
        self.neighbours = neighbours
        self.prior_strength = prior_strength
        self.settle_outcomes = settle_outcomes
        self.context_dim = context_dim
        self._check()
        self._built_with = (copy.deepcopy(self.policy), context_dim)
        self._segments: dict[str, Policy] = {}
        self._origin: dict[str, list[str]] = {}  # the task types each one started from
        self._settling: dict[str, list[list[Any]]] = {}  # [arm, reward, context, propensity]
        self._feature_n: dict[str, int] = {}
        self._feature_sum: dict[str, list[float]] = {}
        self._pulls = np.zeros(len(self._arms))
        self._reward_sum = np.zeros(len(self._arms))
        self._updates = 0
        self._priors: dict[tuple[str, ...], Policy] = {}
        self._effective: dict[str, Policy] = {}

    # -- hyperparameters ---------------------------------------------------------------------
    def _inner_class(self) -> type[Policy]:
        from app.policies.registry import algorithms

        return algorithms()[self.policy["algorithm"]]

    def _check(self) -> None:
        from app.policies.registry import algorithms

        name = self.policy["algorithm"]
        if name == self.algorithm or name not in algorithms():
            raise ValueError(f"policy: {name!r} is not an algorithm this policy can wrap")
        if self._inner_class().contextual_for(self.policy["hyperparameters"]):
            self.policy["hyperparameters"].setdefault("context_dim", self.context_dim)
        if not isinstance(self.context_dim, int) or self.context_dim < RequestVectorizer.dim:
            raise ValueError(
                f"context_dim must be at least the request vector's {RequestVectorizer.dim}"
            )
        self._mapping = _mapping(self.similar)
        if not isinstance(self.neighbours, int) or self.neighbours < 1:
            raise ValueError(f"neighbours must be a positive integer, got {self.neighbours!r}")
        if not isinstance(self.prior_strength, int | float) or not self.prior_strength > 0:
            raise ValueError(f"prior_strength must be above 0, got {self.prior_strength!r}")
        if not isinstance(self.settle_outcomes, int) or self.settle_outcomes < 1:
            raise ValueError(f"settle_outcomes must be at least 1, got {self.settle_outcomes!r}")

    def _params_changed(self) -> None:
        """The wrapped algorithm's new hyperparameters apply to every task
        type's state; another algorithm starts every task type afresh;
        ``context_dim`` cannot change."""
        old_policy, old_dim = self._built_with
        if self.context_dim != old_dim:
            self.context_dim = old_dim
            raise PolicyError(f"{self.algorithm}: context_dim cannot change on a live policy")
        self.policy = _normalise(self.policy)
        self._check()
        if self.policy["algorithm"] != old_policy["algorithm"]:
            self._segments.clear()
            self._origin.clear()
            self._settling.clear()
        else:
            fresh = self._fresh()._params()
            for p in self._segments.values():
                p.set_params(**fresh)
        self._built_with = (copy.deepcopy(self.policy), self.context_dim)
        self._changed()

    # -- task types ----------------------------------------------------------------------------
    def task_of(self, x: np.ndarray) -> str:
        """The task type of a request vector: its largest ``task_*`` column."""
        return TASK_TYPES[int(np.argmax(x[_TASK_OFFSET : _TASK_OFFSET + len(TASK_TYPES)]))]

    def _described(self, x: np.ndarray) -> list[float]:
        return [float(x[i]) for i in _DESCRIPTIVE] + x[RequestVectorizer.dim :].tolist()

    def mean_features(self) -> dict[str, list[float]]:
        """Each task type's mean descriptive features over its outcomes."""
        return {t: [v / self._feature_n[t] for v in sums] for t, sums in self._feature_sum.items()}

    def neighbours_of(self, task: str, x: np.ndarray | None = None) -> list[str]:
        """The task types whose state a new ``task`` starts from (none when
        ``task`` has a state of its own), nearest first; ``x``: the request
        deciding, whose features stand in for a task type not yet seen."""
        if task in self._segments:
            return []
        if self._mapping is not None:
            return [t for t in self._mapping.get(task, ()) if t in self._segments]
        if self.similar == "none" or not self._segments:
            return []
        settling = self._settling.get(task)
        if settling:
            target = np.mean([self._described(np.asarray(o[2])) for o in settling], axis=0)
        elif x is not None:
            target = np.asarray(self._described(x))
        else:
            return []
        means = self.mean_features()
        return nearest(target, {t: means[t] for t in self._segments if t in means}, self.neighbours)

    def origins(self) -> dict[str, list[str]]:
        """The task types each task type's state was started from ([]: the prior)."""
        return {t: list(o) for t, o in self._origin.items()}

    def segment_stats(self) -> dict[str, dict[str, dict[str, float]]]:
        """Each task type's own per-arm stats."""
        return {t: p.stats() for t, p in self._segments.items()}

    # -- the policy a request is decided with --------------------------------------------------
    def _fresh(self) -> Policy:
        return self._inner_class()(self._arms, seed=self.seed, **self.policy["hyperparameters"])

    def _prior(self, neighbours: list[str]) -> Policy:
        key = tuple(neighbours)
        prior = self._priors.get(key)
        if prior is None:
            fresh = self._fresh()
            states = [self._segments[t] for t in neighbours]
            prior = shrunk(pooled(fresh, states), self.prior_strength) if states else fresh
            self._priors[key] = prior
        return prior

    def _replayed(self, task: str, x: np.ndarray | None, extra: list[Any] | None = None) -> Policy:
        """A settling or new task type's policy: its prior with its outcomes so far replayed."""
        outcomes = self._settling.get(task, []) + ([extra] if extra is not None else [])
        prior = self._prior(self.neighbours_of(task, x))
        if not outcomes:
            return prior
        policy = copy_of(prior)
        for arm, reward, ctx, propensity in outcomes:
            if policy.has_arm(arm):
                policy.update(arm, reward, self._inner_context(policy, ctx), propensity=propensity)
        return policy

    def _policy_for(self, x: np.ndarray) -> Policy:
        task = self.task_of(x)
        own = self._segments.get(task)
        if own is not None:
            return own
        if task in self._settling:
            cached = self._effective.get(task)
            if cached is None:
                cached = self._effective[task] = self._replayed(task, None)
            return cached
        return self._prior(self.neighbours_of(task, x))

    @staticmethod
    def _inner_context(policy: Policy, x: Any) -> Any:
        return x if policy.contextual else None

    # -- deciding ------------------------------------------------------------------------------
    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        self.allowed_indices(allowed)
        x = self._x(context)
        policy = self._policy_for(x)
        return policy.probabilities(allowed or self._arms, self._inner_context(policy, x))

    def scores(self, allowed: Sequence[str] | None = None, context: Any = None) -> np.ndarray:
        self.allowed_indices(allowed)
        x = self._x(context)
        policy = self._policy_for(x)
        return policy.scores(allowed or self._arms, self._inner_context(policy, x))

    def _x(self, context: Any) -> np.ndarray:
        x = self.check_context(context)
        assert x is not None  # contextual
        return x

    # -- learning ------------------------------------------------------------------------------
    def _update(self, index: int, reward: float, context: Any) -> None:
        x = self._x(context)
        task = self.task_of(x)
        arm = self._arms[index]
        propensity = self._logged_propensity
        own = self._segments.get(task)
        if own is not None:
            own.update(arm, reward, self._inner_context(own, x), propensity=propensity)
        else:
            outcome = [arm, reward, x.tolist(), propensity]
            # Built before anything changes: a refused reward leaves the state as it was.
            policy = self._replayed(task, x, outcome)
            cold = self._mapping is None and self.similar == "auto" and bool(self._segments)
            settled = len(self._settling.get(task, [])) + 1 >= self.settle_outcomes
            if cold and not settled:
                self._settling.setdefault(task, []).append(outcome)
            else:
                self._origin[task] = self.neighbours_of(task, x)
                self._settling.pop(task, None)
                self._segments[task] = policy  # a copy: it holds this outcome
        described = self._described(x)
        sums = self._feature_sum.setdefault(task, [0.0] * len(described))
        for i, v in enumerate(described):
            sums[i] += v
        self._feature_n[task] = self._feature_n.get(task, 0) + 1
        self._pulls[index] += 1.0
        self._reward_sum[index] += reward
        self._updates += 1
        self._changed()

    def _changed(self) -> None:
        self._priors.clear()
        self._effective.clear()

    # -- forgetting: every task type's state ----------------------------------------------------
    def arm_evidence(self, arm: str) -> dict[str, float]:
        """Per task type (``<task>:<figure>``): its state's evidence, or the
        algorithm's prior's for a task type without one."""
        self.index_of(arm)
        fresh = self._fresh()
        return {
            f"{t}:{k}": v
            for t in TASK_TYPES
            for k, v in self._segments.get(t, fresh).arm_evidence(arm).items()
        }

    def discount_evidence(self, arm: str, factor: float) -> bool:
        self.index_of(arm)
        done = [p.discount_evidence(arm, factor) for p in self._segments.values()]
        self._changed()
        return any(done)

    def shrink_evidence(self, arm: str, factor: float) -> bool:
        self.index_of(arm)
        done = [p.shrink_evidence(arm, factor) for p in self._segments.values()]
        self._changed()
        return any(done)

    # -- arms ------------------------------------------------------------------------------------
    def _grow(self, prior_from: int | None) -> None:
        arm = self._arms[-1]
        source = self._arms[prior_from] if prior_from is not None else None
        for p in self._segments.values():
            p.add_arm(arm, prior_from=source)
        self._pulls = np.append(self._pulls, 0.0)
        self._reward_sum = np.append(self._reward_sum, 0.0)
        self._changed()

    def _shrink(self, index: int) -> None:
        for p in self._segments.values():
            for gone in [a for a in p.arms if a not in self._index]:
                p.remove_arm(gone)
        for task, outcomes in self._settling.items():
            self._settling[task] = [o for o in outcomes if o[0] in self._index]
        self._pulls = np.delete(self._pulls, index)
        self._reward_sum = np.delete(self._reward_sum, index)
        self._changed()

    # -- reporting and state -------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, float]]:
        pulls, sums = self._pulls.tolist(), self._reward_sum.tolist()
        return {
            arm: {"pulls": pulls[i], "mean_reward": sums[i] / pulls[i] if pulls[i] else 0.0}
            for i, arm in enumerate(self._arms)
        }

    def explain(self, selection: Any) -> str:
        lines = [super().explain(selection), "  task types (started from):"]
        for task in TASK_TYPES:
            if task in self._segments:
                lines.append(f"    {task}: {', '.join(self._origin.get(task, [])) or 'the prior'}")
        return "\n".join(lines)

    def _get_state(self) -> dict[str, Any]:
        return {
            "segments": {t: orjson.loads(p.snapshot()) for t, p in self._segments.items()},
            "origin": self._origin,
            "settling": self._settling,
            "feature_n": self._feature_n,
            "feature_sum": self._feature_sum,
            "pulls": self._pulls.tolist(),
            "reward_sum": self._reward_sum.tolist(),
            "updates": self._updates,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        cls = self._inner_class()
        try:
            self._segments = {
                str(t): cls.restore(orjson.dumps(doc)) for t, doc in state["segments"].items()
            }
            self._origin = {str(t): list(o) for t, o in state["origin"].items()}
            self._settling = {str(t): [list(o) for o in v] for t, v in state["settling"].items()}
            self._feature_n = {str(t): int(n) for t, n in state["feature_n"].items()}
            self._feature_sum = {
                str(t): [float(v) for v in s] for t, s in state["feature_sum"].items()
            }
            self._pulls = np.asarray(state["pulls"], dtype=float)
            self._reward_sum = np.asarray(state["reward_sum"], dtype=float)
            self._updates = int(state["updates"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"{self.algorithm}: bad state: {exc}") from None
        if self._pulls.shape != (len(self._arms),) or any(
            p.arms != self._arms for p in self._segments.values()
        ):
            raise SnapshotError(f"{self.algorithm}: state does not match its arms")
        self._changed()


def _normalise(policy: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"algorithm": str, "hyperparameters": {...}}``, deep-copied."""
    spec = DEFAULT_POLICY if policy is None else policy
    if not isinstance(spec, Mapping) or not isinstance(spec.get("algorithm"), str):
        raise ValueError(f"policy needs an algorithm name, got {spec!r}")
    extra = set(spec) - {"algorithm", "hyperparameters"}
    if extra:
        raise ValueError(f"policy: unknown key(s) {sorted(extra)}")
    hp = spec.get("hyperparameters") or {}
    if not isinstance(hp, Mapping):
        raise ValueError("policy: hyperparameters must be a mapping")
    return {"algorithm": spec["algorithm"], "hyperparameters": copy.deepcopy(dict(hp))}


def _mapping(similar: Any) -> dict[str, list[str]] | None:
    """A declared mapping as lists of known task types (``None`` for a mode)."""
    if isinstance(similar, str):
        if similar not in SIMILAR_MODES:
            raise ValueError(
                f"similar must be one of {SIMILAR_MODES} or a mapping, got {similar!r}"
            )
        return None
    if not isinstance(similar, Mapping):
        raise ValueError(f"similar must be one of {SIMILAR_MODES} or a mapping, got {similar!r}")
    out: dict[str, list[str]] = {}
    for new, known in similar.items():
        names = [known] if isinstance(known, str) else known
        if not isinstance(names, list | tuple) or not names:
            raise ValueError(f"similar.{new}: expected a task type or a list of them")
        for t in [new, *names]:
            if t not in TASK_TYPES:
                raise ValueError(
                    f"similar: unknown task type {t!r}; task types: {list(TASK_TYPES)}"
                )
        out[str(new)] = [str(t) for t in names]
    return out
