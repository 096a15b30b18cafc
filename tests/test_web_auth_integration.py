"""A real worker with LLMOPT_WEB_TOKEN set: /health open, every other endpoint
401 without the token and served with it, the SDK's http transport and the
dashboard page working with it."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from app.cli import main
from app.client import AsyncClient
from app.settings import Settings
from app.web_auth import UNAUTHORIZED
from tests.conftest import Broker, Deployment, deploy

TOKEN = "integration-" + "5c1e" * 6


@pytest.fixture(scope="module")
def dep(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    for d in deploy(broker, tmp_path_factory.mktemp("web-auth")):
        d.env["LLMOPT_WEB_TOKEN"] = TOKEN
        d.settings = Settings.from_env(d.env)
        d.start_worker()  # ready: its /health answered 200 without a token
        yield d


def call(
    d: Deployment, path: str, body: bytes | None = None, token: str | None = None
) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{d.workers[0].port}{path}"
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_health_is_open(dep: Deployment) -> None:
    status, _ = call(dep, "/health")
    assert status == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/metrics", None),
        ("/dashboard", None),
        ("/dashboard/data", None),
        ("/features?entity=tenant%3Dt1", None),
        ("/decide", b"{}"),
        ("/reward", b"{}"),
        ("/explain/default", None),
    ],
)
def test_every_other_endpoint_wants_the_token(
    dep: Deployment, path: str, body: bytes | None
) -> None:
    for token in (None, "a-wrong-token-of-some-length"):
        status, answer = call(dep, path, body, token)
        assert (status, orjson.loads(answer)) == (401, UNAUTHORIZED), path
    status, _ = call(dep, path, body, TOKEN)
    assert status != 401


def test_metrics_and_the_dashboard_with_the_token(dep: Deployment) -> None:
    status, text = call(dep, "/metrics", token=TOKEN)
    assert status == 200 and b"llmopt_" in text
    status, page = call(dep, f"/dashboard?token={TOKEN}")
    assert status == 200 and b"<script>" in page
    status, data = call(dep, "/dashboard/data", token=TOKEN)
    assert status == 200 and "points" in orjson.loads(data)


def test_explain_with_the_token(
    dep: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, body = call(dep, "/explain/default", token=TOKEN)
    report = orjson.loads(body)
    assert status == 200 and report["policy_id"] == "default" and report["arms"]
    url = f"http://127.0.0.1:{dep.workers[0].port}"
    monkeypatch.setenv("LLMOPT_WEB_TOKEN", TOKEN)
    assert main(["explain", "default", "--url", url, "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["arms"].keys() == report["arms"].keys()
    monkeypatch.setenv("LLMOPT_WEB_TOKEN", "a-wrong-token-of-some-length")
    assert main(["explain", "default", "--url", url]) == 2
    assert "401 unauthorized" in capsys.readouterr().err


def test_the_sdk_decides_with_the_token(dep: Deployment) -> None:
    url = f"http://127.0.0.1:{dep.workers[0].port}"

    async def decide(**kwargs: Any) -> Any:
        async with AsyncClient(settings=dep.settings, transport="http", url=url, **kwargs) as c:
            return await c.decide("tenant-auth", "qa", timeout=5)

    d = asyncio.run(decide())  # the token from the settings (LLMOPT_WEB_TOKEN)
    assert not d.fallback and d.arm in d.available_arms
    with pytest.raises(PermissionError):
        asyncio.run(decide(token="a-wrong-token-of-some-length"))
