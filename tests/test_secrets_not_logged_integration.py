"""No secret and no payload in a worker's log. A worker with every secret set
(an operator token, a tenants file, a reward-token secret) is sent bad input
over HTTP and Kafka: unknown tokens, tenants its caller may not act for,
unknown and missing principals, forged reward tokens, malformed and oversize
events. Once all are dead-lettered, its whole log (which reports the
refusals) is searched for each secret and for a marker every payload carries.
tests/test_kafka_security.py does the same for the SASL password."""

from __future__ import annotations

import asyncio
import base64
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.records import Request, Reward, now_ms
from app.settings import Settings
from tests.conftest import Broker, Deployment, deploy
from tests.kafka_io import TopicReader

ADMIN = "admin-token-" + "3e8b" * 6
EU = "eu-token-" + "91fa" * 6
WRONG = "wrong-token-" + "77c0" * 6
WRONG_QUERY = "query-token-" + "0b5d" * 6
REWARD_SECRET = "reward-secret-" + "a1a1" * 6
FORGED = "forged-reward-token-" + "6d6d" * 4
MARKER = "payload-marker-7Qz9"
CALLERS = f"""
"{EU}": {{name: gateway-eu, tenants: [acme]}}
"principal:gateway-us": {{name: gateway-us, tenants: [initech]}}
"""


@pytest.fixture(scope="module")
def dep(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("secrets-not-logged")
    callers = tmp / "callers.yaml"
    callers.write_text(CALLERS)
    for d in deploy(broker, tmp):
        d.env.update(
            LLMOPT_WEB_TOKEN=ADMIN,
            LLMOPT_WEB_TOKENS_FILE=str(callers),
            LLMOPT_PRINCIPAL_HEADER="x-principal",
            LLMOPT_REWARD_TOKEN_SECRET=REWARD_SECRET,
        )
        d.settings = Settings.from_env(d.env)
        d.start_worker()
        yield d


def request(tenant: str, **overrides: Any) -> bytes:
    doc = Request(
        request_id=f"r-{now_ms()}-{len(overrides)}-{tenant}",
        tenant_id=tenant,
        task_type="qa",
        created_at=now_ms(),
        metadata={"note": MARKER},
    ).to_dict()
    return orjson.dumps({**doc, **overrides})


def reward(request_id: str, tenant: str, token: str) -> bytes:
    return Reward(
        request_id=request_id, tenant_id=tenant, sent_at=now_ms(), quality=0.5, reward_token=token
    ).dumps()


def call(d: Deployment, path: str, body: bytes | None, token: str | None) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{d.workers[0].port}{path}"
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


async def send_to_kafka(d: Deployment, records: list[tuple[str, bytes, bytes, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=d.broker.bootstrap)
    await producer.start()
    try:
        for topic, key, value, headers in records:
            await producer.send(d.topics.name(topic), value, key=key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def dead_letter_reasons(d: Deployment, expected: dict[str, int]) -> dict[str, int]:
    """The reasons of the dead letters of this test (a payload with the
    marker, a reward with the forged token), once they add up to ``expected``."""

    def reasons(messages: list[Any]) -> dict[str, int]:
        found: dict[str, int] = {}
        for m in messages:
            doc = orjson.loads(m.value)
            original = base64.b64decode(doc["original_value_b64"])
            if MARKER.encode() in original or FORGED.encode() in original:
                found[doc["reason"]] = found.get(doc["reason"], 0) + 1
        return found

    async with TopicReader(d.broker.bootstrap, d.topics.name("dead_letter")) as reader:
        await reader.until(
            lambda ms: all(reasons(ms).get(r, 0) >= n for r, n in expected.items()),
            60,
            f"dead letters {expected}",
        )
        return reasons(reader.messages)


def test_bad_input_and_refused_callers_leave_no_secret_in_the_log(dep: Deployment) -> None:
    # HTTP: tokens unknown, limited, in the query; a tenant not allowed; bad bodies.
    assert call(dep, "/decide", request("acme"), WRONG)[0] == 401
    assert call(dep, f"/dashboard?token={WRONG_QUERY}", None, None)[0] == 401
    assert call(dep, "/metrics", None, EU)[0] == 403
    assert call(dep, "/decide", request("globex"), EU)[1]["error"] == "tenant_not_allowed"
    assert call(dep, "/decide", b'{"note": "' + MARKER.encode(), EU)[0] == 400
    oversize = request("acme", metadata={"note": MARKER, "blob": "x" * 70_000})
    assert call(dep, "/decide", oversize, EU)[0] == 413
    status, decision = call(dep, "/decide?ack=1", request("acme"), EU)
    assert status == 200 and decision["reward_token"]
    forged = reward(decision["request_id"], "acme", FORGED)
    assert call(dep, "/reward", forged, EU)[1]["error"] == "invalid_reward_token"
    good = reward(decision["request_id"], "acme", decision["reward_token"])
    assert call(dep, "/reward?ack=1", good, EU)[0] == 200

    # Kafka: principals missing, unknown, not allowed; a malformed request; a forged reward.
    us = [("x-principal", b"gateway-us")]
    asyncio.run(
        send_to_kafka(
            dep,
            [
                ("requests", b"initech", request("initech"), []),
                ("requests", b"initech", request("initech"), [("x-principal", b"gateway-mars")]),
                ("requests", b"acme", request("acme"), us),
                ("requests", b"initech", b'{"note": "' + MARKER.encode(), us),
                ("rewards", b"r-forged", reward("r-forged", "initech", FORGED), us),
            ],
        )
    )
    found = asyncio.run(
        dead_letter_reasons(
            dep,
            {
                "tenant_not_allowed": 4,  # one over HTTP, three on Kafka
                "malformed_json": 2,
                "oversize": 1,
                "invalid_reward_token": 2,
            },
        )
    )
    assert found["tenant_not_allowed"] == 4

    log = Path(dep.workers[0].log).read_text(errors="replace")
    assert "refused (unauthorized)" in log  # the refusals are reported...
    secrets = (ADMIN, EU, WRONG, WRONG_QUERY, REWARD_SECRET, FORGED, decision["reward_token"])
    for secret in (*secrets, MARKER):  # ...without a secret or a payload
        assert secret not in log, f"{secret[:12]}… is in {dep.workers[0].log}"
