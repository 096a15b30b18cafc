"""Callers and their tenants (app/tenant_access.py): the tenants file checked
strictly without ever quoting a token, tokens found in constant time, and the
Kafka path's forwarded principal (app/ingress.py) refusing events of tenants
it may not act for."""

from __future__ import annotations

import hmac
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from app import tenant_access
from app.ingress import accept_request_message, check_reward_message, message_caller
from app.records import InvalidEvent, Request, now_ms
from app.settings import Settings, SettingsError
from app.tenant_access import ADMIN, Caller, TenantAccess, TenantAccessError, check_caller

EU = "tok-eu-" + "5a9c" * 8
OPS = "tok-ops-" + "0e71" * 8
CALLERS = f"""
"{EU}": {{name: gateway-eu, tenants: [acme, globex]}}
"{OPS}": {{name: ops, tenants: "*"}}
"principal:gateway-us": {{name: gateway-us, tenants: [initech]}}
"""


def write(tmp_path: Path, text: str, name: str = "callers.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problem(tmp_path: Path, text: str) -> str:
    with pytest.raises(TenantAccessError) as info:
        TenantAccess.load(write(tmp_path, text), 16)
    return str(info.value)


# -- the file ----------------------------------------------------------------------------------
def test_tokens_and_principals_map_to_callers(tmp_path: Path) -> None:
    access = TenantAccess.load(write(tmp_path, CALLERS), 16)
    eu = access.by_token(EU)
    assert eu == Caller("gateway-eu", frozenset({"acme", "globex"}))
    assert eu.may_act_for("acme") and not eu.may_act_for("initech")
    ops = access.by_token(OPS)
    assert ops is not None and ops.tenants is None and ops.may_act_for("anyone")
    assert access.by_token(EU + "x") is None and access.by_token("") is None
    us = access.by_principal("gateway-us")
    assert us is not None and us.may_act_for("initech") and not us.may_act_for("acme")
    assert access.by_principal(EU) is None  # a token is not a principal
    assert access.by_token("principal:gateway-us") is None  # nor a principal a token
    assert EU not in repr(access) and OPS not in repr(access)


def test_json_is_read_as_well(tmp_path: Path) -> None:
    doc = {EU: {"name": "eu", "tenants": ["acme"]}}
    access = TenantAccess.load(write(tmp_path, orjson.dumps(doc).decode(), "c.json"), 16)
    assert access.by_token(EU) == Caller("eu", frozenset({"acme"}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'"{EU}": {{name: eu, tenant: [acme]}}', "entry 1.tenant: unknown key 'tenant'"),
        (f'"{EU}": {{name: eu}}', "entry 1.tenants: 'tenants' is required"),
        (f'"{EU}": {{tenants: [acme]}}', "entry 1.name: 'name' is required"),
        (f'"{EU}": {{name: eu, tenants: []}}', "entry 1.tenants: must be a non-empty list"),
        (f'"{EU}": {{name: eu, tenants: all}}', "entry 1.tenants: must be a non-empty list"),
        (f'"{EU}": {{name: eu, tenants: [acme, ""]}}', "entry 1.tenants[1]: must be a non-empty"),
        (f'"{EU}": [acme]', "entry 1: expected a mapping"),
        ('"short-token": {name: tiny, tenants: "*"}', "entry 1: the token of 'tiny' is shorter"),
        ('"principal:": {name: p, tenants: "*"}', "entry 1: must be a non-empty string"),
        ("- just a list", "expected a mapping, got list"),
        (f'"{EU}": {{name: eu, tenants: [acme]\n', "not valid YAML or JSON at line"),
    ],
)
def test_a_bad_file_names_the_entry_and_never_the_token(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = problem(tmp_path, text)
    assert message.startswith(str(tmp_path / "callers.yaml") + ": ")
    assert expected in message
    assert EU not in message and "short-token" not in message and "\n" not in message


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TenantAccessError, match="cannot be read"):
        TenantAccess.load(tmp_path / "missing.yaml", 16)


def test_every_token_is_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    access = TenantAccess.load(write(tmp_path, CALLERS), 16)
    compared: list[bytes] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return original(a, b)

    monkeypatch.setattr(tenant_access.hmac, "compare_digest", compare_digest)
    assert access.by_token(EU) is not None  # the first token matches...
    assert compared == [EU.encode(), OPS.encode()]  # ...and the search goes on


def test_check_caller() -> None:
    check_caller(None, "anyone")  # no identity asked for
    check_caller(ADMIN, "anyone")
    with pytest.raises(InvalidEvent) as info:
        check_caller(Caller("eu", frozenset({"acme"})), "globex")
    assert info.value.code == "tenant_not_allowed" and "'eu'" in info.value.detail


# -- settings ----------------------------------------------------------------------------------
def test_the_settings_read_the_file_at_start_with_a_one_line_error(tmp_path: Path) -> None:
    good = write(tmp_path, CALLERS)
    s = Settings.from_env({"LLMOPT_WEB_TOKENS_FILE": str(good), "LLMOPT_WEB_HOST": "0.0.0.0"})
    assert s.web_tokens_file == str(good)  # its tokens stand in for LLMOPT_WEB_TOKEN off loopback
    bad = write(tmp_path, f'"{EU}": {{name: eu, tenants: [acme], admin: true}}', "bad.yaml")
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"LLMOPT_WEB_TOKENS_FILE": str(bad)})
    message = str(info.value)
    assert message.startswith(f"LLMOPT_WEB_TOKENS_FILE: {bad}: entry 1.admin: unknown key")
    assert "\n" not in message and EU not in message


def test_principals_only_do_not_open_the_web_endpoints(tmp_path: Path) -> None:
    principals = write(tmp_path, '"principal:gw": {name: gw, tenants: "*"}')
    with pytest.raises(SettingsError, match=r"^LLMOPT_WEB_HOST: 0.0.0.0 is not a loopback"):
        Settings.from_env({"LLMOPT_WEB_TOKENS_FILE": str(principals), "LLMOPT_WEB_HOST": "0.0.0.0"})


def test_a_principal_header_needs_principals(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^LLMOPT_PRINCIPAL_HEADER: set, but no"):
        Settings.from_env({"LLMOPT_PRINCIPAL_HEADER": "x-principal"})
    tokens_only = write(tmp_path, f'"{EU}": {{name: eu, tenants: [acme]}}')
    with pytest.raises(SettingsError, match=r"^LLMOPT_PRINCIPAL_HEADER: set, but no"):
        Settings.from_env(
            {"LLMOPT_PRINCIPAL_HEADER": "x-principal", "LLMOPT_WEB_TOKENS_FILE": str(tokens_only)}
        )


# -- the Kafka path: a gateway's forwarded principal -------------------------------------------
@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "LLMOPT_WEB_TOKENS_FILE": str(write(tmp_path, CALLERS)),
            "LLMOPT_PRINCIPAL_HEADER": "x-principal",
        }
    )


def message(tenant: str, headers: list[tuple[str, bytes]]) -> Any:
    doc = Request(request_id="r1", tenant_id=tenant, task_type="qa", created_at=now_ms())
    return SimpleNamespace(value=orjson.dumps(doc.to_dict()), key=tenant.encode(), headers=headers)


def refusal(fn: Any, *args: Any) -> str | None:
    try:
        fn(*args)
    except InvalidEvent as exc:
        return exc.code
    return None


def test_a_request_is_taken_only_for_a_tenant_its_principal_may_act_for(
    settings: Settings,
) -> None:
    us = [("x-principal", b"gateway-us")]
    assert accept_request_message(message("initech", us), settings).tenant_id == "initech"
    assert refusal(accept_request_message, message("acme", us), settings) == "tenant_not_allowed"
    unknown = [("x-principal", b"gateway-mars")]
    assert refusal(accept_request_message, message("initech", unknown), settings) == (
        "tenant_not_allowed"
    )
    assert refusal(accept_request_message, message("initech", []), settings) == (
        "tenant_not_allowed"
    )


def test_a_reward_is_checked_the_same_way(settings: Settings) -> None:
    msg = SimpleNamespace(headers=[("x-principal", b"gateway-us")])
    check_reward_message("initech", msg, settings)
    assert refusal(check_reward_message, "acme", msg, settings) == "tenant_not_allowed"


def test_the_tenant_header_still_applies_beside_the_principal(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "LLMOPT_WEB_TOKENS_FILE": str(write(tmp_path, CALLERS)),
            "LLMOPT_PRINCIPAL_HEADER": "x-principal",
            "LLMOPT_TENANT_HEADER": "x-tenant",
        }
    )
    both = [("x-principal", b"gateway-us"), ("x-tenant", b"initech")]
    assert accept_request_message(message("initech", both), s).tenant_id == "initech"
    lying = [("x-principal", b"gateway-us"), ("x-tenant", b"acme")]
    assert refusal(accept_request_message, message("initech", lying), s) == "tenant_mismatch"


def test_without_a_principal_header_no_principal_is_asked_for() -> None:
    assert message_caller([], Settings()) is None
    assert accept_request_message(message("acme", []), Settings()).tenant_id == "acme"
