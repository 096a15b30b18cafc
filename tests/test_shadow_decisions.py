"""Shadow decisions and apprentice mode (app/shadow.py, the learner's
shadows): each outcome a shadow sees yields its own decision on the same
context, drawn with exactly the propensity it logs; an apprentice imitates
the serving policy until its agreement reaches its level, then learns from
the rewards, and keeps its place across restarts."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from app.learner import Learner, Shadow
from app.policies import Softmax, ThompsonSampling
from app.policies.base import Policy
from app.policies.config import PoliciesConfig
from app.records import Outcome, RegistryEvent, ShadowDecision
from app.shadow import Agreement, shadow_draw
from app.versions import VersionError
from tests.test_contracts import SCHEMA_DIR

T0 = 1_700_000_000_000
ARMS = ["a", "b", "c"]


def serving_config() -> PoliciesConfig:
    return PoliciesConfig.from_dict(
        {
            "policies": {
                "p": {
                    "algorithm": "epsilon_greedy",
                    "hyperparameters": {"epsilon": 1.0},
                    "arms": [{"name": a, "model": a} for a in ARMS],
                }
            }
        }
    )


def shadow_record(
    policy: Policy, number: int, hyperparameters: dict[str, Any] | None = None, **lineage: Any
) -> RegistryEvent:
    return RegistryEvent(
        event_id=f"shadow-{number}",
        kind="status",
        policy_id="p",
        created_at=T0,
        created_by="test",
        version=number,
        status="shadow",
        config={
            "algorithm": policy.algorithm,
            "hyperparameters": hyperparameters or {},
            "arms": [{"name": a, "model": a} for a in ARMS],
        },
        state={
            "algorithm": policy.algorithm,
            "policy": base64.b64encode(policy.snapshot()).decode(),
            "updates": 0,
        },
        lineage=lineage or None,
    )


def outcome(i: int, arm: str, reward: float, propensity: float = 1 / 3) -> Outcome:
    return Outcome(
        request_id=f"r{i}",
        tenant_id="acme",
        policy_id="p",
        policy_version=i,
        arm=arm,
        available_arms=ARMS,
        propensity=propensity,
        explored=True,
        reward=reward,
        defaulted=False,
        decided_at=T0 + i,
        outcome_at=T0 + i,
    )


def learner_with(
    policy: Policy, hyperparameters: dict[str, Any] | None = None, **lineage: Any
) -> Learner:
    learner = Learner(serving_config())
    learner.load("p", None, T0)
    learner.shadow("p", shadow_record(policy, 7, hyperparameters, **lineage), T0)
    return learner


def test_every_outcome_yields_one_shadow_decision_of_the_schemas_shape() -> None:
    learner = learner_with(ThompsonSampling(ARMS, seed=1))
    for i in range(30):
        assert learner.apply(outcome(i, ARMS[i % 3], 0.5), 0, i) == "applied"
    decided, graduated = learner.take_shadow_output()
    assert graduated == [] and learner.take_shadow_output() == ([], [])
    assert [d.request_id for d in decided] == [f"r{i}" for i in range(30)]
    schema = Draft202012Validator(json.loads((SCHEMA_DIR / "shadow_decision.v1.json").read_text()))
    for i, d in enumerate(decided):
        doc = d.to_dict()
        schema.validate(doc)
        assert ShadowDecision.from_dict(doc) == d
        assert (d.policy_id, d.shadow_version, d.policy_version) == ("p", 7, i)
        assert d.served_arm == ARMS[i % 3] and d.served_propensity == pytest.approx(1 / 3)
        assert d.available_arms == ARMS and d.arm in ARMS and 0 < d.propensity <= 1
        assert d.agreed == (d.arm == d.served_arm) and not d.apprentice
        assert d.decided_at == T0 + i


def test_the_shadows_choice_comes_with_exactly_its_propensity() -> None:
    """Many requests on one shadow state and one context: each arm is chosen
    as often as the propensity the decisions log for it."""
    trained = Softmax(ARMS, seed=3, temperature=0.2)
    for arm, r in [("a", 0.9), ("b", 0.6), ("c", 0.3)] * 5:
        trained.update(arm, r)
    learner = learner_with(trained, {"temperature": 0.2})
    shadow = Shadow.from_dict("p", learner.state("p")["shadows"]["7"])
    frozen = shadow.policy.snapshot()
    n, counts, logged = 20_000, dict.fromkeys(ARMS, 0), dict[str, float]()
    for i in range(n):
        shadow.policy = Softmax.restore(frozen)  # the same state for every request
        d = shadow.observe(outcome(i, "a", 0.5))
        assert d is not None
        counts[d.arm] += 1
        logged.setdefault(d.arm, d.propensity)
        assert logged[d.arm] == d.propensity
    assert set(logged) == set(ARMS)
    expected = dict(zip(ARMS, trained.probabilities(ARMS).tolist(), strict=True))
    assert logged == pytest.approx(expected, abs=1e-12)
    for arm, p in logged.items():
        sd = math.sqrt(p * (1 - p) / n)
        assert abs(counts[arm] / n - p) < 4 * sd, (arm, counts[arm] / n, p)


def test_the_draw_is_reproducible_and_never_picks_an_impossible_arm() -> None:
    probs = [0.0, 0.25, 0.0, 0.75, 0.0]
    picks = [shadow_draw(probs, "p/1", f"r{i}") for i in range(5_000)]
    assert picks == [shadow_draw(probs, "p/1", f"r{i}") for i in range(5_000)]
    assert set(picks) == {1, 3}
    assert abs(picks.count(1) / 5_000 - 0.25) < 0.03
    assert picks != [shadow_draw(probs, "p/2", f"r{i}") for i in range(5_000)]


def test_an_apprentice_imitates_until_its_agreement_reaches_the_level() -> None:
    """The serving policy always serves ``a``, whose real reward is 0: the
    apprentice learns to choose ``a`` anyway, stops imitating once it agrees
    on 90% of its last 50 outcomes, and then learns from the rewards, which
    turn it away from ``a``."""
    learner = learner_with(ThompsonSampling(ARMS, seed=2), apprentice=0.9, apprentice_outcomes=50)
    ended_at = None
    flags = []
    for i in range(2_000):
        learner.apply(outcome(i, "a", 0.0, propensity=1.0), 0, i)
        decided, graduated = learner.take_shadow_output()
        flags.append(decided[0].apprentice)
        if graduated:
            assert ended_at is None
            [shadow] = graduated
            ended_at = i
            assert shadow.version == 7 and shadow.agreement.graduated_at == T0 + i
            assert shadow.agreement.recent_rate() >= 0.9
    assert ended_at is not None and 49 <= ended_at < 1_000
    assert all(flags[: ended_at + 1]) and not any(flags[ended_at + 1 :])
    summary = learner.shadow_values("p")[7]
    assert summary["apprentice"] == 0.9 and summary["imitating"] is False
    # Learning from the real rewards (a: 0), it no longer agrees.
    assert summary["agreement"] < 0.5


def test_an_apprentice_of_a_policy_it_cannot_match_keeps_imitating() -> None:
    learner = learner_with(ThompsonSampling(ARMS, seed=4), apprentice=0.9, apprentice_outcomes=50)
    for i in range(600):  # a uniform serving policy: agreement stays near 1/3
        learner.apply(outcome(i, ARMS[(i * 7) % 3], 1.0), 0, i)
    decided, graduated = learner.take_shadow_output()
    assert graduated == [] and all(d.apprentice for d in decided)
    summary = learner.shadow_values("p")[7]
    assert summary["imitating"] is True and summary["agreement"] < 0.6


def test_apprenticeship_survives_a_restart() -> None:
    learner = learner_with(ThompsonSampling(ARMS, seed=5), apprentice=0.9, apprentice_outcomes=50)
    for i in range(30):
        learner.apply(outcome(i, "a", 0.0, propensity=1.0), 0, i)
    restarted = Learner(serving_config())
    restarted.load("p", learner.state("p"), T0)
    assert restarted.shadow_values("p") == learner.shadow_values("p")
    assert restarted.shadow_values("p")[7]["imitating"] is True
    learner.take_shadow_output()
    for i in range(30, 400):  # both go on identically: same state, same draws
        learner.apply(outcome(i, "a", 0.0, propensity=1.0), 0, i)
        restarted.apply(outcome(i, "a", 0.0, propensity=1.0), 0, i)
    (mine, ended), (theirs, also_ended) = (
        restarted.take_shadow_output(),
        learner.take_shadow_output(),
    )
    assert mine == theirs and len(mine) == 370
    assert [s.version for s in ended] == [s.version for s in also_ended] == [7]
    assert restarted.state("p")["shadows"] == learner.state("p")["shadows"]


def test_a_bad_apprentice_level_is_refused() -> None:
    learner = Learner(serving_config())
    learner.load("p", None, T0)
    for lineage in (
        {"apprentice": 0},
        {"apprentice": 1.5},
        {"apprentice": "x"},
        {"apprentice": True},
    ):
        with pytest.raises(VersionError, match="apprentice"):
            learner.shadow("p", shadow_record(ThompsonSampling(ARMS), 3, **lineage), T0)
    assert learner.shadow_values("p") == {}


def test_agreement_round_trips_through_json() -> None:
    a = Agreement(level=0.8, window=300)
    for i in range(700):
        a.add(i % 4 != 0, i)
    back = Agreement.from_dict(orjson.loads(orjson.dumps(a.to_dict())))
    assert back == a and back.recent_rate() == pytest.approx(0.75, abs=0.01)
