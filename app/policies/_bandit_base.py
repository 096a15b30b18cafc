"""Machinery shared by the context-free bandits (private: the registry skips
modules whose name starts with ``_``, and these classes name no algorithm).

``BanditPolicy`` keeps per-arm state in small numpy arrays, caches the
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
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, ClassVar

import numpy as np

from app.policies.base import Policy, Selection, draw_selection

_CACHE_LIMIT = 256  # allowed sets remembered per state; beyond it the cache starts afresh
# Learned arrays that are evidence (shrunk toward the prior when adapting to a
# drift) and those that are estimates (kept as they are).
_EVIDENCE = frozenset({"_alpha", "_beta", "_n", "_m2", "_dn", "_ds"})
_ESTIMATES = frozenset({"_mean"})


class BanditPolicy(Policy):
    """Per-arm arrays, a cache per allowed set, and the contract's bookkeeping.

    Subclasses list their learned per-arm arrays in ``_learned`` (copied by
    ``add_arm(prior_from=...)``); ``_pulls`` and ``_reward_sum`` count what
    really happened to each arm and are never copied. Call ``_allocate()``
    once the hyperparameters are set, ``_record()`` from ``_update`` and
    ``_changed()`` after any other change of state. The learned arrays in
    ``_EVIDENCE`` are what ``discount_evidence`` and ``shrink_evidence`` act
    on, provided every learned array is in ``_EVIDENCE`` or ``_ESTIMATES``.
    """

    _learned: ClassVar[tuple[str, ...]] = ()
    _observed: ClassVar[tuple[str, ...]] = ("_pulls", "_reward_sum")
    _keeps_m2: ClassVar[bool] = False  # whether ``_welford`` also keeps ``_m2``
    # The arrays ``_allocate`` creates (those a subclass lists), one entry per arm.
    _pulls: np.ndarray
    _reward_sum: np.ndarray
    _n: np.ndarray  # count, mean and sum of squared deviations (Welford)
    _mean: np.ndarray
    _m2: np.ndarray

    def __init__(self, arms: Sequence[str], seed: int | None = None) -> None:
        super().__init__(arms, seed)
        self._t = 0  # updates applied so far
        self._all = np.arange(len(self._arms))
        self._score_cache: dict[tuple[str, ...] | None, np.ndarray] = {}
        self._prob_cache: dict[tuple[str, ...] | None, np.ndarray] = {}
        # Per allowed set: (names, scores, probabilities, cumulative, greedy), as lists.
        self._select_cache: dict[tuple[str, ...] | None, tuple[Any, ...]] = {}

    # -- hooks ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def _check(self) -> None:
        """Raise ``ValueError`` naming a hyperparameter that is out of range."""

    # Both return a new array for the arms ``idx`` (it is cached and made read-only).
    @abc.abstractmethod
    def _scores(self, idx: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _probabilities(self, idx: np.ndarray) -> np.ndarray: ...

    def _fresh(self, name: str) -> float:
        """The value of a learned array for an arm that starts from nothing."""
        return 0.0

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        return None

    # -- state ---------------------------------------------------------------------------------
    def _allocate(self) -> None:
        self._check()
        k = len(self._arms)
        for name in self._observed + self._learned:
            setattr(self, name, np.full(k, self._fresh(name)))

    def _record(self, index: int, reward: float) -> None:
        self._pulls[index] += 1.0
        self._reward_sum[index] += reward
        self._t += 1
        self._after_update()

    def _after_update(self) -> None:
        """Hook: what a reward invalidates (by default every cached answer)."""
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
        return float(new - old)

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
            arr = getattr(self, name)
            value = (
                arr[prior_from]
                if prior_from is not None and name in self._learned
                else self._fresh(name)
            )
            setattr(self, name, np.append(arr, value))
        self._all = np.arange(len(self._arms))
        self._changed()

    def _shrink(self, index: int) -> None:
        for name in self._observed + self._learned:
            setattr(self, name, np.delete(getattr(self, name), index))
        self._all = np.arange(len(self._arms))
        self._changed()

    def _get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"t": self._t}
        for name in self._observed + self._learned:
            state[name[1:]] = getattr(self, name).tolist()
        return state | self._extra_state()

    def _set_state(self, state: dict[str, Any]) -> None:
        self._t = int(state["t"])
        for name in self._observed + self._learned:
            setattr(self, name, np.asarray(state[name[1:]], dtype=float))
        self._all = np.arange(len(self._arms))
        self._set_extra_state(state)
        self._changed()

    # -- decisions -----------------------------------------------------------------------------
    def scores(self, allowed: Sequence[str] | None = None, context: Any = None) -> np.ndarray:
        key = None if allowed is None or allowed is self._arms else tuple(allowed)
        cached = self._score_cache.get(key)
        if cached is None:
            idx = self._all if key is None else self.allowed_indices(allowed)
            cached = self._scores(idx)
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
            idx = self._all if key is None else self.allowed_indices(allowed)
            cached = self._probabilities(idx)
            cached.flags.writeable = False
            if len(self._prob_cache) >= _CACHE_LIMIT:
                self._prob_cache.clear()
            self._prob_cache[key] = cached
        return cached

    def select(
        self, context: Any = None, allowed: Sequence[str] | None = None, explore: bool = True
    ) -> Selection:
        # The base class's selection, from lists cached with the scores and
        # probabilities: between changes of state a round is a lookup, one
        # uniform draw and a bisection (the same draw, so the same choices).
        if not explore:
            return super().select(context, allowed, explore)
        key = None if allowed is None or allowed is self._arms else tuple(allowed)
        t = self._select_cache.get(key)
        if t is None:
            names = list(allowed) if allowed is not None else list(self._arms)
            scores = self.scores(names).tolist()
            probs = self.probabilities(names).tolist()
            greedy = max(range(len(names)), key=scores.__getitem__)
            t = (names, scores, probs, list(accumulate(probs)), greedy)
            if len(self._select_cache) >= _CACHE_LIMIT:
                self._select_cache.clear()
            self._select_cache[key] = t
        names, scores, probs, cum, greedy = t
        return draw_selection(self._rng, names, scores, probs, greedy=greedy, cumulative=cum)

    # -- evidence ------------------------------------------------------------------------------
    @classmethod
    def _evidence_arrays(cls) -> tuple[str, ...]:
        """The learned arrays that are evidence, by name; none unless every
        learned array is known to be evidence or an estimate."""
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
            arr = getattr(self, name)
            fresh = self._fresh(name)
            arr[i] = fresh + factor * (arr[i] - fresh)
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
        pulls = self._pulls.tolist()
        sums = self._reward_sum.tolist()
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

    def _priorities(self) -> np.ndarray:
        return np.array(
            [
                int.from_bytes(
                    hashlib.blake2b(f"{self._salt}/{arm}".encode(), digest_size=6).digest()
                )
                for arm in self._arms
            ],
            dtype=float,
        )

    @abc.abstractmethod
    def _counts(self) -> np.ndarray:
        """Each arm's (possibly discounted or windowed) count; 0 is untried."""

    @abc.abstractmethod
    def _ucb(self, idx: np.ndarray, counts: list[float]) -> list[float]:
        """The index of the arms ``idx``, all of count > 0 (``counts`` = theirs).
        Plain Python: for the handful of arms a policy routes between, list
        arithmetic is several times faster than numpy's per-call overhead."""

    def _choice(self, idx: np.ndarray) -> int:
        """The position in ``idx`` of the arm the index rule picks."""
        # Plain Python on the few allowed arms: numpy's reductions cost more here.
        counts = self._counts()[idx].tolist()
        untried = min(counts) <= 0.0
        keys = [float(c <= 0.0) for c in counts] if untried else self._ucb(idx, counts)
        top = max(keys)
        priority = self._priority[idx].tolist()
        return max((j for j, key in enumerate(keys) if key == top), key=priority.__getitem__)

    def _probabilities(self, idx: np.ndarray) -> np.ndarray:
        p = np.zeros(len(idx))
        p[self._choice(idx)] = 1.0
        return p

    def upper_bounds(self, allowed: Sequence[str] | None = None) -> np.ndarray:
        """The index of each allowed arm (``inf`` for an untried arm)."""
        idx = self.allowed_indices(allowed)
        counts = self._counts()[idx]
        out = np.full(len(idx), np.inf)
        tried = counts > 0.0
        if tried.any():
            out[tried] = self._ucb(idx[tried], counts[tried].tolist())
        return out

    def _grow(self, prior_from: int | None) -> None:
        super()._grow(prior_from)
        self._priority = self._priorities()

    def _shrink(self, index: int) -> None:
        super()._shrink(index)
        self._priority = np.delete(self._priority, index)

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

    def _counts(self) -> np.ndarray:
        return self._n

    def _scores(self, idx: np.ndarray) -> np.ndarray:
        return self._mean[idx]

    def _update(self, index: int, reward: float, context: Any) -> None:
        self._welford(index, reward)
        self._record(index, reward)

    def _arm_stats(self, index: int) -> dict[str, float]:
        n = float(self._n[index])
        stats = {"value": float(self._mean[index]), "count": n}
        if self._keeps_m2:
            stats["variance"] = float(self._m2[index]) / n if n else 0.0
        return stats
