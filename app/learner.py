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
from dataclasses import dataclass, field
from typing import Any

from app.drift.adaptation import adapt
from app.drift.config import AdaptationSpec
from app.episodes import Episodes, Transition
from app.policies.base import Policy, PolicyError
from app.policies.config import PoliciesConfig, PolicyConfig
from app.policies.guardrails import ArmEstimates
from app.records import DriftEvent, Outcome, PolicySnapshot

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
    # Per-arm cost and latency, for the deciders' request constraints.
    estimates: ArmEstimates = field(default_factory=ArmEstimates)
    # Open multi-step workflows (RL policies only).
    episodes: Episodes | None = None
    # The oldest rewarded_at among the outcomes applied since the last snapshot.
    oldest_reward_at: int | None = None
    # The shard (outcomes partition) of a policy with learning: sharded.
    shard: int | None = None

    def __post_init__(self) -> None:
        if self.episodes is None and hasattr(self.policy, "observe"):
            self.episodes = Episodes(
                self.config.terminal_arms,
                self.config.episode_timeout_ms,
                monte_carlo=bool(getattr(self.policy, "monte_carlo", False)),
            )


class Learner:
    def __init__(self, config: PoliciesConfig) -> None:
        self.config = config
        self._live: dict[str, _Learning] = {}

    def known(self, policy_id: str) -> bool:
        return policy_id in self._live

    def load(self, policy_id: str, state: JSON | None, now: int, shard: int | None = None) -> None:
        """Bring a policy (or one shard of it: the state under
        ``live_key(policy_id, shard)``) into memory from its stored state (or
        its prior)."""
        pc = self.config.policies[policy_id]
        key = live_key(policy_id, shard)
        if state is None:
            self._live[key] = _Learning(pc, pc.build(), published_at=now, shard=shard)
            return
        version = int(state["version"] if "version" in state else state["updates"])
        offsets = dict(state["offsets"])
        estimates = ArmEstimates.from_dict(state.get("estimates") or {})
        if state.get("algorithm") != pc.algorithm:
            # The algorithm was switched in the config: start afresh, but keep
            # the offsets (exactly-once) and the version (monotonic snapshots).
            self._live[key] = _Learning(
                pc, pc.build(), 0, offsets, -1, now, version, estimates, shard=shard
            )
            return
        policy = pc.restore(base64.b64decode(state["policy"]))
        live = _Learning(pc, policy, state["updates"], offsets, version, now, version, estimates)
        live.shard = shard
        if live.episodes is not None:
            live.episodes.load(state.get("episodes") or {})
        self._live[key] = live

    def reconfigure(self, config: PoliciesConfig) -> None:
        """Take a changed policies config without a restart: a switched
        algorithm starts from its prior, other changes (arms,
        hyperparameters) apply to the learned state. A snapshot is due at once."""
        self.config = config
        for key, live in list(self._live.items()):
            pc = config.policies.get(live.config.policy_id)
            if pc is None or pc.learning != live.config.learning:
                # Removed, or its learning mode switched: outcomes now come
                # keyed the other way; its state is loaded afresh when they do.
                del self._live[key]
                continue
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
        live.estimates.observe(outcome.arm, outcome.components)
        if live.episodes is not None:
            expired = live.episodes.expire(outcome.outcome_at)
            if expired:
                self._observe(live, expired)
            if outcome.workflow is not None and outcome.features is not None:
                if len(outcome.features) != getattr(live.policy, "context_dim", -1):
                    return "rejected"
                self._observe(live, live.episodes.add(outcome))
                live.updates += 1
                live.version += 1
                return "applied"
        try:
            live.policy.update(
                outcome.arm, outcome.reward, outcome.features, propensity=outcome.propensity
            )
        except PolicyError:
            return "rejected"
        live.updates += 1
        live.version += 1
        if outcome.rewarded_at is not None and (
            live.oldest_reward_at is None or outcome.rewarded_at < live.oldest_reward_at
        ):
            live.oldest_reward_at = outcome.rewarded_at
        return "applied"

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
        )


def live_key(policy_id: str, shard: int | None) -> str:
    """Where the learner keeps a policy's state, or one shard's of it (a
    configured policy id is printable: app/policies/config.py).

    >>> live_key("p", None), live_key("p", 3).replace(chr(0), "|")
    ('p', 'p|3')
    """
    return policy_id if shard is None else f"{policy_id}\x00{shard}"


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
