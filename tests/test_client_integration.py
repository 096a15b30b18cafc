"""The SDK against a running worker: replies on its own topic, fallback on timeout."""

from __future__ import annotations

import asyncio

from app.client import AsyncClient, Client
from app.records import Outcome
from tests.conftest import Deployment
from tests.kafka_io import TopicReader


def test_decide_then_reward_produces_an_outcome(deployment: Deployment) -> None:
    deployment.start_worker()

    async def go() -> None:
        async with AsyncClient(deployment.broker.bootstrap, settings=deployment.settings) as c:
            d = await c.decide("tenant-a", "code", input_tokens=900, timeout=10)
            assert not d.fallback and d.arm in d.available_arms
            sub = await c.decide("tenant-a", "code", candidates=["gpt-4o", "llama-70b"], timeout=10)
            assert set(sub.available_arms) == {"gpt-4o", "llama-70b"}
            await c.reward(d, quality=0.8, cost_usd=0.001, latency_ms=700)
        async with TopicReader(
            deployment.broker.bootstrap, deployment.topics.name("outcomes")
        ) as r:
            await r.until(lambda ms: len(ms) >= 1, 30, "the outcome")
        o = Outcome.loads(r.messages[0].value)
        assert o.request_id == d.request_id and o.arm == d.arm and not o.defaulted

    asyncio.run(go())


def test_sync_client_falls_back_when_no_worker_answers(deployment: Deployment) -> None:
    with Client(deployment.broker.bootstrap, settings=deployment.settings) as c:
        d = c.decide("tenant-b", "chat", timeout=0.5)
    assert d.fallback and d.arm == "gpt-4o-mini" and d.propensity == 1.0


def test_reward_with_nan_is_refused_before_sending(deployment: Deployment) -> None:
    import math

    import pytest

    from app.records import InvalidEvent

    async def go() -> None:
        async with AsyncClient(deployment.broker.bootstrap, settings=deployment.settings) as c:
            with pytest.raises(InvalidEvent, match="finite"):
                await c.reward("r1", tenant_id="t", quality=math.nan)

    asyncio.run(go())
