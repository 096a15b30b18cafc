"""A bandit over algorithms: route each decision to one of several candidate policies."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, ClassVar

import numpy as np
import orjson

from app.policies.base import (
    InvalidRewardError,
    Policy,
    PolicyError,
    Selection,
    draw_selection,
    weighted_draw,
)

METAS = ("exp3", "thompson")
# Without ``candidates``: hedge between stationary and drift-following
# Thompson sampling (providers drift).
DEFAULT_CANDIDATES: tuple[dict[str, Any], ...] = (
    {"algorithm": "thompson_sampling", "hyperparameters": {}},
    {"algorithm": "thompson_sampling", "hyperparameters": {"discount": 0.99}},
)


class MetaSelector(Policy):
    """Hold N candidate policies on the same arms — each an ``algorithm`` with
    its ``hyperparameters`` — and route each decision to one of them, chosen
    by a bandit over the candidates.

    **Routing.** Candidate ``c`` gets the decision with probability ``q_c``
    and then chooses an arm with its own probabilities ``P_c``, so the
    logged propensity is the exact mixture ``P(arm) = Σ_c q_c · P_c(arm)``
    (what :meth:`probabilities` returns), and the logs stay valid for
    off-policy evaluation. Both draws come from this policy's generator;
    the candidates' own generators are not used by selection.

    **Learning.** ``update`` has no decision id, so which candidate chose
    is unknown. Every candidate learns from every outcome (off-policy, from
    the shared log: it is given the logged propensity, or the mixture's when
    none is logged), and the meta level credits candidate ``c`` with its
    responsibility for the arm, ``ρ_c = q_c · P_c(arm) / P(arm)`` (the
    probability it made the decision, Σ_c ρ_c = 1), using the current
    probabilities over all arms:

    - ``meta="exp3"`` (default): Exp3 over the candidates with the
      Rao-Blackwellised gain ``ρ_c · r / q_c = r · P_c(arm) / P(arm)``
      (an unbiased estimate of candidate ``c``'s expected reward — Exp4's
      estimate), ``q = (1 - γ) · w / Σw + γ / N``, and the log-weight of
      ``c`` grows by ``γ / N`` times its gain (at most 1 per update);
    - ``meta="thompson"``: a Beta posterior per candidate over the reward
      of the decisions it makes, updated by ``ρ_c · r`` successes and
      ``ρ_c · (1 - r)`` failures; ``q`` are the posterior win
      probabilities, estimated like ``ThompsonSampling``'s with
      ``propensity_samples`` draws from a generator seeded by the state.

    The credit is approximate when the logged decision was made among a
    subset of arms, by an older snapshot, or by a guardrail. Rewards must
    be in [0, 1]. Without ``candidates`` it hedges between Thompson
    sampling and its discounted (``discount=0.99``) variant.

    **Scores** are those of the leading candidate (highest ``q``, the first
    on a tie), so ``explore=False`` gives the arm it would exploit. The
    policy is contextual when any candidate is; ``context_dim`` is then
    passed to the contextual candidates. ``stats`` are per arm over all
    outcomes; :meth:`candidate_stats` gives each candidate's weight ``q`` and
    its estimated reward (the mean of ``r · P_c(arm) / P(arm)``).

    >>> ms = MetaSelector(["a", "b", "c"], seed=3, candidates=[
    ...     {"algorithm": "thompson_sampling", "hyperparameters": {"propensity_samples": 1000}},
    ...     {"algorithm": "epsilon_greedy", "hyperparameters": {"epsilon": 1.0}}])
    >>> rng = __import__("random").Random(0)
    >>> for _ in range(1000):
    ...     s = ms.select()
    ...     ms.update(s.arm, float(rng.random() < {"a": 0.9, "b": 0.5, "c": 0.2}[s.arm]),
    ...               propensity=s.propensity)
    >>> {k: round(v, 2) for k, v in ms.candidate_weights().items()}
    {'0:thompson_sampling': 0.95, '1:epsilon_greedy': 0.05}
    >>> ms.select(explore=False).arm
    'a'
    """

    algorithm = "meta_selector"
    example_params: ClassVar[dict[str, Any]] = {
        "candidates": [
            {"algorithm": "thompson_sampling", "hyperparameters": {"propensity_samples": 2000}},
            {"algorithm": "epsilon_greedy", "hyperparameters": {"epsilon": 0.2}},
        ]
    }

    def __init__(
        self,
        arms: Sequence[str],
        seed: int | None = None,
        candidates: Sequence[dict[str, Any]] | None = None,
        meta: str = "exp3",
        gamma: float = 0.1,
        propensity_samples: int = 10_000,
        context_dim: int | None = None,
    ) -> None:
        super().__init__(arms, seed)
        self.candidates = _normalise(candidates)
        self.meta = meta
        self.gamma = gamma
        self.propensity_samples = propensity_samples
        self.context_dim = context_dim
        self._check()
        self._policies = [self._build(i, spec) for i, spec in enumerate(self.candidates)]
        self._built_with: tuple[str, list[dict[str, Any]]] = (
            self.meta,
            copy.deepcopy(self.candidates),
        )
        n, k = len(self._policies), len(self._arms)
        self._logw = np.zeros(n)  # Exp3 log-weights, maximum 0
        self._alpha = np.ones(n)  # Thompson: Beta posteriors of the candidates' rewards
        self._beta = np.ones(n)
        self._gain = np.zeros(n)  # Σ r · P_c(arm) / P(arm)
        self._pulls = np.zeros(k)
        self._reward_sum = np.zeros(k)
        self._updates = 0
        self._q: np.ndarray | None = None
        self._mix_cache: dict[tuple[str, ...], np.ndarray] = {}

    # -- hyperparameters ---------------------------------------------------------------------
    def _check(self) -> None:
        from app.policies.registry import algorithms

        known = algorithms()
        if not self.candidates:
            raise ValueError("candidates must name at least one policy")
        for spec in self.candidates:
            if spec["algorithm"] == self.algorithm:
                raise ValueError("candidates cannot themselves be meta_selector policies")
            if spec["algorithm"] not in known:
                raise ValueError(
                    f"candidates: unknown algorithm {spec['algorithm']!r}; known: {sorted(known)}"
                )
        if self.meta not in METAS:
            raise ValueError(f"meta must be one of {METAS}, got {self.meta!r}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.propensity_samples < 100:
            raise ValueError("propensity_samples must be at least 100")
        contextual = [s for s in self.candidates if known[s["algorithm"]].contextual]
        dims = {
            s["hyperparameters"]["context_dim"]
            for s in contextual
            if "context_dim" in s["hyperparameters"]
        }
        if contextual and self.context_dim is None:
            if len(dims) != 1:
                raise ValueError("context_dim is needed: a candidate is contextual")
            self.context_dim = dims.pop()
        if dims - {self.context_dim}:
            raise ValueError(
                f"candidates' context_dim {sorted(dims)} differ from {self.context_dim}"
            )
        # The contract's ``contextual`` is a class attribute; here it depends on the candidates.
        self.contextual = bool(contextual)  # type: ignore[misc]

    @classmethod
    def contextual_for(cls, hyperparameters: dict[str, Any]) -> bool:
        """Whether a policy built with these hyperparameters is contextual:
        what a config must know before building it (to supply ``context_dim``)."""
        from app.policies.registry import algorithms

        known = algorithms()
        specs = _normalise(hyperparameters.get("candidates"))
        return any(known[s["algorithm"]].contextual for s in specs if s["algorithm"] in known)

    def _build(self, i: int, spec: dict[str, Any]) -> Policy:
        from app.policies.registry import algorithms

        cls = algorithms()[spec["algorithm"]]
        seed = (
            None
            if self.seed is None
            else int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0])
        )
        return cls(self._arms, seed=seed, **self._hyperparameters(cls, spec))

    def _hyperparameters(self, cls: type[Policy], spec: dict[str, Any]) -> dict[str, Any]:
        hp = dict(spec["hyperparameters"])
        if cls.contextual:
            hp.setdefault("context_dim", self.context_dim)
        return hp

    def _params_changed(self) -> None:
        """Keep what each candidate learnt when its algorithm stays (its new
        hyperparameters apply); a candidate of another algorithm, or a new
        one, starts afresh; changing ``meta`` restarts the meta level."""
        from app.policies.registry import algorithms

        self.candidates = _normalise(self.candidates)
        self._check()
        old_meta, old_specs = self._built_with
        restart = old_meta != self.meta
        policies, keep = [], []
        for i, spec in enumerate(self.candidates):
            if i < len(old_specs) and old_specs[i]["algorithm"] == spec["algorithm"]:
                policy = self._policies[i]
                cls = algorithms()[spec["algorithm"]]
                fresh = cls(self._arms, seed=policy.seed, **self._hyperparameters(cls, spec))
                policy.set_params(**fresh._params())
                keep.append(i)
            else:
                policy = self._build(i, spec)
                keep.append(-1)
            policies.append(policy)
        self._policies = policies
        n = len(policies)
        logw, alpha, beta, gain = np.zeros(n), np.ones(n), np.ones(n), np.zeros(n)
        for j, i in enumerate(keep):
            if i >= 0 and not restart:
                logw[j], alpha[j], beta[j], gain[j] = (
                    self._logw[i],
                    self._alpha[i],
                    self._beta[i],
                    self._gain[i],
                )
        self._logw, self._alpha, self._beta, self._gain = logw - logw.max(), alpha, beta, gain
        self._built_with = (self.meta, copy.deepcopy(self.candidates))
        self._changed()

    # -- the meta level ----------------------------------------------------------------------
    def _changed(self) -> None:
        self._q = None
        self._mix_cache.clear()

    def _weights(self) -> np.ndarray:
        """``q``: the probability of routing to each candidate."""
        if self._q is None:
            n = len(self._policies)
            if self.meta == "exp3":
                w = np.exp(self._logw - self._logw.max())
                q = w * ((1.0 - self.gamma) / math.fsum(w.tolist())) + self.gamma / n
            elif n == 1:
                q = np.ones(1)
            else:
                # Seeded by the state: deterministic, and independent of the selections made.
                rng = np.random.default_rng([self.seed or 0, self._updates])
                draws = rng.beta(self._alpha, self._beta, size=(self.propensity_samples, n))
                q = np.bincount(draws.argmax(axis=1), minlength=n) / self.propensity_samples
            q.flags.writeable = False
            self._q = q
        return self._q

    @property
    def candidate_policies(self) -> list[Policy]:
        """The candidate policies, in ``candidates`` order (live objects: do
        not update them directly)."""
        return list(self._policies)

    def labels(self) -> list[str]:
        return [f"{i}:{spec['algorithm']}" for i, spec in enumerate(self.candidates)]

    def candidate_weights(self) -> dict[str, float]:
        """Each candidate's routing probability ``q``, by ``"<position>:<algorithm>"``."""
        return dict(zip(self.labels(), self._weights().tolist(), strict=True))

    def candidate_stats(self) -> dict[str, dict[str, float]]:
        """Per candidate: ``weight`` (``q``) and ``estimated_reward``, the mean
        of its importance-weighted gains (0 before any outcome; noisy for a
        candidate rarely routed to, which ``meta="thompson"`` allows); with
        ``meta="thompson"`` also its posterior mean reward."""
        q = self._weights().tolist()
        out = {}
        for i, label in enumerate(self.labels()):
            s = {
                "weight": q[i],
                "estimated_reward": float(self._gain[i] / self._updates) if self._updates else 0.0,
            }
            if self.meta == "thompson":
                s["posterior_mean"] = float(self._alpha[i] / (self._alpha[i] + self._beta[i]))
            out[label] = s
        return out

    def _leader(self) -> Policy:
        return self._policies[int(np.argmax(self._weights()))]

    # -- decisions ---------------------------------------------------------------------------
    def scores(self, allowed: Sequence[str] | None = None, context: Any = None) -> np.ndarray:
        self.allowed_indices(allowed)
        self.check_context(context)
        return np.array(self._leader().scores(allowed, context), dtype=float)

    def probabilities(
        self, allowed: Sequence[str] | None = None, context: Any = None
    ) -> np.ndarray:
        self.allowed_indices(allowed)
        self.check_context(context)
        key = tuple(allowed) if allowed is not None else tuple(self._arms)
        if not self.contextual:
            cached = self._mix_cache.get(key)
            if cached is not None:
                return cached
        q = self._weights().tolist()
        mix = sum(
            (
                qc * c.probabilities(allowed, context)
                for qc, c in zip(q, self._policies, strict=True)
            ),
            start=np.zeros(len(key)),
        )
        mix = np.minimum(mix / math.fsum(mix.tolist()), 1.0)
        mix.flags.writeable = False
        if not self.contextual:
            if len(self._mix_cache) >= 256:
                self._mix_cache.clear()
            self._mix_cache[key] = mix
        return mix

    def select(
        self, context: Any = None, allowed: Sequence[str] | None = None, explore: bool = True
    ) -> Selection:
        """Route to a candidate (probability ``q_c``), let it choose (its
        ``P_c``); log the mixture probability of the arm."""
        if not explore:
            return super().select(context, allowed, explore)
        names = list(allowed) if allowed is not None else self._arms
        scores = self.scores(names, context).tolist()
        probs = self.probabilities(names, context).tolist()
        c = weighted_draw(self._rng, list(accumulate(self._weights().tolist())))
        chosen_by = self._policies[c].probabilities(names, context).tolist()
        return draw_selection(
            self._rng, names, scores, probs, cumulative=list(accumulate(chosen_by))
        )

    # -- learning ----------------------------------------------------------------------------
    def _update(self, index: int, reward: float, context: Any) -> None:
        if not 0.0 <= reward <= 1.0:
            raise InvalidRewardError(f"meta_selector needs rewards in [0, 1], got {reward}")
        self.check_context(context)
        arm = self._arms[index]
        q = self._weights()
        pc = np.array([float(c.probabilities(None, context)[index]) for c in self._policies])
        mix = math.fsum((q * pc).tolist())
        logged = self._logged_propensity
        propensity = logged if logged is not None else (mix if mix > 0.0 else None)
        for c in self._policies:
            c.update(arm, reward, context, propensity=propensity)
        if mix > 0.0:  # else no candidate could have chosen the arm: no one to credit
            gain = reward * pc / mix
            self._gain += gain
            if self.meta == "exp3":
                self._logw += self.gamma / len(self._policies) * gain
                self._logw -= self._logw.max()
            else:
                rho = q * pc / mix
                self._alpha += rho * reward
                self._beta += rho * (1.0 - reward)
        self._pulls[index] += 1.0
        self._reward_sum[index] += reward
        self._updates += 1
        self._changed()

    # -- arms --------------------------------------------------------------------------------
    def _grow(self, prior_from: int | None) -> None:
        arm = self._arms[-1]
        source = self._arms[prior_from] if prior_from is not None else None
        for c in self._policies:
            c.add_arm(arm, prior_from=source)
        self._pulls = np.append(self._pulls, 0.0)
        self._reward_sum = np.append(self._reward_sum, 0.0)
        self._changed()

    def _shrink(self, index: int) -> None:
        for c in self._policies:
            c.remove_arm(c.arms[index])
        self._pulls = np.delete(self._pulls, index)
        self._reward_sum = np.delete(self._reward_sum, index)
        self._changed()

    # -- reporting and state -----------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, float]]:
        pulls, sums = self._pulls.tolist(), self._reward_sum.tolist()
        return {
            arm: {"pulls": pulls[i], "mean_reward": sums[i] / pulls[i] if pulls[i] else 0.0}
            for i, arm in enumerate(self._arms)
        }

    def explain(self, selection: Selection) -> str:
        lines = [
            super().explain(selection),
            "  candidates (routing probability, estimated reward):",
        ]
        for label, s in self.candidate_stats().items():
            lines.append(f"    {label}: q={s['weight']:.3f}, reward {s['estimated_reward']:.4f}")
        return "\n".join(lines)

    def _get_state(self) -> dict[str, Any]:
        return {
            "candidates": [orjson.loads(c.snapshot()) for c in self._policies],
            "logw": self._logw.tolist(),
            "alpha": self._alpha.tolist(),
            "beta": self._beta.tolist(),
            "gain": self._gain.tolist(),
            "pulls": self._pulls.tolist(),
            "reward_sum": self._reward_sum.tolist(),
            "updates": self._updates,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        from app.policies.registry import algorithms

        docs = state["candidates"]
        if len(docs) != len(self.candidates):
            raise PolicyError(
                f"the snapshot holds {len(docs)} candidates, the parameters {len(self.candidates)}"
            )
        self._policies = [
            algorithms()[spec["algorithm"]].restore(orjson.dumps(doc))
            for spec, doc in zip(self.candidates, docs, strict=True)
        ]
        for name in ("logw", "alpha", "beta", "gain", "pulls", "reward_sum"):
            setattr(self, f"_{name}", np.asarray(state[name], dtype=float))
        self._updates = int(state["updates"])
        self._changed()


def _normalise(candidates: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """``[{"algorithm": str, "hyperparameters": {...}}, ...]``, deep-copied."""
    if candidates is None:
        candidates = DEFAULT_CANDIDATES
    out = []
    for spec in candidates:
        if not isinstance(spec, dict) or not isinstance(spec.get("algorithm"), str):
            raise ValueError(f"each candidate needs an algorithm name, got {spec!r}")
        extra = set(spec) - {"algorithm", "hyperparameters"}
        if extra:
            raise ValueError(f"candidate {spec['algorithm']!r}: unknown key(s) {sorted(extra)}")
        hp = spec.get("hyperparameters") or {}
        if not isinstance(hp, dict):
            raise ValueError(f"candidate {spec['algorithm']!r}: hyperparameters must be a mapping")
        out.append({"algorithm": spec["algorithm"], "hyperparameters": copy.deepcopy(hp)})
    return out
