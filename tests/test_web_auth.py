"""The web endpoints' bearer token: loopback by default, a token required off
loopback, every path but /health checked (in constant time), 401 as JSON,
and the SDK and the dashboard page sending it."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from app import web_auth
from app.cli import main
from app.client import AsyncClient
from app.dashboard.page import page_html
from app.settings import ROOT, Settings, SettingsError, is_loopback
from app.stream.app import create_app, faust_settings
from app.web_auth import bearer_auth

TOKEN = "tok-" + "7f3a" * 8
BEARER = {"Authorization": f"Bearer {TOKEN}"}
POLICIES = ROOT / "tests" / "fixtures" / "policies.yaml"


# -- settings -------------------------------------------------------------------------


def test_the_web_server_binds_to_loopback_by_default() -> None:
    s = Settings()
    assert s.web_host == "127.0.0.1" and is_loopback(s.web_host)
    assert s.web_bearer_token() == ""
    assert faust_settings(Settings(kafka_bootstrap="h:1"))["web_bind"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("worker.example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "worker.example.com"])
def test_a_non_loopback_bind_without_a_token_is_refused(host: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"LLMOPT_WEB_HOST": host})
    message = str(info.value)
    assert message.startswith(f"LLMOPT_WEB_HOST: {host} is not a loopback address")
    assert "LLMOPT_WEB_TOKEN" in message and "\n" not in message
    assert Settings.from_env({"LLMOPT_WEB_HOST": host, "LLMOPT_WEB_TOKEN": TOKEN}).web_host == host


def test_the_worker_does_not_start_off_loopback_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMOPT_WEB_HOST", "0.0.0.0")
    monkeypatch.setenv("LLMOPT_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmopt: error: LLMOPT_WEB_HOST: 0.0.0.0 is not a loopback address")
    assert err.count("\n") == 1


def test_a_short_token_is_refused_and_never_quoted() -> None:
    with pytest.raises(SettingsError, match=r"^LLMOPT_WEB_TOKEN: shorter than 16") as info:
        Settings.from_env({"LLMOPT_WEB_TOKEN": "short-secret"})
    assert "short-secret" not in str(info.value)


def test_the_token_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    s = Settings.from_env({"LLMOPT_WEB_TOKEN_FILE": str(path), "LLMOPT_WEB_HOST": "0.0.0.0"})
    assert s.web_bearer_token() == TOKEN
    with pytest.raises(SettingsError, match=r"^LLMOPT_WEB_TOKEN: set together with"):
        Settings.from_env({"LLMOPT_WEB_TOKEN_FILE": str(path), "LLMOPT_WEB_TOKEN": TOKEN})
    with pytest.raises(SettingsError, match=r"^LLMOPT_WEB_TOKEN_FILE: cannot read"):
        Settings.from_env({"LLMOPT_WEB_TOKEN_FILE": str(tmp_path / "missing")})


def test_faust_gets_the_check_only_with_a_token(tmp_path: Path) -> None:
    assert "web_application_options" not in faust_settings(Settings(kafka_bootstrap="h:1"))
    s = Settings(kafka_bootstrap="h:1", web_token=TOKEN, data_dir=tmp_path, policies_path=POLICIES)
    (middleware,) = faust_settings(s)["web_application_options"]["middlewares"]
    assert middleware.__name__ == "check_bearer_token"
    # Faust builds its aiohttp application with it.
    app = create_app(s)
    assert isinstance(app.web, AiohttpWeb)
    assert [getattr(m, "__name__", m) for m in app.web.web_app.middlewares] == [
        "check_bearer_token"
    ]


# -- the check ----------------------------------------------------------------------


def test_authorized() -> None:
    assert web_auth.authorized(f"Bearer {TOKEN}", None, TOKEN)
    assert web_auth.authorized(f"bearer {TOKEN}", None, TOKEN)
    assert not web_auth.authorized(f"Bearer {TOKEN}x", None, TOKEN)
    assert not web_auth.authorized(f"Basic {TOKEN}", None, TOKEN)
    assert not web_auth.authorized(None, None, TOKEN)
    assert not web_auth.authorized("Bearer ", None, TOKEN)
    assert web_auth.authorized(None, TOKEN, TOKEN)
    assert not web_auth.authorized("Bearer wrong", TOKEN, TOKEN)  # a wrong header is not overruled


def test_the_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(web_auth.hmac, "compare_digest", compare_digest)
    assert not web_auth.authorized("Bearer nope", None, TOKEN)
    assert web_auth.authorized(f"Bearer {TOKEN}", None, TOKEN)
    assert compared == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_a_check_without_a_token_cannot_be_made() -> None:
    with pytest.raises(ValueError):
        bearer_auth("")


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path})


@pytest.fixture
async def server() -> AsyncIterator[TestClient[Any, Any]]:
    """An aiohttp app with the worker's paths behind the check."""
    app = web.Application(middlewares=[bearer_auth(TOKEN)])
    for path in ("/health", "/metrics", "/dashboard", "/dashboard/data", "/features"):
        app.router.add_get(path, ok)
    for path in ("/decide", "/reward"):
        app.router.add_post(path, ok)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/metrics"),
        ("GET", "/dashboard"),
        ("GET", "/dashboard/data"),
        ("GET", "/features"),
        ("POST", "/decide"),
        ("POST", "/reward"),
        ("GET", "/no-such-page"),
    ],
)
async def test_every_endpoint_but_health_wants_the_token(
    server: TestClient[Any, Any], method: str, path: str
) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}):
        r = await server.request(method, path, headers=headers)
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert await r.json() == web_auth.UNAUTHORIZED
    r = await server.request(method, path, headers=BEARER)
    assert r.status == (404 if path == "/no-such-page" else 200)


async def test_health_stays_open(server: TestClient[Any, Any]) -> None:
    assert (await server.get("/health")).status == 200
    assert (await server.get("/health", headers=BEARER)).status == 200
    assert (await server.post("/health")).status == 401  # only reading it is open


async def test_only_the_dashboard_page_takes_the_token_in_the_query(
    server: TestClient[Any, Any],
) -> None:
    assert (await server.get("/dashboard", params={"token": TOKEN})).status == 200
    assert (await server.get("/dashboard", params={"token": "wrong"})).status == 401
    assert (await server.get("/dashboard/data", params={"token": TOKEN})).status == 401
    assert (await server.get("/metrics", params={"token": TOKEN})).status == 401


def test_the_dashboard_page_sends_the_token_it_was_opened_with() -> None:
    html = page_html()
    assert 'new URLSearchParams(location.search).get("token")' in html
    assert '"Authorization": `Bearer ${TOKEN}`' in html and "headers: DATA_HEADERS" in html


# -- the SDK --------------------------------------------------------------------------


@pytest.fixture
async def worker_stub() -> AsyncIterator[tuple[str, list[str | None]]]:
    """/decide and /reward behind the check, recording the Authorization
    headers they get: a worker that cannot decide yet (503)."""
    seen: list[str | None] = []

    async def not_ready(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        doc = {"error": "not_ready", "detail": "starting"}
        return web.Response(body=orjson.dumps(doc), status=503, content_type="application/json")

    app = web.Application(middlewares=[bearer_auth(TOKEN)])
    app.router.add_post("/decide", not_ready)
    app.router.add_post("/reward", not_ready)
    async with TestServer(app) as srv:
        yield str(srv.make_url("")).rstrip("/"), seen


def sdk(url: str, **kwargs: Any) -> AsyncClient:
    s = Settings(policies_path=POLICIES, kafka_bootstrap="127.0.0.1:1")
    return AsyncClient(transport="http", url=url, settings=s, **kwargs)


async def test_the_sdk_sends_the_token(worker_stub: tuple[str, list[str | None]]) -> None:
    url, seen = worker_stub
    async with sdk(url, token=TOKEN) as c:
        d = await c.decide("tenant-a", "qa")
    assert d.fallback  # 503: the fallback arm, as before
    assert seen == [f"Bearer {TOKEN}"]


async def test_the_sdk_takes_the_token_from_the_settings(
    worker_stub: tuple[str, list[str | None]],
) -> None:
    url, seen = worker_stub
    s = Settings(policies_path=POLICIES, kafka_bootstrap="127.0.0.1:1", web_token=TOKEN)
    async with AsyncClient(transport="http", url=url, settings=s) as c:
        await c.decide("tenant-a", "qa")
    assert seen == [f"Bearer {TOKEN}"]


async def test_a_refused_token_is_an_error_not_a_fallback(
    worker_stub: tuple[str, list[str | None]],
) -> None:
    url, seen = worker_stub
    async with sdk(url, token="wrong-token-of-some-length") as c:
        with pytest.raises(PermissionError, match="401"):
            await c.decide("tenant-a", "qa")
        with pytest.raises(RuntimeError, match="answered 401"):
            await c.reward("r-1", tenant_id="tenant-a", quality=1.0)
    assert seen == []  # refused before any handler ran
