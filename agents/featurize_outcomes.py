"""featurize_outcomes: outcomes (keyed by policy) → feature observations for
the tenant and the tenant × arm, repartitioned to the tenant key through the
observations topic, so that ``aggregate_features`` keeps a tenant's outcome
windows beside its request windows. A batched service, as
``featurize_requests`` (one message per route and batch). Outcomes
``learn_from_outcomes`` cannot parse are dead-lettered there, and only
counted here; an exception while featurizing one dead-letters it here as
``internal_error``."""

from __future__ import annotations

from typing import Any

import faust

from agents.featurize_requests import register_featurize
from app.features.observations import outcome_observations
from app.records import Outcome
from app.stream.runtime import Runtime

AGENT = "featurize_outcomes"


def register(app: faust.App, runtime: Runtime) -> None:
    max_bytes = runtime.settings.max_event_bytes

    def observe(m: Any) -> list[tuple[str, str, Any]]:
        return outcome_observations(Outcome.loads(m.value, max_bytes))

    register_featurize(app, runtime, AGENT, "outcomes", observe)
