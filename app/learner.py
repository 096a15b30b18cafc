"""Applies outcomes to policies, exactly once per outcome, and says when a
snapshot is due. Pure: the ``learn_from_outcomes`` agent persists
:meth:`Learner.state` in a RocksDB table and sends the snapshots.

Idempotence: the state of a policy records, per source partition, the offset
of the last outcome it applied, so an outcome redelivered after a crash
(state written, offset not committed) is recognised and skipped. The agent
also remembers applied request ids, so an outcome emitted twice by the join
is applied once.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app import faults
from app.drift.adaptation import adapt
from app.drift.config import AdaptationSpec
from app.episodes import Episodes, Transition
from app.policies.base import Policy, PolicyError
from app.policies.config import (
    PoliciesConfig,
    PolicyConfig,
    PolicyConfigError,
    mapping_hash,
    policy_from_mapping,
)
from app.policies.guardrails import ArmEstimates
from app.policies.parameter_tuner import ParameterTuner
from app.records import DriftEvent, Outcome, PolicySnapshot, RegistryEvent, ShadowDecision
from app.shadow import APPRENTICE_WINDOW, Agreement, OffPolicyValue, shadow_draw
from app.versions import VersionError, new_event_id, serving_holds

JSON = dict[str, Any]


@dataclass
class _Learning:
    config: PolicyConfig
    policy: Policy
    updates: int = 0
    offsets: dict[str, int] = field(default_factory=dict)
    published_version: int = 0
    published_at: int = 0
    # Counts every update the policy id ever had, across algorithm switches:
    # snapshot versions must keep rising for the deciders to take them.
    version: int = 0
    # Per-arm cost and latency, for the deciders' request constraints, and
    # per task type the arms' objectives, for trade-off decisions.
    estimates: ArmEstimates = field(default_factory=ArmEstimates)
    # Open multi-step workflows (RL policies only).
    episodes: Episodes | None = None
    # The oldest rewarded_at among the outcomes applied since the last snapshot.
    oldest_reward_at: int | None = None
    # The shard (outcomes partition) of a policy with learning: sharded.
    shard: int | None = None
    # Registry (app/versions.py): the version this state descends from, what
    # it learned since (outcomes, their time range), and the version served
    # while its configuration is not the policies file's.
    parent: int | None = None
    since: JSON = field(default_factory=dict)
    serving: JSON | None = None
    # Registry versions shadowing this policy, by version number (app/shadow.py).
    shadows: dict[int, Shadow] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.episodes is None and hasattr(self.policy, "observe"):
            self.episodes = Episodes(
                self.config.terminal_arms,
                self.config.episode_timeout_ms,
                monte_carlo=bool(getattr(self.policy, "monte_carlo", False)),
            )


@dataclass
class Shadow:
    """A registry version learning from the policy's outcomes beside it,
    deciding on each as it learns (app/shadow.py)."""

    config: PolicyConfig
    policy: Policy
    started_at: int
    value: OffPolicyValue = field(default_factory=OffPolicyValue)
    version: int = 0
    agreement: Agreement = field(default_factory=Agreement)

    def observe(self, outcome: Outcome) -> ShadowDecision | None:
        """Decide as this version would have, on the served decision's
        context and available arms; score the logged arm by its probability
        (off-policy value); then learn: from the imitation reward while an
        apprentice, else from the outcome's reward. None when it cannot
        decide (no arm in common, a contextual version without features)."""
        allowed = [a for a in outcome.available_arms if self.policy.has_arm(a)]
        if not allowed or outcome.propensity <= 0:
            return None
        try:
            probs = self.policy.probabilities(allowed, outcome.features).tolist()
        except PolicyError:
            return None
        pid, tenant = self.config.policy_id, outcome.tenant_id
        i = shadow_draw(
            probs, f"shadow/{pid}/{self.version}", f"{len(tenant)}:{tenant}{outcome.request_id}"
        )
        arm, agreed, imitating = allowed[i], allowed[i] == outcome.arm, self.agreement.imitating
        try:
            if imitating:
                reward = 1.0 if agreed else 0.0
                self.policy.update(arm, reward, outcome.features, propensity=probs[i])
            elif outcome.arm in allowed:
                self.policy.update(
                    outcome.arm, outcome.reward, outcome.features, propensity=outcome.propensity
                )
        except PolicyError:
            return None
        if outcome.arm in allowed:  # else: an arm it does not have, no evidence either way
            self.value.add(probs[allowed.index(outcome.arm)], outcome.propensity, outcome.reward)
        self.agreement.add(agreed, outcome.outcome_at)
        return ShadowDecision(
            request_id=outcome.request_id,
            tenant_id=tenant,
            policy_id=pid,
            policy_version=outcome.policy_version,
            shadow_version=self.version,
            arm=arm,
            propensity=probs[i],
            available_arms=allowed,
            served_arm=outcome.arm,
            served_propensity=outcome.propensity,
            agreed=agreed,
            apprentice=imitating,
            decided_at=outcome.outcome_at,
        )

    def summary(self) -> JSON:
        """Off-policy estimates and agreement so far."""
        return self.value.summary() | self.agreement.summary()

    def to_dict(self) -> JSON:
        return {
            "config": dict(self.config.source),
            "policy": base64.b64encode(self.policy.snapshot()).decode(),
            "started_at": self.started_at,
            "value": self.value.to_dict(),
            "version": self.version,
            "agreement": self.agreement.to_dict(),
        }

    @classmethod
    def from_dict(cls, pid: str, d: JSON) -> Shadow:
        pc = policy_from_mapping(pid, d["config"], "a shadow version")
        policy = pc.restore(base64.b64decode(d["policy"]))
        return cls(
            pc,
            policy,
            int(d["started_at"]),
            OffPolicyValue.from_dict(d["value"]),
            int(d.get("version", 0)),
            Agreement.from_dict(d.get("agreement") or {}),
        )


class Learner:
    def __init__(
        self,
        config: PoliciesConfig,
        file_config: PoliciesConfig | None = None,
        plan_later: bool = False,
    ) -> None:
        # ``config``: what the worker runs (the file's, with served registry
        # versions in place of their entries); ``file_config``: the file's.
        # ``plan_later``: a tuner's plan falls due in apply and is made by
        # the caller through due_plans (a learner on an event loop).
        self.config = config
        self.plan_later = plan_later
        self.file_config = file_config or config
        self._live: dict[str, _Learning] = {}
        # What the shadows decided, and the apprentices that stopped
        # imitating, since last taken (take_shadow_output).
        self._shadow_decisions: list[ShadowDecision] = []
        self._graduated: list[Shadow] = []

    def known(self, policy_id: str) -> bool:
        return policy_id in self._live

    def forget_all(self) -> None:
        """Drop every policy from memory: each is loaded again from its
        stored state when next needed (after a rebalance, which may have
        moved a partition's learning elsewhere and back)."""
        self._live.clear()

    def published_before(self, policy_id: str, version: int) -> None:
        """The deciders' latest snapshot of a loaded state is ``version``
        (read from the snapshots topic): a state ahead of it (updates written
        and then a kill or a handover before their snapshot) is due at once."""
        live = self._live[policy_id]
        if 0 <= version < live.version and live.published_version >= 0:
            live.published_version, live.published_at = version, 0

    def load(
        self,
        policy_id: str,
        state: JSON | None,
        now: int,
        shard: int | None = None,
        by: str = "learner",
    ) -> RegistryEvent | None:
        """Bring a policy (or one shard of it: the state under
        ``live_key(policy_id, shard)``) into memory from its stored state (or
        its prior). A stored state learned under a configuration that is no
        longer the policy's is returned as a registry version to write."""
        pc = self.config.policies[policy_id]
        key = live_key(policy_id, shard)
        if state is None:
            self._live[key] = _Learning(pc, pc.build(), published_at=now, shard=shard)
            return None
        version = int(state["version"] if "version" in state else state["updates"])
        offsets = dict(state["offsets"])
        estimates = ArmEstimates.from_dict(state.get("estimates") or {})
        serving = state.get("serving")
        if serving is not None and serving_holds(serving, self.file_config.get(policy_id)):
            # Serving a registry version whose entry in the file is unchanged.
            pc = policy_from_mapping(policy_id, serving["config"], "the served registry version")
        else:
            serving = None
        stored = state.get("config")
        retired: RegistryEvent | None = None
        if stored is not None and mapping_hash(stored) != pc.config_hash and shard is None:
            # Learned under another configuration (changed while the worker
            # was down): kept as a version before the new one takes over.
            was = policy_from_mapping(policy_id, stored, "the stored state's configuration")
            old = _Learning(was, was.restore(base64.b64decode(state["policy"])), state["updates"])
            old.version, old.estimates, old.parent = version, estimates, state.get("parent")
            old.since = dict(state.get("since") or {})
            self._live[key] = old
            retired = self.register(key, now, by, "retired", "the configuration changed")
            version = old.version
        if state.get("algorithm") != pc.algorithm:
            # The algorithm was switched in the config: start afresh, but keep
            # the offsets (exactly-once) and the version (monotonic snapshots).
            self._live[key] = _Learning(
                pc, pc.build(), 0, offsets, -1, now, version, estimates, shard=shard
            )
            self._live[key].parent = retired.version if retired else state.get("parent")
            self._live[key].shadows = _shadows(policy_id, state.get("shadows") or {})
            return retired
        policy = pc.restore(base64.b64decode(state["policy"]))
        live = _Learning(pc, policy, state["updates"], offsets, version, now, version, estimates)
        live.shard = shard
        live.parent = retired.version if retired else state.get("parent")
        live.since = {} if retired else dict(state.get("since") or {})
        live.serving = serving
        live.shadows = _shadows(policy_id, state.get("shadows") or {})
        if retired is not None:
            live.published_version = -1
        if live.episodes is not None:
            live.episodes.load(state.get("episodes") or {})
        self._live[key] = live
        return retired

    def reconfigure(
        self,
        config: PoliciesConfig,
        file_config: PoliciesConfig | None = None,
        now: int = 0,
        by: str = "learner",
    ) -> list[RegistryEvent]:
        """Take a changed policies config without a restart: a switched
        algorithm starts from its prior, other changes (arms,
        hyperparameters) apply to the learned state. A snapshot is due at
        once. The state of every policy whose configuration changed is
        returned as a registry version (retired) to write; a served registry
        version holds while the file's entry is the one it replaced."""
        self.config = config
        self.file_config = file_config or config
        retired: list[RegistryEvent] = []
        for key, live in list(self._live.items()):
            pid = live.config.policy_id
            pc = config.policies.get(pid)
            if live.serving is not None:
                if serving_holds(live.serving, self.file_config.get(pid)):
                    continue
                live.serving = None
            if pc is None or pc.learning != live.config.learning:
                # Removed, or its learning mode switched: outcomes now come
                # keyed the other way; its state is loaded afresh when they do.
                del self._live[key]
                continue
            if pc.config_hash != live.config.config_hash and live.shard is None:
                retired.append(self.register(key, now, by, "retired", "the configuration changed"))
            if pc.algorithm != live.config.algorithm:
                live.policy, live.updates = pc.build(), 0
                live.episodes = None
            else:
                live.policy = pc.restore(live.policy.snapshot())
            live.config = pc
            if live.episodes is not None:
                live.episodes.terminal_arms = frozenset(pc.terminal_arms)
                live.episodes.timeout_ms = pc.episode_timeout_ms
            live.__post_init__()
            live.published_version = -1
        return retired

    # -- registry (app/versions.py) -----------------------------------------------------
    def register(
        self,
        key: str,
        now: int,
        by: str,
        status: str = "development",
        reason: str = "",
        request_id: str | None = None,
    ) -> RegistryEvent:
        """The state under ``key`` as a new registry version (its number: the
        snapshot version, raised by one so that it is never reused)."""
        live = self._live[key]
        if live.shard is not None:
            raise VersionError(
                f"policy {live.config.policy_id!r} learns in shards (learning: sharded): "
                "its shards' states are not registered"
            )
        live.version += 1
        state = self.state(key)
        lineage = {**live.since, "offsets": state.pop("offsets"), "total_updates": live.updates}
        if request_id is not None:
            lineage["request"] = request_id
        for k in ("config", "serving", "since", "parent", "shadows"):
            state.pop(k, None)
        event = RegistryEvent(
            event_id=new_event_id(),
            kind="version",
            policy_id=live.config.policy_id,
            created_at=now,
            created_by=by,
            version=live.version,
            status=status,
            reason=reason or None,
            config=dict(live.config.source),
            config_hash=live.config.config_hash,
            state=state,
            parent=live.parent,
            lineage=lineage,
        )
        live.parent, live.since = live.version, {}
        return event

    def serve(
        self, key: str, version: RegistryEvent, now: int, by: str, reason: str
    ) -> list[RegistryEvent]:
        # ``version``: a serve record, which carries its version's
        # configuration and state; its event id ties the records written here
        # to it (``lineage.request``).
        """Serve a registry version (its configuration and learned state) in
        place of the state under ``key``, which is first registered (retired);
        the offsets stay (exactly-once) and the snapshot version rises.
        Returns the records to write: the retired version, then the served
        one's status. A version that cannot be served raises VersionError.

        A serve record without a version number (a promoted rollout's
        challenger: a configuration and state from outside the registry) is
        first registered as a new version, whose record comes before the status."""
        live = self._live[key]
        pid = live.config.policy_id
        if version.config is None or version.state is None:
            raise VersionError(f"version record of {pid!r} without a configuration or state")
        pc, policy = _version_policy(pid, version, "be served")
        if pc.learning != live.config.learning:
            raise VersionError(f"version {version.version} of {pid!r} learns another way")
        number = version.version
        retired = self.register(
            key,
            now,
            by,
            "retired",
            f"replaced by {'a promoted challenger' if number is None else f'version {number}'}",
            version.event_id,
        )
        live.config, live.policy = pc, policy
        live.updates = int(version.state.get("updates", 0))
        live.estimates = ArmEstimates.from_dict(version.state.get("estimates") or {})
        live.episodes = None
        live.__post_init__()
        if live.episodes is not None:
            live.episodes.load(version.state.get("episodes") or {})
        made: list[RegistryEvent] = []
        if number is None:
            made.append(self.register(key, now, by, "development", reason, version.event_id))
            assert made[0].lineage is not None and made[0].version is not None
            made[0].lineage |= version.lineage or {}  # where it came from
            number = made[0].version
        live.version += 1
        live.published_version = -1
        live.parent, live.since = number, {}
        file_pc = self.file_config.get(pid)
        live.serving = (
            None
            if file_pc is not None and file_pc.config_hash == pc.config_hash
            else {
                "version": number,
                "config": dict(version.config),
                "config_hash": pc.config_hash,
                "file_hash": file_pc.config_hash if file_pc is not None else None,
            }
        )
        champion = RegistryEvent(
            event_id=new_event_id(),
            kind="status",
            policy_id=pid,
            created_at=now,
            created_by=by,
            version=number,
            status="champion",
            reason=reason or None,
            # The snapshot version the served state starts at: a decider
            # at or past it decides from the version.
            lineage={"request": version.event_id, "snapshot_version": live.version},
        )
        return [retired, *made, champion]

    def shadow(self, key: str, version: RegistryEvent, now: int) -> None:
        """Start shadowing the policy under ``key`` with a registry version
        (its configuration and state, carried by a status record); the same
        version again starts it afresh. VersionError if it cannot run."""
        live = self._live[key]
        pid = live.config.policy_id
        if version.config is None or version.state is None or version.version is None:
            raise VersionError(f"shadow of {pid!r} without a configuration or state")
        pc, policy = _version_policy(pid, version, "shadow")
        agreement = Agreement()
        asked = version.lineage or {}
        if asked.get("apprentice") is not None:  # apprentice mode (app/shadow.py)
            level, window = asked["apprentice"], asked.get("apprentice_outcomes", APPRENTICE_WINDOW)
            if isinstance(level, bool) or not (isinstance(level, int | float) and 0 < level <= 1):
                raise VersionError(f"apprentice level must be in (0, 1], got {level!r}")
            if not (isinstance(window, int) and 1 <= window <= 100_000):
                raise VersionError(f"apprentice_outcomes must be 1 to 100000, got {window!r}")
            agreement = Agreement(level=float(level), window=window)
        live.shadows[version.version] = Shadow(
            pc, policy, now, version=version.version, agreement=agreement
        )

    def unshadow(self, key: str, number: int) -> bool:
        """Stop a shadow; whether there was one."""
        return self._live[key].shadows.pop(number, None) is not None

    def shadow_values(self, key: str) -> dict[int, JSON]:
        """Each shadow's off-policy estimates and agreement so far (Shadow.summary)."""
        return {n: sh.summary() for n, sh in self._live[key].shadows.items()}

    def take_shadow_output(self) -> tuple[list[ShadowDecision], list[Shadow]]:
        """The shadow decisions made since last taken, and the shadows that
        stopped imitating meanwhile."""
        out = (self._shadow_decisions, self._graduated)
        self._shadow_decisions, self._graduated = [], []
        return out

    def _observe_shadows(self, live: _Learning, outcome: Outcome) -> None:
        for shadow in live.shadows.values():
            imitating = shadow.agreement.imitating
            decision = shadow.observe(outcome)
            if decision is not None:
                self._shadow_decisions.append(decision)
            if imitating and not shadow.agreement.imitating:
                self._graduated.append(shadow)

    def version(self, policy_id: str) -> int:
        """Every update and adaptation the policy id has had (snapshot versions)."""
        return self._live[policy_id].version

    def seen(self, policy_id: str, partition: int | str, offset: int) -> bool:
        last = self._live[policy_id].offsets.get(str(partition), -1)
        return offset <= last

    def apply(
        self, outcome: Outcome, partition: int | str, offset: int, key: str | None = None
    ) -> str:
        """Apply one outcome (to the state under ``key``: its policy's, or
        its shard's); returns ``applied``, ``redelivered``, ``removed_arm``
        or ``rejected`` (the policy refused it, e.g. a contextual policy given
        an outcome without features)."""
        live = self._live[key if key is not None else outcome.policy_id]
        if offset <= live.offsets.get(str(partition), -1):
            return "redelivered"
        live.offsets[str(partition)] = offset
        if outcome.arm not in live.policy.arms:
            return "removed_arm"
        if live.episodes is not None:
            expired = live.episodes.expire(outcome.outcome_at)
            if expired:
                self._observe(live, expired)
            if outcome.workflow is not None and outcome.features is not None:
                live.estimates.observe(outcome.arm, outcome.components, outcome.task_type)
                if len(outcome.features) != getattr(live.policy, "context_dim", -1):
                    return "rejected"
                self._observe(live, live.episodes.add(outcome))
                live.updates += 1
                live.version += 1
                return "applied"
        # The policy's update first: an update that raises (anything but a
        # refusal) leaves the arm estimates and the shadows as they were, and
        # the outcome goes to the dead-letter topic unapplied anywhere.
        rejected = False
        try:
            if faults.ACTIVE is not None:  # chaos checks: an update that raises
                faults.ACTIVE.policy_update(outcome.request_id)
            if outcome.parameters is not None and isinstance(live.policy, ParameterTuner):
                # A tuning policy learns which call parameters earned the reward.
                live.policy.update(
                    outcome.arm,
                    outcome.reward,
                    outcome.features,
                    propensity=outcome.propensity,
                    parameters=outcome.parameters,
                    cost_usd=outcome.components.get("cost_usd"),
                    defer_plan=self.plan_later,
                )
            else:
                live.policy.update(
                    outcome.arm, outcome.reward, outcome.features, propensity=outcome.propensity
                )
        except PolicyError:
            rejected = True
        # What the arms cost and earned, and what the shadows learn, does not
        # depend on the serving policy accepting the outcome.
        live.estimates.observe(outcome.arm, outcome.components, outcome.task_type)
        if live.shadows:
            self._observe_shadows(live, outcome)
        if rejected:
            return "rejected"
        live.updates += 1
        live.version += 1
        _note_lineage(live, outcome.outcome_at)
        if outcome.rewarded_at is not None and (
            live.oldest_reward_at is None or outcome.rewarded_at < live.oldest_reward_at
        ):
            live.oldest_reward_at = outcome.rewarded_at
        return "applied"

    def due_plans(self, policy_id: str) -> Callable[[], Callable[[], None]] | None:
        """The plans the last :meth:`apply` left (``plan_later``), or None:
        see :meth:`ParameterTuner.due_plans`; taken before the state's next
        update or snapshot."""
        policy = self._live[policy_id].policy
        return policy.due_plans() if isinstance(policy, ParameterTuner) else None

    @staticmethod
    def _observe(live: _Learning, transitions: list[Transition]) -> None:
        """Learn from workflow transitions (one whose arm was removed since is dropped)."""
        observe = live.policy.observe  # type: ignore[attr-defined]
        for t in transitions:
            with contextlib.suppress(PolicyError):
                observe(t.state, t.arm, t.reward, t.next_state, t.done)

    def open_workflows(self, policy_id: str) -> int:
        episodes = self._live[policy_id].episodes
        return 0 if episodes is None else episodes.open_count

    def adapt(
        self,
        drift: DriftEvent,
        spec: AdaptationSpec,
        partition: int | str,
        offset: int,
        now: int,
    ) -> DriftEvent | None:
        """Adapt a policy to a drift on one of its arms, as ``spec`` says, and
        return the adaptation event; ``None`` when there is nothing to do (not
        a drift, a signal ``spec`` does not act on, an arm the policy no longer
        has, action ``none``) or it was done already (``partition``/``offset``
        of the drift event, kept beside the outcome offsets, make a
        redelivered drift a no-op). An adaptation counts as an update: the
        version rises and a snapshot is due at once, so the deciders follow."""
        live = self._live[drift.policy_id]
        source = f"drift:{partition}"
        if offset <= live.offsets.get(source, -1):
            return None
        live.offsets[source] = offset
        arm = drift.arm
        if (
            drift.kind != "drift"
            or arm is None
            or drift.signal not in spec.signals
            or spec.action == "none"
            or arm not in live.policy.arms
        ):
            return None
        done = adapt(live.policy, arm, spec.action, spec.factor)
        live.version += 1
        live.published_version = -1
        return DriftEvent(
            event_id=f"{drift.event_id[:240]}-adapted",
            kind="adaptation",
            policy_id=drift.policy_id,
            arm=arm,
            signal=drift.signal,
            detector=drift.detector,
            observed_at=drift.observed_at,
            created_at=now,
            action=spec.action,
            applied=done.applied,
            factor=spec.factor if spec.action in ("discount", "explore") else None,
            cause_id=drift.event_id,
            policy_version=live.version,
            detail=done.detail,
        )

    def mark(self, policy_id: str, partition: int | str, offset: int) -> None:
        """Record an offset as handled without applying it (e.g. a duplicate)."""
        live = self._live[policy_id]
        live.offsets[str(partition)] = max(offset, live.offsets.get(str(partition), -1))

    def state(self, policy_id: str) -> JSON:
        live = self._live[policy_id]
        return {
            "algorithm": live.config.algorithm,
            "policy": base64.b64encode(live.policy.snapshot()).decode(),
            "updates": live.updates,
            "version": live.version,
            "offsets": live.offsets,
            "estimates": live.estimates.to_dict(),
            "config": dict(live.config.source),
            "parent": live.parent,
            "since": live.since,
            "serving": live.serving,
            "shadows": {str(n): sh.to_dict() for n, sh in live.shadows.items()},
        } | ({"episodes": live.episodes.to_dict()} if live.episodes is not None else {})

    def due_snapshots(self, now: int, force: bool = False) -> list[str]:
        due = []
        for pid, live in self._live.items():
            fresh = live.version - live.published_version
            if fresh <= 0 and not force:
                continue
            if (
                force
                or live.published_version < 0  # after a config change: at once
                or fresh >= live.config.snapshot_every_updates
                or now - live.published_at >= live.config.snapshot_every_ms
            ):
                due.append(pid)
        return due

    def snapshot(self, policy_id: str, now: int) -> PolicySnapshot:
        """The snapshot to publish; its version counts every update the
        policy id had (the number of updates, unless the algorithm was switched)."""
        live = self._live[policy_id]
        live.published_version = live.version
        live.published_at = now
        oldest, live.oldest_reward_at = live.oldest_reward_at, None
        return PolicySnapshot(
            policy_id=live.config.policy_id,
            version=live.version,
            algorithm=live.config.algorithm,
            state=base64.b64encode(live.policy.snapshot()).decode(),
            updates=live.updates,
            arm_stats={
                arm: {**stats, **live.estimates.arm_stats().get(arm, {})}
                for arm, stats in live.policy.stats().items()
            },
            created_at=now,
            oldest_reward_at=oldest,
            shard=live.shard,
            serving=live.serving,
        )


def _version_policy(pid: str, version: RegistryEvent, verb: str) -> tuple[PolicyConfig, Policy]:
    """A registry version's configuration and its policy restored from its
    state; VersionError saying why it cannot ``verb``."""
    try:
        assert version.config is not None and version.state is not None
        pc = policy_from_mapping(pid, version.config, f"registry version {version.version}")
        if version.state.get("algorithm") != pc.algorithm:
            raise VersionError("its state is not of its configuration's algorithm")
        return pc, pc.restore(base64.b64decode(version.state["policy"]))
    except (PolicyError, PolicyConfigError, KeyError, TypeError, ValueError) as exc:
        msg = f"version {version.version} of {pid!r} cannot {verb}: {exc}"
        raise VersionError(msg) from None


def _shadows(pid: str, stored: JSON) -> dict[int, Shadow]:
    """Shadows from a stored state; one that no longer loads is dropped."""
    out: dict[int, Shadow] = {}
    for n, d in stored.items():
        with contextlib.suppress(Exception):
            out[int(n)] = Shadow.from_dict(pid, {"version": int(n)} | d)
    return out


def _note_lineage(live: _Learning, outcome_at: int) -> None:
    """Count an applied outcome in what the state learned since its parent version."""
    since = live.since
    since["updates"] = since.get("updates", 0) + 1
    if outcome_at < since.get("first_outcome_at", outcome_at + 1):
        since["first_outcome_at"] = outcome_at
    if outcome_at > since.get("last_outcome_at", -1):
        since["last_outcome_at"] = outcome_at


def live_key(policy_id: str, shard: int | None) -> str:
    """Where the learner keeps a policy's state, or one shard's of it (a
    configured policy id is printable: app/policies/config.py).

    >>> live_key("p", None), live_key("p", 3).replace(chr(0), "|")
    ('p', 'p|3')
    """
    return policy_id if shard is None else f"{policy_id}\x00{shard}"


def parse_live_key(key: str) -> tuple[str, int | None]:
    """The policy id and shard of a :func:`live_key`.

    >>> parse_live_key(live_key("p", 3)), parse_live_key("p")
    (('p', 3), ('p', None))
    """
    policy_id, _, shard = key.partition("\x00")
    return policy_id, int(shard) if shard.isdigit() else None


def applied_mark(version: int, outcome_at: int, partition: int) -> bytes:
    """An applied-requests entry: the version the update made, and the
    outcome's ``outcome_at`` and partition, by which the entry expires
    (:func:`mark_expiry`)."""
    return b"%d:%d:%d" % (version, outcome_at, partition)


def mark_expiry(mark: bytes, retention_ms: int) -> tuple[int, int] | None:
    """(partition, outcome time past which the entry may go) of an
    applied-requests entry; None for an entry written without them (kept).

    >>> mark_expiry(applied_mark(3, 10_000, 2), 500), mark_expiry(b"3", 500)
    ((2, 10500), None)
    """
    parts = mark.split(b":")
    if len(parts) != 3:
        return None
    try:
        return int(parts[2]), int(parts[1]) + retention_ms
    except ValueError:
        return None


def applied_in_state(mark: bytes | None, version: int) -> bool:
    """Whether the policy state at ``version`` already holds the request an
    applied-requests entry names. The entry records the version its update
    made; the two tables are written separately, so after a crash the entry
    may outlive the state write, and then the update must be made again.

    >>> applied_in_state(applied_mark(7, 1_000, 0), 7), applied_in_state(b"8:1000:0", 7)
    (True, False)
    >>> applied_in_state(b"7", 9)  # written before entries carried a time
    True
    """
    if mark is None:
        return False
    try:
        return int(mark.partition(b":")[0]) <= version
    except ValueError:
        return True  # unreadable: treat as applied rather than apply twice
