"""The experiments topic folded into what is running now, and the sticky
assignment of a request to a running experiment's variant.

Every decider and the evaluator read ``llmopt.experiments.v1`` from its
start and fold its events in order (:class:`ExperimentLog`):

- ``created`` starts an experiment at stage 0 with its first shares (an
  experiment id already seen, or a definition that does not parse, is
  ignored: the log is written by the CLI and the evaluator alone);
- ``stage`` sets new shares (a rollout's next stage);
- ``result`` records the latest look (and the evaluator's state);
- ``stopped`` ends it. A rollout stopped ``promoted`` keeps routing all of
  its policy's requests to the challenger, still tagged with the
  experiment and variant, until it is stopped again by hand (the operator
  makes the promotion permanent in ``config/policies.yaml`` first).

A request is in an experiment when its policy (its ``policy_id`` or the
default policy) is an active experiment's ``policy`` and it has the
experiment's split key; its variant is the sticky hash of that key
(:class:`~app.experiments.traffic_split.TrafficSplit`), so a tenant or user
stays in its variant across requests, workers and restarts, and moves only
from champion to challenger as a rollout's share rises.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.experiments.definition import DefinitionError, ExperimentDefinition, Variant
from app.experiments.traffic_split import TrafficSplit
from app.records import ExperimentEvent

log = logging.getLogger(__name__)

RUNNING = "running"
STOPPED = "stopped"


@dataclass
class LiveExperiment:
    """One experiment as the topic has it so far."""

    definition: ExperimentDefinition
    created_at: int
    stage: int = 0
    shares: dict[str, float] = field(default_factory=dict)
    status: str = RUNNING
    stop_reason: str | None = None
    reason: str | None = None
    # The latest result event's result and the evaluator's state of the
    # current stage (from a stage or result event), if any.
    result: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    updated_at: int = 0
    _split: TrafficSplit | None = None

    @property
    def experiment_id(self) -> str:
        return self.definition.experiment_id

    @property
    def routes(self) -> bool:
        """Whether requests of its policy are assigned variants: while it
        runs, and after a promotion."""
        return self.status == RUNNING or self.stop_reason == "promoted"

    @property
    def split(self) -> TrafficSplit:
        if self._split is None:
            self._split = self.definition.split(self.shares)
        return self._split

    def set_shares(self, shares: Mapping[str, float]) -> None:
        self.shares = {v: float(shares.get(v, 0.0)) for v in self.definition.names}
        self._split = None


class ExperimentLog:
    """The experiments topic folded event by event (see the module doc).

    >>> from app.experiments.events import created_event
    >>> d = ExperimentDefinition.from_mapping({"id": "e1", "policy": "p",
    ...     "variants": [{"name": "a", "policy": "p"}, {"name": "b", "arm": "x"}]})
    >>> book = ExperimentLog()
    >>> book.apply(created_event(d, "cli:me", 0)).shares
    {'a': 0.5, 'b': 0.5}
    >>> book.assign("p", "tenant-1", None)[1].name in ("a", "b"), book.assign("q", "t", None)
    (True, None)
    """

    def __init__(self) -> None:
        self.experiments: dict[str, LiveExperiment] = {}
        self._by_policy: dict[str, LiveExperiment] = {}

    def apply(self, ev: ExperimentEvent) -> LiveExperiment | None:
        """Fold one event in; the experiment it changed, or None."""
        exp = self.experiments.get(ev.experiment_id)
        if ev.kind == "created":
            if exp is not None:
                return None
            try:
                d = ExperimentDefinition.from_mapping(
                    ev.definition, f"experiment {ev.experiment_id}"
                )
            except DefinitionError as exc:
                log.warning("experiment %s not started: %s", ev.experiment_id, exc)
                return None
            if d.experiment_id != ev.experiment_id:
                log.warning(
                    "experiment %s: its definition names %s", ev.experiment_id, d.experiment_id
                )
                return None
            exp = LiveExperiment(d, ev.created_at, updated_at=ev.created_at)
            exp.set_shares(d.stage_shares(0))
            self.experiments[ev.experiment_id] = exp
        elif exp is None:
            return None
        elif ev.kind == "stage":
            if exp.status != RUNNING or ev.stage is None or ev.shares is None:
                return None
            exp.stage = ev.stage
            exp.set_shares(ev.shares)
            exp.state, exp.result = ev.state, None
        elif ev.kind == "result":
            if ev.stage is not None and ev.stage != exp.stage:
                return None  # a look at an earlier stage
            exp.result = ev.result
            if ev.state is not None:
                exp.state = ev.state
        elif ev.kind == "stopped":
            if exp.status == STOPPED and ev.stop_reason != "manual":
                return None
            exp.status, exp.stop_reason, exp.reason = STOPPED, ev.stop_reason, ev.reason
            if ev.shares is not None:
                exp.set_shares(ev.shares)
        exp.updated_at = max(exp.updated_at, ev.created_at)
        self._index()
        return exp

    def _index(self) -> None:
        """The experiment each policy's requests go to: the first created
        of those that route (the CLI refuses a second one per policy)."""
        by_policy: dict[str, LiveExperiment] = {}
        for exp in sorted(self.experiments.values(), key=lambda e: e.created_at):
            if exp.routes and exp.stop_reason != "manual":
                by_policy.setdefault(exp.definition.policy, exp)
        self._by_policy = by_policy

    @property
    def active(self) -> bool:
        """Whether any policy's requests are assigned variants."""
        return bool(self._by_policy)

    def routing(self, policy_id: str) -> LiveExperiment | None:
        return self._by_policy.get(policy_id)

    def running(self) -> list[LiveExperiment]:
        return [e for e in self.experiments.values() if e.status == RUNNING]

    def assign(
        self, policy_id: str, tenant_id: str, metadata: Mapping[str, Any] | None
    ) -> tuple[LiveExperiment, Variant] | None:
        """The experiment and variant of a request of ``policy_id``, or None
        when its policy has none or it lacks the split key."""
        exp = self._by_policy.get(policy_id)
        if exp is None:
            return None
        key = split_value(exp.definition.split_key, tenant_id, metadata)
        if key is None:
            return None
        return exp, exp.definition.variant(exp.split.assign(key))


def split_value(split_key: str, tenant_id: str, metadata: Mapping[str, Any] | None) -> str | None:
    """The value a request is assigned by: its tenant, or a metadata field
    that is a string or an integer (None when it has no such field)."""
    if split_key == "tenant":
        return tenant_id
    v = (metadata or {}).get(split_key)
    if isinstance(v, str) and v:
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None
