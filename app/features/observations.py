"""Requests and outcomes → feature observations, each with its entity and
the key that routes it (the repartitioning step of the feature pipeline).

Entities are strings: ``tenant=<id>``, ``task_type=<type>`` and
``tenant=<id>,arm=<arm>``. Everything about a tenant — its requests, its
outcomes, its per-arm outcomes — is routed by the tenant id, the key of the
requests topic, so a tenant's windows live on the partition that
``select_arm`` decides its requests from. Task-type entities are routed by
the task type.
"""

from __future__ import annotations

from typing import Any

from app.records import Outcome, Request

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
