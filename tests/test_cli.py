"""The CLI: help, clear errors, topics apply/check against a real broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.cli import main
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
