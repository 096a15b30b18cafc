"""Requests and outcomes → feature observations, each with its entity and
the key that routes it (the repartitioning step of the feature pipeline).

Entities are strings: ``tenant=<id>``, ``task_type=<type>`` and
``tenant=<id>,arm=<arm>``. Everything about a tenant — its requests, its
outcomes, its per-arm outcomes — is routed by the tenant id, so one
partition holds all of a tenant's windows. Task-type entities are routed by
the task type. Every worker reads every window from its copy of the store
(``agents/replicate_features.py``), wherever it is aggregated.

An observation has two forms: the one the windows take
(:class:`app.features.aggregate.WindowAggregate`: ``{"k": "r"|"o", "t": ms,
...}``, no entity) and, on the observations topic, a
:class:`~app.records.FeatureObservation` (:func:`observation_doc`,
:func:`read_observation`).
"""

from __future__ import annotations

from typing import Any

import orjson

from app.records import SCHEMA_VERSION, FeatureObservation, InvalidEvent, Outcome, Request

JSON = dict[str, Any]


def tenant_entity(tenant_id: str) -> str:
    return f"tenant={tenant_id}"


def task_type_entity(task_type: str) -> str:
    return f"task_type={task_type}"


def tenant_arm_entity(tenant_id: str, arm: str) -> str:
    return f"tenant={tenant_id},arm={arm}"


def request_observations(r: Request) -> list[tuple[str, str, JSON]]:
    """(routing key, entity, observation) for one request.

    >>> r = Request(request_id="r", tenant_id="acme", task_type="qa", created_at=7,
    ...             input_tokens=40)
    >>> [(k, e) for k, e, _ in request_observations(r)]
    [('acme', 'tenant=acme'), ('qa', 'task_type=qa')]
    """
    obs = {"k": "r", "t": r.created_at, "input_tokens": r.input_tokens}
    return [
        (r.tenant_id, tenant_entity(r.tenant_id), obs),
        (r.task_type, task_type_entity(r.task_type), obs),
    ]


def outcome_observations(o: Outcome) -> list[tuple[str, str, JSON]]:
    """Outcome observations, timed at ``outcome_at`` (when the reward became
    known), for the tenant and the tenant × arm; routed by the tenant."""
    obs: JSON = {"k": "o", "t": o.outcome_at, "reward": o.reward}
    c = o.components or {}
    for name in ("cost_usd", "latency_ms", "error"):
        if c.get(name) is not None:
            obs[name] = c[name]
    return [
        (o.tenant_id, tenant_entity(o.tenant_id), obs),
        (o.tenant_id, tenant_arm_entity(o.tenant_id, o.arm), obs),
    ]


# The windows' kind codes; the topic spells them out.
KINDS = {"r": "request", "o": "outcome"}
_CODES = {name: code for code, name in KINDS.items()}
_LEGACY_KEYS = {"e": "entity", "k": "kind", "t": "time"}


def observation_doc(entity: str, obs: JSON) -> JSON:
    """An observation as the observations topic carries it.

    >>> observation_doc("tenant=acme", {"k": "r", "t": 7, "input_tokens": 40})
    {'entity': 'tenant=acme', 'kind': 'request', 'time': 7, 'input_tokens': 40, 'schema_version': 1}
    """
    # A plain dict, as FeatureObservation.to_dict would emit it (tests/test_records.py
    # checks): building the record costs several times more, per observation.
    doc = {"entity": entity, "kind": KINDS[obs["k"]], "time": obs["t"]}
    doc.update((k, v) for k, v in obs.items() if k != "k" and k != "t")
    doc["schema_version"] = SCHEMA_VERSION
    return doc


def read_observation(doc: Any) -> tuple[str, JSON]:
    """One observation of a message → (entity, the observation as the
    windows take it), or :class:`InvalidEvent`.

    Also reads the form written before observations had a schema (``e``,
    ``k``, ``t``, no ``schema_version``): a worker upgraded mid-stream still
    reads what is already in the topic.

    >>> read_observation({"e": "tenant=acme", "k": "o", "t": 9, "reward": 0.5})
    ('tenant=acme', {'k': 'o', 't': 9, 'reward': 0.5})
    """
    if type(doc) is not dict:
        raise InvalidEvent("schema_violation", "an observation must be an object")
    if "schema_version" not in doc:
        doc = {
            _LEGACY_KEYS.get(k, k): KINDS.get(v, v) if k == "k" and type(v) is str else v
            for k, v in doc.items()
            # absent and null meant the same then
            if not (v is None and k in ("cost_usd", "latency_ms"))
        }
        doc["schema_version"] = SCHEMA_VERSION
    o = FeatureObservation.from_dict(doc)
    obs: JSON = {"k": _CODES[o.kind], "t": o.time}
    for name in ("input_tokens", "reward", "cost_usd", "latency_ms", "error"):
        v = getattr(o, name)
        if v is not None:
            obs[name] = v
    return o.entity, obs


def parse_observations(raw: bytes | None) -> tuple[list[tuple[int, str, JSON]], int]:
    """One message of the observations topic → (index in the message,
    entity, observation) of each valid observation, and how many others
    there were. :class:`InvalidEvent` if the message is not a JSON array."""
    try:
        batch = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("malformed_json", str(exc)) from None
    if type(batch) is not list:
        raise InvalidEvent("malformed_json", "an observations message must be a JSON array")
    valid = []
    for i, doc in enumerate(batch):
        # Anything else would raise in the store, or leave a pane half-updated.
        try:
            valid.append((i, *read_observation(doc)))
        except InvalidEvent:
            continue
    return valid, len(batch) - len(valid)
