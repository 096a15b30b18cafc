"""The decider: batches of requests → valid decisions whose logged
propensities are the snapshot policy's probabilities, within the guardrails,
without touching the policy's state."""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

import numpy as np
import pytest

from app.decider import Decider
from app.ingress import decision_id
from app.learner import Learner
from app.policies import Policy
from app.policies.config import PoliciesConfig
from app.records import Decision, InvalidEvent, Outcome, PolicySnapshot, Request

T0 = 1_700_000_000_000
ARMS = ["big", "small", "mid", "tiny"]
MAX_EXPLORE_PRIORITY = 8


def config(arms: list[str] = ARMS) -> PoliciesConfig:
    return PoliciesConfig.from_dict(
        {
            "default_policy": "p",
            "policies": {
                "p": {
                    "algorithm": "thompson_sampling",
                    "hyperparameters": {"propensity_samples": 4000},
                    "guardrails": {"max_explore_priority": MAX_EXPLORE_PRIORITY},
                    "fallback_arm": "small",
                    "arms": [
                        {"name": a, "model": f"model-{a}", "parameters": {"temperature": 0.1}}
                        for a in arms
                    ],
                },
                "q": {
                    "algorithm": "thompson_sampling",
                    "hyperparameters": {"propensity_samples": 1000},
                    "arms": [{"name": "left", "model": "l"}, {"name": "right", "model": "r"}],
                },
            },
        }
    )


def request(i: int = 0, **kw: Any) -> Request:
    return Request(
        request_id=f"req-{i}", tenant_id=f"tenant-{i % 3}", task_type="qa", created_at=T0 - 10, **kw
    )


# (arm, reward) outcomes that leave unequal, non-degenerate probabilities.
HISTORY = [
    ("big", 1.0),
    ("big", 1.0),
    ("big", 1.0),
    ("big", 0.0),
    ("small", 1.0),
    ("small", 1.0),
    ("small", 0.0),
    ("small", 0.0),
    ("mid", 1.0),
    ("mid", 0.0),
    ("mid", 0.0),
    ("tiny", 0.0),
    ("tiny", 0.0),
    ("tiny", 0.0),
]


def snapshot_after(
    history: list[tuple[str, float]], cfg: PoliciesConfig | None = None, policy_id: str = "p"
) -> PolicySnapshot:
    """The snapshot the learner publishes after ``history``."""
    learner = Learner(cfg or config())
    learner.load(policy_id, None, T0)
    for offset, (arm, r) in enumerate(history):
        outcome = Outcome(
            request_id=f"h{offset}",
            tenant_id="t",
            policy_id=policy_id,
            policy_version=0,
            arm=arm,
            available_arms=ARMS,
            propensity=0.25,
            explored=False,
            reward=r,
            defaulted=False,
            decided_at=T0,
            outcome_at=T0,
        )
        assert learner.apply(outcome, 0, offset) == "applied"
    return learner.snapshot(policy_id, T0)


def reference(snap: PolicySnapshot) -> Policy:
    """The policy a snapshot holds, as the decider should see it."""
    return config().policies[snap.policy_id].restore(base64.b64decode(snap.state))


@pytest.fixture
def snap() -> PolicySnapshot:
    return snapshot_after(HISTORY)


@pytest.fixture
def decider(snap: PolicySnapshot) -> Decider:
    d = Decider(config(), seed=42)
    assert d.apply_snapshot(snap)
    return d


def decide_ok(decider: Decider, requests: list[Request]) -> list[dict[str, Any]]:
    out = decider.decide(requests, T0)
    assert len(out) == len(requests)
    assert all(isinstance(d, dict) for d in out), [d for d in out if not isinstance(d, dict)]
    return out  # type: ignore[return-value]


def test_decisions_are_valid_documents(decider: Decider, snap: PolicySnapshot) -> None:
    cfg = config()
    requests = [
        request(0),
        request(1, policy_id="p", priority=9),
        request(2, policy_id="q"),
        request(3, candidates=["tiny", "mid"]),
        request(4, priority=0),
    ]
    for req, doc in zip(requests, decide_ok(decider, requests), strict=True):
        d = Decision.from_dict(doc)
        assert d.to_dict() == doc
        assert d.request_id == req.request_id
        assert d.decision_id == decision_id(req.tenant_id, req.request_id)
        assert d.tenant_id == req.tenant_id
        assert d.requested_at == req.created_at and d.decided_at == T0
        pc = cfg.get(req.policy_id)
        assert pc is not None and d.policy_id == pc.policy_id
        assert d.policy_version == (snap.version if d.policy_id == "p" else 0)
        arm = pc.arm(d.arm)
        assert (d.model, d.parameters) == (arm.model, arm.parameters)
        assert set(d.scores) == set(d.available_arms) and d.arm in d.available_arms
        assert d.fallback is False and 0.0 < d.propensity <= 1.0


def test_before_any_snapshot_the_prior_decides() -> None:
    d = Decider(config(), seed=1)
    assert d.version("p") == 0
    doc = decide_ok(d, [request()])[0]
    assert doc["policy_version"] == 0
    prior = config().policies["p"].build()
    i = ARMS.index(doc["arm"])
    assert doc["propensity"] == pytest.approx(float(prior.probabilities(ARMS)[i]), abs=1e-12)


@pytest.mark.parametrize("candidates", [None, ["tiny", "big"], ["mid", "small", "tiny"]])
def test_logged_propensity_is_the_snapshot_policys(
    decider: Decider, snap: PolicySnapshot, candidates: list[str] | None
) -> None:
    ref = reference(snap)
    available = candidates or ARMS
    probs = ref.probabilities(available)
    greedy = available[int(np.argmax(ref.scores(available)))]
    docs = decide_ok(decider, [request(i, candidates=candidates) for i in range(400)])
    for doc in docs:
        assert doc["available_arms"] == available
        i = available.index(doc["arm"])
        assert doc["propensity"] == pytest.approx(float(probs[i]), abs=1e-12)
        assert doc["explored"] is (doc["arm"] != greedy)
        assert doc["policy_version"] == snap.version == len(HISTORY)
    assert any(d["explored"] for d in docs)


def _chi_square(counts: Counter[str], probs: np.ndarray, names: list[str]) -> float:
    n = sum(counts.values())
    expected = probs * n
    observed = np.array([counts[a] for a in names], dtype=float)
    assert np.all(observed[expected == 0] == 0), "an arm of probability 0 was chosen"
    live = expected > 0
    return float((((observed - expected) ** 2)[live] / expected[live]).sum())


def test_arm_frequencies_match_the_propensities(decider: Decider, snap: PolicySnapshot) -> None:
    probs = reference(snap).probabilities(ARMS)
    assert probs.min() > 0.01, probs  # the check below needs every arm in play
    counts: Counter[str] = Counter()
    for batch in range(40):  # 20k requests, in agent-sized batches
        docs = decide_ok(decider, [request(batch * 500 + i) for i in range(500)])
        counts.update(d["arm"] for d in docs)
    # 99.99th percentile of chi-square with 3 degrees of freedom is 21.1.
    assert _chi_square(counts, probs, ARMS) < 21.1, (counts, probs)


def test_arm_frequencies_match_for_a_candidate_subset(
    decider: Decider, snap: PolicySnapshot
) -> None:
    names = ["small", "mid", "tiny"]
    probs = reference(snap).probabilities(names)
    docs = decide_ok(decider, [request(i, candidates=names) for i in range(20_000)])
    counts = Counter(d["arm"] for d in docs)
    assert set(counts) <= set(names)
    assert _chi_square(counts, probs, names) < 18.4  # 99.99th percentile, 2 d.o.f.


def test_candidates_are_honoured(decider: Decider) -> None:
    for candidates in (["mid"], ["tiny", "small"], ["small", "big", "tiny"]):
        docs = decide_ok(decider, [request(i, candidates=candidates) for i in range(300)])
        assert {d["arm"] for d in docs} <= set(candidates)
        assert all(d["available_arms"] == candidates for d in docs)
        assert all(set(d["scores"]) == set(candidates) for d in docs)
    only = decide_ok(decider, [request(candidates=["mid"])])[0]
    assert (only["arm"], only["propensity"], only["explored"]) == ("mid", 1.0, False)


def test_unknown_policy_and_unknown_arm_are_invalid_events(decider: Decider) -> None:
    requests = [
        request(0, policy_id="nope"),
        request(1),
        request(2, candidates=["big", "gpt-9"]),
        request(3, policy_id="q"),
    ]
    out = decider.decide(requests, T0)
    assert isinstance(out[0], InvalidEvent) and out[0].code == "unknown_policy"
    assert "'nope'" in out[0].detail
    assert isinstance(out[2], InvalidEvent) and out[2].code == "unknown_arm"
    assert "gpt-9" in out[2].detail
    # The rest of the batch is decided.
    assert isinstance(out[1], dict) and isinstance(out[3], dict)
    assert out[3]["arm"] in ("left", "right")


@pytest.mark.parametrize("priority", [MAX_EXPLORE_PRIORITY, 9, 10])
def test_high_priority_gets_the_greedy_arm(
    decider: Decider, snap: PolicySnapshot, priority: int
) -> None:
    ref = reference(snap)
    for candidates in (None, ["tiny", "mid", "small"]):
        available = candidates or ARMS
        greedy = available[int(np.argmax(ref.scores(available)))]
        docs = decide_ok(
            decider, [request(i, priority=priority, candidates=candidates) for i in range(200)]
        )
        for d in docs:
            assert (d["arm"], d["propensity"], d["explored"]) == (greedy, 1.0, False)
            Decision.from_dict(d)


def test_below_the_guardrail_the_policy_explores(decider: Decider) -> None:
    docs = decide_ok(decider, [request(i, priority=MAX_EXPLORE_PRIORITY - 1) for i in range(300)])
    assert len({d["arm"] for d in docs}) > 1
    assert any(d["explored"] for d in docs) and all(d["propensity"] < 1.0 for d in docs)


def test_policy_without_guardrail_explores_at_top_priority() -> None:
    d = Decider(config(), seed=3)
    assert d.apply_snapshot(snapshot_after([("left", 1.0), ("right", 0.0)] * 2, policy_id="q"))
    docs = decide_ok(d, [request(i, policy_id="q", priority=10) for i in range(400)])
    assert {x["arm"] for x in docs} == {"left", "right"}


def test_mixed_batch_keeps_each_request_in_its_group(decider: Decider) -> None:
    requests = [
        request(i, priority=10 if i % 2 else 1, candidates=["tiny", "mid"] if i % 3 == 0 else None)
        for i in range(600)
    ]
    docs = decide_ok(decider, requests)
    for req, d in zip(requests, docs, strict=True):
        assert d["request_id"] == req.request_id
        assert d["available_arms"] == (req.candidates or ARMS)
        if req.priority >= MAX_EXPLORE_PRIORITY:
            assert d["propensity"] == 1.0 and not d["explored"]


def test_newer_snapshot_is_applied_older_and_equal_ignored(snap: PolicySnapshot) -> None:
    d = Decider(config(), seed=0)
    assert d.apply_snapshot(snap) is True and d.version("p") == len(HISTORY)
    # An older snapshot of a very different state must change nothing.
    older = snapshot_after([("tiny", 1.0)] * 5)
    assert older.version < snap.version
    assert d.apply_snapshot(older) is False
    assert d.apply_snapshot(snap) is False  # equal version
    assert d.version("p") == snap.version
    probs = reference(snap).probabilities(ARMS)
    for doc in decide_ok(d, [request(i) for i in range(100)]):
        assert doc["policy_version"] == snap.version
        assert doc["propensity"] == pytest.approx(float(probs[ARMS.index(doc["arm"])]))
    newer = snapshot_after([*HISTORY, ("tiny", 1.0), ("tiny", 1.0)])
    assert d.apply_snapshot(newer) is True and d.version("p") == snap.version + 2
    newer_probs = reference(newer).probabilities(ARMS)
    doc = decide_ok(d, [request()])[0]
    assert doc["policy_version"] == newer.version
    assert doc["propensity"] == pytest.approx(float(newer_probs[ARMS.index(doc["arm"])]))


def test_snapshot_of_another_algorithm_or_policy_is_ignored(snap: PolicySnapshot) -> None:
    d = Decider(config(), seed=0)
    foreign = PolicySnapshot(**{**snap.to_dict(), "algorithm": "ucb1", "version": 99})
    assert d.apply_snapshot(foreign) is False and d.version("p") == 0
    stranger = PolicySnapshot(**{**snap.to_dict(), "policy_id": "not-configured"})
    assert d.apply_snapshot(stranger) is False
    # The foreign snapshot did not advance the version: the learner's next one applies.
    assert d.apply_snapshot(snap) is True


def test_snapshot_with_other_arms_is_reconciled_with_the_config() -> None:
    old = config(["big", "small", "retired"])
    snap = snapshot_after([("retired", 1.0), ("big", 1.0)], cfg=old)
    d = Decider(config(), seed=0)
    assert d.apply_snapshot(snap)
    docs = decide_ok(d, [request(i) for i in range(300)])
    assert {x["arm"] for x in docs} <= set(ARMS)
    assert all(x["available_arms"] == ARMS for x in docs)


def test_deciding_never_changes_the_policy_state(decider: Decider) -> None:
    policy = decider._live["p"].policy  # the state the learner's snapshot gave it
    before = policy.snapshot()
    decide_ok(
        decider,
        [
            request(i, priority=i % 11, candidates=[["big", "mid"], None][i % 2])
            for i in range(2000)
        ],
    )
    decider.fallback(request(), T0)
    assert policy.snapshot() == before
    assert decider._live["p"].policy is policy


def test_same_seed_same_decisions_other_seed_differs(snap: PolicySnapshot) -> None:
    def arms(seed: int) -> list[str]:
        d = Decider(config(), seed=seed)
        d.apply_snapshot(snap)
        return [x["arm"] for x in decide_ok(d, [request(i) for i in range(200)])]

    assert arms(7) == arms(7)
    assert arms(7) != arms(8)


def test_fallback_is_the_configured_arm_flagged(decider: Decider) -> None:
    doc = decider.fallback(request(5), T0 + 3)
    d = Decision.from_dict(doc)
    assert (d.arm, d.model) == ("small", "model-small")
    assert d.fallback is True and d.propensity == 1.0 and d.explored is False
    assert d.available_arms == ["small"] and d.policy_id == "p"
    assert d.decided_at == T0 + 3 and d.request_id == "req-5"
    q = Decision.from_dict(decider.fallback(request(6, policy_id="q"), T0))
    assert (q.arm, q.policy_id, q.fallback) == ("left", "q", True)  # first arm by default
    with pytest.raises(InvalidEvent) as info:
        decider.fallback(request(7, policy_id="nope"), T0)
    assert info.value.code == "unknown_policy"


def test_an_arm_of_probability_zero_is_never_chosen() -> None:
    snap = snapshot_after([("tiny", 0.0), ("big", 1.0)] * 150)
    assert reference(snap).probabilities(["tiny", "big"]).tolist() == [0.0, 1.0]
    d = Decider(config(), seed=0)
    assert d.apply_snapshot(snap)

    class Zeros:  # the generator's smallest draws
        def random(self, n: int) -> np.ndarray:
            return np.zeros(n)

    d._rng = Zeros()  # type: ignore[assignment]
    docs = decide_ok(d, [request(i, candidates=["tiny", "big"]) for i in range(10)])
    assert {(x["arm"], x["propensity"]) for x in docs} == {("big", 1.0)}


def test_contextual_policy_decides_from_the_request_vector_and_learns_from_it() -> None:
    """LinUCB end to end without a broker: decisions log the feature vector,
    outcomes carry it back, the learner's snapshot changes the decisions."""
    from app.features import FEATURE_NAMES, RequestVectorizer
    from app.learner import Learner
    from app.records import Outcome

    cfg = PoliciesConfig.from_dict(
        {
            "policies": {
                "ctx": {
                    "algorithm": "lin_ucb",
                    "hyperparameters": {"alpha": 0.1},
                    "arms": [{"name": "coder", "model": "m1"}, {"name": "writer", "model": "m2"}],
                }
            }
        }
    )
    decider, learner = Decider(cfg, seed=3), Learner(cfg)
    learner.load("ctx", None, now=0)
    vec = RequestVectorizer()

    def requests(n: int, offset: int = 0) -> list[Request]:
        tasks = ["code", "creative"]
        return [
            Request(
                request_id=f"r{offset + i}",
                tenant_id="t",
                task_type=tasks[i % 2],
                created_at=1_764_000_000_000 + i,
                input_tokens=100 + i,
            )
            for i in range(n)
        ]

    first = decider.decide(requests(400), now_ms=1)
    for i, doc in enumerate(first):
        assert isinstance(doc, dict) and len(doc["features"]) == len(FEATURE_NAMES)
        Decision.from_dict(doc)
        # "coder" is right for code, "writer" for creative.
        good = {"code": "coder", "creative": "writer"}[requests(400)[i].task_type]
        reward = 1.0 if doc["arm"] == good else 0.0
        outcome = Outcome(
            request_id=doc["request_id"],
            tenant_id="t",
            policy_id="ctx",
            policy_version=0,
            arm=doc["arm"],
            available_arms=doc["available_arms"],
            propensity=doc["propensity"],
            explored=doc["explored"],
            reward=reward,
            defaulted=False,
            decided_at=1,
            outcome_at=2,
            features=doc["features"],
        )
        assert learner.apply(outcome, partition=0, offset=i) == "applied"
    assert decider.apply_snapshot(learner.snapshot("ctx", now=3))
    later = decider.decide(requests(200, offset=1000), now_ms=4)
    right = sum(
        d["arm"] == {"code": "coder", "creative": "writer"}[r.task_type]
        for d, r in zip(later, requests(200, offset=1000), strict=True)
    )
    assert right >= 190, right
    assert later[0]["features"] == vec.row(requests(1, offset=1000)[0])


def test_guardrails_act_in_the_decider_with_estimates_from_snapshots() -> None:
    from app.learner import Learner
    from app.records import Outcome

    cfg = PoliciesConfig.from_dict(
        {
            "policies": {
                "g": {
                    "algorithm": "thompson_sampling",
                    "hyperparameters": {"propensity_samples": 1000},
                    "guardrails": {"min_pulls": 2},
                    "arms": [{"name": "cheap", "model": "m1"}, {"name": "pricey", "model": "m2"}],
                }
            }
        }
    )
    decider, learner = Decider(cfg, seed=1), Learner(cfg)
    learner.load("g", None, now=0)
    req = Request(request_id="w0", tenant_id="t", task_type="qa", created_at=0)
    warm = decider.decide([req], now_ms=1)[0]
    assert isinstance(warm, dict) and warm["propensity"] == 0.5, "warm-up: uniform, exact"
    for n, (arm, cost) in enumerate([("cheap", 0.001), ("pricey", 0.05)] * 2):
        learner.apply(
            Outcome(
                request_id=f"o{n}",
                tenant_id="t",
                policy_id="g",
                policy_version=0,
                arm=arm,
                available_arms=["cheap", "pricey"],
                propensity=0.5,
                explored=False,
                reward=0.5,
                defaulted=False,
                decided_at=0,
                outcome_at=1,
                components={"cost_usd": cost},
            ),
            0,
            n,
        )
    assert decider.apply_snapshot(learner.snapshot("g", now=2))
    limited = Request(
        request_id="c1",
        tenant_id="t",
        task_type="qa",
        created_at=0,
        metadata={"max_cost_usd": 0.01},
    )
    doc = decider.decide([limited], now_ms=3)[0]
    assert isinstance(doc, dict)
    assert doc["arm"] == "cheap" and doc["available_arms"] == ["cheap"]
    assert doc["propensity"] == 1.0
    Decision.from_dict(doc)
    impossible = Request(
        request_id="c2",
        tenant_id="t",
        task_type="qa",
        created_at=0,
        metadata={"max_cost_usd": 0.0001},
    )
    flagged = decider.decide([impossible], now_ms=4)[0]
    assert isinstance(flagged, dict) and flagged["arm"] == "cheap" and flagged["fallback"]
    assert flagged["fallback_reason"] == "constraints"
