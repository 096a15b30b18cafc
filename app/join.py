"""The decision–reward join as a pure state machine, one entry per request.

The ``join_rewards`` agent keeps the entries in a RocksDB table keyed by
tenant and request id (``app.ingress.join_key``: request ids are scoped per
tenant) and applies these transitions; every transition returns the new
entry (``None`` deletes it) and at most one outcome or one dead-letter reason.

Entry states:
- ``pending``: a decision waits for its reward, ``wait_seconds`` from the
  decision's own time;
- ``orphan``: a reward came before its decision (the two topics are read
  concurrently, and the decisions may be behind);
- ``done``: the outcome went out; kept until ``due`` so that later rewards
  are told apart as ``duplicate_reward`` or ``expired_request``.

Nothing is decided on the wall clock alone. A decision past its wait time
gets the default reward only once the join has read its rewards partition up
to where that partition ended when the wait ran out (so a backlog of rewards
cannot turn into defaults); a held reward is given up as ``unknown_request``
only once the join has read the decisions partition up to where it ended
after the reward arrived (the decision, sent before the reward, would be
there). ``Progress`` carries those positions; each entry remembers its
``mark``. ``max_hold_ms`` bounds the wait when the join does not advance.

At-least-once: the entry and the outcome are separate writes, and a crash
may keep the first and lose the second. The done entry therefore records the
event that completed it and the outcome; when that same event (same topic,
partition and offset) is delivered again, the outcome is sent again, and the
learner, which dedupes by request id, applies it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Required, TypedDict, cast

import orjson

from app.ingress import join_key
from app.policies.config import PoliciesConfig
from app.records import REWARD_COMPONENTS, Decision, InvalidEvent, Reward, decode, outcome_doc

JSON = dict[str, Any]


class JoinEntry(TypedDict, total=False):
    """One request's entry, the table's value (:func:`encode_entry`,
    :func:`valid_entry`). By ``state``:

    - ``pending``: the ``decision``;
    - ``orphan``: the held ``reward``, its ``source`` ([topic, partition,
      offset]) and ``raw`` bytes, for a dead letter;
    - ``done``: ``how`` it ended (``rewarded``, ``defaulted``), the
      ``outcome``, and every event that went into it (``completed_by``), so
      that a redelivery of any of them is recognised.

    ``due``: when to look at it next; ``until``: the bound on waiting
    (pending, orphan); ``partition``: where its events are; ``mark``: the
    position the join must read to (:func:`_read_to`).
    """

    state: Required[str]
    due: Required[int]
    partition: Required[int]
    until: int
    decision: JSON
    reward: JSON
    source: list[Any]
    raw: str
    how: str
    completed_by: list[list[Any]]
    outcome: JSON
    mark: int | None


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the join has read one partition: ``*_end`` is the partition's
    end (the next offset to be written) as last fetched, ``*_done`` the next
    offset the join has yet to process; ``None`` when not known yet."""

    decisions_end: int | None = None
    decisions_done: int | None = None
    rewards_end: int | None = None
    rewards_done: int | None = None


# Everything read (a quiet, caught-up partition).
CAUGHT_UP = Progress(0, 0, 0, 0)


def _read_to(end: int | None, done: int | None, mark: int | None) -> tuple[int | None, bool]:
    """(the mark, whether the join has read up to it): the mark is the end
    seen at the first check and stays fixed after that."""
    if mark is None:
        mark = end
    return mark, mark is not None and done is not None and done >= mark


@dataclass(frozen=True, slots=True)
class Step:
    entry: JoinEntry | None
    result: str  # counter label: stored, joined, defaulted, duplicate_decision, held, ...
    outcome: JSON | None = None
    error: InvalidEvent | None = None
    keep: bool = True  # False: delete the entry
    # "waiting": the entry waits until the join has read this partition kind
    # ("rewards" or "decisions") up to the entry's ``mark``. Only the mark
    # changed, so the table keeps its value: rewriting every waiting entry
    # on each recheck would, behind a backlog, cost a table and changelog
    # write per entry per tick. A mark lost in a restart is taken afresh, later.
    waits_on: str | None = None
    # For a dead letter about an earlier event: its [topic, partition, offset] and bytes.
    original: tuple[list[Any], bytes] | None = None

    @property
    def due(self) -> int | None:
        return self.entry["due"] if self.entry is not None else None


class Joiner:
    """Pure join rules; times are epoch milliseconds.

    ``orphan_hold_ms``: how long a reward may wait for its decision.
    ``done_retention_ms``: how long a finished request still recognises
    duplicate and late rewards.
    """

    def __init__(
        self,
        policies: PoliciesConfig,
        orphan_hold_ms: int = 10_000,
        done_retention_ms: int = 3_600_000,
        max_hold_ms: int = 900_000,
        settle_ms: int = 1_000,
        recheck_ms: int = 500,
    ) -> None:
        self.policies = policies
        self.orphan_hold_ms = orphan_hold_ms
        self.done_retention_ms = done_retention_ms
        self.max_hold_ms = max_hold_ms
        # After a wait runs out, how long until the partition end the join
        # last fetched surely includes what was written before (a fetch cycle).
        self.settle_ms = settle_ms
        # How often an entry waiting for the join to read further is looked
        # at while the partition's end is not known yet.
        self.recheck_ms = recheck_ms

    def reconfigure(self, policies: PoliciesConfig) -> None:
        """New reward weights and waits apply to requests joined from now on."""
        self.policies = policies

    def outcome_key(self, outcome: JSON) -> bytes:
        """The outcomes topic key: the policy id (its one writer learns it),
        or for a policy with learning: sharded the request's join key (its
        outcomes spread over the partitions, each learned by the shard there;
        a re-sent outcome lands where the first did)."""
        pc = self.policies.get(outcome["policy_id"])
        if pc is not None and pc.learning == "sharded":
            return join_key(outcome["tenant_id"], outcome["request_id"])
        return cast(str, outcome["policy_id"]).encode()

    def _wait_ms(self, policy_id: str) -> int:
        pc = self.policies.get(policy_id)
        return int((pc.reward.wait_seconds if pc else 30.0) * 1000)

    def on_decision(
        self, entry: JoinEntry | None, decision: JSON, source: list[Any], now: int
    ) -> Step:
        """``source``: [topic, partition, offset] of the decision event."""
        if entry is None:
            wait = self._wait_ms(decision["policy_id"])
            until = now + wait + self.max_hold_ms
            pending: JoinEntry = {
                "state": "pending",
                "decision": decision,
                # From the decision's time, not from when the join saw it.
                "due": min(decision["decided_at"] + wait + self.settle_ms, until),
                "until": until,
                "partition": source[1],
            }
            return Step(pending, "stored")
        if entry["state"] == "orphan":
            outcome = self._outcome(decision, Reward.from_dict(entry["reward"]), now)
            return Step(
                self._done(entry, now, "rewarded", outcome, source), "joined", outcome=outcome
            )
        if entry["state"] == "done" and source in entry["completed_by"]:
            return Step(entry, "redelivered", outcome=entry["outcome"])
        return Step(entry, "duplicate_decision")

    def on_reward(
        self, entry: JoinEntry | None, reward: Reward, raw: bytes, source: list[Any], now: int
    ) -> Step:
        if entry is None:
            orphan: JoinEntry = {
                "state": "orphan",
                "reward": reward.to_dict(),
                "source": source,
                "raw": raw.decode("utf-8", "replace"),
                "due": now + self.orphan_hold_ms,
                "until": now + self.max_hold_ms,
                "partition": source[1],
            }
            return Step(orphan, "held")
        state = entry["state"]
        if state == "pending":
            outcome = self._outcome(entry["decision"], reward, now)
            return Step(
                self._done(entry, now, "rewarded", outcome, source), "joined", outcome=outcome
            )
        if state == "done" and source in entry["completed_by"]:
            return Step(entry, "redelivered", outcome=entry["outcome"])
        if state == "orphan" and entry.get("source") == source:
            return Step(entry, "redelivered")  # the held reward itself, delivered again
        if state == "done" and entry.get("how") == "defaulted":
            err = InvalidEvent(
                "expired_request",
                "reward came after the wait time; the default reward was already used",
            )
            return Step(entry, "expired_request", error=err)
        err = InvalidEvent(
            "duplicate_reward", f"request {reward.request_id!r} already has a reward"
        )
        return Step(entry, "duplicate_reward", error=err)

    def on_due(self, entry: JoinEntry | None, now: int, progress: Progress = CAUGHT_UP) -> Step:
        """Called when an entry's ``due`` time may have passed; ``progress``
        is how far the join has read the entry's partition."""
        if entry is None or entry["due"] > now:
            return Step(entry, "not_due")
        state = entry["state"]
        if state == "pending":
            mark, read = _read_to(progress.rewards_end, progress.rewards_done, entry.get("mark"))
            at_bound = now >= entry.get("until", now)
            if not (read or at_bound):
                return self._recheck(entry, mark, now, "rewards")
            d = entry["decision"]
            pc = self.policies.get(d["policy_id"])
            default = pc.reward.default_reward if pc else 0.0
            outcome = _outcome_doc(d, default, {}, True, now)
            return Step(
                self._done(entry, now, "defaulted", outcome, None),
                "defaulted" if read else "defaulted_at_bound",
                outcome=outcome,
            )
        if state == "orphan":
            mark, read = _read_to(
                progress.decisions_end, progress.decisions_done, entry.get("mark")
            )
            at_bound = now >= entry.get("until", now)
            if not (read or at_bound):
                return self._recheck(entry, mark, now, "decisions")
            if read:
                why = "the join read past where its decision would be"
            else:
                why = f"the join did not reach its decision within {self.max_hold_ms} ms"
            err = InvalidEvent("unknown_request", f"no decision for this request id: {why}")
            original = (entry["source"], entry["raw"].encode())
            return Step(
                None,
                "unknown_request" if read else "unknown_request_at_bound",
                error=err,
                keep=False,
                original=original,
            )
        return Step(None, "expired", keep=False)

    def _recheck(self, entry: JoinEntry, mark: int | None, now: int, waits_on: str) -> Step:
        """``due`` is when to look again if the mark is not known yet."""
        return Step(
            {**entry, "mark": mark, "due": now + self.recheck_ms}, "waiting", waits_on=waits_on
        )

    def _done(
        self, entry: JoinEntry, now: int, how: str, outcome: JSON, source: list[Any] | None
    ) -> JoinEntry:
        # The completing event and a held reward.
        by = [src for src in (source, entry.get("source")) if src is not None]
        return {
            "state": "done",
            "how": how,
            "due": now + self.done_retention_ms,
            "partition": entry["partition"],
            "completed_by": by,
            "outcome": outcome,
        }

    def _outcome(self, decision: JSON, reward: Reward, now: int) -> JSON:
        pc = self.policies.get(decision["policy_id"])
        components = {k: v for k in REWARD_COMPONENTS if (v := getattr(reward, k)) is not None}
        terms: JSON | None = None
        if pc is None:
            scalar = 0.0
        elif pc.reward.plain:
            scalar = pc.reward.scalar(
                reward.quality, reward.cost_usd, reward.latency_ms, reward.error, reward.feedback
            )
        else:
            # Weights of the decision's time in the tenant's zone, or the
            # user's function: logged so that a backtest can recompute it.
            scalar, terms = pc.reward.score(components, decision["decided_at"], decision)
        doc = _outcome_doc(decision, scalar, components, False, now)
        doc["rewarded_at"] = reward.sent_at
        if terms is not None:
            doc["reward_terms"] = terms
        return doc


def _outcome_doc(d: JSON, reward: float, components: JSON, defaulted: bool, now: int) -> JSON:
    doc = outcome_doc(
        request_id=d["request_id"],
        tenant_id=d["tenant_id"],
        policy_id=d["policy_id"],
        policy_version=d["policy_version"],
        arm=d["arm"],
        available_arms=d["available_arms"],
        propensity=d["propensity"],
        explored=d["explored"],
        reward=reward,
        defaulted=defaulted,
        decided_at=d["decided_at"],
        outcome_at=now,
        components=components,
    )
    if d.get("features") is not None:
        doc["features"] = d["features"]
    if d.get("spec_features") is not None:
        doc["spec_features"] = d["spec_features"]
    if d.get("workflow") is not None:
        doc["workflow"] = d["workflow"]
    if d.get("parameters"):
        doc["parameters"] = d["parameters"]
    if d.get("task_type") is not None:
        doc["task_type"] = d["task_type"]
    if d.get("experiment_id") is not None:
        # The experiment's evaluator counts the outcome for this variant.
        doc["experiment_id"] = d["experiment_id"]
        doc["variant"] = d["variant"]
    return doc


ENTRY_STATES = frozenset({"pending", "orphan", "done"})
ENTRY_FIELDS = frozenset(JoinEntry.__annotations__)
# The keys entries were written with before they had a type: changelogs
# written by earlier versions hold them.
SHORT_ENTRY_KEYS = {
    "s": "state",
    "d": "decision",
    "r": "reward",
    "p": "partition",
    "src": "source",
    "by": "completed_by",
    "o": "outcome",
}


def encode_entry(entry: JoinEntry) -> bytes:
    """The table value of an entry (:func:`valid_entry` reads it back)."""
    return orjson.dumps(entry)


def valid_entry(raw: bytes | None) -> JoinEntry | None:
    """A table value as the join wrote it, under its field names or the
    short keys of earlier versions, or None for anything else (a poisoned
    changelog record is skipped, never trusted)."""
    if raw is None:
        return None
    try:
        e = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(e, dict):
        return None
    if "s" in e:
        e = {SHORT_ENTRY_KEYS.get(k, k): v for k, v in e.items()}
    if (
        e.get("state") not in ENTRY_STATES
        or type(e.get("due")) is not int
        or type(e.get("partition")) is not int
    ):
        return None
    if not e.keys() <= ENTRY_FIELDS:  # read on every join event: copy only when needed
        e = {k: v for k, v in e.items() if k in ENTRY_FIELDS}
    return cast(JoinEntry, e)


def parse_decision(raw: bytes | None) -> JSON:
    """Validate a decision and return it as a plain document: the decoded
    one itself (the record is built only to check it; turning it back into a
    document cost the join a sixth of its time). A valid decision holds no
    nulls: every optional field, when present, must have a value."""
    doc = decode(raw)
    Decision.from_dict(doc)
    return doc
