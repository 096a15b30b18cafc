"""What the agents of one worker share (:class:`Runtime`). Imports no agent:
the agents import it, and the app factory (app/stream/app.py) imports them."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app import metrics
from app.decider import check_dimensions
from app.features.request_vector import RequestVectorizer
from app.policies.config import PoliciesConfig, PolicyConfigError, policy_from_mapping
from app.records import InvalidEvent, Request
from app.settings import Settings
from app.topics import TopicCatalog
from app.versions import serving_holds

log = logging.getLogger(__name__)


class DirectDecisions(Protocol):
    """select_arm's decider for requests that do not come through the
    requests topic (POST /decide), and the producer its decisions leave by."""

    producer: Any  # an aiokafka producer
    decider: Any  # its app.decider.Decider (GET /explain reads the policies it holds)

    async def decide_direct(
        self, requests: list[Request], agent: str
    ) -> tuple[list[dict[str, Any] | InvalidEvent], list[asyncio.Future[Any] | None]]:
        """Per request: its decision (or error), and the future of the
        decision's send to the decisions topic (None for an error)."""
        ...


@dataclass
class Runtime:
    """What agents share: settings, topic names, policies."""

    settings: Settings
    topics: TopicCatalog
    policies: PoliciesConfig
    # Batched services by agent name → whether they held partitions after
    # their last fetch (a role's readiness on /health).
    holds_partitions: dict[str, bool] = field(default_factory=dict)
    # Features (app/features): the windowed feature store this worker keeps,
    # and the extractor select_arm decides with (None without a spec).
    feature_spec: Any = None
    feature_store: Any = None
    feature_extractor: Any = None
    # select_arm once its snapshots are read, until it stops (None before and
    # after): what POST /decide decides with.
    direct_decisions: DirectDecisions | None = None
    # Called with the new config when the policies file changes, or a
    # registry version starts or stops serving in place of a file entry.
    on_policies_changed: list[Callable[[PoliciesConfig], None]] = field(default_factory=list)
    # ``policies`` is the file's config (``file_policies``) with the served
    # registry versions (``serving``, from the policy snapshots) in place of
    # their entries, while those entries are unchanged (app/versions.py).
    file_policies: PoliciesConfig | None = None
    serving: dict[str, dict[str, Any]] = field(default_factory=dict)
    _policies_mtime: float = 0.0

    def __post_init__(self) -> None:
        if self.file_policies is None:
            self.file_policies = self.policies

    def holding(self, agent: str) -> Callable[[bool], None]:
        """The ``on_fetch`` of a batched service: records whether it holds partitions."""

        def note(assigned: bool) -> None:
            self.holds_partitions[agent] = assigned

        return note

    @classmethod
    def for_settings(cls, settings: Settings) -> Runtime:
        """The policies file loaded, its change time noted for reloads."""
        return cls(
            settings=settings,
            topics=TopicCatalog.for_settings(settings),
            policies=PoliciesConfig.load(settings.policies_path),
            _policies_mtime=os.stat(settings.policies_path).st_mtime,
        )

    def follow_serving(self, policy_id: str, serving: dict[str, Any] | None) -> None:
        """A policy snapshot said which registry version the policy serves
        (None: the file's entry); the config changes when that changes."""
        if serving is None and policy_id not in self.serving:
            return
        if serving is not None and self.serving.get(policy_id) == serving:
            return
        if serving is None:
            del self.serving[policy_id]
        else:
            self.serving[policy_id] = serving
        self._merge()

    def _merge(self) -> None:
        """``policies`` from the file's and the served versions; listeners
        told when any policy's configuration changed."""
        base = self.file_policies
        assert base is not None
        merged = dict(base.policies)
        for pid, serving in self.serving.items():
            if not serving_holds(serving, base.policies.get(pid)):
                continue
            try:
                merged[pid] = policy_from_mapping(pid, serving["config"], "a served version")
            except (PolicyConfigError, KeyError, TypeError) as exc:
                log.error("policy %s: served version not taken: %s", pid, exc)
        config = PoliciesConfig(default_policy=base.default_policy, policies=merged)
        old = self.policies.policies
        if (
            base.default_policy == self.policies.default_policy
            and old.keys() == merged.keys()
            and all(old[p].config_hash == merged[p].config_hash for p in merged)
        ):
            return
        self.policies = config
        for listener in self.on_policies_changed:
            listener(config)

    def reload_policies(self) -> bool:
        """Re-read the policies file if it changed; a broken file is logged
        and the running config kept."""
        path = self.settings.policies_path
        try:
            mtime = os.stat(path).st_mtime
            if mtime == self._policies_mtime:
                return False
            self._policies_mtime = mtime
            config = PoliciesConfig.load(path)
            check_dimensions(config, getattr(self.feature_extractor, "dim", RequestVectorizer.dim))
        except (OSError, PolicyConfigError) as exc:
            log.error("policies file not reloaded, keeping the running config: %s", exc)
            metrics.CONFIG_RELOADS.labels("error").inc()
            return False
        self.file_policies = config
        self._merge()
        log.info("policies reloaded from %s", path)
        metrics.CONFIG_RELOADS.labels("ok").inc()
        return True
