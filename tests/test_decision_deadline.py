"""Decision deadlines: a request older than its deadline when it is decided
gets its policy's fallback arm, flagged ``fallback_reason: deadline``, on the
decider, on POST /decide and on the requests topic."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from app.decider import Decider
from app.ingress import accept_request
from app.records import MAX_DEADLINE_MS, Decision, InvalidEvent, Request, now_ms
from app.settings import Settings, SettingsError
from app.stream.runtime import Runtime
from tests.conftest import Deployment
from tests.kafka_io import TopicReader, produce
from tests.test_decide_http import TENANT, HttpRequest, ready
from tests.test_decide_http import runtime as runtime  # the fixture POST /decide tests use
from tests.test_decider import HISTORY, T0, config, request, snapshot_after
from tests.test_experiment_rollouts import created_event, policies, rollout

NOW = T0 + 1_000  # request() makes requests created at T0 - 10


def late_doc(doc: Any) -> Decision:
    assert isinstance(doc, dict), doc
    return Decision.from_dict(doc)


def test_a_request_past_its_deadline_gets_the_fallback_arm() -> None:
    d = Decider(config(), seed=0)
    d.apply_snapshot(snapshot_after(HISTORY))
    late, on_time, exact = d.decide(
        [request(1, deadline_ms=500), request(2, deadline_ms=5_000), request(3, deadline_ms=1_010)],
        now_ms=NOW,
    )
    x = late_doc(late)
    assert (x.arm, x.fallback, x.fallback_reason) == ("small", True, "deadline")
    assert x.propensity == 1.0 and x.available_arms == ["small"] and not x.explored
    assert x.policy_version == d.version("p") > 0 and x.decided_at == NOW
    for doc in (on_time, exact):  # older than the deadline is late; as old is not
        y = late_doc(doc)
        assert not y.fallback and y.fallback_reason is None and len(y.available_arms) == 4


def test_the_setting_applies_when_the_request_has_no_deadline() -> None:
    d = Decider(config(), seed=0, deadline_ms=100)
    young = d.decide([request(1), request(2, deadline_ms=5_000)], now_ms=T0 + 50)
    assert not any(late_doc(doc).fallback for doc in young)  # 60 ms old: within 100
    late, own_wins = d.decide([request(1), request(2, deadline_ms=5_000)], now_ms=NOW)
    assert late_doc(late).fallback_reason == "deadline"
    assert not late_doc(own_wins).fallback
    # No setting, no deadline: a request a day old is still decided by the policy.
    assert not late_doc(Decider(config()).decide([request(4)], now_ms=T0 + 86_400_000)[0]).fallback


def test_a_late_request_keeps_its_candidates_and_the_policys_checks() -> None:
    d = Decider(config(), deadline_ms=1)
    without, within, unknown_arm, unknown_policy = d.decide(
        [
            request(1, candidates=["mid", "big"]),
            request(2, candidates=["big", "small"]),
            request(3, candidates=["nope"]),
            request(4, policy_id="nope"),
        ],
        now_ms=NOW,
    )
    assert late_doc(without).arm == "mid"  # the fallback arm is not a candidate
    assert late_doc(within).arm == "small" and late_doc(within).available_arms == ["small"]
    assert isinstance(unknown_arm, InvalidEvent) and unknown_arm.code == "unknown_arm"
    assert isinstance(unknown_policy, InvalidEvent) and unknown_policy.code == "unknown_policy"


def test_a_late_request_is_decided_outside_its_experiment() -> None:
    d = Decider(policies(), seed=1, deadline_ms=1)
    d.experiments.apply(created_event(rollout(stages=[99, 100]), "t", T0))
    reqs = [
        Request(request_id=f"r{i}", tenant_id=f"t{i}", task_type="qa", created_at=T0 - i % 2)
        for i in range(40)
    ]
    out = [late_doc(doc) for doc in d.decide(reqs, T0 + 1)]
    late, on_time = out[1::2], out[0::2]  # 2 ms and 1 ms old
    assert all(x.fallback_reason == "deadline" and x.experiment_id is None for x in late)
    assert all(x.arm == "big" for x in late)  # p's fallback: its first arm
    assert all(x.experiment_id == "r1" for x in on_time)


def test_every_fallback_says_why() -> None:
    d = Decider(config())
    assert d.fallback(request(1), NOW)["fallback_reason"] == "no_answer"
    Decision.from_dict(d.fallback(request(1), NOW))


@pytest.mark.parametrize("bad", [0, -1, MAX_DEADLINE_MS + 1, 2.5, "100", None, True])
def test_a_bad_deadline_is_a_schema_violation(bad: Any) -> None:
    doc = {**request(1).to_dict(), "deadline_ms": bad}
    with pytest.raises(InvalidEvent) as info:
        accept_request(
            orjson.dumps(doc),
            None,
            [],
            max_bytes=65536,
            tenant_header="",
            reply_prefix="llmopt.replies.",
            now=NOW,
        )
    assert info.value.code == "schema_violation"
    assert "deadline_ms" in info.value.detail


def test_the_setting_is_checked() -> None:
    assert Settings.from_env({"LLMOPT_DECISION_DEADLINE_MS": "250"}).decision_deadline_ms == 250
    for bad in ("-1", str(MAX_DEADLINE_MS + 1)):
        with pytest.raises(SettingsError, match="LLMOPT_DECISION_DEADLINE_MS"):
            Settings.from_env({"LLMOPT_DECISION_DEADLINE_MS": bad})


def fallbacks(policy_id: str, reason: str) -> float:
    labels = {"policy_id": policy_id, "reason": reason}
    return REGISTRY.get_sample_value("llmopt_decisions_fallback_total", labels) or 0.0


def test_post_decide_answers_a_late_request_with_the_fallback_and_counts_it(
    runtime: Runtime,
) -> None:
    endpoint, _ = ready(runtime)
    old = now_ms() - 60_000
    body = orjson.dumps(
        [
            {**_doc("late"), "created_at": old, "deadline_ms": 1_000},
            {**_doc("fresh"), "deadline_ms": 60_000},
        ]
    )
    before = fallbacks("default", "deadline")
    status, (late, fresh) = asyncio.run(endpoint.decide(HttpRequest(body, TENANT)))
    assert status == 200
    assert (late["fallback"], late["fallback_reason"], late["propensity"]) == (True, "deadline", 1)
    assert not fresh["fallback"] and "fallback_reason" not in fresh
    assert fallbacks("default", "deadline") == before + 1


def _doc(request_id: str) -> dict[str, Any]:
    r = Request(request_id=request_id, tenant_id="acme", task_type="qa", created_at=now_ms())
    return r.to_dict()


def test_select_arm_applies_the_setting_to_the_requests_topic(deployment: Deployment) -> None:
    deployment.env["LLMOPT_DECISION_DEADLINE_MS"] = "30000"
    worker = deployment.start_worker("decide")
    now = now_ms()
    reqs = [
        Request(request_id="late", tenant_id="t", task_type="chat", created_at=now - 60_000),
        Request(
            request_id="own", tenant_id="t", task_type="chat", created_at=now - 5_000, deadline_ms=1
        ),
        Request(request_id="fresh", tenant_id="t", task_type="chat", created_at=now),
    ]

    async def go() -> dict[str, Decision]:
        bootstrap = deployment.broker.bootstrap
        await produce(
            bootstrap, deployment.topics.name("requests"), ((b"t", r.dumps()) for r in reqs)
        )
        async with TopicReader(bootstrap, deployment.topics.name("decisions")) as reader:
            await reader.until(lambda ms: len(ms) >= 3, 30, "3 decisions")
        return {d.request_id: d for d in (Decision.loads(m.value) for m in reader.messages)}

    got = asyncio.run(go())
    for rid in ("late", "own"):
        assert (got[rid].arm, got[rid].fallback_reason) == ("gpt-4o-mini", "deadline")
    assert not got["fresh"].fallback and got["fresh"].fallback_reason is None
    counted = re.search(
        r'llmopt_decisions_fallback_total\{policy_id="default",reason="deadline"\} (\S+)',
        worker.metrics(),
    )
    assert counted is not None and float(counted.group(1)) == 2.0
