"""Machinery shared by the context-free bandits (private: the registry skips
modules whose name starts with ``_``, and these classes name no algorithm).

``BanditPolicy`` keeps per-arm state in plain lists of floats (a policy
routes between a handful of arms, where numpy's per-call overhead costs more
than the arithmetic; the values are the same doubles either way), caches the
scores and probabilities of each allowed set until the state changes (so
repeated selections between updates cost a dictionary lookup), and does the
bookkeeping the contract asks for: add/remove arms, snapshot state, stats,
and the discounting of per-arm evidence after a drift.
``IndexPolicy`` adds what the deterministic UCB family shares: untried arms
first, then the highest index, ties broken by a seeded per-arm priority;
``MeanIndexPolicy`` what the ones indexed on sample means (UCB1, UCB-V,
UCB1-Tuned) share.
"""

from __future__ import annotations

import abc
import hashlib
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, ClassVar

import numpy as np

from app.policies.base import Policy, PolicyError, Selection, drawn_selection

_CACHE_LIMIT = 256  # allowed sets remembered per state; beyond it the cache starts afresh
_UNIFORM_BLOCK = 64  # uniforms drawn from the generator at a time for selections
# Learned arrays that are evidence (shrunk toward the prior when adapting to a
# drift) and those that are estimates (kept as they are).
_EVIDENCE = frozenset({"_alpha", "_beta", "_n", "_m2", "_dn", "_ds"})
_ESTIMATES = frozenset({"_mean"})

Key = tuple[str, ...] | None  # an allowed set as cached: None for every arm
# What a selection from one allowed set needs: names, scores, probabilities,
# their running sums and the position of the greedy arm.
Entry = tuple[tuple[str, ...], list[float], list[float], list[float], int]


class BanditPolicy(Policy):
    """Per-arm lists, a cache per allowed set, and the contract's bookkeeping.

    Subclasses list their learned per-arm lists in ``_learned`` (copied by
    ``add_arm(prior_from=...)``); ``_pulls`` and ``_reward_sum`` count what
    really happened to each arm and are never copied. Call ``_allocate()``
    once the hyperparameters are set, ``_record()`` from ``_update`` and
    ``_changed()`` after any other change of state. The learned lists in
    ``_EVIDENCE`` are what ``discount_evidence`` and ``shrink_evidence`` act
    on, provided every learned list is in ``_EVIDENCE`` or ``_ESTIMATES``.

    Selections take their uniforms from the generator a block at a time;
    ``_rng`` (what snapshots save and restores set) is always the generator
    where one draw per selection would have left it, so the draws, and
    therefore the choices, are those of drawing one at a time.
    """

    _learned: ClassVar[tuple[str, ...]] = ()
    _observed: ClassVar[tuple[str, ...]] = ("_pulls", "_reward_sum")
    _keeps_m2: ClassVar[bool] = False  # whether ``_welford`` also keeps ``_m2``
    # The lists ``_allocate`` creates (those a subclass lists), one entry per arm.
    _pulls: list[float]
    _reward_sum: list[float]
    _n: list[float]  # count, mean and sum of squared deviations (Welford)
    _mean: list[float]
    _m2: list[float]

    def __init__(self, arms: Sequence[str], seed: int | None = None) -> None:
        super().__init__(arms, seed)
        self._t = 0  # updates applied so far
        self._all = list(range(len(self._arms)))
        self._names = tuple(self._arms)  # never changed in place: selections keep it
        self._score_cache: dict[Key, np.ndarray] = {}
        self._prob_cache: dict[Key, np.ndarray] = {}
        self._select_cache: dict[Key, Entry] = {}

    # -- randomness ----------------------------------------------------------------------------
    @property
    def _rng(self) -> np.random.Generator:
        if self._block_start is not None:
            self._sync_generator()
        return self._generator

    @_rng.setter
    def _rng(self, rng: np.random.Generator) -> None:
        self._generator = rng
        self._uniforms: list[float] = []
        self._next_uniform = 0
        self._block_start: dict[str, Any] | None = None  # the generator's state before them

    def _refill_uniforms(self) -> None:
        generator = self._generator
        if isinstance(generator, np.random.Generator):
            self._block_start = dict(generator.bit_generator.state)
            self._uniforms = generator.random(_UNIFORM_BLOCK).tolist()
        else:  # anything else with a random(): one draw at a time
            self._uniforms = [generator.random()]
        self._next_uniform = 0

    def _sync_generator(self) -> None:
        """Put the generator where the uniforms used so far leave it, and
        drop the unused ones."""
        assert self._block_start is not None
        used, generator = self._next_uniform, self._generator
        generator.bit_generator.state = self._block_start
        if used:
            generator.random(used)
        self._uniforms, self._next_uniform, self._block_start = [], 0, None

    # -- hooks ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def _check(self) -> None:
        """Raise ``ValueError`` naming a hyperparameter that is out of range."""

    # Both return a new list for the arms at positions ``idx``.
    @abc.abstractmethod
    def _scores(self, idx: list[int]) -> list[float]: ...

    @abc.abstractmethod
    def _probabilities(self, idx: list[int]) -> list[float]: ...

    def _decision(self, idx: list[int]) -> tuple[list[float], list[float], list[float], int]:
        """What a selection among the arms ``idx`` draws from: their scores,
        probabilities, the running sums of the probabilities, and the
        position of the first highest score. A subclass may share the work
        or reuse lists it has made before (the caller never changes them)."""
        scores, probs = self._scores(idx), self._probabilities(idx)
        return scores, probs, list(accumulate(probs)), scores.index(max(scores))

    def _fresh(self, name: str) -> float:
        """The value of a learned list for an arm that starts from nothing."""
        return 0.0

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        return None

    # -- state ---------------------------------------------------------------------------------
    def _at(self, values: list[float], idx: list[int]) -> list[float]:
        """``values`` at the positions ``idx``, as a new list."""
        return values[:] if idx is self._all else [values[i] for i in idx]

    def _view(self, values: list[float], idx: list[int]) -> list[float]:
        """``values`` at the positions ``idx``, to read at once: ``values``
        itself for every arm."""
        return values if idx is self._all else [values[i] for i in idx]

    def _positions(self, allowed: Sequence[str] | None) -> list[int]:
        """The positions of the allowed arms (every arm for ``None``); unknown,
        repeated or no arms are errors."""
        if allowed is None or allowed is self._arms:
            return self._all
        if not allowed:
            raise PolicyError("the allowed arm set is empty")
        idx = [self.index_of(a) for a in allowed]
        if len(set(idx)) != len(idx):
            # A repeated arm would split its probability between its copies.
            raise PolicyError(f"the allowed arms repeat a name: {list(allowed)}")
        return idx

    def _allocate(self) -> None:
        self._check()
        k = len(self._arms)
        for name in self._observed + self._learned:
            setattr(self, name, [float(self._fresh(name))] * k)

    def _record(self, index: int, reward: float) -> None:
        self._pulls[index] += 1.0
        self._reward_sum[index] += reward
        self._t += 1
        self._after_update(index)

    def _after_update(self, index: int) -> None:
        """Hook: what a reward to the arm at ``index`` invalidates (by default
        every cached answer)."""
        self._changed()

    def _welford(self, index: int, reward: float) -> float:
        """Add a reward to the running count, mean (and ``_m2`` when the class
        keeps it) of an arm; returns the change of its mean."""
        n = self._n[index] + 1.0
        self._n[index] = n
        old = self._mean[index]
        delta = reward - old
        new = old + delta / n
        self._mean[index] = new
        if self._keeps_m2:
            self._m2[index] += delta * (reward - new)
        return new - old

    def _changed(self) -> None:
        if self._score_cache:
            self._score_cache.clear()
        if self._prob_cache:
            self._prob_cache.clear()
        if self._select_cache:
            self._select_cache.clear()

    def _params_changed(self) -> None:
        self._check()
        self._changed()

    def _grow(self, prior_from: int | None) -> None:
        for name in self._observed + self._learned:
            values = getattr(self, name)
            value = (
                values[prior_from]
                if prior_from is not None and name in self._learned
                else self._fresh(name)
            )
            setattr(self, name, [*values, float(value)])
        self._all = list(range(len(self._arms)))
        self._names = tuple(self._arms)
        self._changed()

    def _shrink(self, index: int) -> None:
        for name in self._observed + self._learned:
            values = getattr(self, name)
            setattr(self, name, values[:index] + values[index + 1 :])
        self._all = list(range(len(self._arms)))
        self._names = tuple(self._arms)
        self._changed()

    def _get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"t": self._t}
        for name in self._observed + self._learned:
            state[name[1:]] = list(getattr(self, name))
        return state | self._extra_state()

    def _set_state(self, state: dict[str, Any]) -> None:
        self._t = int(state["t"])
        for name in self._observed + self._learned:
            setattr(self, name, [float(v) for v in state[name[1:]]])
        self._all = list(range(len(self._arms)))
        self._set_extra_state(state)
        self._changed()

    # -- decisions -----------------------------------------------------------------------------
    def scores(self, allowed: Sequence[str] | None = None, context: Any = None) -> np.ndarray:
        key = None if allowed is None or allowed is self._arms else tuple(allowed)
        cached = self._score_cache.get(key)
        if cached is None:
            cached = np.array(self._scores(self._positions(allowed)), dtype=float)
            cached.flags.writeable = False  # shared with every caller
            if len(self._score_cache) >= _CACHE_LIMIT:
                self._score_cache.clear()
            self._score_cache[key] = cached
        return cached

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        key = None if allowed is None or allowed is self._arms else tuple(allowed)
        cached = self._prob_cache.get(key)
        if cached is None:
            cached = np.array(self._probabilities(self._positions(allowed)), dtype=float)
            cached.flags.writeable = False
            if len(self._prob_cache) >= _CACHE_LIMIT:
                self._prob_cache.clear()
            self._prob_cache[key] = cached
        return cached

    def select(
        self, context: Any = None, allowed: Sequence[str] | None = None, explore: bool = True
    ) -> Selection:
        # The base class's selection (the same uniform, the same bisection as
        # ``weighted_draw``, so the same choices), from lists cached per allowed set.
        if not explore:
            return super().select(context, allowed, explore)
        key = None if allowed is None or allowed is self._arms else tuple(allowed)
        entry = self._select_cache.get(key)
        if entry is None:
            if key is None:
                names, idx = self._names, self._all
            else:
                idx = self._positions(allowed)
                names = tuple(allowed)  # type: ignore[arg-type]
            scores, probs, cum, greedy = self._decision(idx)
            if len(self._select_cache) >= _CACHE_LIMIT:
                self._select_cache.clear()
            self._select_cache[key] = (names, scores, probs, cum, greedy)
        else:
            names, scores, probs, cum, greedy = entry
        return self._pick(names, scores, probs, cum, greedy)

    def _pick(
        self,
        names: tuple[str, ...],
        scores: list[float],
        probs: list[float],
        cum: list[float],
        greedy: int,
    ) -> Selection:
        """One uniform, one bisection of the running sums ``cum``: the arm
        ``weighted_draw`` would choose with the same uniform."""
        i = self._next_uniform
        if i == len(self._uniforms):
            self._refill_uniforms()
            i = 0
        self._next_uniform = i + 1
        # bisect_right: a weight of 0 (an empty interval) is never drawn, not even at u == 0.
        choice = bisect_right(cum, self._uniforms[i] * cum[-1])
        if choice == len(cum):
            choice -= 1
        return drawn_selection(names[choice], probs[choice], choice != greedy, names, scores, probs)

    # -- evidence ------------------------------------------------------------------------------
    @classmethod
    def _evidence_arrays(cls) -> tuple[str, ...]:
        """The learned lists that are evidence, by name; none unless every
        learned list is known to be evidence or an estimate."""
        learned = set(cls._learned)
        if not learned <= _EVIDENCE | _ESTIMATES:
            return ()
        return tuple(sorted(learned & _EVIDENCE))

    def arm_evidence(self, arm: str) -> dict[str, float]:
        i = self.index_of(arm)
        return {name[1:]: float(getattr(self, name)[i]) for name in self._evidence_arrays()}

    def discount_evidence(self, arm: str, factor: float) -> bool:
        i = self.index_of(arm)
        names = self._evidence_arrays()
        if not names:
            return False
        for name in names:
            values = getattr(self, name)
            fresh = self._fresh(name)
            values[i] = fresh + factor * (values[i] - fresh)
        self._changed()
        return True

    def shrink_evidence(self, arm: str, factor: float) -> bool:
        """Counts (and squared deviations) are multiplied by ``factor``; the
        means beside them are kept."""
        i = self.index_of(arm)
        names = self._evidence_arrays()
        if not names:
            return False
        for name in names:
            getattr(self, name)[i] *= factor
        self._changed()
        return True

    # -- reporting -----------------------------------------------------------------------------
    def _arm_stats(self, index: int) -> dict[str, float]:
        """The algorithm's own per-arm figures (finite numbers only)."""
        return {}

    def stats(self) -> dict[str, dict[str, float]]:
        pulls, sums = self._pulls, self._reward_sum
        return {
            arm: {
                "pulls": pulls[i],
                "mean_reward": sums[i] / pulls[i] if pulls[i] else 0.0,
                **self._arm_stats(i),
            }
            for i, arm in enumerate(self._arms)
        }


class IndexPolicy(BanditPolicy):
    """A deterministic index policy: each allowed arm not yet tried (count 0)
    first, else the highest index; ties go to the arm with the highest seeded
    priority, a hash of (seed, arm name), so the order is reproducible and
    survives snapshots and arm changes. The choice is certain: its
    probability is 1 and every other arm's 0."""

    def __init__(self, arms: Sequence[str], seed: int | None = None) -> None:
        super().__init__(arms, seed)
        # Without a seed the tie-breaking salt is random, and kept in snapshots.
        self._salt = str(seed) if seed is not None else f"r{int(self._rng.integers(2**62))}"
        self._priority = self._priorities()
        # (arms, chosen position) → (probabilities, running sums), shared by the
        # selections made while that arm is the choice (nobody changes them).
        self._certain: dict[tuple[int, int], tuple[list[float], list[float]]] = {}

    def _priorities(self) -> list[float]:
        return [
            float(
                int.from_bytes(
                    hashlib.blake2b(f"{self._salt}/{arm}".encode(), digest_size=6).digest()
                )
            )
            for arm in self._arms
        ]

    @abc.abstractmethod
    def _counts(self) -> list[float]:
        """Each arm's (possibly discounted or windowed) count; 0 is untried."""

    @abc.abstractmethod
    def _ucb(self, idx: list[int], counts: list[float]) -> list[float]:
        """The index of the arms ``idx``, all of count > 0 (``counts`` = theirs)."""

    def _choice(self, idx: list[int]) -> int:
        """The position in ``idx`` of the arm the index rule picks."""
        counts = self._counts()
        if idx is not self._all:
            counts = [counts[i] for i in idx]
        untried = min(counts) <= 0.0
        keys = [float(c <= 0.0) for c in counts] if untried else self._ucb(idx, counts)
        top = max(keys)
        if keys.count(top) == 1:
            return keys.index(top)
        priority = self._priority
        return max((j for j, key in enumerate(keys) if key == top), key=lambda j: priority[idx[j]])

    def _probabilities(self, idx: list[int]) -> list[float]:
        p = [0.0] * len(idx)
        p[self._choice(idx)] = 1.0
        return p

    def _decision(self, idx: list[int]) -> tuple[list[float], list[float], list[float], int]:
        scores, k, choice = self._scores(idx), len(idx), self._choice(idx)
        certain = self._certain.get((k, choice))
        if certain is None:
            probs = [0.0] * k
            probs[choice] = 1.0
            # The running sums of a single 1.0 at ``choice``.
            certain = self._certain[k, choice] = (probs, [0.0] * choice + [1.0] * (k - choice))
        return scores, certain[0], certain[1], scores.index(max(scores))

    def upper_bounds(self, allowed: Sequence[str] | None = None) -> np.ndarray:
        """The index of each allowed arm (``inf`` for an untried arm)."""
        idx = self._positions(allowed)
        counts = self._view(self._counts(), idx)
        out = np.full(len(idx), np.inf)
        tried = [j for j, c in enumerate(counts) if c > 0.0]
        if tried:
            out[tried] = self._ucb([idx[j] for j in tried], [counts[j] for j in tried])
        return out

    def _grow(self, prior_from: int | None) -> None:
        super()._grow(prior_from)
        self._priority = self._priorities()

    def _shrink(self, index: int) -> None:
        super()._shrink(index)
        del self._priority[index]

    def _extra_state(self) -> dict[str, Any]:
        return {"salt": self._salt}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self._salt = state["salt"]
        self._priority = self._priorities()


class MeanIndexPolicy(IndexPolicy):
    """An index policy on each arm's sample mean: ``_welford`` keeps the count
    ``_n`` and mean ``_mean`` (and ``_m2`` when the class sets ``_keeps_m2``,
    whose variance ``stats`` then reports); the scores are the means."""

    _learned: ClassVar[tuple[str, ...]] = ("_n", "_mean")

    def _counts(self) -> list[float]:
        return self._n

    def _scores(self, idx: list[int]) -> list[float]:
        mean = self._mean
        return mean[:] if idx is self._all else [mean[i] for i in idx]

    def _update(self, index: int, reward: float, context: Any) -> None:
        self._welford(index, reward)
        self._record(index, reward)

    def _arm_stats(self, index: int) -> dict[str, float]:
        n = self._n[index]
        stats = {"value": self._mean[index], "count": n}
        if self._keeps_m2:
            stats["variance"] = self._m2[index] / n if n else 0.0
        return stats
