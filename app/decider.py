"""Turns batches of requests into decisions from the latest policy snapshots.

Pure: the ``select_arm`` agent feeds it parsed requests and snapshots and
sends what it returns. It never changes a policy's learned state: snapshots
come from the learner, and a policy with no snapshot yet decides from its
prior (version 0).
"""

from __future__ import annotations

import base64
import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.experiments.live import ExperimentLog
from app.explain import GuardrailNote, explain_decision, explain_policy
from app.features.request_vector import FEATURE_NAMES, RequestVectorizer
from app.ingress import decision_id, reward_token
from app.policies.base import Policy, PolicyError, Selection, draw_selection
from app.policies.config import PoliciesConfig, PolicyConfig, PolicyConfigError
from app.policies.guardrails import ArmEstimates, Chooser, GuardrailError, Guardrails
from app.policies.parameter_tuner import ParameterTuner
from app.policies.sharding import merge_snapshots
from app.policies.tradeoff import (
    FrontRow,
    Tradeoff,
    TradeoffError,
    learned_front,
    posterior,
    scales_of,
    task_bucket,
    utilities,
    win_probabilities,
)
from app.records import InvalidEvent, PolicySnapshot, Request, decision_doc

log = logging.getLogger(__name__)

JSON = dict[str, Any]


@dataclass
class _Live:
    """One policy as the decider sees it: config, snapshot version, and the
    per-arm-subset tables that make a batch a few vector operations."""

    config: PolicyConfig
    policy: Policy
    version: int = 0
    guardrails: Guardrails = field(default_factory=Guardrails)
    _tables: dict[tuple[str, ...], tuple[np.ndarray, list[str], JSON, int]] = field(
        default_factory=dict
    )
    # Trade-off choices: (arms, task type, weights) -> (probabilities, utilities).
    _tradeoffs: dict[tuple[Any, ...], tuple[list[float], list[float]]] = field(default_factory=dict)

    def table(self, allowed: tuple[str, ...]) -> tuple[np.ndarray, list[str], JSON, int]:
        """(cumulative probabilities, arm names, scores, greedy index) for a subset."""
        t = self._tables.get(allowed)
        if t is None:
            names = list(allowed)
            probs = self.policy.probabilities(names)
            scores = self.policy.scores(names)
            cum = np.cumsum(probs)
            cum /= cum[-1]
            t = (
                cum,
                names,
                dict(zip(names, scores.round(6).tolist(), strict=True)),
                int(scores.argmax()),
            )
            self._tables[allowed] = t
        return t

    def probability(self, allowed: tuple[str, ...], i: int) -> float:
        cum = self.table(allowed)[0]
        return float(cum[i] - (cum[i - 1] if i else 0.0))

    def tradeoff_table(
        self, arms: tuple[str, ...], task_type: str, tradeoff: Tradeoff
    ) -> tuple[list[float], list[float]]:
        """(win probabilities, utilities at the posterior means) of ``arms``
        for a trade-off in a task type, from the objectives this snapshot
        carries; the same state always gives the same probabilities."""
        key = (arms, task_bucket(task_type), tradeoff.weights)
        t = self._tradeoffs.get(key)
        if t is None:
            est = self.guardrails.estimates
            reward = self.config.reward
            scales = scales_of(reward.cost_scale_usd, reward.latency_scale_ms)
            means, ses = posterior(arms, est.objectives(task_type), est.objectives_pooled(), scales)
            seed = [self.config.seed, self.version % 2**32, zlib.crc32(repr(key).encode())]
            probs = win_probabilities(means, ses, tradeoff.weights, scales, seed)
            scores = utilities(means, tradeoff.weights, scales).round(6).tolist()
            if len(self._tradeoffs) >= _MAX_TRADEOFF_TABLES:
                self._tradeoffs.clear()  # explicit weights vary: keep the cache bounded
            t = self._tradeoffs[key] = (probs, scores)
        return t


_MAX_TRADEOFF_TABLES = 4096


class Decider:
    """``decide(requests)`` → one decision document (or an error) per request.

    >>> from app.policies.config import PoliciesConfig
    >>> cfg = PoliciesConfig.from_dict({"policies": {"p": {"algorithm": "thompson_sampling",
    ...     "arms": [{"name": "a", "model": "m1"}, {"name": "b", "model": "m2"}]}}})
    >>> d = Decider(cfg, seed=0)
    >>> req = Request(request_id="r1", tenant_id="t", task_type="qa", created_at=0)
    >>> out = d.decide([req], now_ms=5)[0]
    >>> out["arm"] in ("a", "b"), out["policy_version"], out["available_arms"]
    (True, 0, ['a', 'b'])
    """

    def __init__(
        self,
        config: PoliciesConfig,
        seed: int | None = None,
        extractor: Any = None,
        reward_token_secret: str = "",
        deadline_ms: int = 0,
    ) -> None:
        self.config = config
        # A request without a deadline_ms of its own may wait this long (0: forever).
        self.deadline_ms = deadline_ms
        # When set, each decision carries the token its reward must echo.
        self.reward_token_secret = reward_token_secret
        # A FeatureExtractor (app.features.extraction), when a feature spec is
        # configured: it makes the policy vector and logs the spec's features.
        self.extractor = extractor
        self.vectorizer = extractor if extractor is not None else RequestVectorizer()
        self._check_dimensions(config)
        self._rng = np.random.default_rng(seed)
        self._live: dict[str, _Live] = {
            pid: _Live(pc, pc.build(), 0, pc.build_guardrails())
            for pid, pc in config.policies.items()
        }
        # learning: sharded: each shard's latest snapshot, and the prior they merge from.
        self._shards: dict[str, dict[int, PolicySnapshot]] = {}
        self._priors: dict[str, bytes] = {}
        # The experiments topic folded: which requests a variant decides.
        self.experiments = ExperimentLog()

    def is_newer(self, snap: PolicySnapshot) -> bool:
        """Whether ``snap`` is newer than the state this decider decides a
        configured policy from."""
        live = self._live.get(snap.policy_id)
        return live is not None and snap.version > live.version

    def apply_snapshot(self, snap: PolicySnapshot) -> bool:
        """Use a newer snapshot; older or unknown-policy ones are ignored. A
        shard's snapshot (learning: sharded) is merged with the other shards'
        latest into the policy's."""
        if snap.shard is not None:
            return self._apply_shard(snap)
        live = self._live.get(snap.policy_id)
        if live is None or snap.version <= live.version:
            return False
        if snap.algorithm != live.config.algorithm:
            return False  # written before an algorithm switch; the learner will catch up
        policy = live.config.restore(base64.b64decode(snap.state))
        self._take(live, policy, snap.version, ArmEstimates.from_arm_stats(snap.arm_stats))
        return True

    def _take(self, live: _Live, policy: Policy, version: int, estimates: ArmEstimates) -> None:
        guardrails = live.guardrails  # budgets carry over; estimates come from the learner
        guardrails.estimates = estimates
        self._live[live.config.policy_id] = _Live(live.config, policy, version, guardrails)

    def _apply_shard(self, snap: PolicySnapshot) -> bool:
        """Take ``snap`` as its shard's latest and decide from the shards'
        states merged (app/policies/sharding.py), at the sum of their
        versions; False when it changes nothing or cannot merge."""
        live = self._live.get(snap.policy_id)
        if live is None or live.config.learning != "sharded":
            return False
        if snap.algorithm != live.config.algorithm or snap.shard is None:
            return False
        shards = self._shards.setdefault(snap.policy_id, {})
        old = shards.get(snap.shard)
        if old is not None and snap.version <= old.version:
            return False
        shards[snap.shard] = snap
        parts = list(shards.values())
        version = sum(p.version for p in parts)
        if version <= live.version:
            return False
        prior = self._priors.get(snap.policy_id)
        if prior is None:
            prior = self._priors[snap.policy_id] = live.config.build().snapshot()
        try:
            state = merge_snapshots(prior, [base64.b64decode(p.state) for p in parts])
        except PolicyError as exc:  # e.g. shards still of the previous hyperparameters
            log.warning("policy %s: shard states not merged: %s", snap.policy_id, exc)
            return False
        estimates = ArmEstimates.pooled([ArmEstimates.from_arm_stats(p.arm_stats) for p in parts])
        self._take(live, live.config.restore(state), version, estimates)
        return True

    def reconfigure(self, config: PoliciesConfig) -> None:
        """Take a changed policies config without a restart. Same algorithm:
        the learned state carries over (arms and hyperparameters reconciled);
        a switched algorithm decides from its prior until the learner's first
        snapshot of it, whose version is higher."""
        self._check_dimensions(config)
        live = {}
        for pid, pc in config.policies.items():
            old = self._live.get(pid)
            guardrails = pc.build_guardrails()
            if old is not None:
                guardrails.estimates = old.guardrails.estimates
            if old is not None and old.config.algorithm == pc.algorithm:
                live[pid] = _Live(pc, pc.restore(old.policy.snapshot()), old.version, guardrails)
            else:
                live[pid] = _Live(pc, pc.build(), old.version if old else 0, guardrails)
        self.config, self._live = config, live
        # A changed config builds other priors; shards of a policy whose
        # algorithm or learning mode changed start afresh.
        self._priors.clear()
        for pid in list(self._shards):
            now_pc = config.policies.get(pid)
            kept = self._shards[pid]
            if now_pc is None or now_pc.learning != "sharded":
                del self._shards[pid]
            else:
                algorithm = now_pc.algorithm
                self._shards[pid] = {k: v for k, v in kept.items() if v.algorithm == algorithm}

    def _check_dimensions(self, config: PoliciesConfig) -> None:
        check_dimensions(config, self.vectorizer.dim)

    def version(self, policy_id: str) -> int:
        return self._live[policy_id].version

    def fallback(self, request: Request, now_ms: int) -> JSON:
        """The policy's fallback arm, flagged: what a client uses when no
        decision comes in time."""
        pc = self.config.get(request.policy_id)
        if pc is None:
            raise InvalidEvent("unknown_policy", f"no policy {request.policy_id!r}")
        doc = _fixed_arm(request, pc, pc.fallback_arm, 0, now_ms, fallback=True)
        doc["fallback_reason"] = "no_answer"
        return doc

    def decide(self, requests: list[Request], now_ms: int) -> list[JSON | InvalidEvent]:
        out: list[JSON | InvalidEvent] = [None] * len(requests)  # type: ignore[list-item]
        groups: dict[tuple[str, tuple[str, ...], bool], list[int]] = defaultdict(list)
        guarded: list[tuple[_Live, tuple[str, ...], int]] = []
        explaining: list[int] = []  # decided on the vectorised paths, explanation asked
        tagged: dict[int, tuple[str, str]] = {}  # in an experiment: its id and variant
        deadline = self.deadline_ms
        for i, req in enumerate(requests):
            pid = req.policy_id or self.config.default_policy
            # Past its deadline: the policy's fallback arm, outside any
            # experiment (the variant did not decide it).
            limit = req.deadline_ms or deadline
            late = limit > 0 and now_ms - req.created_at > limit
            if self.experiments.active and not late:
                variant_pid = self._variant_policy(pid, req, i, now_ms, out, tagged)
                if variant_pid is None:
                    continue  # a fixed arm's variant: decided
                pid = variant_pid
            live = self._live.get(pid)
            if live is None:
                out[i] = InvalidEvent(
                    "unknown_policy", f"no policy {pid!r}; known: {sorted(self._live)}"
                )
                continue
            if not live.config.allows(req.tenant_id):
                out[i] = InvalidEvent(
                    "unauthorized_policy", f"tenant is not allowed to use policy {pid!r}"
                )
                continue
            if req.candidates is None:
                allowed = tuple(live.config.arm_names)
            else:
                unknown = [a for a in req.candidates if not live.policy.has_arm(a)]
                if unknown:
                    out[i] = InvalidEvent(
                        "unknown_arm", f"candidates {unknown} are not arms of policy {pid!r}"
                    )
                    continue
                allowed = tuple(req.candidates)
            if late:
                out[i] = _late(req, live, allowed, now_ms)
                continue
            if req.tradeoff is not None:  # decided for its trade-off, per request
                guarded.append((live, allowed, i))
                continue
            meta = req.metadata or {}
            if live.guardrails.per_request or "max_cost_usd" in meta or "max_latency_ms" in meta:
                guarded.append((live, allowed, i))
                continue
            if req.explain and not live.config.explain:  # the policy's own: per group below
                explaining.append(i)
            groups[(pid, allowed, req.priority < live.config.max_explore_priority)].append(i)

        for (pid, allowed, explore), members in groups.items():
            live = self._live[pid]
            if live.config.explain:
                explaining.extend(members)
            if live.policy.contextual:
                self._decide_contextual(live, allowed, explore, members, requests, out, now_ms)
                continue
            cum, names, scores, greedy = live.table(allowed)
            if explore:
                picks = np.searchsorted(cum, self._rng.random(len(members)), side="right")
                np.minimum(picks, len(names) - 1, out=picks)
                chosen = picks.tolist()
            else:
                chosen = [greedy] * len(members)
            probs = (
                {j: live.probability(allowed, j) for j in set(chosen)} if explore else {greedy: 1.0}
            )
            arms = [live.config.arm(name) for name in names]
            for i, j in zip(members, chosen, strict=True):
                arm = arms[j]
                out[i] = _decision(
                    requests[i],
                    pid,
                    policy_version=live.version,
                    arm=arm.name,
                    model=arm.model,
                    parameters=arm.parameters,
                    available_arms=names,
                    propensity=probs[j],
                    scores=scores,
                    explored=j != greedy,
                    fallback=False,
                    decided_at=now_ms,
                )
        for live, allowed, i in guarded:
            out[i] = self._decide_guarded(live, allowed, requests[i], now_ms)
        if explaining:
            self._explain_vectorised(requests, out, explaining)
        for i, (experiment_id, variant) in tagged.items():
            doc = out[i]
            if isinstance(doc, dict):
                doc["experiment_id"], doc["variant"] = experiment_id, variant
        if self.extractor is not None:
            self.extractor.annotate(requests, out)
        if self.reward_token_secret:
            secret = self.reward_token_secret
            for doc in out:
                if isinstance(doc, dict):
                    doc["reward_token"] = reward_token(secret, doc["tenant_id"], doc["request_id"])
        return out

    def _variant_policy(
        self,
        pid: str,
        req: Request,
        i: int,
        now_ms: int,
        out: list[JSON | InvalidEvent],
        tagged: dict[int, tuple[str, str]],
    ) -> str | None:
        """The policy that decides a request of ``pid``: its experiment
        variant's (app/experiments/live.py), or ``pid`` outside experiments.
        A fixed arm's variant decides here (None), with propensity 1. A
        request the variant cannot serve (a tenant its policy refuses,
        candidates it lacks) is decided outside the experiment."""
        found = self.experiments.assign(pid, req.tenant_id, req.metadata)
        live = self._live.get(pid)
        if found is None or live is None or not live.config.allows(req.tenant_id):
            return pid  # the policy's own checks refuse what it must
        exp, variant = found
        tag = (exp.experiment_id, variant.name)
        if variant.policy is not None:
            v = self._live.get(variant.policy)
            if v is None or not v.config.allows(req.tenant_id):
                return pid
            if req.candidates is not None and not all(map(v.policy.has_arm, req.candidates)):
                return pid
            tagged[i] = tag
            return variant.policy
        name = variant.arm
        if (
            name is None
            or not live.policy.has_arm(name)
            or (req.candidates and name not in req.candidates)
        ):
            return pid
        try:  # the policy's learner learns the arm's reward from the same context
            row = self.context_row(live.config, req) if live.policy.contextual else None
        except InvalidEvent:
            return pid
        doc = _fixed_arm(req, live.config, name, live.version, now_ms, fallback=False)
        if row is not None:
            doc["features"] = row
        out[i] = doc
        tagged[i] = tag
        return None

    def _decide_guarded(
        self, live: _Live, allowed: tuple[str, ...], req: Request, now_ms: int
    ) -> JSON | InvalidEvent:
        """One request through the policy's guardrails (budgets, warm-up,
        cost/latency limits): per request, off the vectorised path."""
        tradeoff = None
        if req.tradeoff is not None:
            try:
                tradeoff = Tradeoff.parse(req.tradeoff)
            except TradeoffError as exc:
                return InvalidEvent("invalid_value", f"'tradeoff': {exc}")
        try:
            row = self.context_row(live.config, req) if live.policy.contextual else None
        except InvalidEvent as exc:
            return exc
        try:
            g = live.guardrails.choose(
                live.policy,
                None if row is None else np.asarray(row),
                list(allowed),
                req.metadata or {},
                req.tenant_id,
                req.priority,
                now_ms,
                chooser=None if tradeoff is None else self._chooser(live, req, tradeoff),
            )
        except GuardrailError as exc:
            return InvalidEvent("invalid_value", str(exc))
        arm = live.config.arm(g.arm)
        doc = _decision(
            req,
            live.config.policy_id,
            policy_version=live.version,
            arm=arm.name,
            model=arm.model,
            parameters=arm.parameters,
            available_arms=list(g.allowed),  # the arms the propensity refers to
            propensity=g.propensity,
            scores={a: round(v, 6) for a, v in g.selection.scores.items()},
            explored=g.explored,
            fallback=g.flagged,
            decided_at=now_ms,
        )
        if g.flagged:  # no arm within the request's limits
            doc["fallback_reason"] = "constraints"
        if tradeoff is not None:
            doc["tradeoff"] = tradeoff.record()
        if row is not None:
            doc["features"] = row
        if req.explain or live.config.explain:
            note = GuardrailNote(g.acted[-1], g.acted, g.reason, g.allowed) if g.acted else None
            doc["explanation"] = self._explanation(
                live, allowed, doc, g.selection.probabilities, note
            )
        return doc

    def _chooser(self, live: _Live, req: Request, tradeoff: Tradeoff) -> Chooser:
        """Selects for ``tradeoff`` in the policy's place: probability matching
        on each arm's posterior probability of the highest utility (Thompson
        sampling over the objectives), or the highest utility at the means
        when not exploring (docs/tradeoffs.md)."""

        def choose(arms: list[str], explore: bool) -> Selection:
            probs, scores = live.tradeoff_table(tuple(arms), req.task_type, tradeoff)
            if explore:
                return draw_selection(self._rng, arms, scores, probs)
            best = max(range(len(arms)), key=scores.__getitem__)
            return Selection(arms[best], 1.0, dict(zip(arms, scores, strict=True)), False)

        return choose

    def tradeoff_choice(
        self, policy_id: str, task_type: str, tradeoff: Tradeoff, arms: list[str] | None = None
    ) -> dict[str, tuple[float, float]]:
        """Per arm (default: the policy's), the probability a request of
        ``task_type`` with ``tradeoff`` gets it when exploring, and its utility."""
        live = self._live[policy_id]
        names = tuple(arms or live.config.arm_names)
        probs, scores = live.tradeoff_table(names, task_type, tradeoff)
        return {a: (p, u) for a, p, u in zip(names, probs, scores, strict=True)}

    def front(self, policy_id: str) -> dict[str, list[FrontRow]]:
        """Per task type, the arms' learned objectives and which are on the
        front, from the snapshot the policy decides from."""
        live = self._live[policy_id]
        est = live.guardrails.estimates
        reward = live.config.reward
        scales = scales_of(reward.cost_scale_usd, reward.latency_scale_ms)
        arms = live.config.arm_names
        return {t: learned_front(arms, est.objectives(t), scales) for t in est.task_types()}

    def _explain_vectorised(
        self, requests: list[Request], out: list[JSON | InvalidEvent], members: list[int]
    ) -> None:
        """Explanations for decisions of the vectorised paths, from the state
        they were decided with: the same policies, the same tables."""
        for i in members:
            doc, req = out[i], requests[i]
            if not isinstance(doc, dict):
                continue
            live = self._live[doc["policy_id"]]
            allowed = tuple(doc["available_arms"])
            note = None
            if req.priority < live.config.max_explore_priority:
                if live.policy.contextual:
                    x = np.asarray(doc["features"], dtype=float)
                    probs = live.policy.probabilities(list(allowed), x).tolist()
                else:
                    probs = [live.probability(allowed, j) for j in range(len(allowed))]
                probabilities = dict(zip(allowed, probs, strict=True))
            else:  # the vectorised path's own guardrail: the greedy arm for high priorities
                probabilities = {doc["arm"]: 1.0}
                reason = f"priority {req.priority} >= {live.config.max_explore_priority}"
                note = GuardrailNote("priority", ["priority"], f"{reason}: the greedy arm", allowed)
            doc["explanation"] = self._explanation(live, allowed, doc, probabilities, note)

    def _explanation(
        self,
        live: _Live,
        allowed: tuple[str, ...],
        doc: JSON,
        probabilities: dict[str, float],
        note: GuardrailNote | None,
    ) -> JSON:
        """``doc``'s explanation (app/explain.py); a failure to explain is
        logged and reported in its place, never a failed decision."""
        try:
            return explain_decision(
                live.policy,
                arms=allowed,
                chosen=doc["arm"],
                explored=doc["explored"],
                fallback=doc["fallback"],
                probabilities=probabilities,
                context=doc.get("features"),
                feature_names=self.feature_names(live.config),
                estimates=live.guardrails.estimates,
                guardrail=note,
            )
        except Exception as exc:
            log.exception("policy %s: no explanation", live.config.policy_id)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def feature_names(self, config: PolicyConfig) -> list[str]:
        """The names of a contextual policy's context values, in order."""
        if config.context == "request":
            return list(getattr(self.vectorizer, "logged_columns", FEATURE_NAMES))
        return [f"state[{i}]" for i in range(config.hyperparameters.get("context_dim", 0))]

    def explain_policy(self, policy_id: str) -> JSON:
        """The global report of a configured policy (``KeyError`` otherwise)."""
        live = self._live[policy_id]
        return explain_policy(
            live.policy,
            policy_id=policy_id,
            version=live.version,
            feature_names=self.feature_names(live.config),
            estimates=live.guardrails.estimates,
        )

    def _decide_contextual(
        self,
        live: _Live,
        allowed: tuple[str, ...],
        explore: bool,
        members: list[int],
        requests: list[Request],
        out: list[JSON | InvalidEvent],
        now_ms: int,
    ) -> None:
        """Per-request choices from the request's feature vector, which the
        decision logs (the learner updates with it)."""
        names = list(allowed)
        if live.config.context != "request":
            members = self._with_context(live.config, members, requests, out)
            if not members:
                return
        select_batch = getattr(live.policy, "select_batch", None)
        if select_batch is not None and explore:
            # One vectorised pass over the whole group (LinUCB).
            rows = [self.context_row(live.config, requests[i]) for i in members]
            picks, props, scores = select_batch(np.asarray(rows), names)
            greedy = scores.argmax(axis=1)
            for n, i in enumerate(members):
                j = int(picks[n])
                arm = live.config.arm(names[j])
                doc = _decision(
                    requests[i],
                    live.config.policy_id,
                    policy_version=live.version,
                    arm=arm.name,
                    model=arm.model,
                    parameters=arm.parameters,
                    available_arms=names,
                    propensity=float(props[n]),
                    scores=dict(zip(names, scores[n].round(6).tolist(), strict=True)),
                    explored=j != int(greedy[n]),
                    fallback=False,
                    decided_at=now_ms,
                )
                doc["features"] = rows[n]
                out[i] = doc
            return
        # A tuning policy serves the arm with call parameters of its own,
        # and logs the probability of the pair (app/policies/parameter_tuner.py).
        choose = live.policy.choose if isinstance(live.policy, ParameterTuner) else None
        for i in members:
            row = self.context_row(live.config, requests[i])
            if choose is not None:
                c = choose(np.asarray(row), names, explore)
                s, parameters, propensity, explored = (
                    c.selection,
                    c.parameters,
                    c.propensity,
                    c.explored,
                )
                arm = live.config.arm(c.arm)
                parameters = {**arm.parameters, **parameters}
            else:
                s = live.policy.select(np.asarray(row), names, explore)
                arm = live.config.arm(s.arm)
                parameters, propensity, explored = arm.parameters, s.propensity, s.explored
            doc = _decision(
                requests[i],
                live.config.policy_id,
                policy_version=live.version,
                arm=arm.name,
                model=arm.model,
                parameters=parameters,
                available_arms=names,
                propensity=propensity,
                scores={a: round(v, 6) for a, v in s.scores.items()},
                explored=explored,
                fallback=False,
                decided_at=now_ms,
            )
            doc["features"] = row
            out[i] = doc

    def context_row(self, config: PolicyConfig, req: Request) -> list[float]:
        """What a contextual policy decides on: the request's engineered
        vector, or the state its workflow carries (``context: workflow``)."""
        if config.context == "request":
            return self.vectorizer.row(req)
        state = (req.workflow or {}).get("state")
        dim = config.hyperparameters["context_dim"]
        if state is None or len(state) != dim:
            got = "none" if state is None else f"{len(state)} numbers"
            raise InvalidEvent(
                "invalid_value",
                f"policy {config.policy_id!r} decides on workflow.state, {dim} numbers; "
                f"the request has {got}",
            )
        return [float(v) for v in state]

    def _with_context(
        self,
        config: PolicyConfig,
        members: list[int],
        requests: list[Request],
        out: list[JSON | InvalidEvent],
    ) -> list[int]:
        """The members whose request carries the context the policy needs;
        the others get their error."""
        ok = []
        for i in members:
            try:
                self.context_row(config, requests[i])
            except InvalidEvent as exc:
                out[i] = exc
                continue
            ok.append(i)
        return ok


def check_dimensions(config: PoliciesConfig, request_dim: int) -> None:
    """Raise ``PolicyConfigError`` if a contextual policy deciding on the
    request's vector expects another length than the decider makes."""
    for pc in config.policies.values():
        if pc.context != "request" or not pc.contextual:
            continue
        dim = pc.hyperparameters.get("context_dim")
        if dim != request_dim:
            raise PolicyConfigError(
                f"policy {pc.policy_id!r}: context_dim {dim} differs from the request "
                f"vector's {request_dim} features (13 engineered, plus the feature "
                "spec's columns when it sets policy_vector: true)"
            )


def _late(req: Request, live: _Live, allowed: tuple[str, ...], now_ms: int) -> JSON:
    """The decision for a request past its deadline: the policy's fallback
    arm (the first allowed arm when the request's candidates exclude it),
    propensity 1, from the policy's current version."""
    fallback = live.config.fallback_arm
    name = fallback if fallback in allowed else allowed[0]
    doc = _fixed_arm(req, live.config, name, live.version, now_ms, fallback=True)
    doc["fallback_reason"] = "deadline"
    return doc


def _fixed_arm(
    req: Request, pc: PolicyConfig, name: str, version: int, now_ms: int, fallback: bool
) -> JSON:
    """A decision for one arm, chosen without the policy (its fallback, or
    an experiment's fixed variant): propensity 1, no scores."""
    arm = pc.arm(name)
    return _decision(
        req,
        pc.policy_id,
        policy_version=version,
        arm=arm.name,
        model=arm.model,
        parameters=arm.parameters,
        available_arms=[arm.name],
        propensity=1.0,
        scores={},
        explored=False,
        fallback=fallback,
        decided_at=now_ms,
    )


def _decision(
    req: Request,
    policy_id: str,
    *,
    policy_version: int,
    arm: str,
    model: str,
    parameters: JSON,
    available_arms: list[str],
    propensity: float,
    scores: JSON,
    explored: bool,
    fallback: bool,
    decided_at: int,
) -> JSON:
    doc = decision_doc(
        decision_id=decision_id(req.tenant_id, req.request_id),
        request_id=req.request_id,
        tenant_id=req.tenant_id,
        policy_id=policy_id,
        policy_version=policy_version,
        arm=arm,
        model=model,
        parameters=parameters,
        available_arms=available_arms,
        propensity=propensity,
        scores=scores,
        explored=explored,
        fallback=fallback,
        requested_at=req.created_at,
        decided_at=decided_at,
    )
    # The learner keeps the arms' objectives per task type (docs/tradeoffs.md).
    doc["task_type"] = req.task_type
    if req.workflow is not None:
        # The episode's id and step travel with the decision to the learner;
        # the state itself is the decision's feature vector.
        doc["workflow"] = {k: v for k, v in req.workflow.items() if k != "state"}
    return doc
