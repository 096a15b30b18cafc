"""A promoted rollout in the registry (app/versions.py ``serve_records``,
the learner's ``serve``): the challenger's configuration and learned state
become a version of the experiment's policy and its champion, through the
same serve request ``llmopt registry promote --to champion`` writes, and the
registry's history says which version served from when."""

from __future__ import annotations

import base64
from typing import Any

from agents.evaluate_experiments import _version_state
from app.learner import Learner
from app.policies import ThompsonSampling
from app.policies.config import PoliciesConfig
from app.records import Outcome, PolicySnapshot, RegistryEvent
from app.versions import RegistryView, serve_records

T0 = 1_700_000_000_000
ARMS = ["big", "small", "mid"]


def config() -> PoliciesConfig:
    arms = [{"name": a, "model": a} for a in ARMS]
    return PoliciesConfig.from_dict(
        {
            "default_policy": "p",
            "policies": {
                "p": {"algorithm": "ucb1", "arms": arms},
                "challenger": {"algorithm": "thompson_sampling", "arms": arms, "seed": 5},
            },
        }
    )


def outcome(policy_id: str, arm: str, reward: float, n: int) -> Outcome:
    return Outcome(
        request_id=f"r{n}",
        tenant_id="acme",
        policy_id=policy_id,
        policy_version=0,
        arm=arm,
        available_arms=ARMS,
        propensity=0.5,
        explored=False,
        reward=reward,
        defaulted=False,
        decided_at=T0,
        outcome_at=T0 + n,
    )


def stats(policy_b64: str) -> dict[str, Any]:
    return ThompsonSampling.restore(base64.b64decode(policy_b64)).stats()


def test_a_promoted_challenger_becomes_a_version_and_the_champion() -> None:
    policies = config()
    learner = Learner(policies)
    for pid in ("p", "challenger"):
        learner.load(pid, None, T0)
    for i in range(40):
        arm = ARMS[i % 3]
        learner.apply(outcome("p", arm, 0.5, i), 0, i)
        learner.apply(outcome("challenger", arm, float(arm == "big"), i), 1, i)
    snap = PolicySnapshot.loads(learner.snapshot("challenger", T0).dumps())
    challenger = policies.policies["challenger"]

    # The registry already says version 7 served p.
    earlier = [
        RegistryEvent("v7", "version", "p", T0 - 9, "learner", version=7, status="retired"),
        RegistryEvent("s7", "serve", "p", T0 - 8, "cli:ops", version=7),
    ]
    view = RegistryView(earlier)
    written = serve_records(
        view.policies["p"],
        None,
        "evaluator@host",
        T0,
        "promoted by rollout r1",
        policy_id="p",
        config=dict(challenger.source),
        config_hash=challenger.config_hash,
        state=_version_state(challenger, snap),
        lineage={"experiment_id": "r1", "challenger_policy": "challenger"},
    )
    serve, retire = written
    assert (serve.kind, serve.version, serve.policy_id) == ("serve", None, "p")
    assert (retire.kind, retire.status, retire.version) == ("status", "retired", 7)
    assert RegistryEvent.loads(serve.dumps()) == serve

    records = learner.serve("p", serve, T0, "learner@w", serve.reason or "")
    retired, made, champion = records
    assert retired.kind == "version" and retired.status == "retired"
    assert retired.state is not None and retired.state["algorithm"] == "ucb1"
    assert made.kind == "version" and made.config == dict(challenger.source)
    assert made.lineage is not None and made.lineage["experiment_id"] == "r1"
    assert made.lineage["request"] == serve.event_id
    assert made.version is not None and retired.version is not None
    assert made.version > retired.version
    assert (champion.status, champion.version) == ("champion", made.version)
    # p now decides from the challenger's learned state.
    state = learner.state("p")
    assert state["algorithm"] == "thompson_sampling" and state["updates"] == 40
    assert stats(state["policy"]) == stats(snap.state)
    served = learner.snapshot("p", T0)
    assert served.serving is not None and served.serving["version"] == made.version

    # The history: version 7 served, then the challenger's version from the promotion on.
    view = RegistryView([*earlier, *written, *records])
    reg = view.policies["p"]
    now_serving = reg.champion()
    assert now_serving is not None and now_serving.number == made.version
    assert [(at, n) for at, n, _, _ in reg.served] == [(T0 - 8, 7), (T0, made.version)]
    assert reg.get(7).status == "retired" and reg.get(made.version).status == "champion"


def test_a_challenger_without_a_snapshot_starts_from_its_prior() -> None:
    challenger = config().policies["challenger"]
    state = _version_state(challenger, None)
    assert state["algorithm"] == "thompson_sampling" and state["updates"] == 0
    assert base64.b64decode(state["policy"]) == challenger.build().snapshot()


def test_serving_a_registered_version_retires_the_previous_champion() -> None:
    """What ``llmopt registry rollback`` and ``promote --to champion`` write."""
    state = {"algorithm": "ucb1", "policy": "AAAA", "updates": 3}
    v = [
        RegistryEvent(
            f"v{n}", "version", "p", T0 + n, "learner", version=n, status="retired",
            config={"algorithm": "ucb1"}, config_hash=f"h{n}", state=state,
        )
        for n in (3, 9)
    ]  # fmt: skip
    view = RegistryView([*v, RegistryEvent("s9", "serve", "p", T0 + 10, "cli:ops", version=9)])
    reg = view.policies["p"]
    serve, retire = serve_records(reg, reg.get(3), "cli:me", T0 + 20, "rolled back")
    assert (serve.kind, serve.version, serve.config_hash, serve.state) == ("serve", 3, "h3", state)
    assert (serve.reason, serve.created_by, serve.lineage) == ("rolled back", "cli:me", None)
    assert (retire.status, retire.version, retire.reason) == ("retired", 9, "rolled back")
    [again] = serve_records(reg, reg.get(9), "cli:me", T0 + 20, "served again")
    assert again.kind == "serve" and again.version == 9
