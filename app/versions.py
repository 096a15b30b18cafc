"""The policy registry's records and what they add up to (pure).

A **version** is one policy's configuration (its mapping in the policies
file), its learned state and its lineage, immutable once written. Versions
are numbered per policy by the learner that owns the policy: the number is
the policy's snapshot version at registration, which registration raises by
one, so numbers only grow, are never reused, and say where in the policy's
history the version was taken (a version 1,200 had seen 1,199 updates and
adaptations). The learner registers

- the serving state before the policies file changes the policy's
  configuration (switching the algorithm no longer discards what it
  learned: the old state becomes a version that can be served again);
- the serving state before another version is served;
- the serving state when asked (a ``register`` record: ``llmopt registry
  register``).

Statuses: development → shadow → canary → champion → retired. A version
registered on request starts in development; one registered because it
stopped serving is retired. Serving a version (``llmopt registry rollback``,
or ``promote --to champion``) makes it the champion and the previous one
retired; the ``serve`` and ``status`` records are the history of which
version served from when.

Everything is on one compacted topic (``llmopt.registry.v1``), each record
on the partition of its policy id, so the learner that owns the policy reads
the ``serve`` and ``register`` records in order with its outcomes. Record
keys keep each version and each event under a key of its own, so compaction
keeps them all.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.policies.registry import algorithms
from app.records import VERSION_STATUSES, RegistryEvent

JSON = dict[str, Any]
# A version carries the policy's whole learned state, as a snapshot does.
REGISTRY_MAX_BYTES = 1 << 24


class VersionError(ValueError):
    """A registry request that cannot be done (no such version, a bad status move)."""


def record_key(event: RegistryEvent) -> bytes:
    """``<policy>/version/<n>`` for a version, ``<policy>/<kind>/<event id>`` otherwise."""
    if event.kind == "version":
        return f"{event.policy_id}/version/{event.version}".encode()
    return f"{event.policy_id}/{event.kind}/{event.event_id}".encode()


def new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass
class VersionInfo:
    """A version as the registry knows it: its record and its status history
    ((time, status, reason) in order)."""

    record: RegistryEvent
    history: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def number(self) -> int:
        assert self.record.version is not None
        return self.record.version

    @property
    def status(self) -> str:
        return self.history[-1][1] if self.history else (self.record.status or "development")


@dataclass
class PolicyRegistry:
    """Everything the registry topic says about one policy."""

    policy_id: str
    versions: dict[int, VersionInfo] = field(default_factory=dict)
    # (time, version, reason, created_by) of every serve record, in order.
    served: list[tuple[int, int, str, str]] = field(default_factory=list)
    # Serve records without a number (a promoted rollout's challenger), by
    # event id, until the learner's champion status names the version it made.
    unnumbered: dict[str, RegistryEvent] = field(default_factory=dict)

    def get(self, number: int) -> VersionInfo:
        try:
            return self.versions[number]
        except KeyError:
            known = ", ".join(str(n) for n in sorted(self.versions)[-10:]) or "none"
            raise VersionError(
                f"policy {self.policy_id!r} has no version {number} (latest: {known})"
            ) from None

    def champion(self) -> VersionInfo | None:
        """The version served last, if any."""
        for _, number, _, _ in reversed(self.served):
            if number in self.versions:
                return self.versions[number]
        return None

    def latest(self) -> VersionInfo | None:
        return self.versions[max(self.versions)] if self.versions else None


class RegistryView:
    """The registry folded from its records, in the order they were read."""

    def __init__(self, events: Iterable[RegistryEvent] = ()) -> None:
        self.policies: dict[str, PolicyRegistry] = {}
        for event in events:
            self.add(event)

    def policy(self, policy_id: str) -> PolicyRegistry:
        found = self.policies.get(policy_id)
        if found is None:
            known = ", ".join(sorted(self.policies)) or "none"
            raise VersionError(f"the registry has no versions of policy {policy_id!r} ({known})")
        return found

    def add(self, event: RegistryEvent) -> None:
        reg = self.policies.setdefault(event.policy_id, PolicyRegistry(event.policy_id))
        n = event.version
        if event.kind == "version" and n is not None:
            known = reg.versions.get(n)
            info = VersionInfo(event, known.history if known is not None else [])
            if event.status is not None:
                info.history.append((event.created_at, event.status, event.reason or ""))
            reg.versions[n] = info
        elif event.kind == "status" and n is not None and event.status is not None:
            named = reg.versions.get(n)
            if named is not None:
                named.history.append((event.created_at, event.status, event.reason or ""))
            serve = reg.unnumbered.pop(str((event.lineage or {}).get("request")), None)
            if serve is not None and event.status == "champion":
                reg.served.append((serve.created_at, n, serve.reason or "", serve.created_by))
        elif event.kind == "serve" and n is not None:
            reg.served.append((event.created_at, n, event.reason or "", event.created_by))
        elif event.kind == "serve":
            reg.unnumbered[event.event_id] = event


def serve_records(
    reg: PolicyRegistry | None,
    target: VersionInfo | None,
    by: str,
    now: int,
    reason: str,
    *,
    policy_id: str | None = None,
    config: JSON | None = None,
    state: JSON | None = None,
    config_hash: str | None = None,
    lineage: JSON | None = None,
) -> list[RegistryEvent]:
    """The records that make a version the champion (``llmopt registry
    rollback`` and ``promote --to champion``, a promoted rollout): a
    ``serve`` request carrying its configuration and state, which the
    policy's learner carries out, and the previous champion's ``retired``.

    ``target`` is a registered version of the policy; or None with the
    configuration and state given (a promoted rollout's challenger), which
    the learner registers as a new version of the policy before serving it.
    """
    if target is not None:
        number, policy_id = target.number, target.record.policy_id
        config, state = target.record.config, target.record.state
        config_hash = target.record.config_hash
    else:
        number = None
    assert policy_id is not None and config is not None and state is not None
    serve = RegistryEvent(
        event_id=new_event_id(),
        kind="serve",
        policy_id=policy_id,
        created_at=now,
        created_by=by,
        version=number,
        reason=reason,
        config=config,
        state=state,
        config_hash=config_hash,
        lineage=lineage,
    )
    records = [serve]
    champion = reg.champion() if reg is not None else None
    if champion is not None and champion.number != number:
        records.append(
            RegistryEvent(
                event_id=new_event_id(),
                kind="status",
                policy_id=policy_id,
                created_at=now,
                created_by=by,
                version=champion.number,
                status="retired",
                reason=reason,
            )
        )
    return records


def check_status_move(info: VersionInfo, status: str) -> None:
    """A version may move to any status but the one it has; a retired one
    only back through serving (``rollback``) or to development."""
    if status not in VERSION_STATUSES:
        raise VersionError(f"unknown status {status!r}; one of {', '.join(VERSION_STATUSES)}")
    if info.status == status:
        raise VersionError(f"version {info.number} is already {status}")


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], at: str = "") -> list[JSON]:
    """Where two configuration mappings differ: ``{"path", "from", "to"}`` per
    changed leaf (absent on one side: ``None``), in key order."""
    out: list[JSON] = []
    for key in sorted(set(a) | set(b), key=str):
        path = f"{at}.{key}" if at else str(key)
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += config_diff(x, y, path)
        elif x != y:
            out.append({"path": path, "from": x, "to": y})
    return out


def arm_summary(state: Mapping[str, Any] | None) -> JSON:
    """Per-arm pulls and mean reward of a version's state, when its policy
    can be read (for ``show`` and ``diff``)."""
    if not state or "policy" not in state or "algorithm" not in state:
        return {}
    cls = algorithms().get(str(state["algorithm"]))
    if cls is None:
        return {}
    try:
        policy = cls.restore(base64.b64decode(state["policy"]))
    except Exception:
        return {}
    return {
        arm: {k: s[k] for k in ("pulls", "mean_reward") if k in s}
        for arm, s in policy.stats().items()
    }


def serving_holds(serving: Mapping[str, Any], file_policy: Any) -> bool:
    """Whether a served version's configuration still replaces the file's
    entry: only while that entry is the one it replaced (``file_policy``: the
    file's PolicyConfig of the policy, or None). An edit of the entry, or its
    removal, is a newer intent than the version, and wins."""
    return file_policy is not None and serving.get("file_hash") == file_policy.config_hash


def policy_of_key(key: bytes) -> str:
    """The policy id of a record key (:func:`record_key`)."""
    return key.decode(errors="replace").rsplit("/", 2)[0]
