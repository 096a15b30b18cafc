"""Memory that no input can grow without bound: metric label values capped
per family (app/metrics.py, later values counted as ``other``), tenants'
exploration budgets and open workflows capped with the least recently used
dropped first, each drop counted in ``llmopt_state_evictions_total``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from app import metrics
from app.episodes import Episodes
from app.policies.guardrails import ExplorationBudget
from app.records import Outcome


def evictions(state: str) -> float:
    return REGISTRY.get_sample_value("llmopt_state_evictions_total", {"state": state}) or 0.0


# -- metric labels -----------------------------------------------------------------------------
@pytest.fixture
def cap_of_three() -> Iterator[None]:
    before = metrics.LABEL_VALUES_MAX
    metrics.set_label_values_max(3)
    yield
    metrics.set_label_values_max(before)


def overflow(metric: str) -> float:
    return REGISTRY.get_sample_value("llmopt_metric_labels_overflow_total", {"metric": metric}) or 0


@pytest.mark.usefixtures("cap_of_three")
def test_each_label_takes_at_most_the_cap_of_distinct_values() -> None:
    registry = CollectorRegistry()
    c = metrics.Counter("demo_decisions_total", "demo", ["policy_id", "arm"], registry=registry)
    g = metrics.Gauge("demo_share", "demo", ["experiment"], registry=registry)
    h = metrics.Histogram("demo_seconds", "demo", ["agent"], registry=registry)
    for i in range(10):
        c.labels("p", f"arm-{i}").inc()
        c.labels(policy_id=f"policy-{i}", arm="arm-0").inc()
        g.labels(f"exp-{i}").set(i)
        h.labels(f"agent-{i}").observe(0.1)
    text = generate_latest(registry).decode()
    (family,) = c.collect()
    arms = {s.labels["arm"] for s in family.samples if s.name.endswith("_total")}
    assert arms == {"arm-0", "arm-1", "arm-2", "other"}
    policies = {s.labels["policy_id"] for s in family.samples}
    assert policies == {"p", "policy-0", "policy-1", "other"}
    value = registry.get_sample_value
    assert value("demo_decisions_total", {"policy_id": "p", "arm": "other"}) == 7  # arm-3 … 9
    # "p" took the first policy_id slot: policy-2 … policy-9 are other.
    assert value("demo_decisions_total", {"policy_id": "other", "arm": "arm-0"}) == 8
    assert 'demo_share{experiment="other"} 9.0' in text  # the last value set
    assert 'demo_seconds_count{agent="other"} 7.0' in text
    assert overflow("demo_decisions_total") == 7 + 8
    assert overflow("demo_share") == 7 and overflow("demo_seconds") == 7
    # Values seen before the cap keep their own series.
    c.labels("p", "arm-1").inc()
    assert value("demo_decisions_total", {"policy_id": "p", "arm": "arm-1"}) == 2


def test_the_worker_families_are_capped() -> None:
    for family in (metrics.DECISIONS, metrics.POLICY_VERSION, metrics.AGENT_PROCESSING_SECONDS):
        assert isinstance(family, metrics.Counter | metrics.Gauge | metrics.Histogram)


# -- exploration budgets -----------------------------------------------------------------------
def test_exploration_budgets_keep_the_most_recent_tenants() -> None:
    b = ExplorationBudget(fraction=0.5, window_seconds=60, max_tenants=2)
    before = evictions("exploration_budgets")
    for tenant in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" comes
        b.record(tenant, now_ms=0, explored=False)
    assert b.usage("a", 0) == (2, 0) and b.usage("c", 0) == (1, 0)
    assert b.usage("b", 0) == (0, 0)  # forgotten: starts afresh
    assert evictions("exploration_budgets") == before + 1


# -- open workflows ----------------------------------------------------------------------------
def step(workflow: str, n: int, at: int) -> Outcome:
    return Outcome(
        request_id=f"{workflow}-{n}",
        tenant_id="t",
        policy_id="p",
        policy_version=0,
        arm="cheap",
        available_arms=["cheap"],
        propensity=1.0,
        explored=False,
        reward=0.5,
        defaulted=False,
        decided_at=at,
        outcome_at=at,
        features=[float(n)],
        workflow={"id": workflow, "step": n},
    )


def test_open_workflows_are_capped_oldest_first() -> None:
    ep = Episodes(max_open=2)
    before = evictions("open_workflows")
    ep.add(step("w1", 0, 1))
    ep.add(step("w2", 0, 2))
    out = ep.add(step("w3", 0, 3))
    assert ep.open_count == 2 and "w1" not in ep.to_dict()
    assert [t.done for t in out] == [True]  # w1's step handed out, terminal
    assert evictions("open_workflows") == before + 1


def test_a_workflow_holds_at_most_max_steps() -> None:
    ep = Episodes(max_steps=3)
    before = evictions("workflow_steps")
    out = []
    for n in range(4):
        out += ep.add(step("w", n, n))
    assert ep.open_count == 0 and evictions("workflow_steps") == before + 1
    assert [t.done for t in out] == [False, False, False, True]
    ep.add(step("w", 4, 4))  # the next step starts another episode
    assert len(ep.to_dict()["w"]["states"]) == 1
