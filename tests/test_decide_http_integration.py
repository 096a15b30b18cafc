"""POST /decide and POST /reward on a real worker and broker: the decision is
answered over HTTP and logged as a Kafka-path decision is, the reward joins,
bad input is refused and dead-lettered, and the SDK's http transport works.

One worker (with a trusted tenant header) serves every case of this module.
"""

from __future__ import annotations

import asyncio
import base64
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.client import AsyncClient, Client
from app.records import DeadLetter, Decision, Outcome, Request, Reward, now_ms
from app.settings import Settings
from app.stream.broker import free_port
from tests.conftest import Broker, Deployment, deploy
from tests.kafka_io import TopicReader

HEADER = "X-Tenant-Id"


@pytest.fixture(scope="module")
def dep(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    for d in deploy(broker, tmp_path_factory.mktemp("decide-http")):
        d.env["LLMOPT_TENANT_HEADER"] = HEADER
        d.settings = Settings.from_env(d.env)
        d.start_worker()
        yield d


def request(**overrides: Any) -> dict[str, Any]:
    doc = Request(
        request_id=f"h-{now_ms()}-{id(overrides)}",
        tenant_id="tenant-http",
        task_type="qa",
        created_at=now_ms(),
        input_tokens=300,
    ).to_dict()
    doc.update(overrides)
    return doc


def post(
    d: Deployment, path: str, body: bytes, tenant: str | None = "tenant-http"
) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{d.workers[0].port}{path}", data=body, method="POST"
    )
    if tenant is not None:
        req.add_header(HEADER, tenant)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


async def messages(d: Deployment, role: str, match: Any, n: int = 1, timeout: float = 20) -> list:
    async with TopicReader(d.broker.bootstrap, d.topics.name(role)) as r:
        await r.until(lambda ms: sum(map(match, ms)) >= n, timeout, f"{n} on {role}")
    return [m for m in r.messages if match(m)]


def dead_letter(d: Deployment, original: bytes) -> DeadLetter:
    def ours(m: Any) -> bool:
        return base64.b64decode(orjson.loads(m.value)["original_value_b64"]) == original

    found = asyncio.run(messages(d, "dead_letter", ours))
    return DeadLetter.loads(found[0].value, 1 << 20)


def test_decision_answered_over_http_is_logged_as_a_kafka_decision(dep: Deployment) -> None:
    doc = request()
    status, answer = post(dep, "/decide?ack=1", orjson.dumps(doc))
    assert status == 200, answer
    assert answer["request_id"] == doc["request_id"] and not answer["fallback"]
    assert answer["arm"] in answer["available_arms"] and answer["policy_id"] == "default"
    logged = asyncio.run(messages(dep, "decisions", lambda m: m.key == doc["request_id"].encode()))
    assert orjson.loads(logged[0].value) == answer

    # The same request through Kafka: a decision with the same fields.
    via_kafka = request()

    async def produce() -> None:
        p = AIOKafkaProducer(bootstrap_servers=dep.broker.bootstrap)
        await p.start()
        try:
            await p.send_and_wait(
                dep.topics.name("requests"),
                orjson.dumps(via_kafka),
                key=b"tenant-http",
                headers=[(HEADER, b"tenant-http")],
            )
        finally:
            await p.stop()

    asyncio.run(produce())
    kafka = asyncio.run(
        messages(dep, "decisions", lambda m: m.key == via_kafka["request_id"].encode())
    )
    assert set(orjson.loads(kafka[0].value)) == set(answer)
    # Its feature observations, which nothing else would make.
    observed = asyncio.run(
        messages(dep, "feature_observations", lambda m: m.key in (b"tenant-http", b"qa"), n=2)
    )
    assert {m.key for m in observed} == {b"tenant-http", b"qa"}


def test_reward_over_http_joins_into_an_outcome(dep: Deployment) -> None:
    status, d = post(dep, "/decide", orjson.dumps(request()))
    assert status == 200
    reward = Reward(
        request_id=d["request_id"], tenant_id="tenant-http", sent_at=now_ms(), quality=0.9
    )
    status, body = post(dep, "/reward?ack=1", reward.dumps())
    assert (status, body) == (200, {"request_id": d["request_id"]})
    rewards = asyncio.run(messages(dep, "rewards", lambda m: m.key == d["request_id"].encode()))
    assert rewards[0].headers == ((HEADER, b"tenant-http"),)
    found = asyncio.run(
        messages(dep, "outcomes", lambda m: orjson.loads(m.value)["request_id"] == d["request_id"])
    )
    outcome = Outcome.loads(found[0].value)
    assert outcome.arm == d["arm"] and not outcome.defaulted
    assert outcome.components["quality"] == 0.9


BAD = {
    "malformed_json": (b'{"request_id": "x", ', 400),
    "unknown_policy": (orjson.dumps(request(policy_id="no-such-policy")), 400),
    "unknown_arm": (orjson.dumps(request(candidates=["gpt-17"])), 400),
    "invalid_reply_to": (orjson.dumps(request(reply_to="llmopt.dead-letter.v1")), 400),
    "oversize": (orjson.dumps(request(metadata={"blob": "x" * 70_000})), 413),
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_bad_request_is_refused_with_its_reason_and_dead_lettered(
    dep: Deployment, reason: str
) -> None:
    raw, expected = BAD[reason]
    status, body = post(dep, "/decide", raw)
    assert (status, body["error"]) == (expected, reason), body
    assert body["detail"]
    dl = dead_letter(dep, raw)
    assert (dl.reason, dl.source_topic, dl.source_partition, dl.source_offset) == (
        reason,
        "http:/decide",
        -1,
        -1,
    )


def test_tenant_header_is_enforced(dep: Deployment) -> None:
    raw = orjson.dumps(request())
    assert post(dep, "/decide", raw, tenant="someone-else")[1]["error"] == "tenant_mismatch"
    assert post(dep, "/decide", raw, tenant=None)[0] == 400
    forged = Reward(request_id="r", tenant_id="tenant-http", sent_at=now_ms()).dumps()
    status, body = post(dep, "/reward", forged, tenant="someone-else")
    assert (status, body["error"]) == (400, "tenant_mismatch")
    assert dead_letter(dep, forged).source_topic == "http:/reward"


def test_batch_is_answered_in_order_with_errors_in_place(dep: Deployment) -> None:
    good = [request(request_id=f"b{i}-{now_ms()}") for i in range(2)]
    bad = request(policy_id="no-such-policy")
    status, answers = post(dep, "/decide", orjson.dumps([good[0], bad, good[1]]))
    assert status == 200 and len(answers) == 3
    assert [a.get("request_id") for a in answers] == [
        good[0]["request_id"],
        None,
        good[1]["request_id"],
    ]
    assert answers[1]["error"] == "unknown_policy"
    ids = {g["request_id"].encode() for g in good}
    assert len(asyncio.run(messages(dep, "decisions", lambda m: m.key in ids, n=2))) == 2
    assert dead_letter(dep, orjson.dumps(bad)).reason == "unknown_policy"
    status, body = post(dep, "/decide", b"[1, 2")
    assert (status, body["error"]) == (400, "malformed_json")


def test_sdk_http_transport_decides_and_rewards(dep: Deployment) -> None:
    url = f"http://127.0.0.1:{dep.workers[0].port}"

    async def go() -> Decision:
        async with AsyncClient(settings=dep.settings, transport="http", url=url) as c:
            d = await c.decide("tenant-http", "code", input_tokens=900)
            sub = await c.decide("tenant-http", "code", candidates=["gpt-4o", "llama-70b"])
            assert set(sub.available_arms) == {"gpt-4o", "llama-70b"}
            await c.reward(d, quality=0.8, latency_ms=700)
            return d

    d = asyncio.run(go())
    assert not d.fallback and d.arm in d.available_arms
    found = asyncio.run(
        messages(dep, "outcomes", lambda m: orjson.loads(m.value)["request_id"] == d.request_id)
    )
    assert Outcome.loads(found[0].value).arm == d.arm
    with Client(settings=dep.settings, transport="http", url=url) as c:
        assert c.decide("tenant-http", "chat").tenant_id == "tenant-http"


def test_metrics_count_http_decisions_and_dead_letters(dep: Deployment) -> None:
    post(dep, "/decide", orjson.dumps(request()))
    status, _ = post(dep, "/decide", orjson.dumps(request(policy_id="no-such-policy")))
    assert status == 400
    text = dep.workers[0].metrics()
    assert 'llmopt_events_total{agent="decide_http",result="ok"}' in text
    assert 'llmopt_dead_letters_total{agent="decide_http",reason="unknown_policy"}' in text
    assert 'llmopt_agent_processing_seconds_count{agent="decide_http"}' in text


def test_sdk_falls_back_when_no_worker_answers(dep: Deployment) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(settings=dep.settings, transport="http", url=url) as c:
        d = c.decide("tenant-http", "chat", timeout=0.5)
    assert d.fallback and d.arm == "gpt-4o-mini" and d.propensity == 1.0
