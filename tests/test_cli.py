"""The CLI: help, clear errors, topics apply/check against a real broker."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from app.cli import _parser, main
from app.log_format import JsonFormatter, configure_cli_logging, worker_logging_config
from app.settings import Settings
from tests.conftest import Deployment

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [[], ["run"], ["worker"], ["simulate"], ["topics"], ["broker"]])
def test_every_command_has_help(command: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "usage: llmopt" in out.stdout


def test_without_a_cluster_commands_say_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LLMOPT_KAFKA_BOOTSTRAP", raising=False)
    assert main(["topics", "check"]) == 2
    err = capsys.readouterr().err
    assert "LLMOPT_KAFKA_BOOTSTRAP" in err and "llmopt run" in err


def test_bad_roles_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMOPT_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert main(["worker", "--roles", "decide,teleport"]) == 2
    assert "decide,join,learn" in capsys.readouterr().err


def test_topics_apply_is_idempotent_and_check_reports_mismatches(
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    for k, v in deployment.env.items():
        if k.startswith("LLMOPT_"):
            monkeypatch.setenv(k, v)
    assert main(["topics", "apply"]) == 0
    assert "created 0 topic(s)" in capsys.readouterr().out
    assert main(["topics", "check"]) == 0

    doc = yaml.safe_load((ROOT / "topics.yaml").read_text())
    doc["topics"]["outcomes"]["partitions"] = 8
    doc["topics"]["policy_snapshots"]["retention_ms"] = 1000
    changed = tmp_path / "topics.yaml"
    changed.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("LLMOPT_TOPICS_PATH", str(changed))
    assert main(["topics", "check"]) == 2
    err = capsys.readouterr().err
    assert "4 partitions, topics.yaml says 8" in err
    assert "retention.ms=-1, topics.yaml says 1000" in err


def test_misspelt_settings_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMOPT_KAFKA_BOOTSTRP", "x:1")
    monkeypatch.delenv("LLMOPT_KAFKA_BOOTSTRAP", raising=False)
    main(["topics", "check"])
    assert "LLMOPT_KAFKA_BOOTSTRP is not a setting" in capsys.readouterr().err


# -- user errors: one line on stderr, exit status 2 --------------------------------------------


def test_a_bad_setting_is_one_line_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPT_")}
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "topics", "check"],
        cwd=ROOT,
        env={**env, "LLMOPT_WEB_PORT": "abc", "LLMOPT_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "llmopt: error: LLMOPT_WEB_PORT: 'abc' is not an integer; set a port number such as 6066"
    ], out.stderr


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LLMOPT_WEB_PORT", "0", "LLMOPT_WEB_PORT: 0 is not a usable port"),
        ("LLMOPT_LOG_FORMAT", "xml", "LLMOPT_LOG_FORMAT: 'xml' is not a log format"),
        ("LLMOPT_LOG_LEVEL", "loud", "LLMOPT_LOG_LEVEL: 'loud' is not a log level"),
    ],
)
def test_settings_it_cannot_use_are_refused(
    name: str,
    value: str,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("LLMOPT_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert main(["topics", "check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"llmopt: error: {says}; set ") and len(err.splitlines()) == 1, err


def test_an_unreachable_cluster_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("LLMOPT_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    assert main(["topics", "check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"llmopt: error: cannot reach Kafka at 127.0.0.1:{port}"), err
    assert len(err.splitlines()) == 1, err


def test_other_failures_are_not_called_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.topics

    async def broken(*args: object) -> None:
        raise RuntimeError("a bug, not the network")

    monkeypatch.setattr(app.topics, "check_topics", broken)
    monkeypatch.setenv("LLMOPT_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    with pytest.raises(RuntimeError, match="a bug"):
        main(["topics", "check"])


def test_a_bad_config_is_one_line_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load((ROOT / "config" / "policies.yaml").read_text())
    doc["policies"]["default"]["hyperparmeters"] = doc["policies"]["default"].pop("hyperparameters")
    bad = tmp_path / "policies.yaml"
    bad.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("LLMOPT_POLICIES_PATH", str(bad))
    monkeypatch.setenv("LLMOPT_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert main(["simulate", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"llmopt: error: {bad}: policies.default.hyperparmeters: unknown key 'hyperparmeters' "
        "(did you mean 'hyperparameters'?)"
    ), err
    assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["worker", "--web-port", "0"], "argument --web-port: '0' is not a port number"),
        (["worker", "--web-port", "http"], "argument --web-port: 'http' is not a port number"),
        (["simulate", "--rate", "lots"], "argument --rate: invalid float value: 'lots'"),
        (["topics", "fix"], "argument action: invalid choice: 'fix'"),
    ],
)
def test_a_bad_flag_is_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"llmopt: error: {says}") and "--help" in err, err
    assert len(err.splitlines()) == 1, err


def test_run_and_simulate_take_the_same_traffic_flags() -> None:
    parser = _parser()
    run, sim = (vars(parser.parse_args([command])) for command in ("run", "simulate"))
    del run["func"], sim["func"]
    assert run.pop("single_worker") is False  # run's own: how many workers it starts
    assert (
        run
        == sim
        == {
            "rate": 300.0,
            "duration": None,
            "seed": 0,
            "policy": None,
            "drift": False,
            "daily_pattern": False,
            "summary_every": 5.0,
            "summary_json": None,
        }
    )


def test_the_policies_file_flag_is_policies_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    replay = ["replay", "--start", "now-1h", "--end", "now"]
    for argv in (["backtest", "--policies", "c.yaml"], [*replay, "--policies", "c.yaml"]):
        assert parser.parse_args(argv).policies == "c.yaml"
    # The former name still works, with a warning, and is not advertised.
    assert parser.parse_args(["backtest", "--policies-config", "c.yaml"]).policies == "c.yaml"
    assert "--policies-config is deprecated; use --policies" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["backtest", "--help"])
    assert "--policies-config" not in capsys.readouterr().out


# -- log format ---------------------------------------------------------------------------------


def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_cli_logging(Settings(log_format="json", log_level="info"))
        logging.getLogger("app.test").info("decided %s", "r1")
        logging.getLogger("app.test").debug("below the level")
        try:
            raise ValueError("broken")
        except ValueError:
            logging.getLogger("app.test").exception("failed")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    docs = [orjson.loads(line) for line in lines]
    assert [set(d) for d in docs] == [
        {"ts", "level", "logger", "message"},
        {"ts", "level", "logger", "message", "exc"},
    ]
    assert docs[0]["level"] == "INFO" and docs[0]["logger"] == "app.test"
    assert docs[0]["message"] == "decided r1" and docs[0]["ts"].endswith("Z")
    assert docs[1]["exc"].endswith("ValueError: broken")


def test_the_worker_logs_json_when_asked() -> None:
    assert worker_logging_config(Settings()) is None  # text: the worker's own set-up
    config = worker_logging_config(Settings(log_format="json", log_level="warning"))
    assert config is not None
    assert config["root"]["level"] == logging.WARNING
    formatter = config["formatters"][config["handlers"]["default"]["formatter"]]["()"]
    assert formatter is JsonFormatter
