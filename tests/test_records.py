"""The record declarations in app/records.py and what is built from them: the
compiled decoders (their rejections worded as always), the plain-dict builders
of decisions and outcomes, the feature observations' two forms and the
backtest's outcome columns. The schemas are checked in tests/test_contracts.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from app.evaluation.logged_data import OUTCOME_COLUMNS
from app.features.observations import (
    observation_doc,
    outcome_observations,
    read_observation,
    request_observations,
)
from app.records import (
    DEAD_LETTER_REASONS,
    SCHEMA_VERSION,
    AlertEvent,
    DeadLetter,
    Decision,
    DriftEvent,
    FeatureObservation,
    InvalidEvent,
    MetricsSnapshot,
    Outcome,
    Record,
    Request,
    Reward,
    decision_doc,
    outcome_doc,
    spec_of,
)
from tests.test_contracts import DELETE, EXAMPLES, example, required_fields, validator

T0 = 1_700_000_000_000
INT53 = "[0, 9007199254740992]"
SV, IV = "schema_violation", "invalid_value"


@pytest.mark.parametrize(
    ("cls", "patch", "code", "detail"),
    [
        (Request, {"request_id": None}, SV, "'request_id' must be a non-empty "
         "string of at most 256 characters"),
        (Request, {"tenant_id": DELETE}, SV, "'tenant_id' is required"),
        (Request, {"task_type": "t" * 65}, SV, "'task_type' must be a non-empty "
         "string of at most 64 characters"),
        (Request, {"created_at": -1}, SV, f"'created_at' must be an integer in {INT53}"),
        (Request, {"priority": 11}, SV, "'priority' must be an integer in [0, 10]"),
        (Request, {"candidates": []}, SV, "'candidates' must be a list of 1..64 "
         "distinct non-empty strings"),
        (Request, {"metadata": []}, SV, "'metadata' must be an object"),
        (Request, {"x": 1, "y": 2}, SV, "unknown field(s) ['x', 'y']"),
        (Request, {"schema_version": 2}, SV, "'schema_version' must be 1, got 2"),
        (Request, {"workflow": {"id": "w", "step": 0, "x": 1}}, SV,
         "'workflow' has unknown field(s) ['x']"),
        (Request, {"workflow": {"step": 0}}, SV, "'id' is required"),
        (Request, {"workflow": {"id": "w", "step": 0, "state": ["a"]}}, SV,
         "'state' must be a list of at most 256 finite numbers"),
        (Decision, {"propensity": 1.5}, IV, "'propensity' must be in [0.0, 1.0]"),
        (Decision, {"propensity": float("nan")}, IV, "'propensity' must be a finite number"),
        (Decision, {"explored": DELETE}, SV, "'explored' must be a boolean"),
        (Decision, {"scores": {"a": "x"}}, SV, "'scores' values must be finite numbers"),
        # several faults: the one checked first, as ever
        (Decision, {"scores": [], "arm": ""}, SV, "'scores' must be an object"),
        (Decision, {"features": [0.5] * 1025}, SV, "'features' must be a list of "
         "at most 1024 finite numbers"),
        (Decision, {"spec_features": {"name": "s"}}, SV,
         "'spec_features' must have exactly name, version, hash and values"),
        (Reward, {"cost_usd": 2e6}, IV, "'cost_usd' must be in [0.0, 1000000.0]"),
        (Reward, {"error": 1, "quality": 2}, SV, "'error' must be a boolean"),
        (DeadLetter, {"reason": "because"}, SV,
         f"'reason' must be one of {DEAD_LETTER_REASONS}"),
        (DeadLetter, {"reason": ""}, SV, "'reason' must be a non-empty string of "
         "at most 64 characters"),
        (DeadLetter, {"original_sha256": "ab"}, SV,
         "'original_sha256' must be a string of 64 characters"),
        (DeadLetter, {"original_value_b64": 1}, SV, "'original_value_b64' must be "
         "a non-empty string of at most 256 characters"),
        (MetricsSnapshot, {"source": "x", "snapshot_id": ""}, SV,
         "'source' must be one of ('worker', 'simulator')"),
        (MetricsSnapshot, {"samples": [{"name": "m", "labels": {}, "value": "1"}]}, IV,
         "sample 'value' must be a finite number"),
        (DriftEvent, {"kind": DELETE}, SV,
         "'kind' must be one of ('drift', 'input_drift', 'anomaly', 'adaptation')"),
        (AlertEvent, {"value": True}, IV, "'value' must be a finite number"),
        (FeatureObservation, {"reward": DELETE}, SV,
         "'reward' is required when 'kind' is 'outcome'"),
    ],
)  # fmt: skip
def test_rejections_are_worded_as_ever(
    cls: type[Record], patch: dict[str, Any], code: str, detail: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        cls.from_dict(example(cls, **patch))
    assert (info.value.code, info.value.detail) == (code, detail)


def test_defaults_fill_what_a_document_leaves_out() -> None:
    r = Request.from_dict(
        {
            "schema_version": 1,
            "request_id": "r",
            "tenant_id": "t",
            "task_type": "q",
            "created_at": 0,
        }
    )
    assert (r.input_tokens, r.priority, r.policy_id, r.workflow) == (0, 5, None, None)
    o = Outcome.from_dict({k: v for k, v in EXAMPLES[Outcome].items() if k != "components"})
    assert o.components == {}
    assert Request.from_dict(example(Request, created_at=12.0)).created_at == 12


def declared(cls: type[Record]) -> list[str]:
    """The required fields, in declaration order (the order ``to_dict`` emits)."""
    return [f.name for f in dataclasses.fields(cls) if f.name in required_fields(cls)]


def test_the_decision_builder_makes_what_the_record_emits() -> None:
    d = EXAMPLES[Decision]
    doc = decision_doc(**{k: d[k] for k in declared(Decision) if k != "schema_version"})
    assert list(doc) == declared(Decision)
    assert doc["schema_version"] == SCHEMA_VERSION
    validator(Decision).validate(doc)
    assert Decision.from_dict(doc).to_dict() == doc


def test_the_outcome_builder_makes_what_the_record_emits() -> None:
    o = EXAMPLES[Outcome]
    fields = [*declared(Outcome), "components"]
    doc = outcome_doc(**{k: o[k] for k in fields if k != "schema_version"})
    assert set(doc) == set(fields)
    assert [k for k in doc if k != "components"] == declared(Outcome)
    validator(Outcome).validate(doc)
    assert Outcome.from_dict(doc).to_dict() == doc


def test_the_backtest_columns_of_outcomes_are_outcome_fields() -> None:
    kinds = {f.name: spec_of(f).kind for f in dataclasses.fields(Outcome) if f.metadata}
    m = OUTCOME_COLUMNS
    assert (kinds[m.action], kinds[m.reward], kinds[m.propensity]) == ("string", "number", "number")
    assert m.available is not None and kinds[m.available] == "strings"
    assert m.timestamp is not None and kinds[m.timestamp] == "integer"
    assert isinstance(m.context, str) and kinds[m.context] == "numbers"


# -- feature observations ------------------------------------------------------------------


def test_observations_travel_as_feature_observation_records() -> None:
    r = Request(request_id="r", tenant_id="acme", task_type="qa", created_at=T0, input_tokens=40)
    o = Outcome.from_dict(EXAMPLES[Outcome])
    pairs = [(e, obs) for _, e, obs in [*request_observations(r), *outcome_observations(o)]]
    assert len(pairs) == 4
    for entity, obs in pairs:
        doc = observation_doc(entity, obs)
        validator(FeatureObservation).validate(doc)
        assert FeatureObservation.from_dict(doc).to_dict() == doc
        assert read_observation(doc) == (entity, obs)
        # as written before observations had a schema
        assert read_observation({"e": entity, **obs}) == (entity, obs)
    doc = observation_doc(*pairs[2])
    assert doc["kind"] == "outcome" and doc["time"] == o.outcome_at and doc["reward"] == o.reward


def test_the_short_form_reads_as_it_did() -> None:
    short = {"e": "tenant=a", "k": "o", "t": 5, "reward": 1, "cost_usd": None, "error": False}
    assert read_observation(short) == (
        "tenant=a",
        {"k": "o", "t": 5, "reward": 1.0, "error": False},
    )
    for bad in (
        {**short, "k": "x"},
        {**short, "error": None},  # null was never an error flag
        {**short, "reward": None},
        {"e": "tenant=a", "k": "o", "t": 5},
        {"e": "tenant=a", "k": ["o"], "t": 5},
        "tenant=a",
    ):
        with pytest.raises(InvalidEvent):
            read_observation(bad)
    with pytest.raises(InvalidEvent):  # null is no longer absent in the schema's form
        read_observation(example(FeatureObservation, cost_usd=None))
