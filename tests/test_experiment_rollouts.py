"""Experiments on live traffic, without a broker: the definition's checks,
the sticky assignment of requests to variants (in the decider too), the
rollout gate's stages, rollbacks and promotions with a known truth, and the
evaluator carrying on from its own events after a restart."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from app.decider import Decider
from app.experiments import evaluator as evaluator_module
from app.experiments.definition import DefinitionError, ExperimentDefinition
from app.experiments.evaluator import Evaluator
from app.experiments.events import created_event, record_key, stopped_event
from app.experiments.live import ExperimentLog
from app.experiments.rollout import next_step
from app.join import Joiner
from app.policies.config import PoliciesConfig
from app.records import Decision, ExperimentEvent, InvalidEvent, Outcome, Request, Reward

T0 = 1_700_000_000_000
ALPHA = 0.05


def policies() -> PoliciesConfig:
    arms = [{"name": a, "model": f"m-{a}"} for a in ("big", "small", "mid")]
    return PoliciesConfig.from_dict(
        {
            "default_policy": "p",
            "policies": {
                "p": {"algorithm": "thompson_sampling", "arms": arms},
                "q": {"algorithm": "ucb1", "arms": arms},
                "other": {"algorithm": "ucb1", "arms": arms},
            },
        }
    )


def rollout(**over: Any) -> ExperimentDefinition:
    doc = {
        "id": "r1",
        "policy": "p",
        "variants": [{"name": "champion", "policy": "p"}, {"name": "challenger", "arm": "small"}],
        "stages": [5, 25, 50, 100],
        "min_samples": 50,
        "tuning_n": 20_000,
    } | over
    return ExperimentDefinition.from_mapping(doc)


def experiment(**over: Any) -> ExperimentDefinition:
    doc = {
        "id": "ab1",
        "policy": "p",
        "variants": [{"name": "A", "policy": "p"}, {"name": "B", "policy": "q"}],
        "shares": {"A": 0.7, "B": 0.3},
        "split_key": "user_id",
    } | over
    return ExperimentDefinition.from_mapping(doc)


def log_of(*defs: ExperimentDefinition) -> ExperimentLog:
    book = ExperimentLog()
    for i, d in enumerate(defs):
        book.apply(created_event(d, "test", T0 + i))
    return book


# -- the definition --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"stages": [5, 5, 100]}, "must rise"),
        ({"stages": [5, 50]}, "must end at 100"),
        ({"stages": [100]}, "needs a stage below 100"),
        ({"stages": [5, 100], "shares": {"champion": 1}}, "not both"),
        ({"variants": [{"name": "a", "policy": "p"}]}, "two or more"),
        ({"variants": [{"name": "a", "policy": "p"}, {"name": "a", "arm": "x"}]}, "distinct"),
        (
            {"variants": [{"name": "a", "policy": "p", "arm": "x"}, {"name": "b", "arm": "x"}]},
            "either a policy or a fixed arm",
        ),
        ({"id": "a/b"}, "no '/'"),
        ({"alpha": 0.7}, "alpha: must be in"),
        ({"metrics": {"reward": {"margin": 0.1, "relatve": True}}}, "did you mean 'relative'"),
        ({"metrics": {"quality": {}}}, "unknown metric 'quality'"),
    ],
)
def test_a_bad_definition_is_refused_naming_what_is_wrong(
    patch: dict[str, Any], message: str
) -> None:
    with pytest.raises(DefinitionError, match=message):
        rollout(**patch)


def test_a_rollout_has_two_variants_and_shares_must_add_up() -> None:
    three = [{"name": n, "policy": "p"} for n in "abc"]
    with pytest.raises(DefinitionError, match="exactly two variants"):
        rollout(variants=three)
    with pytest.raises(DefinitionError, match="add up to 1"):
        experiment(shares={"A": 0.5, "B": 0.6})


def test_the_definition_is_checked_against_the_policies_file() -> None:
    with pytest.raises(DefinitionError, match="unknown policy 'nope'"):
        rollout(policy="nope").check_policies(policies())
    bad_arm = [{"name": "champion", "policy": "p"}, {"name": "challenger", "arm": "huge"}]
    with pytest.raises(DefinitionError, match="'huge' is not an arm of policy 'p'"):
        rollout(variants=bad_arm).check_policies(policies())
    rollout().check_policies(policies())


def test_a_definition_round_trips_through_its_created_event() -> None:
    for d in (rollout(), experiment()):
        ev = ExperimentEvent.from_dict(created_event(d, "test", T0).to_dict())
        assert ExperimentDefinition.from_mapping(ev.definition) == d
        assert record_key(ev) == f"{d.experiment_id}/created".encode()


# -- assignment ------------------------------------------------------------------------------


def test_assignment_is_sticky_across_readers_and_calls() -> None:
    a, b = log_of(experiment()), log_of(experiment())
    users = [f"user-{i}" for i in range(2_000)]
    first = [a.assign("p", "t", {"user_id": u})[1].name for u in users]  # type: ignore[index]
    again = [b.assign("p", "t", {"user_id": u})[1].name for u in users]  # type: ignore[index]
    assert first == again
    assert {a.assign("p", "other-tenant", {"user_id": u})[1].name for u in users[:1]} == {first[0]}  # type: ignore[index]


@pytest.mark.parametrize("seed", range(5))
def test_shares_are_honoured_within_sampling_error(seed: int) -> None:
    variants = [
        {"name": "A", "policy": "p"},
        {"name": "B", "policy": "q"},
        {"name": "C", "arm": "big"},
    ]
    d = experiment(id=f"ab-{seed}", shares={"A": 0.5, "B": 0.3, "C": 0.2}, variants=variants)
    book = log_of(d)
    n = 20_000
    got = [book.assign("p", "t", {"user_id": f"u{seed}-{i}"})[1].name for i in range(n)]  # type: ignore[index]
    for name, share in {"A": 0.5, "B": 0.3, "C": 0.2}.items():
        sd = math.sqrt(share * (1 - share) / n)
        assert abs(got.count(name) / n - share) < 4 * sd, (name, got.count(name) / n)


def test_a_request_without_the_split_key_or_of_another_policy_is_in_no_experiment() -> None:
    book = log_of(experiment())
    assert book.assign("p", "t", None) is None
    assert book.assign("p", "t", {"user_id": True}) is None
    assert book.assign("other", "t", {"user_id": "u1"}) is None
    assert book.assign("p", "t", {"user_id": 42}) is not None  # an integer id counts


def test_a_stage_moves_only_champion_keys_and_a_stop_ends_the_assignment() -> None:
    d = rollout()
    book = log_of(d)
    tenants = [f"tenant-{i}" for i in range(4_000)]

    def treated() -> set[str]:
        return {t for t in tenants if book.assign("p", t, None)[1].name == "challenger"}  # type: ignore[index]

    at5 = treated()
    ev = ExperimentEvent(
        event_id="s",
        kind="stage",
        experiment_id="r1",
        created_at=T0 + 5,
        created_by="test",
        stage=1,
        shares=d.stage_shares(1),
    )
    book.apply(ev)
    at25 = treated()
    assert at5 < at25 and abs(len(at25) / len(tenants) - 0.25) < 0.03
    book.apply(stopped_event("r1", "rolled_back", "worse", "test", T0 + 9, {"champion": 1.0}))
    assert book.assign("p", "tenant-1", None) is None
    promoted = log_of(d)
    promoted.apply(
        stopped_event(
            "r1", "promoted", "passed", "test", T0 + 9, {"champion": 0.0, "challenger": 1.0}
        )
    )
    assert {promoted.assign("p", t, None)[1].name for t in tenants} == {"challenger"}  # type: ignore[index]
    promoted.apply(stopped_event("r1", "manual", "released", "test", T0 + 10))
    assert promoted.assign("p", "tenant-1", None) is None


# -- the decider -----------------------------------------------------------------------------


def test_the_decider_decides_with_the_variant_and_tags_the_decision() -> None:
    decider = Decider(policies(), seed=1)
    for ev in (
        created_event(experiment(), "t", T0),
        created_event(
            rollout(
                policy="other",
                variants=[
                    {"name": "champion", "policy": "other"},
                    {"name": "challenger", "arm": "small"},
                ],
                stages=[50, 100],
            ),
            "t",
            T0 + 1,
        ),
    ):
        decider.experiments.apply(ev)
    reqs = [
        Request(
            request_id=f"r{i}",
            tenant_id=f"t{i % 50}",
            task_type="qa",
            created_at=T0,
            metadata={"user_id": f"u{i}"},
            policy_id="other" if i % 2 else None,
        )
        for i in range(400)
    ]
    reqs.append(Request(request_id="no-key", tenant_id="t", task_type="qa", created_at=T0))
    out = decider.decide(reqs, T0 + 5)
    docs = [Decision.from_dict(d) for d in out]  # type: ignore[arg-type]
    seen = set()
    for req, d in zip(reqs, docs, strict=True):
        if req.request_id == "no-key":
            assert d.experiment_id is None and d.variant is None and d.policy_id == "p"
            continue
        seen.add((d.experiment_id, d.variant))
        if d.experiment_id == "ab1":
            assert d.policy_id == {"A": "p", "B": "q"}[d.variant]  # type: ignore[index]
            assert 0 < d.propensity <= 1 and len(d.available_arms) == 3
        else:
            assert d.experiment_id == "r1" and d.policy_id == "other"
            if d.variant == "challenger":
                assert (d.arm, d.propensity, d.available_arms) == ("small", 1.0, ["small"])
                assert not d.explored
    assert seen == {("ab1", "A"), ("ab1", "B"), ("r1", "champion"), ("r1", "challenger")}


def test_a_fixed_arm_the_candidates_exclude_is_decided_outside_the_experiment() -> None:
    decider = Decider(policies(), seed=1)
    d = rollout(stages=[99, 100])  # nearly everyone is a challenger
    decider.experiments.apply(created_event(d, "t", T0))
    reqs = [
        Request(
            request_id=f"r{i}",
            tenant_id=f"t{i}",
            task_type="qa",
            created_at=T0,
            candidates=["big", "mid"],
        )
        for i in range(50)
    ]
    out = [Decision.from_dict(o) for o in decider.decide(reqs, T0)]  # type: ignore[arg-type]
    assert all(o.arm in ("big", "mid") and o.experiment_id is None for o in out)


def test_an_experiment_does_not_open_a_policy_to_tenants_it_refuses() -> None:
    arms = [{"name": "big", "model": "m"}, {"name": "small", "model": "m"}]
    cfg = PoliciesConfig.from_dict(
        {
            "default_policy": "open",
            "policies": {
                "open": {"algorithm": "ucb1", "arms": arms},
                "private": {"algorithm": "ucb1", "arms": arms, "tenants": ["insider"]},
            },
        }
    )
    decider = Decider(cfg, seed=0)
    d = experiment(
        policy="private",
        split_key="tenant",
        shares={"A": 0.01, "B": 0.99},
        variants=[{"name": "A", "policy": "private"}, {"name": "B", "policy": "open"}],
    )
    decider.experiments.apply(created_event(d, "t", T0))
    reqs = [
        Request(
            request_id=f"r{i}",
            tenant_id=f"outsider-{i}",
            task_type="qa",
            created_at=T0,
            policy_id="private",
        )
        for i in range(20)
    ]
    out = decider.decide(reqs, T0)
    assert all(isinstance(o, InvalidEvent) and o.code == "unauthorized_policy" for o in out)


def test_the_join_copies_experiment_and_variant_to_the_outcome() -> None:
    joiner = Joiner(policies())
    decision = Decider(policies(), seed=0)
    decision.experiments.apply(created_event(experiment(), "t", T0))
    req = Request(
        request_id="r", tenant_id="t", task_type="qa", created_at=T0, metadata={"user_id": "u"}
    )
    doc = Decision.from_dict(decision.decide([req], T0)[0]).to_dict()  # type: ignore[arg-type]
    step = joiner.on_decision(None, doc, ["decisions", 0, 1], T0)
    reward = Reward(request_id="r", tenant_id="t", sent_at=T0 + 1, quality=0.9)
    step = joiner.on_reward(step.entry, reward, b"{}", ["rewards", 0, 1], T0 + 2)
    outcome = Outcome.from_dict(step.outcome or {})
    assert (outcome.experiment_id, outcome.variant) == ("ab1", doc["variant"])


# -- the rollout gate ------------------------------------------------------------------------


def run_rollout(
    d: ExperimentDefinition,
    means: dict[str, float],
    seed: int,
    batch: int = 2_000,
    max_looks: int = 400,
) -> tuple[str, int]:
    """Feed a rollout stage by stage from scores with the given means (sd
    ~0.15) until it is promoted or rolled back: (outcome, stage reached)."""
    rng = np.random.default_rng(seed)
    stage, stats = 0, d.statistics()
    for _ in range(max_looks):
        shares = d.stage_shares(stage)
        for v, share in shares.items():
            k = int(rng.binomial(batch, share))
            x = np.clip(rng.normal(means[v], 0.15, k), 0, 1)
            stats.add_sums(v, "reward", k, float(x.sum()), float((x * x).sum()))
        stats.check()
        step = next_step(d, stage, stats)
        if step is None:
            continue
        if step.action == "rollback":
            return "rolled_back", stage
        if step.action == "promote":
            return "promoted", stage + 1
        assert step.action == "advance" and step.stage == stage + 1
        stage, stats = stage + 1, d.statistics()
    return "undecided", stage


@pytest.mark.parametrize("seed", range(4))
def test_an_equal_or_better_challenger_advances_to_promotion(seed: int) -> None:
    d = rollout(min_samples=100)
    for challenger in (0.70, 0.73):
        assert run_rollout(d, {"champion": 0.70, "challenger": challenger}, seed) == (
            "promoted",
            3,
        )


@pytest.mark.parametrize("seed", range(6))
def test_a_worse_challenger_is_rolled_back_at_its_first_stage(seed: int) -> None:
    d = rollout(min_samples=100)
    assert run_rollout(d, {"champion": 0.70, "challenger": 0.62}, seed) == ("rolled_back", 0)


def test_an_equal_challenger_is_rolled_back_wrongly_at_most_alpha_of_the_time() -> None:
    """200 rollouts of a challenger exactly as good as the champion, each
    looked at after every batch at every stage: false rollbacks ≤ α plus two
    Monte-Carlo standard errors."""
    d = rollout(min_samples=100, alpha=ALPHA, stages=[10, 50, 100], tuning_n=4_000)
    runs = 200
    wrong = sum(
        run_rollout(d, {"champion": 0.7, "challenger": 0.7}, 1_000 + s, batch=1_000)[0]
        == "rolled_back"
        for s in range(runs)
    )
    assert wrong / runs <= ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / runs), wrong


def test_a_guardrail_fails_the_gate_of_a_slower_challenger() -> None:
    d = rollout(metrics={"reward": {"margin": 0.02}, "latency_ms": {"margin": 0.1}})
    rng = np.random.default_rng(3)
    stats = d.statistics()
    step = None
    for _ in range(200):
        for v, latency in (("champion", 800.0), ("challenger", 1_000.0)):
            k = 500 if v == "champion" else 60
            stats.add_values(
                v,
                {
                    "reward": np.clip(rng.normal(0.7, 0.15, k), 0, 1).tolist(),
                    "latency_ms": rng.lognormal(math.log(latency), 0.3, k).tolist(),
                },
            )
        stats.check()
        step = next_step(d, 0, stats)
        if step is not None:
            break
    assert step is not None and step.action == "rollback" and "latency_ms" in step.reason


def test_an_experiment_stops_with_its_winner() -> None:
    d = experiment(min_samples=100, tuning_n=4_000)
    rng = np.random.default_rng(5)
    stats, step = d.statistics(), None
    for _ in range(200):
        for v, mean in (("A", 0.6), ("B", 0.7)):
            x = np.clip(rng.normal(mean, 0.15, 200), 0, 1)
            stats.add_sums(v, "reward", len(x), float(x.sum()), float((x * x).sum()))
        stats.check()
        step = next_step(d, 0, stats)
        if step:
            break
    assert step is not None and (step.action, step.winner) == ("winner", "B")


# -- the evaluator ---------------------------------------------------------------------------


def outcome(i: int, variant: str, reward: float, exp_id: str = "r1") -> dict[str, Any]:
    return {
        "experiment_id": exp_id,
        "variant": variant,
        "reward": reward,
        "components": {"latency_ms": 500.0 + i % 7},
    }


def feed(
    ev: Evaluator, rng: np.random.Generator, start: int, n: int, means: dict[str, float]
) -> None:
    """Outcomes at offsets start..start+n of partition outcomes/0."""
    for off in range(start, start + n):
        v = "challenger" if rng.random() < 0.5 else "champion"
        ev.on_outcome("outcomes/0", off, outcome(off, v, float(rng.random() < means[v])))


def test_a_restarted_evaluator_carries_on_from_its_own_events() -> None:
    d = rollout(stages=[50, 100], min_samples=100_000)  # never decides: counts only
    means = {"champion": 0.7, "challenger": 0.7}
    whole, first = Evaluator("w", 1_000), Evaluator("a", 1_000)
    for e in (whole, first):
        e.recover(created_event(d, "cli", T0))
        e.start({"outcomes/0": 0})
    topic: list[ExperimentEvent] = [created_event(d, "cli", T0)]
    rng_whole, rng_first = np.random.default_rng(9), np.random.default_rng(9)
    feed(whole, rng_whole, 0, 3_000, means)
    feed(first, rng_first, 0, 2_000, means)
    topic += first.look(T0 + 5_000)
    # Read past the last result before the crash: these outcomes are lost with the process.
    feed(first, rng_first, 2_000, 500, means)
    second = Evaluator("b", 1_000)
    for written in topic:
        second.recover(ExperimentEvent.from_dict(written.to_dict()))
    # The reader starts REMEMBER_BACK records before the carried position
    # (here: the log's start); what it reads again is remembered, not counted.
    assert second.start({"outcomes/0": 2_500}) == {"outcomes/0": 0}
    replay = np.random.default_rng(9)
    feed(second, replay, 0, 3_000, means)
    [a] = [e for e in whole.look(T0 + 9_000, force=True) if e.kind == "result"]
    [b] = [e for e in second.look(T0 + 9_000, force=True) if e.kind == "result"]
    assert a.result is not None and b.result is not None
    assert a.result["variants"] == b.result["variants"]
    assert sum(v["reward"]["n"] for v in b.result["variants"].values()) == 3_000


def test_the_evaluator_promotes_a_good_challenger_and_rolls_back_on_drift() -> None:
    d = rollout(stages=[50, 100], min_samples=100, tuning_n=4_000)
    ev = Evaluator("e", 60_000)
    ev.start({"outcomes/0": 0, "drift/0": 0})
    ev.on_event(created_event(d, "cli", T0))
    rng = np.random.default_rng(2)
    kinds: list[str] = []
    for look in range(100):
        feed(ev, rng, look * 400, 400, {"champion": 0.7, "challenger": 0.72})
        events = ev.look(T0 + look)
        kinds += [e.kind for e in events]
        if "stopped" in kinds:
            break
    assert kinds[0] == "result" and kinds[-3:] == ["result", "stage", "stopped"]
    assert events[-1].stop_reason == "promoted" and events[-1].shares == {
        "champion": 0.0,
        "challenger": 1.0,
    }
    assert ev.log.routing("p") is not None  # still routes, now all to the challenger

    d2 = rollout(
        id="r2",
        policy="q",
        variants=[{"name": "champion", "policy": "q"}, {"name": "challenger", "policy": "other"}],
    )
    ev.on_event(created_event(d2, "cli", T0 + 1))
    ev.on_signal("drift/0", 7, "p", None, "drift of reward")  # another policy: nothing
    assert [e.kind for e in ev.look(T0 + 2, force=True)] == ["result"]
    ev.on_signal("drift/0", 8, "other", "big", "drift of reward")
    events = ev.look(T0 + 3)
    assert [e.kind for e in events] == ["result", "stopped"]
    assert events[-1].stop_reason == "rolled_back" and "drift of reward" in (
        events[-1].reason or ""
    )
    assert events[-1].shares == {"champion": 1.0, "challenger": 0.0}
    assert "r2" not in ev.runs


def test_a_manual_stop_ends_the_evaluation() -> None:
    ev = Evaluator("e")
    ev.start({})
    ev.on_event(created_event(rollout(), "cli", T0))
    assert "r1" in ev.runs
    ev.on_event(stopped_event("r1", "manual", "enough", "cli", T0 + 1))
    assert ev.runs == {} and ev.look(T0 + 2, force=True) == []


def test_the_dashboard_shows_each_experiments_variants() -> None:
    from app.dashboard.history import MetricsHistory
    from app.records import MetricsSnapshot

    def sample(name: str, value: float, **labels: str) -> dict[str, Any]:
        return {"name": name, "labels": {"experiment": "r1", **labels}, "value": value}

    history = MetricsHistory()
    for worker, samples in (
        ("decider", [sample("llmopt_experiment_share", 0.25, variant="challenger")]),
        (
            "evaluator",
            [
                sample("llmopt_experiment_units", 120, variant="challenger"),
                sample("llmopt_experiment_mean", 0.61, variant="challenger", metric="reward"),
                sample("llmopt_experiment_mean", 840.0, variant="challenger", metric="latency_ms"),
                sample("llmopt_experiment_gate", -1, variant="challenger"),
            ],
        ),
    ):
        history.add(
            MetricsSnapshot(
                snapshot_id=worker,
                source="worker",
                worker_id=worker,
                created_at=T0,
                interval_ms=2_000,
                samples=samples,
            )
        )
    assert history.view(T0 + 1)["experiments"] == {
        "r1": {"challenger": {"share": 0.25, "n": 120, "reward_mean": 0.61, "gate": -1}}
    }


def _counting_ten() -> Evaluator:
    """An evaluator that has counted ten requests' outcomes (offsets and
    requests 0..9) for a rollout that never decides."""
    d = rollout(stages=[50, 100], min_samples=100_000)
    ev = Evaluator("w", 1_000)
    ev.recover(created_event(d, "cli", T0))
    ev.start({"outcomes/0": 0})
    for off in range(10):
        assert ev.on_outcome("outcomes/0", off, {**outcome(off, "champion", 1.0), "request": off})
    return ev


def test_a_copy_of_an_outcome_counts_once() -> None:
    """The join sends an outcome again when its source is redelivered: the
    copy, at another offset, is not counted twice."""
    ev = _counting_ten()
    for off in range(10, 20):  # the same ten requests again
        doc = {**outcome(off, "champion", 1.0), "request": off - 10}
        assert not ev.on_outcome("outcomes/0", off, doc)
    result = next(e for e in ev.look(T0 + 5_000, force=True) if e.kind == "result")
    assert result.result is not None
    assert sum(v["reward"]["n"] for v in result.result["variants"].values()) == 10


def _counted(ev: Evaluator) -> int:
    result = next(e for e in ev.look(T0 + 5_000, force=True) if e.kind == "result")
    assert result.result is not None
    return sum(v["reward"]["n"] for v in result.result["variants"].values())


def test_a_copy_after_a_restart_of_an_outcome_counted_before_it_counts_once() -> None:
    d = rollout(stages=[50, 100], min_samples=100_000)
    first = Evaluator("a", 1_000)
    first.recover(created_event(d, "cli", T0))
    first.start({"outcomes/0": 0})
    for off in range(10):
        first.on_outcome("outcomes/0", off, {**outcome(off, "champion", 1.0), "request": off})
    topic = [created_event(d, "cli", T0), *first.look(T0 + 5_000, force=True)]
    second = Evaluator("b", 1_000)
    for written in topic:
        second.recover(ExperimentEvent.from_dict(written.to_dict()))
    start = second.start({"outcomes/0": 10})["outcomes/0"]
    assert start == 0
    for off in range(start, 10):  # read again: remembered, not counted
        doc = {**outcome(off, "champion", 1.0), "request": off}
        assert not second.on_outcome("outcomes/0", off, doc)
    for off in range(10, 20):  # the join's copies of the same ten
        doc = {**outcome(off, "champion", 1.0), "request": off - 10}
        assert not second.on_outcome("outcomes/0", off, doc)
    assert second.on_outcome("outcomes/0", 20, {**outcome(20, "champion", 1.0), "request": 20})
    assert _counted(second) == 11


def test_the_requests_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage can last days: only the latest COUNTED_WINDOW requests are kept."""
    monkeypatch.setattr(evaluator_module, "COUNTED_WINDOW", 5)
    ev = _counting_ten()
    assert len(ev.runs["r1"].counted) == 5
    assert not ev.on_outcome("outcomes/0", 10, {**outcome(10, "champion", 1.0), "request": 9})
    # A copy from outside the window counts again: the window must outlast the join's redo.
    assert ev.on_outcome("outcomes/0", 11, {**outcome(11, "champion", 1.0), "request": 0})
