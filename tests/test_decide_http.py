"""POST /decide and POST /reward without a broker: the body forms
(app/http_ingress.py), and the endpoint (app/stream/decide_endpoint.py)
deciding with select_arm's own decider, what it sends, and its statuses.
The sends are recorded; tests/test_decide_http_integration.py runs the same
against a worker and a broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.select_arm import SelectArm
from app.http_ingress import MAX_BATCH_ITEMS, is_batch, split_batch, status_for
from app.records import DEAD_LETTER_REASONS, DeadLetter, InvalidEvent, Request, Reward, now_ms
from app.settings import Settings
from app.stream.decide_endpoint import OBSERVATIONS_FLUSH_S, Answer, DecideEndpoint
from app.stream.runtime import Runtime
from tests.test_decoders_fuzz import FUZZ, json_values, mutated_events

POLICIES = Path(__file__).parent / "fixtures" / "policies.yaml"


def reason(fn: Any, *args: Any) -> str | None:
    try:
        fn(*args)
    except InvalidEvent as exc:
        return exc.code
    return None


def test_a_batch_is_an_array_whose_elements_are_taken_one_by_one() -> None:
    assert is_batch(b"  \n[{}]") and not is_batch(b'{"a": [1]}')
    assert split_batch(b'[{"a": 1}, "x"]', 1024) == [b'{"a":1}', b'"x"']
    assert reason(split_batch, b"[{}", 1024) == "malformed_json"
    assert reason(split_batch, b'[{"n": Infinity}]', 1024) == "invalid_value"
    assert reason(split_batch, b"[" + b"{}," * MAX_BATCH_ITEMS + b"{}]", 1 << 20) == "oversize"
    assert reason(split_batch, b"[" + b" " * (8 << 20) + b"]", 1024) == "oversize"


def test_statuses() -> None:
    assert status_for(InvalidEvent("oversize", "")) == 413
    assert status_for(InvalidEvent("internal_error", "")) == 500
    assert status_for(InvalidEvent("unknown_arm", "")) == 400


class Sent:
    """A producer that records each send and acknowledges it at once."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes, Any]] = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None, **_: Any
    ) -> asyncio.Future[Any]:
        self.records.append((topic, key, value, headers))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def on(self, topic: str) -> list[tuple[bytes | None, bytes, Any]]:
        return [(k, v, h) for t, k, v, h in self.records if t == topic]


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int) -> bytes:
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk


class HttpRequest:
    def __init__(self, body: bytes, headers: dict[str, str] | None = None, ack: bool = False):
        self.content = Body(body)
        self.headers = headers or {}
        self.query = {"ack": "1"} if ack else {}


@pytest.fixture
def runtime() -> Runtime:
    s = Settings.from_env(
        {
            "LLMOPT_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "LLMOPT_POLICIES_PATH": str(POLICIES),
            "LLMOPT_TENANT_HEADER": "X-Tenant",
        }
    )
    return Runtime.for_settings(s)


def ready(runtime: Runtime) -> tuple[DecideEndpoint, Sent]:
    """The endpoint with select_arm's handler as it is after start()."""
    handler = SelectArm(runtime, lambda: None)
    handler.producer = Sent()
    runtime.direct_decisions = handler
    return DecideEndpoint(runtime), handler.producer


def request(**overrides: Any) -> bytes:
    doc = Request(request_id="r1", tenant_id="acme", task_type="qa", created_at=now_ms())
    return orjson.dumps({**doc.to_dict(), **overrides})


TENANT = {"X-Tenant": "acme"}


def test_not_ready_until_the_decider_has_read_the_snapshots(runtime: Runtime) -> None:
    endpoint = DecideEndpoint(runtime)
    status, body = asyncio.run(endpoint.decide(HttpRequest(request(), TENANT)))
    assert (status, body["error"]) == (503, "not_ready")
    status, body = asyncio.run(endpoint.reward(HttpRequest(b"{}", TENANT)))
    assert status == 503


def test_a_decision_is_answered_and_sent_as_select_arm_sends_it(runtime: Runtime) -> None:
    endpoint, sent = ready(runtime)

    async def two() -> list[Answer]:
        answers = [await endpoint.decide(HttpRequest(request(request_id=r), TENANT)) for r in "ab"]
        await asyncio.sleep(OBSERVATIONS_FLUSH_S * 3)
        return answers

    (status, doc), _ = asyncio.run(two())
    assert status == 200 and doc["request_id"] == "a" and doc["policy_version"] == 0
    decisions = sent.on(runtime.topics.name("decisions"))
    assert len(decisions) == 2 and decisions[0][:2] == (b"a", orjson.dumps(doc))
    # The two requests' observations: one message per route.
    observations = sent.on(runtime.topics.name("feature_observations"))
    assert sorted((k, len(orjson.loads(v))) for k, v, _ in observations) == [
        (b"acme", 2),
        (b"qa", 2),
    ]
    assert not sent.on(runtime.topics.name("dead_letter"))


def test_a_bad_request_is_answered_with_its_reason_and_dead_lettered(runtime: Runtime) -> None:
    endpoint, sent = ready(runtime)
    raw = request(candidates=["gpt-17"])
    status, doc = asyncio.run(endpoint.decide(HttpRequest(raw, TENANT)))
    assert (status, doc["error"]) == (400, "unknown_arm")
    ((key, value, _),) = sent.on(runtime.topics.name("dead_letter"))
    dl = DeadLetter.loads(value)
    assert (key, dl.reason, dl.source_topic, dl.source_offset) == (
        None,
        "unknown_arm",
        "http:/decide",
        -1,
    )
    assert not sent.on(runtime.topics.name("decisions"))
    status, doc = asyncio.run(endpoint.decide(HttpRequest(request(), {"X-Tenant": "other"})))
    assert (status, doc["error"]) == (400, "tenant_mismatch")


def test_a_body_over_every_limit_is_413_unread(runtime: Runtime) -> None:
    endpoint, sent = ready(runtime)
    status, doc = asyncio.run(endpoint.decide(HttpRequest(b"[" + b" " * (8 << 20), TENANT)))
    assert (status, doc["error"]) == (413, "oversize")
    assert len(sent.on(runtime.topics.name("dead_letter"))) == 1


def test_a_batch_answers_in_order(runtime: Runtime) -> None:
    endpoint, sent = ready(runtime)
    body = b"[" + b",".join([request(request_id="a"), b"7", request(request_id="b")]) + b"]"
    status, docs = asyncio.run(endpoint.decide(HttpRequest(body, TENANT)))
    assert status == 200
    assert [d.get("request_id", d.get("error")) for d in docs] == ["a", "malformed_json", "b"]
    assert [k for k, _, _ in sent.on(runtime.topics.name("decisions"))] == [b"a", b"b"]


def test_a_reward_goes_to_its_topic_with_the_tenant_header(runtime: Runtime) -> None:
    endpoint, sent = ready(runtime)
    raw = Reward(request_id="r1", tenant_id="acme", sent_at=now_ms(), quality=0.5).dumps()
    assert asyncio.run(endpoint.reward(HttpRequest(raw, TENANT))) == (202, {"request_id": "r1"})
    assert asyncio.run(endpoint.reward(HttpRequest(raw, TENANT, ack=True)))[0] == 200
    assert sent.on(runtime.topics.name("rewards"))[0] == (b"r1", raw, [("X-Tenant", b"acme")])
    status, doc = asyncio.run(endpoint.reward(HttpRequest(b'{"quality": 2}', TENANT)))
    assert (status, doc["error"]) == (400, "schema_violation")


def test_concurrent_calls_are_decided_in_one_pass(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, _ = ready(runtime)
    handler = runtime.direct_decisions
    assert handler is not None
    passes: list[int] = []
    decide_direct = handler.decide_direct

    async def counted(requests: list[Request], agent: str) -> Any:
        passes.append(len(requests))
        return await decide_direct(requests, agent)

    monkeypatch.setattr(handler, "decide_direct", counted)

    async def three() -> list[Answer]:
        calls = [HttpRequest(request(request_id=r), TENANT, ack=True) for r in "abc"]
        return list(await asyncio.gather(*(endpoint.decide(c) for c in calls)))

    answers = asyncio.run(three())
    assert [(status, doc["request_id"]) for status, doc in answers] == [
        (200, "a"),
        (200, "b"),
        (200, "c"),
    ]
    assert passes == [3]


# --- the fuzz of the decoders, against the endpoint -----------------------------------------

HTTP_BODIES = (
    st.binary(max_size=2048)
    | json_values
    | mutated_events()
    | st.lists(json_values | mutated_events(), max_size=5).map(
        lambda xs: b"[" + b",".join(xs) + b"]"
    )
)


@FUZZ
@given(body=HTTP_BODIES)
def test_any_body_is_answered_with_a_decision_or_its_reason(body: bytes) -> None:
    """Whatever is posted: 200 with decisions (202 a reward), or 4xx with a dead-letter
    reason and the body dead-lettered — never 500, never an exception; the
    same for /reward."""
    rt = Runtime.for_settings(
        Settings.from_env(
            {"LLMOPT_KAFKA_BOOTSTRAP": "127.0.0.1:1", "LLMOPT_POLICIES_PATH": str(POLICIES)}
        )
    )
    endpoint, sent = ready(rt)
    codes = set(DEAD_LETTER_REASONS)
    for call in (endpoint.decide, endpoint.reward):
        status, doc = asyncio.run(call(HttpRequest(body)))
        assert status in (200, 202, 400, 413), (status, doc)  # 202: a reward taken
        answers = doc if isinstance(doc, list) else [doc]
        for a in answers:
            assert isinstance(a, dict)
            if "error" in a:
                assert a["error"] in codes, a
    dead = sent.on(rt.topics.name("dead_letter"))
    for _, value, _ in dead:
        assert DeadLetter.loads(value).reason in codes
