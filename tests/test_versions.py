"""The policy registry without a broker (app/versions.py): versions the
learner registers, serving one back exactly (configuration and learned
state), the served configuration holding until the file's entry changes,
and what the registry's records add up to."""

from __future__ import annotations

import base64
import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.learner import Learner
from app.policies.config import PoliciesConfig
from app.policies.registry import algorithms
from app.records import Outcome, RegistryEvent
from app.settings import Settings
from app.stream.runtime import Runtime
from app.versions import (
    RegistryView,
    VersionError,
    check_status_move,
    config_diff,
    policy_of_key,
    record_key,
    serving_holds,
)

T0 = 1_700_000_000_000
ARMS = ("big", "small", "mid")


def doc(algorithm: str = "thompson_sampling", **hyper: Any) -> dict[str, Any]:
    return {
        "default_policy": "p",
        "policies": {
            "p": {
                "algorithm": algorithm,
                "arms": [{"name": a, "model": a} for a in ARMS],
                "seed": 3,
                **({"hyperparameters": hyper} if hyper else {}),
            }
        },
    }


def outcome(arm: str, reward: float, n: int) -> Outcome:
    return Outcome(
        request_id=f"r{n}",
        tenant_id="acme",
        policy_id="p",
        policy_version=0,
        arm=arm,
        available_arms=list(ARMS),
        propensity=0.5,
        explored=False,
        reward=reward,
        defaulted=False,
        decided_at=T0,
        outcome_at=T0 + n,
    )


def feed(learner: Learner, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        arm = ARMS[i % 3]
        assert learner.apply(outcome(arm, float(arm == "big"), i), 0, i) == "applied"


def stats(state: dict[str, Any]) -> dict[str, Any]:
    cls = algorithms()[state["algorithm"]]
    return cls.restore(base64.b64decode(state["policy"])).stats()


def serve_record(version: RegistryEvent) -> RegistryEvent:
    return RegistryEvent(
        event_id="serve-1",
        kind="serve",
        policy_id="p",
        created_at=T0,
        created_by="cli:test",
        version=version.version,
        config=version.config,
        state=version.state,
    )


def test_an_algorithm_switch_keeps_the_old_state_as_a_version_that_serves_again() -> None:
    ts = PoliciesConfig.from_dict(doc())
    learner = Learner(ts)
    learner.load("p", None, T0)
    feed(learner, 30)
    learned = stats(learner.state("p"))
    ucb = PoliciesConfig.from_dict(doc("ucb1"))
    [old] = learner.reconfigure(ucb, ucb, T0, "test")
    assert old.kind == "version" and old.status == "retired"
    assert old.config == ts.policies["p"].source and old.config_hash == ts.policies["p"].config_hash
    assert old.lineage is not None and old.lineage["updates"] == 30
    assert (old.lineage["first_outcome_at"], old.lineage["last_outcome_at"]) == (T0, T0 + 29)
    assert old.state is not None and stats(old.state) == learned
    feed(learner, 9, start=30)  # ucb1 learns a little
    before = learner.version("p")

    retired, champion = learner.serve("p", serve_record(old), T0, "test", "rolled back")
    # The ucb1 state is kept too, and the thompson state serves, exactly.
    assert retired.status == "retired" and retired.config == ucb.policies["p"].source
    assert retired.state is not None and retired.state["algorithm"] == "ucb1"
    assert retired.lineage is not None and retired.lineage["updates"] == 9
    assert retired.parent == old.version
    assert (champion.kind, champion.status, champion.version) == ("status", "champion", 31)
    assert (champion.lineage or {}).get("request") == "serve-1"
    state = learner.state("p")
    assert state["algorithm"] == "thompson_sampling" and stats(state) == learned
    assert state["updates"] == 30
    assert retired.version is not None
    assert learner.version("p") > retired.version > before, "snapshot versions keep rising"
    assert (champion.lineage or {}).get("snapshot_version") == learner.version("p")
    snap = learner.snapshot("p", T0)
    assert snap.algorithm == "thompson_sampling" and snap.serving is not None
    assert snap.serving["version"] == old.version
    assert snap.serving["file_hash"] == ucb.policies["p"].config_hash
    # Offsets stay: an outcome applied before the rollback is not applied again.
    assert learner.apply(outcome("big", 1.0, 5), 0, 5) == "redelivered"


def test_version_numbers_rise_and_are_never_reused() -> None:
    learner = Learner(PoliciesConfig.from_dict(doc()))
    learner.load("p", None, T0)
    numbers: list[int] = []
    for i in range(5):
        feed(learner, i, start=sum(range(i)))
        numbers.append(learner.register("p", T0, "test").version or 0)
    numbers.append(learner.register("p", T0, "test").version or 0)  # nothing learned between
    assert numbers == sorted(set(numbers)), numbers


def test_a_served_configuration_holds_until_the_files_entry_changes(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(doc("ucb1")))
    runtime = Runtime.for_settings(Settings(policies_path=path))
    seen: list[str] = []
    runtime.on_policies_changed.append(lambda c: seen.append(c.policies["p"].algorithm))
    served = doc()["policies"]["p"]
    file_hash = runtime.policies.policies["p"].config_hash
    serving = {"version": 7, "config": served, "config_hash": "x", "file_hash": file_hash}
    runtime.follow_serving("p", serving)
    assert runtime.policies.policies["p"].algorithm == "thompson_sampling"
    assert runtime.file_policies is not None
    assert runtime.file_policies.policies["p"].algorithm == "ucb1"
    runtime.follow_serving("p", dict(serving))  # the same again: no change
    assert seen == ["thompson_sampling"]
    # The entry is edited: the newer intent wins over the served version.
    edited = doc("ucb1", c=1.5)
    path.write_text(yaml.safe_dump(edited))
    os.utime(path, (1, 1))
    assert runtime.reload_policies()
    assert runtime.policies.policies["p"].algorithm == "ucb1"
    assert runtime.policies.policies["p"].hyperparameters["c"] == 1.5
    assert seen == ["thompson_sampling", "ucb1"]
    # A stale serving (made against the old entry) is not taken again.
    runtime.follow_serving("p", {**serving, "version": 8})
    assert runtime.policies.policies["p"].algorithm == "ucb1"


def test_serving_holds_only_against_the_entry_it_replaced() -> None:
    pc = PoliciesConfig.from_dict(doc()).policies["p"]
    assert serving_holds({"file_hash": pc.config_hash}, pc)
    assert not serving_holds({"file_hash": "other"}, pc)
    assert not serving_holds({"file_hash": pc.config_hash}, None)


def test_the_learner_keeps_serving_across_a_restart_and_yields_to_an_edit() -> None:
    ucb = PoliciesConfig.from_dict(doc("ucb1"))
    learner = Learner(ucb)
    learner.load("p", None, T0)
    feed(learner, 6)
    version = learner.register("p", T0, "test")
    version.config = doc()["policies"]["p"]  # a thompson version
    ts = PoliciesConfig.from_dict(doc()).policies["p"]
    version.state = {"algorithm": "thompson_sampling", "policy": "", "updates": 0}
    version.state["policy"] = base64.b64encode(ts.build().snapshot()).decode()
    learner.serve("p", serve_record(version), T0, "test", "r")
    stored = copy.deepcopy(learner.state("p"))

    again = Learner(ucb)  # a restart: the file still has the entry the version replaced
    assert again.load("p", stored, T0) is None
    assert again.state("p")["algorithm"] == "thompson_sampling"

    edited = PoliciesConfig.from_dict(doc("ucb1", c=2.0))
    later = Learner(edited)  # the entry was edited while the worker was down
    retired = later.load("p", stored, T0)
    assert retired is not None and retired.config == doc()["policies"]["p"]
    assert later.state("p")["algorithm"] == "ucb1" and later.state("p")["serving"] is None


def test_a_version_that_cannot_serve_is_refused_and_changes_nothing() -> None:
    learner = Learner(PoliciesConfig.from_dict(doc()))
    learner.load("p", None, T0)
    feed(learner, 3)
    before = learner.state("p")
    bad = learner.register("p", T0, "test")
    bad.config = {**(bad.config or {}), "algorithm": "no_such_algorithm"}
    with pytest.raises(VersionError, match="cannot be served"):
        learner.serve("p", serve_record(bad), T0, "test", "r")
    after = learner.state("p")
    assert stats(after) == stats(before) and after["algorithm"] == before["algorithm"]


def test_the_view_folds_versions_statuses_and_serves() -> None:
    def ev(kind: str, n: int, at: int, status: str | None = None) -> RegistryEvent:
        return RegistryEvent(
            event_id=f"{kind}{n}{at}",
            kind=kind,
            policy_id="p/with/slashes",
            created_at=at,
            created_by="t",
            version=n,
            status=status,
        )

    view = RegistryView(
        [
            ev("version", 10, 1, "retired"),
            ev("version", 20, 2, "development"),
            ev("status", 20, 3, "canary"),
            ev("serve", 20, 4),
            ev("status", 20, 5, "champion"),
        ]
    )
    reg = view.policy("p/with/slashes")
    assert [reg.get(10).status, reg.get(20).status] == ["retired", "champion"]
    champion = reg.champion()
    assert champion is not None and champion.number == 20
    with pytest.raises(VersionError, match="no version 30"):
        reg.get(30)
    with pytest.raises(VersionError, match="already champion"):
        check_status_move(reg.get(20), "champion")
    key = record_key(ev("version", 10, 1))
    assert key == b"p/with/slashes/version/10" and policy_of_key(key) == "p/with/slashes"
    assert policy_of_key(record_key(ev("serve", 20, 4))) == "p/with/slashes"


def test_config_diff_names_every_changed_leaf() -> None:
    a = {"algorithm": "ucb1", "hyperparameters": {"c": 1.0}, "seed": 1}
    b = {"algorithm": "ucb1", "hyperparameters": {"c": 2.0, "d": 3}, "fallback_arm": "x"}
    assert config_diff(a, b) == [
        {"path": "fallback_arm", "from": None, "to": "x"},
        {"path": "hyperparameters.c", "from": 1.0, "to": 2.0},
        {"path": "hyperparameters.d", "from": None, "to": 3},
        {"path": "seed", "from": 1, "to": None},
    ]
    assert config_diff(a, a) == []
