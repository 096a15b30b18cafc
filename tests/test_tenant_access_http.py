"""Web tokens mapped to tenants: the middleware (app/web_auth.py) names the
caller, POST /decide and POST /reward (app/stream/decide_endpoint.py) refuse
an event of a tenant the caller may not act for (403 ``tenant_not_allowed``,
dead-lettered, counted), a tenant-limited token reaches nothing else, and a
flood of /decide calls is answered 503 rather than queued. The endpoint
decides with select_arm's decider; its sends are recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from app.records import DeadLetter, Reward, now_ms
from app.settings import Settings
from app.stream.decide_endpoint import MAX_IN_FLIGHT_REQUESTS, DecideEndpoint
from app.stream.runtime import Runtime
from app.tenant_access import TenantAccess
from app.web_auth import bearer_auth, web_middlewares
from tests.test_decide_http import POLICIES, Sent, ready, request

ADMIN = "tok-admin-" + "c4d2" * 8
EU = "tok-eu-" + "5a9c" * 8
OPS = "tok-ops-" + "0e71" * 8
CALLERS = f"""
"{EU}": {{name: gateway-eu, tenants: [acme]}}
"{OPS}": {{name: ops, tenants: "*"}}
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def metrics_page(_: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
def callers(tmp_path: Path) -> Path:
    path = tmp_path / "callers.yaml"
    path.write_text(CALLERS)
    return path


@pytest.fixture
def runtime() -> Runtime:
    s = Settings.from_env(
        {"LLMOPT_KAFKA_BOOTSTRAP": "127.0.0.1:1", "LLMOPT_POLICIES_PATH": str(POLICIES)}
    )
    return Runtime.for_settings(s)


@pytest.fixture
async def server(
    runtime: Runtime, callers: Path
) -> AsyncIterator[tuple[TestClient[Any, Any], DecideEndpoint, Sent]]:
    """/decide and /reward of a ready endpoint, and /metrics, behind the check."""
    endpoint, sent = ready(runtime)

    def route(handler: Any) -> Any:
        async def respond(req: web.Request) -> web.Response:
            status, doc = await handler(req)
            return web.Response(
                body=orjson.dumps(doc), status=status, content_type="application/json"
            )

        return respond

    access = TenantAccess.load(callers, 16)
    app = web.Application(middlewares=[bearer_auth(ADMIN, access)])
    app.router.add_post("/decide", route(endpoint.decide))
    app.router.add_post("/reward", route(endpoint.reward))
    app.router.add_get("/metrics", metrics_page)
    async with TestClient(TestServer(app)) as client:
        yield client, endpoint, sent


async def test_a_token_decides_only_for_its_tenants(
    server: tuple[TestClient[Any, Any], DecideEndpoint, Sent], runtime: Runtime
) -> None:
    client, _, sent = server
    before = counted("llmopt_dead_letters_total", agent="decide_http", reason="tenant_not_allowed")
    r = await client.post("/decide", data=request(tenant_id="acme"), headers=bearer(EU))
    assert r.status == 200 and (await r.json())["tenant_id"] == "acme"
    r = await client.post("/decide", data=request(tenant_id="globex"), headers=bearer(EU))
    assert r.status == 403
    doc = await r.json()
    assert doc["error"] == "tenant_not_allowed" and "gateway-eu" in doc["detail"]
    assert EU not in doc["detail"]
    ((_, value, _),) = sent.on(runtime.topics.name("dead_letter"))
    assert DeadLetter.loads(value).reason == "tenant_not_allowed"
    assert [k for k, _, _ in sent.on(runtime.topics.name("decisions"))] == [b"r1"]
    after = counted("llmopt_dead_letters_total", agent="decide_http", reason="tenant_not_allowed")
    assert after == before + 1
    # A batch: each element on its own.
    body = b"[" + request(request_id="a") + b"," + request(request_id="b", tenant_id="x") + b"]"
    r = await client.post("/decide", data=body, headers=bearer(EU))
    answers = await r.json()
    assert r.status == 200
    assert [a.get("request_id", a.get("error")) for a in answers] == ["a", "tenant_not_allowed"]


async def test_all_tenant_tokens_decide_for_anyone(
    server: tuple[TestClient[Any, Any], DecideEndpoint, Sent],
) -> None:
    client, _, _ = server
    for token in (ADMIN, OPS):
        r = await client.post("/decide", data=request(tenant_id="globex"), headers=bearer(token))
        assert r.status == 200, await r.text()


async def test_a_reward_is_refused_for_another_tenant(
    server: tuple[TestClient[Any, Any], DecideEndpoint, Sent], runtime: Runtime
) -> None:
    client, _, sent = server
    mine = Reward(request_id="r1", tenant_id="acme", sent_at=now_ms(), quality=0.5).dumps()
    theirs = Reward(request_id="r2", tenant_id="globex", sent_at=now_ms(), quality=0.5).dumps()
    assert (await client.post("/reward", data=mine, headers=bearer(EU))).status == 202
    r = await client.post("/reward", data=theirs, headers=bearer(EU))
    assert r.status == 403 and (await r.json())["error"] == "tenant_not_allowed"
    assert [k for k, _, _ in sent.on(runtime.topics.name("rewards"))] == [b"r1"]
    assert len(sent.on(runtime.topics.name("dead_letter"))) == 1


async def test_a_tenant_limited_token_reaches_nothing_else(
    server: tuple[TestClient[Any, Any], DecideEndpoint, Sent],
) -> None:
    client, _, _ = server
    before = counted("llmopt_web_auth_refused_total", reason="forbidden")
    r = await client.get("/metrics", headers=bearer(EU))
    assert r.status == 403 and (await r.json())["error"] == "forbidden"
    assert counted("llmopt_web_auth_refused_total", reason="forbidden") == before + 1
    assert (await client.get("/metrics", headers=bearer(OPS))).status == 200
    before = counted("llmopt_web_auth_refused_total", reason="unauthorized")
    assert (await client.get("/metrics", headers=bearer(EU + "x"))).status == 401
    assert counted("llmopt_web_auth_refused_total", reason="unauthorized") == before + 1


async def test_a_flood_of_calls_is_answered_503_not_queued(
    server: tuple[TestClient[Any, Any], DecideEndpoint, Sent],
) -> None:
    client, endpoint, _ = server
    endpoint.in_flight = MAX_IN_FLIGHT_REQUESTS  # as if that many were being decided
    r = await client.post("/decide", data=request(), headers=bearer(EU))
    assert r.status == 503 and (await r.json())["error"] == "overloaded"
    endpoint.in_flight = 0
    r = await client.post("/decide", data=request(), headers=bearer(EU))
    assert r.status == 200 and endpoint.in_flight == 0  # released once answered


def test_the_worker_checks_tokens_when_only_the_file_sets_them(callers: Path) -> None:
    assert web_middlewares(Settings()) == []
    (middleware,) = web_middlewares(Settings(web_tokens_file=str(callers)))
    assert getattr(middleware, "__name__", None) == "check_bearer_token"
