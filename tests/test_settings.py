"""Settings.from_env: one prefix, typed parsing, errors that name the variable,
and the consumer-group timing profiles."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from app.settings import (
    DRIFT_PATH,
    FEATURES_PATH,
    POLICIES_PATH,
    PREFIX,
    ROOT,
    SIMULATOR_PATH,
    Settings,
    SettingsError,
)


def test_prefix_is_llmopt() -> None:
    assert PREFIX == "LLMOPT_"


def test_empty_environment_gives_the_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.kafka_bootstrap == "" and s.embedded_broker is False
    assert s.policies_path == ROOT / "config" / "policies.yaml"
    assert s.topics_path == ROOT / "topics.yaml"


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPT_APP_ID", "from-process-env")
    assert Settings.from_env().app_id == "from-process-env"


def test_values_are_parsed_by_type() -> None:
    s = Settings.from_env(
        {
            "LLMOPT_KAFKA_BOOTSTRAP": "kafka-1:9092,kafka-2:9092",
            "LLMOPT_WEB_PORT": "7070",
            "LLMOPT_JOIN_ORPHAN_HOLD_SECONDS": "2.5",
            "LLMOPT_EMBEDDED_BROKER": "yes",
            "LLMOPT_DATA_DIR": "/tmp/llmopt-data",
            "LLMOPT_TOPIC_NAMESPACE": "replay1",
        }
    )
    assert s.kafka_bootstrap == "kafka-1:9092,kafka-2:9092"
    assert s.web_port == 7070 and type(s.web_port) is int
    assert s.join_orphan_hold_seconds == 2.5 and type(s.join_orphan_hold_seconds) is float
    assert s.embedded_broker is True
    assert s.data_dir == Path("/tmp/llmopt-data") and isinstance(s.data_dir, Path)
    assert s.topic_namespace == "replay1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        ("0", False),
        ("false", False),
        ("no", False),
    ],
)
def test_booleans(raw: str, expected: bool) -> None:
    assert Settings.from_env({"LLMOPT_EMBEDDED_BROKER": raw}).embedded_broker is expected


@pytest.mark.parametrize(
    ("name", "raw", "typ"),
    [
        ("LLMOPT_WEB_PORT", "66x", "int"),
        ("LLMOPT_WEB_PORT", "6.5", "int"),
        ("LLMOPT_DECIDE_BATCH_MAX", "", "int"),
        ("LLMOPT_SESSION_TIMEOUT_SECONDS", "thirty", "float"),
        ("LLMOPT_EMBEDDED_BROKER", "maybe", "bool"),
        ("LLMOPT_EMBEDDED_BROKER", "", "bool"),
    ],
)
def test_bad_values_name_the_variable(name: str, raw: str, typ: str) -> None:
    with pytest.raises(ValueError) as info:
        Settings.from_env({name: raw})
    text = str(info.value)
    assert name in text and repr(raw) in text and typ in text, text


def test_other_variables_are_ignored() -> None:
    s = Settings.from_env({"WEB_PORT": "1", "llmopt_web_port": "2", "LLMOPT_": "3"})
    assert s.web_port == 6066


def test_overrides_win_over_the_environment() -> None:
    s = Settings.from_env({"LLMOPT_APP_ID": "env"}, app_id="override")
    assert s.app_id == "override"


def test_every_field_can_be_set_from_the_environment(tmp_path: Path) -> None:
    defaults = Settings()
    # A value other than each field's default, as the environment spells it.
    samples = {"int": ("42", 42), "float": ("0.25", 0.25), "Path": ("/x/y", Path("/x/y"))}
    samples["str"] = ("v", "v")
    secret = tmp_path / "secret"
    secret.write_text("a-secret-of-sixteen-chars-or-more\n")
    callers = tmp_path / "callers.yaml"
    callers.write_text('"principal:gw": {name: gw, tenants: "*"}\n')

    # Checked against other fields: at least the join's done retention + max hold;
    # the security settings take only their own values, and files that exist.
    special = {
        "applied_requests_retention_seconds": ("0.75", 0.75),
        "faults": ("crash_policy_update:0.5", "crash_policy_update:0.5"),  # parsed strictly
        "kafka_security_protocol": ("SASL_SSL", "SASL_SSL"),
        "kafka_sasl_mechanism": ("SCRAM-SHA-512", "SCRAM-SHA-512"),
        "web_token": ("t" * 32, "t" * 32),
        "web_tokens_file": (str(callers), str(callers)),  # principal_header needs its principals
    }
    for name in (
        "kafka_sasl_password_file",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "web_token_file",
    ):
        special[name] = (str(secret), str(secret))

    types = {f.name: str(f.type) for f in fields(Settings)}

    def sample(name: str) -> tuple[str, Any]:
        if name in special:
            return special[name]
        if types[name] == "bool":
            return ("0", False) if getattr(defaults, name) else ("1", True)
        return samples[types[name]]

    # Settings that exclude each other go in different environments: the
    # embedded broker speaks PLAINTEXT only, and a secret comes by value or by file.
    kafka = {name for name in types if name.startswith("kafka_s")}
    by_file = {"kafka_sasl_password_file", "web_token_file"}
    groups = [
        set(types) - kafka - by_file,
        kafka - {"kafka_sasl_password_file"},
        (kafka - {"kafka_sasl_password"}) | {"web_token_file"},
    ]
    assert set().union(*groups) == set(types)
    for group in groups:
        s = Settings.from_env({PREFIX + name.upper(): sample(name)[0] for name in group})
        for name in group:
            value = getattr(s, name)
            assert value != getattr(defaults, name), name
            assert value == sample(name)[1], name


def test_bootstrap_without_a_cluster_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="LLMOPT_KAFKA_BOOTSTRAP"):
        _ = Settings().bootstrap
    assert Settings(kafka_bootstrap="h:1").bootstrap == "h:1"


def test_roles() -> None:
    assert Settings().roles == {"decide", "join", "learn"}
    assert Settings(worker_roles=" join, ,learn ").roles == {"join", "learn"}


def test_embedded_profile_has_short_group_timings() -> None:
    s = Settings.from_env({"LLMOPT_EMBEDDED_BROKER": "1", "LLMOPT_SESSION_TIMEOUT_SECONDS": "99"})
    assert s.broker_profile() == {
        "session_timeout": 3.0,
        "heartbeat_interval": 0.5,
        "rebalance_timeout": 10.0,
    }


def test_real_kafka_profile_uses_the_settings() -> None:
    assert Settings.from_env({}).broker_profile() == {
        "session_timeout": 30.0,
        "heartbeat_interval": 3.0,
        "rebalance_timeout": 60.0,
    }
    s = Settings.from_env(
        {"LLMOPT_SESSION_TIMEOUT_SECONDS": "45", "LLMOPT_HEARTBEAT_INTERVAL_SECONDS": "5"}
    )
    assert s.broker_profile() == {
        "session_timeout": 45.0,
        "heartbeat_interval": 5.0,
        "rebalance_timeout": 60.0,
    }


def test_decide_fetch_wait_follows_the_broker_profile_unless_set() -> None:
    from app.settings import Settings

    assert Settings(embedded_broker=True).decide_fetch_wait == 20
    assert Settings(embedded_broker=False).decide_fetch_wait == 2
    assert Settings.from_env({"LLMOPT_DECIDE_FETCH_WAIT_MS": "5"}).decide_fetch_wait == 5


def test_a_bad_value_says_what_to_set() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"LLMOPT_WEB_PORT": "abc"})
    assert str(info.value) == (
        "LLMOPT_WEB_PORT: 'abc' is not an integer; set a port number such as 6066"
    )
    with pytest.raises(SettingsError, match="set true or false"):
        Settings.from_env({"LLMOPT_AUTO_CREATE_TOPICS": "sometimes"})


@pytest.mark.parametrize("raw", ["0", "-1", "65536"])
def test_a_web_port_it_cannot_serve_on_is_refused(raw: str) -> None:
    # 0 would be "any free port", but `llmopt run` polls /health at the port
    # it set and a worker's metrics carry it in the worker's id.
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"LLMOPT_WEB_PORT": raw})
    assert str(info.value).startswith(f"LLMOPT_WEB_PORT: {raw} is not a usable port; set ")


def test_the_default_config_paths_are_the_loaders_defaults() -> None:
    from app.drift.config import DriftConfig
    from app.evaluation.simulator import SimulatorConfig
    from app.policies.config import PoliciesConfig

    s = Settings()
    for load, path in (
        (PoliciesConfig.load, s.policies_path),
        (DriftConfig.load, s.drift_path),
        (SimulatorConfig.from_yaml, s.simulator_path),
    ):
        assert inspect.signature(load).parameters["path"].default == path
    assert (s.policies_path, s.drift_path, s.simulator_path) == (
        POLICIES_PATH,
        DRIFT_PATH,
        SIMULATOR_PATH,
    )
    assert POLICIES_PATH.parent == ROOT / "config" and FEATURES_PATH.exists()


def test_applied_requests_retention_must_cover_the_joins_retention() -> None:
    with pytest.raises(SettingsError, match="APPLIED_REQUESTS_RETENTION_SECONDS"):
        Settings(
            join_done_retention_seconds=3600,
            join_max_hold_seconds=900,
            applied_requests_retention_seconds=4000,
        )
    assert Settings(applied_requests_retention_seconds=4500).applied_requests_retention_seconds
