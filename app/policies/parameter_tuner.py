"""Per task type: Thompson sampling over the models, Bayesian optimisation of their parameters."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from itertools import accumulate
from typing import Any, ClassVar

import numpy as np

from app.features.request_vector import FEATURE_NAMES, TASK_TYPES
from app.policies._beta_wins import beta_win_probabilities
from app.policies._contextual import ContextualPolicy
from app.policies.base import (
    InvalidRewardError,
    Selection,
    SnapshotError,
    drawn_selection,
    weighted_draw,
)
from app.tuning.gp_optimizer import GPOptimizer, Plan
from app.tuning.space import DEFAULT_SPACE, ParameterSpace, SpaceError
from app.tuning.tuned_choice import TunedChoice

SCOPES = ("per_model", "shared")
_TASK_OFFSET = FEATURE_NAMES.index(f"task_{TASK_TYPES[0]}")
_FIXED = ("space", "scope", "task_types", "task_offset")  # the learned state is built on these


class _Tuner:
    """The evaluations of one parameter optimisation (a task type's, for one
    model or shared by all): per evaluated point its rewards' count, sum,
    sum of squares and cost sum; the batch being evaluated (each point with
    the count at which it is done); and the incumbent, served when not
    exploring."""

    __slots__ = ("_index", "completed", "incumbent", "plans", "points", "proposals", "sums")

    def __init__(self, start: list[float]) -> None:
        self.points: list[list[float]] = []
        self.sums: list[list[float]] = []  # n, Σr, Σr², Σcost, cost count
        self.proposals: list[list[float]] = []  # point + [the count at which it is done]
        self.incumbent = list(start)
        self.completed = 0
        self.plans = 0
        self._index: dict[tuple[float, ...], int] = {}

    def count(self, point: Sequence[float]) -> float:
        i = self._index.get(tuple(point))
        return 0.0 if i is None else self.sums[i][0]

    def observe(self, point: list[float], reward: float, cost: float | None) -> None:
        key = tuple(point)
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self.points)
            self.points.append(point)
            self.sums.append([0.0, 0.0, 0.0, 0.0, 0.0])
        s = self.sums[i]
        s[0] += 1.0
        s[1] += reward
        s[2] += reward * reward
        if cost is not None:
            s[3] += cost
            s[4] += 1.0

    def pending(self) -> list[list[float]]:
        """The proposals still short of their rewards."""
        return [p[:-1] for p in self.proposals if self.count(p[:-1]) < p[-1]]

    def data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Points, mean rewards, the variance of each mean (a pooled reward
        variance over its count: a single reward says nothing of its own
        spread) and mean costs (``None`` unless every point has some)."""
        sums = np.asarray(self.sums, dtype=float).reshape(-1, 5)
        n = sums[:, 0]
        mean = sums[:, 1] / n
        dev = np.maximum(sums[:, 2] - n * mean * mean, 0.0)
        dof = float((n - 1.0).sum())
        pooled = max(float(dev.sum()) / dof, 1e-4) if dof > 0 else 0.01
        cost = sums[:, 3] / sums[:, 4] if bool((sums[:, 4] > 0).all()) else None
        return np.asarray(self.points, dtype=float), mean, pooled / n, cost

    def state(self) -> list[Any]:
        return [self.points, self.sums, self.proposals, self.incumbent, self.completed, self.plans]

    @classmethod
    def from_state(cls, raw: Sequence[Any]) -> _Tuner:
        points, sums, proposals, incumbent, completed, plans = raw
        t = cls(list(incumbent))
        t.points = [list(map(float, p)) for p in points]
        t.sums = [list(map(float, s)) for s in sums]
        t.proposals = [list(map(float, p)) for p in proposals]
        t.completed, t.plans = int(completed), int(plans)
        t._index = {tuple(p): i for i, p in enumerate(t.points)}
        return t

    def copy(self) -> _Tuner:
        return _Tuner.from_state(self.state())


class ParameterTuner(ContextualPolicy):
    """Chooses a model per task type and tunes its call parameters online.

    Hierarchical: per task type (read from the request vector's one-hot
    ``task_*`` columns) a Beta–Thompson sampler chooses the arm, then the
    arm's parameters come from a Bayesian optimisation of the declared
    ``space`` (:class:`~app.tuning.gp_optimizer.GPOptimizer`), one per (task
    type, arm) with ``scope: per_model``, or one per task type for every arm
    with ``scope: shared`` (rewards centred on the arm's mean for the task).

    Serving: an arm serves its **incumbent** (the evaluated setting with the
    best predicted reward) with probability ``1 − ε``, and each setting of
    the batch under evaluation with ``ε / pending``, ``ε = max(min_explore,
    explore / sqrt(1 + evaluations / batch_size))``: exploitation grows as
    evaluations accumulate and never stops exploring entirely (drift).
    :meth:`choose` draws the pair and logs its exact propensity;
    :meth:`select` (the policy contract) is the arm alone.

    Learning: ``update(arm, reward, context, parameters=..., cost_usd=...)``
    feeds the arm's posterior and, given the served parameters, tells the
    optimiser the reward at that setting. A setting is done after
    ``evaluation_size`` rewards; when the whole batch is done the optimiser
    plans the next ``batch_size`` settings (a GP fit, on update, never on
    select). Without ``parameters`` only the arm's posterior learns.
    Learning depends on the order of the outcomes (a plan is made from the
    evaluations so far): single writer, never sharded.

    >>> import numpy as np
    >>> tuner = ParameterTuner(["m1", "m2"], seed=1, context_dim=13)
    >>> x = np.zeros(13); x[0] = 1.0; x[7] = 1.0  # a code request
    >>> choice = tuner.choose(x)
    >>> choice.arm in ("m1", "m2"), sorted(choice.parameters)
    (True, ['max_tokens', 'temperature', 'top_p'])
    >>> choice.propensity == choice.arm_propensity * choice.setting_propensity
    True
    """

    algorithm = "parameter_tuner"
    example_params: ClassVar[dict[str, Any]] = {
        "context_dim": 3,
        "task_types": ["x", "y"],
        "task_offset": 1,
    }

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        context_dim: int = len(FEATURE_NAMES),
        space: Mapping[str, Any] | None = None,
        scope: str = "per_model",
        acquisition: str = "ei",
        batch_size: int = 4,
        evaluation_size: int = 16,
        initial_points: int = 4,
        explore: float = 0.5,
        min_explore: float = 0.05,
        max_cost_usd: float | None = None,
        ucb_beta: float = 4.0,
        start: Mapping[str, Any] | None = None,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        max_evidence: float = 2000.0,
        task_types: Sequence[str] = TASK_TYPES,
        task_offset: int = _TASK_OFFSET,
    ) -> None:
        super().__init__(arms, seed)
        self.context_dim = context_dim
        self.space = space
        self.scope = scope
        self.acquisition = acquisition
        self.batch_size = batch_size
        self.evaluation_size = evaluation_size
        self.initial_points = initial_points
        self.explore = explore
        self.min_explore = min_explore
        self.max_cost_usd = max_cost_usd
        self.ucb_beta = ucb_beta
        self.start = start
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.max_evidence = max_evidence
        self.task_types = task_types
        self.task_offset = task_offset
        self._check()
        self._built = {name: getattr(self, name) for name in _FIXED}
        k, t = len(self._arms), len(self.task_types)
        self._alpha = np.full((t, k), float(prior_alpha))
        self._beta = np.full((t, k), float(prior_beta))
        self._pulls = np.zeros(k)
        self._reward_sum = np.zeros(k)
        width = k if scope == "per_model" else 1
        self._tuners = [[self._fresh_tuner() for _ in range(width)] for _ in range(t)]
        self._cache: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
        self._tables: dict[tuple[int, tuple[str, ...]], tuple[Any, ...]] = {}
        self._served: dict[tuple[int, str], tuple[Any, ...]] = {}
        self._told: tuple[Mapping[str, Any] | None, float | None] = (None, None)
        # Plans an update left for due_plans (update(..., defer_plan=True)),
        # in the order they fell due.
        self._defer = False
        self._plans_due: list[tuple[_Tuner, int, int]] = []

    # -- configuration ---------------------------------------------------------
    def _check(self) -> None:
        self._check_context_dim()
        try:
            self._space = ParameterSpace.from_config(
                DEFAULT_SPACE if self.space is None else self.space
            )
        except SpaceError as exc:
            raise ValueError(str(exc)) from None
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        for name in ("batch_size", "evaluation_size", "initial_points", "task_offset"):
            v = getattr(self, name)
            lowest = 0 if name == "task_offset" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < lowest:
                raise ValueError(f"{name} must be an integer >= {lowest}, got {v!r}")
        if not 0.0 <= self.min_explore <= self.explore <= 1.0:
            raise ValueError("need 0 <= min_explore <= explore <= 1")
        if self.prior_alpha <= 0 or self.prior_beta <= 0 or not self.max_evidence > 0:
            raise ValueError("prior_alpha, prior_beta and max_evidence must be positive")
        types = list(self.task_types)
        if not types or len(set(types)) != len(types) or not all(isinstance(t, str) for t in types):
            raise ValueError(f"task_types must be distinct names, got {self.task_types!r}")
        if self.task_offset + len(types) > self.context_dim:
            raise ValueError(
                f"the task columns ({self.task_offset} + {len(types)}) do not fit "
                f"context_dim {self.context_dim}"
            )
        self._optimizer = GPOptimizer(
            self._space.dim,
            acquisition=self.acquisition,
            initial_points=self.initial_points,
            ucb_beta=self.ucb_beta,
            cost_cap=self.max_cost_usd,
        )
        start = (
            self._space.encode(self.start) if self.start is not None else [0.5] * self._space.dim
        )
        if start is None:
            raise ValueError(
                f"start {self.start!r} must give every parameter of the space, in range"
            )
        self._start = self._space.snap(start)

    def _params_changed(self) -> None:
        self._keep_fixed(self._built)
        self._check()
        self._forget()

    def _forget(self) -> None:
        """Drop what was derived from the arms' posteriors."""
        self._cache.clear()
        self._tables.clear()
        self._served.clear()

    def _fresh_tuner(self) -> _Tuner:
        return _Tuner(self._start)

    # -- deciding --------------------------------------------------------------
    def task_of(self, context: Any) -> int:
        """The task type's position in ``task_types``: the largest of its columns."""
        x = self._context(context)
        return int(np.argmax(x[self.task_offset : self.task_offset + len(self.task_types)]))

    def _win(self, task: int, idx: np.ndarray) -> np.ndarray:
        key = (task, tuple(idx.tolist()))
        p = self._cache.get(key)
        if p is None:
            p = beta_win_probabilities(self._alpha[task, idx], self._beta[task, idx])
            self._cache[key] = p
        return p

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        idx = self.allowed_indices(allowed)
        return self._win(self.task_of(context), idx).copy()

    def scores(self, allowed: Sequence[str] | None = None, context: Any = None) -> np.ndarray:
        idx = self.allowed_indices(allowed)
        task = self.task_of(context)
        a, b = self._alpha[task, idx], self._beta[task, idx]
        return a / (a + b)

    def select(
        self, context: Any = None, allowed: Sequence[str] | None = None, explore: bool = True
    ) -> Selection:
        # Per (task, allowed arms) the names, scores, probabilities and their
        # running sums, kept until the next update: a selection is then a
        # uniform draw and a bisection, as the decider's hot path needs.
        task = self.task_of(context)
        key = (task, tuple(self._arms) if allowed is None else tuple(allowed))
        table = self._tables.get(key)
        if table is None:
            names = list(key[1])
            idx = self.allowed_indices(names)
            probs = self._win(task, idx).tolist()
            a, b = self._alpha[task, idx], self._beta[task, idx]
            scores = (a / (a + b)).tolist()
            greedy = max(range(len(names)), key=scores.__getitem__)
            certain = [0.0] * len(names)
            certain[greedy] = 1.0
            table = self._tables[key] = (
                names,
                scores,
                probs,
                list(accumulate(probs)),
                greedy,
                certain,
            )
        names, scores, probs, cumulative, greedy, certain = table
        if not explore:
            return drawn_selection(names[greedy], 1.0, False, names, scores, certain)
        j = weighted_draw(self._rng, cumulative)
        return drawn_selection(names[j], probs[j], j != greedy, names, scores, probs)

    def _tuner(self, task: int, arm: int) -> _Tuner:
        return self._tuners[task][arm if self.scope == "per_model" else 0]

    def _epsilon(self, tuner: _Tuner) -> float:
        decayed = self.explore / math.sqrt(1.0 + tuner.completed / self.batch_size)
        return max(self.min_explore, decayed)

    def settings(self, arm: str, context: Any) -> list[tuple[dict[str, Any], float]]:
        """The settings ``arm`` serves now for this context, each with its
        probability (they sum to 1)."""
        return [(self._space.decode(p), q) for p, q in self._serving(self.task_of(context), arm)]

    def _serving(self, task: int, arm: str) -> list[tuple[list[float], float]]:
        tuner = self._tuner(task, self.index_of(arm))
        pending = tuner.pending()
        if not pending:
            return [(tuner.incumbent, 1.0)]
        eps = self._epsilon(tuner)
        out: dict[tuple[float, ...], float] = {tuple(tuner.incumbent): 1.0 - eps}
        for p in pending:
            out[tuple(p)] = out.get(tuple(p), 0.0) + eps / len(pending)
        return [(list(p), q) for p, q in out.items() if q > 0.0]

    def choose(
        self, context: Any, allowed: Sequence[str] | None = None, explore: bool = True
    ) -> TunedChoice:
        """The arm and its parameters for a request, with their exact
        probabilities. ``explore=False``: the greedy arm at its incumbent."""
        selection = self.select(context, allowed, explore)
        task = self.task_of(context)
        # The arm's settings, decoded, with the running sums of their
        # probabilities and which one is the incumbent; kept until the next update.
        key = (task, selection.arm)
        served = self._served.get(key)
        if served is None:
            tuner = self._tuner(task, self.index_of(selection.arm))
            options = self._serving(task, selection.arm)
            served = self._served[key] = (
                [self._space.decode(p) for p, _ in options],
                [q for _, q in options],
                list(accumulate(q for _, q in options)),
                [p == tuner.incumbent for p, _ in options],
                self._space.decode(tuner.incumbent),
            )
        settings, probs, cumulative, is_incumbent, incumbent = served
        if not explore:
            parameters, q, departs = incumbent, 1.0, False
        else:
            j = weighted_draw(self._rng, cumulative)
            parameters, q, departs = settings[j], probs[j], not is_incumbent[j]
        return TunedChoice(
            arm=selection.arm,
            parameters=dict(parameters),
            propensity=selection.propensity * q,
            arm_propensity=selection.propensity,
            setting_propensity=q,
            explored=selection.explored or departs,
            selection=selection,
        )

    def incumbent(self, arm: str, task_type: str) -> dict[str, Any]:
        """The setting ``arm`` serves for ``task_type`` when not exploring."""
        task = list(self.task_types).index(task_type)
        return self._space.decode(self._tuner(task, self.index_of(arm)).incumbent)

    # -- learning --------------------------------------------------------------
    def update(
        self,
        arm: str,
        reward: float,
        context: Any = None,
        *,
        propensity: float | None = None,
        parameters: Mapping[str, Any] | None = None,
        cost_usd: float | None = None,
        defer_plan: bool = False,
    ) -> None:
        """Learn from a reward; ``parameters`` (the setting served) and
        ``cost_usd`` (its cost, for a cost cap) tell the optimiser.
        ``defer_plan``: a plan this update makes due (a GP fit, 0.15 s and
        more) waits for :meth:`due_plans`, for the caller to make off its
        event loop before the policy's next update."""
        self._told, self._defer = (parameters, cost_usd), defer_plan
        try:
            super().update(arm, reward, context, propensity=propensity)
        finally:
            self._told, self._defer = (None, None), False

    def due_plans(self) -> Callable[[], Callable[[], None]] | None:
        """The plans updates left (``defer_plan``), or None: a function that
        computes them and only reads the policy (another thread may run
        it), and returns the function that takes them into the policy.
        Taken before the policy's next update, they leave it as if made in
        those updates. If computing one raises, none is taken; each tuner
        left without a plan plans at its next update."""
        due, self._plans_due = self._plans_due, []
        if not due:
            return None

        def compute() -> Callable[[], None]:
            plans = [self._compute_plan(tuner, task, arm) for tuner, task, arm in due]

            def take() -> None:
                for (tuner, _, _), plan in zip(due, plans, strict=True):
                    self._take_plan(tuner, plan)

            return take

        return compute

    def _update(self, index: int, reward: float, context: Any) -> None:
        if not 0.0 <= reward <= 1.0:
            raise InvalidRewardError(f"{self.algorithm} needs rewards in [0, 1], got {reward}")
        task = self.task_of(context)
        self._forget()
        a0, b0 = self.prior_alpha, self.prior_beta
        a = self._alpha[task, index] + reward
        b = self._beta[task, index] + 1.0 - reward
        evidence = a + b - a0 - b0
        if evidence > self.max_evidence:  # a bounded memory: later tuning still moves the arm
            keep = self.max_evidence / evidence
            a, b = a0 + keep * (a - a0), b0 + keep * (b - b0)
        self._alpha[task, index], self._beta[task, index] = a, b
        self._pulls[index] += 1.0
        self._reward_sum[index] += reward
        parameters, cost = self._told
        if parameters is None:
            return
        point = self._space.encode(parameters)
        if point is None:  # a setting outside the space says nothing about it
            return
        point = self._space.snap(point)
        tuner = self._tuner(task, index)
        told = reward
        if self.scope == "shared":  # the arm's own level is the model's, not the setting's
            told = reward - a / (a + b)
        was_pending = tuple(point) in {tuple(p) for p in tuner.pending()}
        tuner.observe(point, told, cost)
        if was_pending and tuple(point) not in {tuple(p) for p in tuner.pending()}:
            tuner.completed += 1
        if not tuner.pending():
            if self._defer:
                self._plans_due.append((tuner, task, index))
            else:
                self._plan(tuner, task, index)

    def _plan(self, tuner: _Tuner, task: int, arm: int) -> None:
        """The next batch, and the incumbent, from the evaluations so far."""
        self._take_plan(tuner, self._compute_plan(tuner, task, arm))

    def _compute_plan(self, tuner: _Tuner, task: int, arm: int) -> Plan:
        x, y, yvar, cost = tuner.data()
        seed = ((self.seed or 0) * 1_000_003 + task * 10_007 + arm * 101 + tuner.plans) % 2**31
        return self._optimizer.plan(x, y, yvar, cost, n=self.batch_size, seed=seed)

    def _take_plan(self, tuner: _Tuner, plan: Plan) -> None:
        tuner.plans += 1
        if plan.incumbent >= 0:
            tuner.incumbent = list(tuner.points[plan.incumbent])
        proposals: dict[tuple[float, ...], list[float]] = {}
        for u in plan.proposals:
            p = self._space.snap(u)
            proposals.setdefault(tuple(p), [*p, tuner.count(p) + self.evaluation_size])
        tuner.proposals = list(proposals.values())

    def _figures(self) -> dict[str, np.ndarray]:
        k = len(self._arms)
        evaluated = np.zeros(k)
        if self.scope == "per_model":
            for row in self._tuners:
                for i, t in enumerate(row):
                    evaluated[i] += len(t.points)
        return {"settings_evaluated": evaluated}

    # -- arms ------------------------------------------------------------------
    def _grow(self, prior_from: int | None) -> None:
        src = prior_from
        col_a = (
            self._alpha[:, [src]]
            if src is not None
            else np.full((len(self._alpha), 1), self.prior_alpha)
        )
        col_b = (
            self._beta[:, [src]]
            if src is not None
            else np.full((len(self._beta), 1), self.prior_beta)
        )
        self._alpha = np.hstack([self._alpha, col_a])
        self._beta = np.hstack([self._beta, col_b])
        self._pulls = np.append(self._pulls, 0.0)
        self._reward_sum = np.append(self._reward_sum, 0.0)
        if self.scope == "per_model":
            for row in self._tuners:
                row.append(row[src].copy() if src is not None else self._fresh_tuner())
        self._forget()

    def _shrink(self, index: int) -> None:
        self._alpha = np.delete(self._alpha, index, axis=1)
        self._beta = np.delete(self._beta, index, axis=1)
        self._pulls = np.delete(self._pulls, index)
        self._reward_sum = np.delete(self._reward_sum, index)
        if self.scope == "per_model":
            for row in self._tuners:
                del row[index]
        self._forget()

    # -- persistence -------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "alpha": self._alpha.tolist(),
            "beta": self._beta.tolist(),
            "pulls": self._pulls.tolist(),
            "reward_sum": self._reward_sum.tolist(),
            "tuners": [[t.state() for t in row] for row in self._tuners],
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        try:
            alpha = np.asarray(state["alpha"], dtype=float)
            beta = np.asarray(state["beta"], dtype=float)
            tuners = [[_Tuner.from_state(t) for t in row] for row in state["tuners"]]
            pulls = np.asarray(state["pulls"], dtype=float)
            reward_sum = np.asarray(state["reward_sum"], dtype=float)
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"{self.algorithm}: bad state: {exc}") from None
        shape = (len(self.task_types), len(self._arms))
        width = shape[1] if self.scope == "per_model" else 1
        if (
            alpha.shape != shape
            or beta.shape != shape
            or len(tuners) != shape[0]
            or any(len(row) != width for row in tuners)
        ):
            raise SnapshotError(f"{self.algorithm}: state does not match its arms and task types")
        self._alpha, self._beta, self._tuners = alpha, beta, tuners
        self._pulls, self._reward_sum = pulls, reward_sum
        self._forget()


__all__ = ["ParameterTuner"]
