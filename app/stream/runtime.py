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
from app.policies.config import PoliciesConfig, PolicyConfigError
from app.records import InvalidEvent, Request
from app.settings import Settings
from app.topics import TopicCatalog

log = logging.getLogger(__name__)


class DirectDecisions(Protocol):
    """select_arm's decider for requests that do not come through the
    requests topic (POST /decide), and the producer its decisions leave by."""

    producer: Any  # an aiokafka producer

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
    decide_ready: bool = False
    # Features (app/features): the windowed feature store this worker keeps,
    # and the extractor select_arm decides with (None without a spec).
    feature_store: Any = None
    feature_extractor: Any = None
    # select_arm once its snapshots are read, until it stops (None before and
    # after): what POST /decide decides with.
    direct_decisions: DirectDecisions | None = None
    # Called with the new config when the policies file changes.
    on_policies_changed: list[Callable[[PoliciesConfig], None]] = field(default_factory=list)
    _policies_mtime: float = 0.0

    @classmethod
    def for_settings(cls, settings: Settings) -> Runtime:
        """The policies file loaded, its change time noted for reloads."""
        return cls(
            settings=settings,
            topics=TopicCatalog.for_settings(settings),
            policies=PoliciesConfig.load(settings.policies_path),
            _policies_mtime=os.stat(settings.policies_path).st_mtime,
        )

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
        self.policies = config
        for listener in self.on_policies_changed:
            listener(config)
        log.info("policies reloaded from %s", path)
        metrics.CONFIG_RELOADS.labels("ok").inc()
        return True
