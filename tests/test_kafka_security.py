"""The LLMOPT_KAFKA_* security settings: checked when read, mapped to aiokafka's
arguments and to Faust's broker_credentials alike, passed to every Kafka
client the project creates, and the password never shown."""

from __future__ import annotations

import ast
import logging
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from app.kafka_security import kafka_security
from app.settings import ROOT, Settings, SettingsError
from app.stream.app import broker_credentials, create_app, faust_settings

PASSWORD = "pw-Zq81-never-shown"
SASL = {
    "LLMOPT_KAFKA_BOOTSTRAP": "broker.example.com:9093",
    "LLMOPT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "LLMOPT_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
    "LLMOPT_KAFKA_SASL_USERNAME": "llmopt",
    "LLMOPT_KAFKA_SASL_PASSWORD": PASSWORD,
}
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
CLIENT_DIRS = ("app", "agents", "benchmarks", "scripts")


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and its key: a CA file and a client pair."""
    assert shutil.which("openssl"), "the test makes its certificate with openssl: install it"
    d = tmp_path_factory.mktemp("pem")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=llmopt-test"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return {"cert": cert, "key": key}


def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


# -- the mapping ----------------------------------------------------------------


def test_plaintext_by_default() -> None:
    assert kafka_security(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(Settings()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext(mechanism: str) -> None:
    s = settings(SASL | {"LLMOPT_KAFKA_SASL_MECHANISM": mechanism})
    assert kafka_security(s) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "llmopt",
        "sasl_plain_password": PASSWORD,
    }


def test_the_password_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    env = dict(SASL)
    del env["LLMOPT_KAFKA_SASL_PASSWORD"]
    s = settings(env | {"LLMOPT_KAFKA_SASL_PASSWORD_FILE": str(secret)})
    assert kafka_security(s)["sasl_plain_password"] == PASSWORD


def test_ssl_verifies_against_the_ca_file_and_presents_the_client_certificate(
    pem: dict[str, Path],
) -> None:
    s = settings(
        {
            "LLMOPT_KAFKA_SECURITY_PROTOCOL": "SSL",
            "LLMOPT_KAFKA_SSL_CAFILE": str(pem["cert"]),
            "LLMOPT_KAFKA_SSL_CERTFILE": str(pem["cert"]),
            "LLMOPT_KAFKA_SSL_KEYFILE": str(pem["key"]),
        }
    )
    kw = kafka_security(s)
    assert set(kw) == {"security_protocol", "ssl_context"} and kw["security_protocol"] == "SSL"
    context = kw["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any("llmopt-test" in str(c.get("subject")) for c in context.get_ca_certs())


def test_ssl_without_a_ca_file_trusts_the_system_and_hostname_check_can_be_off() -> None:
    s = settings({"LLMOPT_KAFKA_SECURITY_PROTOCOL": "SSL", "LLMOPT_KAFKA_SSL_CHECK_HOSTNAME": "0"})
    context = kafka_security(s)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname


def test_sasl_ssl_has_both(pem: dict[str, Path]) -> None:
    s = settings(
        SASL
        | {
            "LLMOPT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "LLMOPT_KAFKA_SSL_CAFILE": str(pem["cert"]),
        }
    )
    kw = kafka_security(s)
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kw["sasl_plain_password"] == PASSWORD and isinstance(kw["ssl_context"], ssl.SSLContext)


def test_a_ca_file_that_is_not_pem_names_the_variable(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    s = settings({"LLMOPT_KAFKA_SECURITY_PROTOCOL": "SSL", "LLMOPT_KAFKA_SSL_CAFILE": str(bad)})
    with pytest.raises(SettingsError, match=r"^LLMOPT_KAFKA_SSL_CAFILE: "):
        kafka_security(s)


def test_without_settings_the_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SASL.items():
        monkeypatch.setenv(name, value)
    assert kafka_security()["sasl_plain_username"] == "llmopt"


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_gets_the_same_arguments_through_broker_credentials(
    protocol: str, pem: dict[str, Path]
) -> None:
    env = dict(SASL) if protocol.startswith("SASL_") else {}
    env["LLMOPT_KAFKA_SECURITY_PROTOCOL"] = protocol
    if protocol.endswith("SSL"):
        env["LLMOPT_KAFKA_SSL_CAFILE"] = str(pem["cert"])
    s = settings(env | {"LLMOPT_KAFKA_BOOTSTRAP": "broker.example.com:9093"})
    # What Faust's aiokafka transport makes of the credentials, for its own clients.
    faust_kwargs = dict(credentials_to_aiokafka_auth(faust_settings(s)["broker_credentials"]))
    ours = kafka_security(s)
    faust_context, our_context = (
        faust_kwargs.pop("ssl_context", None),
        ours.pop("ssl_context", None),
    )
    assert faust_kwargs == ours and ours["security_protocol"] == protocol
    assert (faust_context is None) == (our_context is None) == (not protocol.endswith("SSL"))
    if our_context is not None:
        assert faust_context.verify_mode == our_context.verify_mode == ssl.CERT_REQUIRED
        assert faust_context.get_ca_certs() == our_context.get_ca_certs()


# -- checked when read --------------------------------------------------------------

MISSING = "/nonexistent/llmopt/file.pem"


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        ({"LLMOPT_KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ({"LLMOPT_KAFKA_SECURITY_PROTOCOL": "sasl_ssl"}, "KAFKA_SECURITY_PROTOCOL", "one of"),
        (SASL | {"LLMOPT_KAFKA_SASL_MECHANISM": ""}, "KAFKA_SASL_MECHANISM", "not set"),
        (SASL | {"LLMOPT_KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        (SASL | {"LLMOPT_KAFKA_SASL_USERNAME": ""}, "KAFKA_SASL_USERNAME", "not set"),
        (SASL | {"LLMOPT_KAFKA_SASL_PASSWORD": ""}, "KAFKA_SASL_PASSWORD", "PASSWORD_FILE"),
        (SASL | {"LLMOPT_KAFKA_SASL_PASSWORD_FILE": MISSING}, "KAFKA_SASL_PASSWORD", "only one"),
        (
            {k: v for k, v in SASL.items() if not k.endswith("PASSWORD")}
            | {"LLMOPT_KAFKA_SASL_PASSWORD_FILE": MISSING},
            "KAFKA_SASL_PASSWORD_FILE",
            "cannot read",
        ),
        (
            {"LLMOPT_KAFKA_SECURITY_PROTOCOL": "SSL", "LLMOPT_KAFKA_SSL_CAFILE": MISSING},
            "KAFKA_SSL_CAFILE",
            "is not a file",
        ),
        (
            {"LLMOPT_KAFKA_SECURITY_PROTOCOL": "SSL", "LLMOPT_KAFKA_SSL_CERTFILE": MISSING},
            "KAFKA_SSL_CERTFILE",
            "is not a file",
        ),
        ({"LLMOPT_KAFKA_SASL_USERNAME": "llmopt"}, "KAFKA_SASL_USERNAME", "does not use it"),
        ({"LLMOPT_KAFKA_SSL_CAFILE": str(ROOT / "topics.yaml")}, "KAFKA_SSL_CAFILE", "does not"),
        (SASL | {"LLMOPT_EMBEDDED_BROKER": "1"}, "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT only"),
    ],
)
def test_bad_security_settings_name_the_variable(
    env: dict[str, str], variable: str, says: str
) -> None:
    with pytest.raises(SettingsError) as info:
        settings(env)
    message = str(info.value)
    assert message.startswith(f"LLMOPT_{variable}: ") and says in message, message
    assert "\n" not in message and PASSWORD not in message


def test_a_key_without_its_certificate_is_refused(pem: dict[str, Path]) -> None:
    with pytest.raises(SettingsError, match=r"^LLMOPT_KAFKA_SSL_KEYFILE: set without"):
        settings(
            {"LLMOPT_KAFKA_SECURITY_PROTOCOL": "SSL", "LLMOPT_KAFKA_SSL_KEYFILE": str(pem["key"])}
        )


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "password"
    empty.write_text("\n")
    env = {k: v for k, v in SASL.items() if not k.endswith("PASSWORD")}
    with pytest.raises(SettingsError, match=r"^LLMOPT_KAFKA_SASL_PASSWORD_FILE: .* is empty"):
        settings(env | {"LLMOPT_KAFKA_SASL_PASSWORD_FILE": str(empty)})


# -- no secret shown ------------------------------------------------------------------


def test_secrets_are_not_in_the_settings_repr() -> None:
    s = settings(
        SASL
        | {
            "LLMOPT_WEB_TOKEN": "web-token-Kx71-never-shown",
            "LLMOPT_REWARD_TOKEN_SECRET": "reward-secret-never-shown",
        }
    )
    text = repr(s) + str(s)
    assert "llmopt" in text  # the username may show
    for secret in (PASSWORD, "web-token-Kx71-never-shown", "reward-secret-never-shown"):
        assert secret not in text
    assert PASSWORD not in repr(broker_credentials(s))


async def test_no_log_line_carries_the_password(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A worker's app built, and the project's clients failing to reach a
    cluster, with SASL settings and every logger at DEBUG: the password is in
    no record (message, arguments, exception) and no client's repr."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError

    from app.stream.broker import free_port

    s = settings(
        SASL
        | {
            "LLMOPT_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # nothing listens there
            "LLMOPT_DATA_DIR": str(tmp_path),
            "LLMOPT_POLICIES_PATH": str(ROOT / "tests" / "fixtures" / "policies.yaml"),
        }
    )
    caplog.set_level(logging.DEBUG)
    app = create_app(s)
    shown = [repr(app.conf.broker_credentials)]
    clients: list[Any] = [
        AIOKafkaProducer(bootstrap_servers=s.bootstrap, **kafka_security(s)),
        AIOKafkaConsumer(bootstrap_servers=s.bootstrap, **kafka_security(s)),
    ]
    for client in clients:
        shown.append(repr(client))
        with pytest.raises(KafkaConnectionError) as info:
            await client.start()
        shown.append(str(info.value))
        await client.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap, **kafka_security(s))
    shown.append(repr(admin))
    await admin.close()
    for record in caplog.records:
        shown.append(record.getMessage())
        shown.append(repr(record.args))
        if record.exc_info:
            shown.append(logging.Formatter().formatException(record.exc_info))
    assert len(shown) > 6 and not [line for line in shown if PASSWORD in line]


# -- every client gets them -------------------------------------------------------------


def _constructor_calls(tree: ast.AST) -> list[ast.Call]:
    def name(call: ast.Call) -> str:
        f = call.func
        if isinstance(f, ast.Name):
            return f.id
        if isinstance(f, ast.Attribute):
            base = f.value.id if isinstance(f.value, ast.Name) else ""
            return f"{base}.{f.attr}" if base == "faust" else f.attr
        return ""

    return [
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and name(n) in CLIENTS | {"faust.App"}
    ]


def _spreads(call: ast.Call, function: str) -> bool:
    return any(
        k.arg is None
        and isinstance(k.value, ast.Call)
        and isinstance(k.value.func, ast.Name)
        and k.value.func.id == function
        for k in call.keywords
    )


def test_every_kafka_client_the_project_creates_gets_the_security_settings() -> None:
    """Each aiokafka producer, consumer and admin client under app/, agents/,
    benchmarks/ and scripts/ is built with ``**kafka_security(...)``, and each
    Faust app with ``**faust_settings(...)`` (whose broker_credentials carry them)."""
    found, missing = [], []
    for top in CLIENT_DIRS:
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for call in _constructor_calls(tree):
                where = f"{path.relative_to(ROOT)}:{call.lineno}"
                found.append(where)
                is_faust = isinstance(call.func, ast.Attribute) and call.func.attr == "App"
                if not _spreads(call, "faust_settings" if is_faust else "kafka_security"):
                    missing.append(where)
    assert len(found) > 30 and any(f.startswith("app/stream/app.py") for f in found)
    assert not missing, f"Kafka clients without the security settings: {missing}"
    assert "broker_credentials" in faust_settings(Settings(kafka_bootstrap="h:1"))


def test_the_check_sees_a_client_without_them() -> None:
    tree = ast.parse(
        "p = AIOKafkaProducer(bootstrap_servers=b)\n"
        "c = aiokafka.AIOKafkaConsumer('t', **kafka_security(s))\n"
        "a = faust.App('x', broker='kafka://h:1')\n"
    )
    calls = sorted(_constructor_calls(tree), key=lambda c: c.lineno)
    assert [_spreads(c, "kafka_security") for c in calls] == [False, True, False]
