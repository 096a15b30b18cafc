"""Bad input reaches its defined outcome with a reason, and the worker keeps going.

One worker serves every case of this module; each case sends its own events
and finds its dead letter (or outcome) by the request id or bytes it sent.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from app.records import DeadLetter, Decision, Outcome, Request, Reward, now_ms
from tests.conftest import Broker, Deployment, deploy
from tests.kafka_io import TopicReader, produce


@pytest.fixture(scope="module")
def dep(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    gen = deploy(broker, tmp_path_factory.mktemp("bad-input"))
    d = next(gen)
    d.start_worker()
    yield d
    gen.close()


def request(**overrides: Any) -> dict[str, Any]:
    doc = Request(
        request_id=f"r-{now_ms()}-{id(overrides)}",
        tenant_id="tenant-bad",
        task_type="qa",
        created_at=now_ms(),
    ).to_dict()
    doc.update(overrides)
    return doc


def reward(request_id: str, tenant: str = "tenant-bad", **fields: Any) -> bytes:
    fields.setdefault("sent_at", now_ms())
    return Reward(request_id=request_id, tenant_id=tenant, **fields).dumps()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def dead_letter_for(
    d: Deployment, original: bytes, timeout: float = 30, topic: str | None = None
) -> DeadLetter:
    def ours(m: Any) -> bool:
        return _original(m) == original and (
            topic is None or orjson.loads(m.value)["source_topic"] == topic
        )

    async with TopicReader(d.broker.bootstrap, d.topics.name("dead_letter")) as reader:
        await reader.until(lambda msgs: any(ours(m) for m in msgs), timeout, "the dead letter")
        return next(DeadLetter.loads(m.value, 1 << 20) for m in reader.messages if ours(m))


def _original(m: Any) -> bytes:
    return base64.b64decode(orjson.loads(m.value)["original_value_b64"])


async def decision_for(
    d: Deployment, request_id: str, timeout: float = 30, tenant: str | None = None
) -> Decision:
    def ours(m: Any) -> bool:
        return m.key == request_id.encode() and (
            tenant is None or orjson.loads(m.value)["tenant_id"] == tenant
        )

    async with TopicReader(d.broker.bootstrap, d.topics.name("decisions")) as reader:
        await reader.until(
            lambda ms: any(ours(m) for m in ms), timeout, f"a decision for {request_id}"
        )
        return next(Decision.loads(m.value) for m in reader.messages if ours(m))


async def outcomes_for(d: Deployment, request_id: str, timeout: float = 30) -> list[Outcome]:
    async with TopicReader(d.broker.bootstrap, d.topics.name("outcomes")) as reader:
        await reader.until(
            lambda ms: any(orjson.loads(m.value)["request_id"] == request_id for m in ms),
            timeout,
            f"an outcome for {request_id}",
        )
        await reader.settle(1.0)
        return [
            o
            for o in (Outcome.loads(m.value) for m in reader.messages)
            if o.request_id == request_id
        ]


REQUEST_CASES = {
    "malformed_json": b'{"request_id": "x", "tenant_id": ',
    "schema_violation": orjson.dumps({k: v for k, v in request().items() if k != "tenant_id"}),
    "unknown_policy": orjson.dumps(request(policy_id="no-such-policy")),
    "unknown_arm": orjson.dumps(request(candidates=["gpt-4o", "gpt-17"])),
    "oversize": orjson.dumps(request(metadata={"blob": "x" * 70_000})),
    "invalid_value": b'{"schema_version": 1, "request_id": "r-nan", "tenant_id": "t", '
    b'"task_type": "qa", "created_at": 1, "input_tokens": NaN}',
    "tenant_mismatch": orjson.dumps(request(tenant_id="someone-else")),
    "invalid_reply_to": orjson.dumps(request(reply_to="llmopt.dead-letter.v1")),
    "unauthorized_policy": orjson.dumps(request(policy_id="private")),
}
# Messages that once stopped the worker on every restart (a crash loop).
CRASH_CASES = {
    "deep_nesting": (b"[" * 1025 + b"]" * 1025, "malformed_json"),
    "800_kb": (orjson.dumps(request(metadata={"blob": "x" * 800_000})), "oversize"),
    "1e400": (
        orjson.dumps(request(request_id="r-1e400"))[:-1] + b', "input_tokens": 1e400}',
        "invalid_value",
    ),
}


@pytest.mark.parametrize("reason", sorted(REQUEST_CASES))
def test_bad_requests_are_dead_lettered_with_reason_and_source(
    dep: Deployment, reason: str
) -> None:
    raw = REQUEST_CASES[reason]
    run(produce(dep.broker.bootstrap, dep.topics.name("requests"), [(b"tenant-bad", raw)]))
    dl = run(dead_letter_for(dep, raw))
    assert dl.reason == reason, dl.detail
    assert dl.detail
    assert dl.source_topic == dep.topics.name("requests")
    assert dl.source_partition >= 0 and dl.source_offset >= 0
    assert base64.b64decode(dl.original_key_b64 or "") == b"tenant-bad"


@pytest.mark.parametrize("case", sorted(CRASH_CASES))
def test_messages_that_crashed_the_worker_are_dead_lettered(dep: Deployment, case: str) -> None:
    raw, reason = CRASH_CASES[case]
    for topic in ("requests", "rewards"):
        run(produce(dep.broker.bootstrap, dep.topics.name(topic), [(b"tenant-bad", raw)]))
        dl = run(dead_letter_for(dep, raw[: 256 * 1024], timeout=40, topic=dep.topics.name(topic)))
        assert dl.reason == reason, (topic, dl.detail)
        assert dl.original_size == len(raw)
        assert dl.truncated == (len(raw) > 256 * 1024)
    assert dep.workers[0].alive()


async def _decide(
    d: Deployment, policy_id: str | None = None, tenant: str = "tenant-bad", rid: str = ""
) -> Decision:
    doc = request(
        request_id=rid or f"ok-{now_ms()}-{policy_id}", policy_id=policy_id, tenant_id=tenant
    )
    if policy_id is None:
        del doc["policy_id"]
    await produce(
        d.broker.bootstrap, d.topics.name("requests"), [(tenant.encode(), orjson.dumps(doc))]
    )
    return await decision_for(d, doc["request_id"], tenant=tenant)


async def _reward(d: Deployment, request_id: str, raw: bytes) -> None:
    await produce(d.broker.bootstrap, d.topics.name("rewards"), [(request_id.encode(), raw)])


def test_another_tenants_reward_never_joins(dep: Deployment) -> None:
    """Tenant B sends a reward for tenant A's request id first: it is held as
    B's own (unknown) request, and A's reward joins."""
    a = run(_decide(dep, tenant="tenant-a"))
    forged = reward(a.request_id, "tenant-b", quality=0.0)
    run(_reward(dep, a.request_id, forged))
    own = reward(a.request_id, "tenant-a", quality=0.9)
    run(_reward(dep, a.request_id, own))
    outcomes = run(outcomes_for(dep, a.request_id))
    assert len(outcomes) == 1 and outcomes[0].tenant_id == "tenant-a"
    assert outcomes[0].components["quality"] == 0.9
    assert run(dead_letter_for(dep, forged, timeout=40)).reason == "unknown_request"


def test_request_ids_are_scoped_per_tenant(dep: Deployment) -> None:
    rid = f"shared-{now_ms()}"
    b = run(_decide(dep, tenant="tenant-b", rid=rid))
    a = run(_decide(dep, tenant="tenant-a", rid=rid))
    assert a.decision_id != b.decision_id and {a.tenant_id, b.tenant_id} == {
        "tenant-a",
        "tenant-b",
    }
    own = reward(rid, "tenant-a", quality=0.7)
    run(_reward(dep, rid, own))
    outcomes = [o for o in run(outcomes_for(dep, rid)) if not o.defaulted]
    assert [(o.tenant_id, o.components["quality"]) for o in outcomes] == [("tenant-a", 0.7)]


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity", b"1.5"])
def test_non_finite_or_out_of_range_reward_is_dead_lettered(dep: Deployment, value: bytes) -> None:
    decision = run(_decide(dep))
    raw = (
        b'{"schema_version": 1, "request_id": "'
        + decision.request_id.encode()
        + b'", "tenant_id": "tenant-bad", "sent_at": 1, "quality": '
        + value
        + b"}"
    )
    run(_reward(dep, decision.request_id, raw))
    dl = run(dead_letter_for(dep, raw))
    assert dl.reason == "invalid_value"
    assert dl.source_topic == dep.topics.name("rewards")


def test_reward_for_unknown_request_is_held_then_dead_lettered(dep: Deployment) -> None:
    raw = reward("never-decided", quality=0.5)
    run(_reward(dep, "never-decided", raw))
    dl = run(dead_letter_for(dep, raw, timeout=40))
    assert dl.reason == "unknown_request"
    assert dl.source_topic == dep.topics.name("rewards") and dl.source_offset >= 0


def test_duplicate_reward_is_counted_once_and_dead_lettered(dep: Deployment) -> None:
    decision = run(_decide(dep))
    first = reward(decision.request_id, quality=0.9)
    second = reward(decision.request_id, quality=0.1, sent_at=now_ms() + 1)
    run(_reward(dep, decision.request_id, first))
    run(_reward(dep, decision.request_id, second))
    dl = run(dead_letter_for(dep, second))
    assert dl.reason == "duplicate_reward"
    outcomes = run(outcomes_for(dep, decision.request_id))
    assert len(outcomes) == 1 and outcomes[0].components["quality"] == 0.9


def test_no_reward_in_time_gives_the_default_and_a_late_reward_is_expired(dep: Deployment) -> None:
    decision = run(_decide(dep, policy_id="short-wait"))
    outcomes = run(outcomes_for(dep, decision.request_id, timeout=40))
    assert len(outcomes) == 1
    assert outcomes[0].defaulted and outcomes[0].reward == 0.25
    late = reward(decision.request_id, quality=1.0)
    run(_reward(dep, decision.request_id, late))
    assert run(dead_letter_for(dep, late)).reason == "expired_request"


def test_worker_survives_and_counts_every_dead_letter(dep: Deployment) -> None:
    """Runs last in this module: after all the bad input, decisions still flow."""
    run(_decide(dep))
    assert dep.workers[0].alive()
    text = dep.workers[0].metrics()
    for reason in (
        "malformed_json",
        "schema_violation",
        "unknown_policy",
        "unknown_arm",
        "oversize",
        "invalid_value",
        "tenant_mismatch",
        "invalid_reply_to",
        "unauthorized_policy",
    ):
        assert f'llmopt_dead_letters_total{{agent="select_arm",reason="{reason}"}}' in text, reason
    for reason in ("invalid_value", "unknown_request", "duplicate_reward", "expired_request"):
        assert f'llmopt_dead_letters_total{{agent="join_rewards",reason="{reason}"}}' in text, (
            reason
        )
