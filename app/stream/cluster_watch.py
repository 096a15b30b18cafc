"""The worker's view of its Kafka cluster, without a Kafka client: whether it
answers, whether it is still the cluster the worker started on, which topics
it is missing, and which partitions restarted below a consumer's position.
``app/stream/cluster_watcher.py`` probes the cluster and acts on what this says.

A broker that lost its logs (the embedded broker keeps them in memory; a
cluster rebuilt from scratch) comes back empty: the topics are gone, and every
partition starts again at offset 0. A consumer that kept its position from
before would skip that many records of the new log, and the fetch high-water
mark (the new log's end) is then below the position: that is the sign this
module looks for. The cluster id tells the two clusters apart even when the
new logs are already longer than the old positions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

K = TypeVar("K")
_TOPIC_NAME = re.compile(r"llmopt\.([a-z0-9]+(?:-[a-z0-9]+)*)\.v[1-9][0-9]*(?:\..+)?")

# Failed probes in a row before the cluster counts as unreachable: one lost
# request is not an outage.
FAILED_PROBES_UNREACHABLE = 2


@dataclass(frozen=True, slots=True)
class Reconnect:
    """What a successful probe found after earlier ones failed or saw
    another cluster: ``down_for`` seconds of outage (None if no outage was
    seen), and the cluster ids before and now."""

    down_for: float | None
    old_cluster_id: str | None
    cluster_id: str | None

    @property
    def new_cluster(self) -> bool:
        return self.old_cluster_id is not None and self.cluster_id != self.old_cluster_id


@dataclass
class ClusterState:
    """Probe results of one worker. ``problem()`` is the reason ``/health``
    gives while the worker cannot do its work, None otherwise.

    >>> s = ClusterState("k:9092")
    >>> s.probe_ok(0.0, "c1") is None
    True
    >>> s.probe_failed(1.0, "Connection refused"), s.probe_failed(2.0, "Connection refused")
    (False, True)
    >>> s.problem(4.5)
    'Kafka cluster at k:9092 unreachable for 3.5 s: Connection refused'
    >>> r = s.probe_ok(5.0, "c2")
    >>> r.down_for, r.new_cluster, s.problem(5.0)
    (4.0, True, 'Kafka cluster at k:9092 reachable again; checking its topics')
    >>> s.topics_checked = True  # the watcher checked (and created) its topics
    >>> s.problem(5.0) is None
    True
    """

    bootstrap: str
    cluster_id: str | None = None
    failures: int = 0
    down_since: float | None = None
    last_error: str = ""
    missing_topics: tuple[str, ...] = ()
    auto_create_topics: bool = True
    # False from a reconnect until the topics were checked (and those
    # missing created): /health is not 200 in between.
    topics_checked: bool = True

    @property
    def unreachable(self) -> bool:
        return self.failures >= FAILED_PROBES_UNREACHABLE

    def probe_failed(self, now: float, error: str) -> bool:
        """Record a failed probe; True when this one makes the cluster unreachable."""
        if self.down_since is None:
            self.down_since = now
        self.failures += 1
        self.last_error = error
        return self.failures == FAILED_PROBES_UNREACHABLE

    def probe_ok(self, now: float, cluster_id: str | None) -> Reconnect | None:
        """Record an answer; a :class:`Reconnect` after an outage or when the
        cluster id changed, else None."""
        was_down = self.unreachable
        down_for = now - self.down_since if was_down and self.down_since is not None else None
        old = self.cluster_id
        self.failures, self.down_since, self.last_error = 0, None, ""
        if cluster_id is not None:
            self.cluster_id = cluster_id
        if was_down or (old is not None and cluster_id is not None and cluster_id != old):
            self.topics_checked = False
            return Reconnect(down_for, old, self.cluster_id)
        return None

    def problem(self, now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        if self.unreachable:
            since = now - (self.down_since if self.down_since is not None else now)
            return (
                f"Kafka cluster at {self.bootstrap} unreachable for {since:.1f} s: "
                f"{self.last_error}"
            )
        if not self.topics_checked:
            return f"Kafka cluster at {self.bootstrap} reachable again; checking its topics"
        if self.missing_topics:
            absent = self.missing_topics
            names = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if absent[5:] else "")
            fix = (
                "re-creating them"
                if self.auto_create_topics
                else "run `llmopt topics apply` (LLMOPT_AUTO_CREATE_TOPICS is off)"
            )
            return f"topics missing on the cluster: {names}; {fix}"
        return None


def missing(expected: Iterable[str], existing: Iterable[str]) -> tuple[str, ...]:
    """``expected`` names not in ``existing``, sorted.

    >>> missing(["a", "b", "c"], ["b"])
    ('a', 'c')
    """
    have = set(existing)
    return tuple(sorted(n for n in set(expected) if n not in have))


def restarted(position: int | None, highwater: int | None) -> bool:
    """True when a consumer's position is beyond the log's end: the log
    restarted (the broker lost it) below where the consumer was. A consumer
    only reaches a position by reading up to it, so on a log that kept its
    records the high-water mark is never below it.

    >>> restarted(5000, 12), restarted(12, 12), restarted(5000, None)
    (True, False, False)
    """
    return position is not None and highwater is not None and position > highwater


def restarted_partitions(
    positions: Mapping[K, int | None], highwaters: Mapping[K, int | None]
) -> dict[K, tuple[int, int]]:
    """Of ``positions``, the partitions that :func:`restarted`, with
    (position, high-water mark).

    >>> restarted_partitions({"a": 9, "b": 3, "c": 4}, {"a": 2, "b": 3})
    {'a': (9, 2)}
    """
    found: dict[K, tuple[int, int]] = {}
    for key, position in positions.items():
        high = highwaters.get(key)
        if position is not None and high is not None and restarted(position, high):
            found[key] = (position, high)
    return found


def topic_role(name: str) -> str:
    """A bounded metric label for a topic name: its topics.yaml role
    (``llmopt.<entity>.v<N>[.<namespace>]`` → the entity, ``-`` → ``_``),
    ``other`` for any other name.

    >>> topic_role("llmopt.policy-snapshots.v1.t1a2b"), topic_role("x-changelog")
    ('policy_snapshots', 'other')
    """
    m = _TOPIC_NAME.fullmatch(name)
    return m.group(1).replace("-", "_") if m else "other"


def offsets_key(partition: int, cluster_id: str | None) -> str:
    """The key under which a consumer keeps the last offset it handled of a
    source partition, when it keeps offsets in its own state (the learner's
    redelivery check): offsets are positions in one cluster's log, so those
    of a cluster that lost its logs must not be compared with the new ones.

    >>> offsets_key(3, None), offsets_key(3, "c2")
    ('3', '3@c2')
    """
    return str(partition) if not cluster_id else f"{partition}@{cluster_id}"


def health_report(ready: Mapping[str, bool], problem: str | None) -> tuple[int, dict[str, Any]]:
    """``/health``: 200 when every role is ready and the cluster has no
    problem; otherwise 503, with the reason.

    >>> health_report({"join": True}, None)
    (200, {'status': 'ready', 'roles': {'join': True}})
    >>> health_report({"join": True}, "Kafka cluster at k:1 unreachable for 2.0 s: refused")[0]
    503
    """
    ok = all(ready.values())
    body: dict[str, Any] = {"status": "ready" if ok else "starting", "roles": dict(ready)}
    if problem is not None:
        body = {"status": "unavailable", "reason": problem, "roles": dict(ready)}
        ok = False
    return (200 if ok else 503), body


class RestartConfirmer:
    """Reports a partition as restarted only when two checks in a row saw
    it beyond the log's end at the same position: one fetch answer with a
    low high-water mark (the embedded broker has given 0 for a moment) must
    not send a consumer back to offset 0. A consumer on a log that really
    restarted cannot move, so the second check sees the same position.

    >>> c = RestartConfirmer()
    >>> c.confirm({"a": (9, 2), "b": (5, 0)})
    {}
    >>> c.confirm({"a": (9, 2)})
    {'a': (9, 2)}
    >>> c.confirm({"a": (9, 2)})
    {}
    """

    def __init__(self) -> None:
        self._suspects: dict[Any, tuple[int, int]] = {}

    def confirm(self, found: Mapping[Any, tuple[int, int]]) -> dict[Any, tuple[int, int]]:
        confirmed = {
            k: v for k, v in found.items() if k in self._suspects and self._suspects[k][0] == v[0]
        }
        self._suspects = {k: v for k, v in found.items() if k not in confirmed}
        return confirmed
