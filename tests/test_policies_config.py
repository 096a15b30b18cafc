"""PoliciesConfig: the YAML files load, and every kind of bad policy is
refused with a PolicyConfigError that names the file and the key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from app.policies import PolicyError
from app.policies.config import ALGORITHMS, PoliciesConfig, PolicyConfig, PolicyConfigError
from app.rewards import RewardSpec

REPO = Path(__file__).resolve().parents[1]


def base_doc() -> dict[str, Any]:
    return {
        "default_policy": "main",
        "policies": {
            "main": {
                "algorithm": "thompson_sampling",
                "hyperparameters": {"propensity_samples": 1000},
                "reward": {"weights": {"quality": 0.5, "cost": 0.3, "latency": 0.2}},
                "guardrails": {"max_explore_priority": 7},
                "fallback_arm": "small",
                "snapshot": {"every_updates": 10, "every_ms": 500},
                "seed": 3,
                "arms": [
                    {"name": "big", "model": "gpt-4o", "parameters": {"temperature": 0.2}},
                    {"name": "small", "model": "gpt-4o-mini"},
                ],
            },
            "other": {
                "algorithm": "thompson_sampling",
                "arms": [{"name": "only", "model": "m"}],
            },
        },
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """``base_doc`` with the 'main' policy's value at ``path`` (dotted) replaced;
    the value ``...`` deletes the key."""
    doc = copy.deepcopy(base_doc())
    node = doc["policies"]["main"]
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    "path",
    [REPO / "config" / "policies.yaml", REPO / "tests" / "fixtures" / "policies.yaml"],
    ids=["config", "fixtures"],
)
def test_shipped_policy_files_load(path: Path) -> None:
    cfg = PoliciesConfig.load(path)
    assert cfg.default_policy in cfg.policies
    for pid, pc in cfg.policies.items():
        assert pc.policy_id == pid
        assert pc.algorithm in ALGORITHMS
        assert pc.fallback_arm in pc.arm_names
        policy = pc.build()
        assert policy.arms == pc.arm_names
        assert type(policy) is ALGORITHMS[pc.algorithm]


def test_the_default_config_says_what_the_docs_say() -> None:
    pc = PoliciesConfig.load(REPO / "config" / "policies.yaml").get(None)
    assert pc is not None and pc.policy_id == "default"
    assert pc.max_explore_priority == 8
    assert pc.fallback_arm == "gpt-4o-mini"
    assert (pc.snapshot_every_updates, pc.snapshot_every_ms) == (100, 250)
    assert pc.reward == RewardSpec(0.6, 0.25, 0.15, 0.0, 0.02, 8000, 0.0, 30, 0.0)
    assert len(pc.arm_names) == 6
    assert pc.arm("llama-70b-creative").parameters["temperature"] == 0.9


def test_fields_are_read() -> None:
    cfg = PoliciesConfig.from_dict(base_doc())
    pc = cfg.policies["main"]
    assert cfg.get(None) is pc and cfg.get("main") is pc and cfg.get("nope") is None
    assert pc.arm_names == ["big", "small"]
    assert pc.arm("big").model == "gpt-4o" and pc.arm("big").parameters == {"temperature": 0.2}
    assert pc.arm("small").parameters == {}
    assert pc.max_explore_priority == 7 and pc.fallback_arm == "small"
    assert (pc.snapshot_every_updates, pc.snapshot_every_ms, pc.seed) == (10, 500, 3)
    assert (pc.reward.quality_weight, pc.reward.cost_weight, pc.reward.latency_weight) == (
        0.5,
        0.3,
        0.2,
    )
    assert pc.hyperparameters == {"propensity_samples": 1000}
    with pytest.raises(KeyError):
        pc.arm("missing")
    # Defaults: first arm as fallback, no guardrail (priorities stop at 10).
    other = cfg.policies["other"]
    assert other.fallback_arm == "only" and other.max_explore_priority == 11
    assert other.reward == RewardSpec()


def test_default_policy_defaults_to_the_first() -> None:
    doc = base_doc()
    del doc["default_policy"]
    assert PoliciesConfig.from_dict(doc).default_policy == "main"


def test_build_is_seeded() -> None:
    pc = PoliciesConfig.from_dict(base_doc()).policies["main"]
    a, b = pc.build(), pc.build()
    assert [a.select().arm for _ in range(30)] == [b.select().arm for _ in range(30)]
    assert a.seed == 3


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_registered_algorithm_is_configurable(algorithm: str) -> None:
    doc = with_change("algorithm", algorithm)
    doc["policies"]["main"]["hyperparameters"] = {}
    pc = PoliciesConfig.from_dict(doc).policies["main"]
    assert type(pc.build()) is ALGORITHMS[algorithm]


BAD = [
    ("algorithm", "epsilon_wobbly", "unknown algorithm 'epsilon_wobbly'"),
    ("algorithm", ..., "unknown algorithm None"),
    ("arms", [], "at least one arm"),
    ("arms", ..., "at least one arm"),
    ("arms", [{"name": "x", "model": "m"}, {"name": "x", "model": "n"}], "duplicate arm names"),
    ("arms", [{"name": "x"}], "a name and a model"),
    ("arms", ["just-a-string"], "a name and a model"),
    ("fallback_arm", "gpt-9", "fallback_arm 'gpt-9' is not one of its arms"),
    ("hyperparameters", {"prior_alpha": -1.0}, "bad hyperparameters"),
    ("hyperparameters", {"discount": 2.0}, "bad hyperparameters"),
    ("hyperparameters", {"temperature_of_the_sun": 1}, "bad hyperparameters"),
    ("reward.weights", {"quality": -0.5}, "reward weights"),
    ("reward.weights", {"quality": 0, "cost": 0, "latency": 0, "feedback": 0}, "reward weights"),
    ("reward.weights", {"quality": "lots"}, "reward"),
    ("reward.weights", {"quality": float("nan")}, "finite"),
    ("reward.error_reward", 1.5, "error_reward"),
    ("reward.default_reward", -0.1, "default_reward"),
    ("reward.wait_seconds", 0, "wait_seconds"),
    ("reward.cost_scale_usd", 0, "cost_scale_usd"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_policy_is_refused_naming_it(path: str, value: Any, message: str) -> None:
    with pytest.raises(PolicyConfigError) as info:
        PoliciesConfig.from_dict(with_change(path, value), source="policies.yaml")
    text = str(info.value)
    # The file, then the key path, which names the policy.
    assert text.startswith(f"policies.yaml: policies.main.{path.split('.')[0]}"), text
    assert message in text, text


def test_missing_default_policy_is_named() -> None:
    doc = base_doc()
    doc["default_policy"] = "ghost"
    with pytest.raises(PolicyConfigError, match="default_policy 'ghost' is not defined"):
        PoliciesConfig.from_dict(doc)


@pytest.mark.parametrize("doc", [None, [], {"policies": []}, {"default_policy": "x"}])
def test_document_must_be_a_mapping_of_policies(doc: Any) -> None:
    with pytest.raises(PolicyConfigError, match="'policies' mapping"):
        PoliciesConfig.from_dict(doc)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyConfigError, match="does not exist"):
        PoliciesConfig.load(tmp_path / "nope.yaml")


def test_errors_are_value_errors() -> None:
    assert issubclass(PolicyConfigError, ValueError)


def _config(arms: list[str]) -> PolicyConfig:
    doc = with_change("arms", [{"name": a, "model": a} for a in arms])
    doc["policies"]["main"]["fallback_arm"] = arms[0]
    return PoliciesConfig.from_dict(doc).policies["main"]


def test_restore_reconciles_the_snapshot_with_the_configured_arms() -> None:
    old = _config(["big", "small", "retired"])
    policy = old.build()
    for _ in range(20):
        policy.update("big", 1.0)
        policy.update("retired", 0.0)
    new = _config(["big", "small", "newcomer"])
    restored = new.restore(policy.snapshot())
    assert sorted(restored.arms) == ["big", "newcomer", "small"]
    stats = restored.stats()
    assert stats["big"] == policy.stats()["big"]
    assert stats["newcomer"]["pulls"] == 0
    assert restored.scores(["newcomer"])[0] == policy.scores(["small"])[0]  # the prior


def test_restore_survives_a_config_that_replaced_every_arm() -> None:
    policy = _config(["a"]).build()
    policy.update("a", 1.0)
    restored = _config(["x", "y"]).restore(policy.snapshot())
    assert sorted(restored.arms) == ["x", "y"]
    assert all(s["pulls"] == 0 for s in restored.stats().values())


def test_restore_refuses_a_snapshot_of_another_algorithm() -> None:
    pc = _config(["a", "b"])
    data = pc.build().snapshot().replace(b'"thompson_sampling"', b'"ucb1"')
    with pytest.raises(PolicyError, match="ucb1"):
        pc.restore(data)


def test_a_file_that_is_not_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text("policies: [unclosed\n")
    with pytest.raises(PolicyConfigError, match="not valid YAML"):
        PoliciesConfig.load(path)
