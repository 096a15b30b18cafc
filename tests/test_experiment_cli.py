"""`llmopt experiment create|status|stop`: a definition is checked strictly,
from a file or flags, before anything is written; bad input is one line on
stderr and exit status 2; status renders a result as a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from app.experiment_cli import render_status
from app.experiments.definition import ExperimentDefinition
from app.experiments.evaluator import Evaluator
from app.experiments.events import created_event
from tests.conftest import TEST_POLICIES

ROLLOUT = {
    "id": "haiku",
    "policy": "default",
    "variants": [
        {"name": "champion", "policy": "default"},
        {"name": "challenger", "arm": "claude-haiku"},
    ],
    "stages": [5, 25, 100],
    "metrics": {"latency_ms": {"margin": 0.1}},
}


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLMOPT_KAFKA_BOOTSTRAP", "LLMOPT_TOPIC_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LLMOPT_POLICIES_PATH", str(TEST_POLICIES))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["experiment", *args])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_a_valid_file_is_checked_and_printed_on_a_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "create", "--file", write(tmp_path, ROLLOUT), "--dry-run")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["stages"] == [5, 25, 100] and doc["metrics"]["latency_ms"]["relative"] is True
    assert ExperimentDefinition.from_mapping(doc).challenger.arm == "claude-haiku"


def test_flags_make_the_same_definition_as_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, from_file, _ = run(capsys, "create", "--file", write(tmp_path, ROLLOUT), "--dry-run")
    code, from_flags, err = run(
        capsys,
        "create",
        "--id=haiku",
        "--policy=default",
        "--variant=champion=policy:default",
        "--variant=challenger=arm:claude-haiku",
        "--stages=5,25,100",
        "--latency-margin=0.1",
        "--dry-run",
    )
    assert (code, err) == (0, "")
    assert json.loads(from_flags) == json.loads(from_file)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"stagse": [5, 100]}, "unknown key 'stagse' (did you mean 'stages'?)"),
        ({"policy": "nope"}, "unknown policy 'nope'"),
        ({"stages": [50, 25, 100]}, "must rise stage by stage"),
        ({"alpha": "small"}, "alpha: must be a number"),
        (
            {"variants": [{"name": "champion", "policy": "default"}, {"name": "x", "arm": "gpt"}]},
            "'gpt' is not an arm of policy 'default'",
        ),
    ],
)
def test_a_bad_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], patch: dict[str, Any], message: str
) -> None:
    code, out, err = run(capsys, "create", "--file", write(tmp_path, ROLLOUT | patch), "--dry-run")
    assert code == 2 and out == ""
    assert err.startswith("llmopt: error: ") and err.count("\n") == 1
    assert message in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant=a:default"], "expected NAME=policy:ID or NAME=arm:NAME"),
        (["--shares=a"], "expected NAME=VALUE"),
        (["--stages=5,x,100"], "'x' is not a number"),
        (["--id=x", "--file=f.yaml"], "give --file or flags, not both"),
        (["--id=x", "--policy=default"], "'variants' is required"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(capsys, "create", *args, "--dry-run")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert message in err


def test_without_a_cluster_status_and_stop_say_so_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for args in (["status"], ["stop", "haiku"]):
        code, _, err = run(capsys, *args)
        assert code == 2 and "no Kafka cluster configured" in err and err.count("\n") == 1


def test_status_renders_the_latest_result_as_a_table() -> None:
    d = ExperimentDefinition.from_mapping(ROLLOUT)
    ev = Evaluator("e")
    ev.start({"outcomes/0": 0})
    ev.on_event(created_event(d, "cli", 0))
    for i in range(400):
        variant = "challenger" if i % 4 == 0 else "champion"
        ev.on_outcome(
            "outcomes/0",
            i,
            {
                "experiment_id": "haiku",
                "variant": variant,
                "reward": 0.5 + (i % 3) / 10,
                "components": {"latency_ms": 800.0 + i % 5},
            },
        )
    [result] = [e for e in ev.look(1, force=True) if e.kind == "result"]
    doc = {
        "id": "haiku",
        "kind": "rollout",
        "policy": "default",
        "status": "running",
        "stage": 0,
        "shares": {"champion": 0.95, "challenger": 0.05},
        "stop_reason": None,
        "reason": None,
        "result": result.result,
    }
    table = render_status(doc)
    assert (
        "rollout haiku on policy default: running, stage 0 (champion 95%, challenger 5%)" in table
    )
    rows = {line.split()[0] + " " + line.split()[1] for line in table.splitlines()[3:5]}
    assert rows == {"champion 300", "challenger 100"}
    assert "latency_ms" in table and "overall" in table and "pending" in table
