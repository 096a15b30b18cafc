"""Builders of the experiments topic's records (``ExperimentEvent``) and
their Kafka key.

The topic is compacted and keyed ``<experiment_id>/<kind>``: compaction
keeps each experiment's definition, its latest stage, its latest result and
its stop, which is all a reader needs to carry on (app/experiments/live.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from app.experiments.definition import ExperimentDefinition
from app.records import ExperimentEvent

EXPERIMENT_MAX_BYTES = 1024 * 1024
"""A result's state is a few kilobytes; a definition less."""


def record_key(ev: ExperimentEvent) -> bytes:
    return f"{ev.experiment_id}/{ev.kind}".encode()


def _event(kind: str, experiment_id: str, by: str, at: int, **fields: Any) -> ExperimentEvent:
    return ExperimentEvent(
        event_id=uuid.uuid4().hex,
        kind=kind,
        experiment_id=experiment_id,
        created_at=at,
        created_by=by,
        **fields,
    )


def created_event(d: ExperimentDefinition, by: str, at: int) -> ExperimentEvent:
    shares = d.stage_shares(0)
    return _event(
        "created", d.experiment_id, by, at, definition=d.to_dict(), stage=0, shares=shares
    )


def stage_event(
    experiment_id: str,
    stage: int,
    shares: Mapping[str, float],
    reason: str,
    state: dict[str, Any] | None,
    by: str,
    at: int,
) -> ExperimentEvent:
    why = reason[:1024]
    return _event(
        "stage", experiment_id, by, at, stage=stage, shares=dict(shares), reason=why, state=state
    )


def result_event(
    experiment_id: str,
    stage: int,
    result: dict[str, Any],
    state: dict[str, Any] | None,
    by: str,
    at: int,
) -> ExperimentEvent:
    return _event("result", experiment_id, by, at, stage=stage, result=result, state=state)


def stopped_event(
    experiment_id: str,
    stop_reason: str,
    reason: str,
    by: str,
    at: int,
    shares: Mapping[str, float] | None = None,
) -> ExperimentEvent:
    given = None if shares is None else dict(shares)
    return _event(
        "stopped",
        experiment_id,
        by,
        at,
        stop_reason=stop_reason,
        reason=reason[:1024],
        shares=given,
    )
