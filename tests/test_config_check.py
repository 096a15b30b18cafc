"""`llmopt config check` and the strict policies loader behind it: an unknown
key, an unknown hyperparameter, a wrong type or a value out of range names
the file and the key path (and the nearest valid key), exit status 2."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from app.policies.config import PoliciesConfig, PolicyConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = yaml.safe_load((ROOT / "config" / "policies.yaml").read_text())


def _rename(key: str, new: str) -> Callable[[dict[str, Any]], None]:
    def change(policy: dict[str, Any]) -> None:
        policy[new] = policy.pop(key)

    return change


def _set(*path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(policy: dict[str, Any]) -> None:
        *parents, last = path
        for key in parents:
            policy = policy[key]
        policy[last] = value

    return change


# (what is wrong, the change to the default policy, what the one line must say)
BAD = [
    (
        "misspelt key",
        _rename("hyperparameters", "hyperparmeters"),
        "policies.default.hyperparmeters: unknown key 'hyperparmeters' "
        "(did you mean 'hyperparameters'?)",
    ),
    (
        "dash for underscore",
        _rename("fallback_arm", "fallback-arm"),
        "policies.default.fallback-arm: unknown key 'fallback-arm' (did you mean 'fallback_arm'?)",
    ),
    (
        "misspelt reward weight",
        _set("reward", "weights", value={"quailty": 1}),
        "policies.default.reward.weights.quailty: unknown reward weight 'quailty' "
        "(did you mean 'quality'?)",
    ),
    (
        "hyperparameter of another algorithm",
        _set("hyperparameters", "alpha", value=0.5),
        "policies.default.hyperparameters.alpha: bad hyperparameters: parameter_tuner has "
        "no hyperparameter 'alpha'",
    ),
    (
        "wrong type",
        _set("snapshot", "every_updates", value="often"),
        "policies.default.snapshot.every_updates: must be an integer, got 'often'",
    ),
    (
        "out of range",
        _set("guardrails", "max_explore_priority", value=-1),
        "policies.default.guardrails.max_explore_priority: must be an integer in [0, inf], got -1",
    ),
]
IDS = [what for what, _, _ in BAD]


def bad_file(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    doc = copy.deepcopy(SHIPPED)
    change(doc["policies"]["default"])
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize(("what", "change", "message"), BAD, ids=IDS)
def test_the_loader_names_the_file_and_the_key(
    tmp_path: Path, what: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    path = bad_file(tmp_path, change)
    with pytest.raises(PolicyConfigError) as info:
        PoliciesConfig.load(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


@pytest.mark.parametrize(("what", "change", "message"), BAD, ids=IDS)
def test_config_check_prints_one_line_and_exits_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    what: str,
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    bad_file(tmp_path, change)
    assert main(["config", "check", "--policies", "policies.yaml"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [err.strip()], err
    assert err.startswith(f"policies.yaml: {message}"), err
    # The other three files are the shipped ones, and fine.
    assert out.count("ok: ") == 3 and "policies.yaml" not in out, out


def test_an_unknown_hyperparameter_lists_the_valid_ones(tmp_path: Path) -> None:
    path = bad_file(tmp_path, _set("hyperparameters", "prior_alfa", value=1.0))
    with pytest.raises(PolicyConfigError) as info:
        PoliciesConfig.load(path)
    text = str(info.value)
    assert "hyperparameters.prior_alfa" in text and "(did you mean 'prior_alpha'?)" in text
    valid = text.split("; valid: ")[1].split(", ")
    assert {"prior_alpha", "prior_beta", "evaluation_size"} <= set(valid), text
    assert not {"arms", "seed"} & set(valid), text  # set by the policy's own keys


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "config").glob("*.yaml")))
def test_every_shipped_config_file_passes(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    flag = {"features.yaml": "--features", "simulator.yaml": "--simulator"}.get(
        name, "--" + name.removesuffix(".yaml")
    )
    assert main(["config", "check", flag, f"config/{name}"]) == 0
    out, err = capsys.readouterr()
    assert f"ok: config/{name}" in out.splitlines() and not err, (out, err)


def test_config_check_without_flags_checks_the_four_defaults(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    for name in ("POLICIES_PATH", "DRIFT_PATH", "SIMULATOR_PATH", "FEATURE_SPEC_PATH"):
        monkeypatch.delenv(f"LLMOPT_{name}", raising=False)
    assert main(["config", "check"]) == 0
    out, err = capsys.readouterr()
    assert (
        out.splitlines()
        == [
            "ok: config/policies.yaml",
            "ok: config/drift.yaml",
            "ok: config/features.yaml",
            "ok: config/simulator.yaml",
        ]
        and not err
    ), (out, err)


def test_each_bad_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "drift.yaml").write_text("enabled: true\nalert:\n  rules: []\n")
    (tmp_path / "features.yaml").write_text("name: f\nversion: 1\nfeatures: [{name: x}]\n")
    (tmp_path / "simulator.yaml").write_text("traffic: [unclosed\n")
    args = ["--drift", "drift.yaml", "--features", "features.yaml", "--simulator"]
    assert main(["config", "check", *args, "simulator.yaml"]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 3 and out.count("ok: ") == 1, (out, err)
    assert lines[0].startswith("drift.yaml: alert: unknown key 'alert' (did you mean 'alerts'?)")
    assert lines[1].startswith("features.yaml: features[0].source: "), lines[1]
    assert lines[2].startswith("simulator.yaml: not valid YAML"), lines[2]
