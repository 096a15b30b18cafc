"""Unit tests for app/evaluation/simulator.py (seeded, no Kafka)."""

from __future__ import annotations

import copy
import doctest
import math
from pathlib import Path

import pytest
import yaml

from app.evaluation import simulator as simmod
from app.evaluation.simulator import SimulatorConfig, TrafficSimulator
from app.policies.config import Arm, PoliciesConfig
from app.records import Request, Reward
from app.rewards import RewardSpec

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "config" / "simulator.yaml"
POLICIES = REPO / "config" / "policies.yaml"
DRIFT_AT_MS = 600_000  # default scenario: drift event at_seconds 600


def default_arms() -> list[Arm]:
    """The default policy's arms, read as the simulator reads them."""
    policies = PoliciesConfig.load(POLICIES)
    return list(policies.policies[policies.default_policy].arms)


def raw_scenario() -> dict:
    with SCENARIO.open() as fh:
        return yaml.safe_load(fh)


def make_sim(
    seed: int = 0,
    drift: bool = False,
    spec: RewardSpec | None = None,
    raw: dict | None = None,
    arms: list[Arm] | None = None,
) -> TrafficSimulator:
    cfg = SimulatorConfig.from_dict(raw if raw is not None else raw_scenario())
    return TrafficSimulator(
        cfg.with_drift(drift),
        arms or default_arms(),
        spec or RewardSpec(),
        seed=seed,
        start_ms=0,
    )


def req(task: str, input_tokens: int = 1000) -> Request:
    return Request(
        request_id="r-" + task,
        tenant_id="acme",
        task_type=task,
        created_at=0,
        input_tokens=input_tokens,
    )


# ------------------------------------------------------------------ determinism


def stream(sim: TrafficSimulator, n: int = 300) -> list:
    out = []
    for i in range(n):
        r = sim.next_request(now_ms=i * 10, policy_id="default")
        arm = sim.arm_names[i % len(sim.arm_names)]
        out.append((r.to_dict(), sim.outcome(r, arm, now_ms=i * 10 + 5).to_dict()))
    return out


def test_same_seed_same_stream_and_rewards():
    assert stream(make_sim(seed=3)) == stream(make_sim(seed=3))


def test_different_seeds_differ():
    a, b = stream(make_sim(seed=3)), stream(make_sim(seed=4))
    assert [x[0]["request_id"] for x in a] != [x[0]["request_id"] for x in b]
    assert [x[0]["input_tokens"] for x in a] != [x[0]["input_tokens"] for x in b]
    assert [x[1]["latency_ms"] for x in a] != [x[1]["latency_ms"] for x in b]


def test_request_stream_independent_of_outcome_calls():
    a, b = make_sim(seed=5), make_sim(seed=5)
    ra = []
    for i in range(100):
        r = a.next_request(now_ms=i)
        a.outcome(r, "gpt-4o", now_ms=i)
        ra.append(r)
    rb = [b.next_request(now_ms=i) for i in range(100)]
    assert ra == rb


def test_records_are_valid_and_ids_unique():
    sim = make_sim(seed=1)
    ids = set()
    errors = 0
    for i in range(2000):
        r = sim.next_request(now_ms=1_700_000_000_000 + i, reply_to="replies")
        assert Request.from_dict(r.to_dict()) == r
        assert r.task_type in sim.config.task_names and 0 <= r.priority <= 10
        assert r.input_tokens >= 1 and r.created_at == 1_700_000_000_000 + i
        assert len(r.request_id) == 32 and r.request_id[12] == "4"
        ids.add(r.request_id)
        w = sim.outcome(r, sim.arm_names[i % 6], now_ms=r.created_at + 7)
        assert Reward.from_dict(w.to_dict()) == w
        assert w.sent_at == r.created_at + 7 and w.request_id == r.request_id
        if w.error:
            errors += 1
            assert w.quality is None
        else:
            assert 0.0 <= w.quality <= 1.0 and w.cost_usd > 0 and w.latency_ms > 0
    assert len(ids) == 2000
    assert 0 < errors < 100  # error rates are 1-2 %


def test_traffic_mix_follows_config():
    sim = make_sim(seed=2)
    n = 20_000
    reqs = [sim.next_request(now_ms=0) for _ in range(n)]
    tenants = {t.name: t.weight for t in sim.config.tenants}
    total = sum(tenants.values())
    for name, w in tenants.items():
        share = sum(r.tenant_id == name for r in reqs) / n
        assert abs(share - w / total) < 0.02
    creative_globex = sum(r.tenant_id == "globex" and r.task_type == "creative" for r in reqs)
    assert creative_globex == 0  # globex's own task mix has creative weight 0
    summ = sorted(r.input_tokens for r in reqs if r.task_type == "summarization")
    assert abs(summ[len(summ) // 2] / 2500 - 1) < 0.05  # lognormal median


def test_doctests():
    res = doctest.testmod(simmod)
    assert res.attempted > 0 and res.failed == 0


# ------------------------------------------------------ expected reward is exact


@pytest.mark.parametrize(
    ("task", "arm", "input_tokens", "spec", "drift"),
    [
        ("qa", "claude-haiku", 400, RewardSpec(), False),
        # latency clipping matters: median latency close to the 8 s scale
        ("creative", "claude-sonnet", 300, RewardSpec(), False),
        # cost clipping matters: long input on an expensive model
        ("summarization", "claude-sonnet", 6000, RewardSpec(), False),
        # truncation at max_tokens, another reward spec with a non-zero error reward
        (
            "creative",
            "llama-70b-creative",
            250,
            RewardSpec(
                quality_weight=0.3,
                cost_weight=0.5,
                latency_weight=0.2,
                cost_scale_usd=0.002,
                latency_scale_ms=3000,
                error_reward=0.3,
            ),
            False,
        ),
        # after drift: slower, worse, 5 % errors
        ("code", "claude-haiku", 900, RewardSpec(), True),
    ],
)
def test_expected_reward_matches_monte_carlo(task, arm, input_tokens, spec, drift):
    sim = make_sim(seed=11, drift=drift, spec=spec)
    now = DRIFT_AT_MS + 1 if drift else 0
    r = req(task, input_tokens)
    n = 20_000
    xs = []
    for _ in range(n):
        w = sim.outcome(r, arm, now_ms=now)
        xs.append(
            spec.scalar(
                quality=w.quality, cost_usd=w.cost_usd, latency_ms=w.latency_ms, error=w.error
            )
        )
    mean = math.fsum(xs) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    expected = sim.expected_reward(r, arm, now_ms=now)
    assert abs(mean - expected) < 4 * sd / math.sqrt(n), (mean, expected, sd)


def test_expected_components_match_samples():
    sim = make_sim(seed=12)
    r = req("creative", 300)
    comp = sim.expected_components(r, "llama-70b-creative", 0)
    n = 20_000
    ws = [sim.outcome(r, "llama-70b-creative", 0) for _ in range(n)]
    ok = [w for w in ws if not w.error]
    assert abs(sum(w.error for w in ws) / n - comp["error_rate"]) < 0.006
    assert abs(sum(w.quality for w in ok) / len(ok) - comp["quality"]) < 0.006
    assert abs(sum(w.cost_usd for w in ok) / len(ok) / comp["cost_usd"] - 1) < 0.02
    assert abs(sum(w.latency_ms for w in ws) / n / comp["latency_ms"] - 1) < 0.02
    assert comp["output_tokens"] < sum(sim._natural_out["creative"]) / 16  # max_tokens cap


# ----------------------------------------------------------- default scenario


def test_default_scenario_best_arm_and_gap():
    sim = make_sim()
    means = sim.mean_expected_rewards(now_ms=0)
    ranked = sorted(means, key=means.__getitem__, reverse=True)
    assert sim.overall_best_arm(0) == ranked[0] == "claude-haiku"
    assert ranked[1] == "gpt-4o"
    gap = means[ranked[0]] - means[ranked[1]]
    assert 0.05 <= gap <= 0.06  # documented in config/simulator.yaml (~0.054)
    assert abs(means["claude-haiku"] - 0.802) < 0.005


def test_default_scenario_is_contextual():
    sim = make_sim()
    assert sim.best_arm(req("code", 900), None, 0) == "claude-sonnet"
    assert sim.best_arm(req("creative", 250), None, 0) == "llama-70b-creative"
    assert sim.best_arm(req("qa", 400), None, 0) == "claude-haiku"
    assert sim.best_arm(req("code", 900), ["gpt-4o", "gpt-4o-mini"], 0) == "gpt-4o"


def test_default_constructor_matches_files():
    a = TrafficSimulator.default(seed=9, start_ms=0)
    b = make_sim(seed=9)
    assert [a.next_request(0) for _ in range(20)] == [b.next_request(0) for _ in range(20)]
    assert a.config.drift_enabled is False  # demo convergence stays clean


# ------------------------------------------------------------- parameter effects


def test_temperature_effect():
    sim = make_sim()
    hot, cold = "llama-70b-creative", "llama-70b"  # temperature 0.9 vs 0.3
    q = {
        t: {a: sim.expected_components(req(t), a, 0)["quality"] for a in (hot, cold)}
        for t in ("creative", "code")
    }
    assert q["creative"][hot] > q["creative"][cold] + 0.1
    assert q["code"][hot] < q["code"][cold] - 0.05
    for task, sign in (("creative", 1), ("code", -1)):
        diff = sim.expected_reward(req(task), hot, 0) - sim.expected_reward(req(task), cold, 0)
        assert sign * diff > 0


def test_max_tokens_caps_output_and_cost():
    arms = [
        Arm("long", "gpt-4o", {"max_tokens": 4096}),
        Arm("short", "gpt-4o", {"max_tokens": 200}),
    ]
    sim = make_sim(arms=arms)
    r = req("creative", 300)
    assert (
        max(sim.outcome(r, "short", 0).cost_usd for _ in range(500))
        <= (300 * 0.0025 + 200 * 0.01) / 1000 + 1e-12
    )
    long_c, short_c = (sim.expected_components(r, a, 0) for a in ("long", "short"))
    assert short_c["output_tokens"] == 200 and long_c["output_tokens"] > 500
    assert short_c["quality"] < long_c["quality"]  # truncated answers are worse


# ---------------------------------------------------------------------- drift


def test_default_drift_changes_best_arm():
    sim = make_sim(drift=True)
    r = req("qa", 400)
    before = sim.expected_reward(r, "claude-haiku", DRIFT_AT_MS - 1)
    assert before == make_sim().expected_reward(r, "claude-haiku", DRIFT_AT_MS - 1)
    assert sim.expected_reward(r, "claude-haiku", DRIFT_AT_MS) < before - 0.1
    assert sim.expected_reward(r, "gpt-4o", DRIFT_AT_MS) == sim.expected_reward(r, "gpt-4o", 0)
    assert sim.overall_best_arm(DRIFT_AT_MS - 1) == "claude-haiku"
    assert sim.overall_best_arm(DRIFT_AT_MS) == "gpt-4o"
    assert make_sim(drift=False).overall_best_arm(10 * DRIFT_AT_MS) == "claude-haiku"


def test_drift_quality_factor_drops_by_configured_amount():
    raw = raw_scenario()
    raw["drift"] = {
        "enabled": True,
        "events": [{"at_seconds": 100, "model": "claude-3-5-haiku", "quality_factor": 0.8}],
    }
    sim = make_sim(drift=True, raw=raw)
    r = req("qa", 400)
    before, after = (sim.expected_reward(r, "claude-haiku", t) for t in (99_999, 100_000))
    q = 0.85 + (-0.05) * (0.3 - 0.5)  # qa quality at temperature 0.3, top_p 1.0
    spec = RewardSpec()
    w = spec.quality_weight + spec.cost_weight + spec.latency_weight
    expected_drop = (1 - 0.01) * spec.quality_weight / w * q * (1 - 0.8)
    assert before - after == pytest.approx(expected_drop, rel=1e-9)


def test_drift_error_rate_and_compounding():
    raw = raw_scenario()
    raw["drift"] = {
        "enabled": True,
        "events": [
            {"at_seconds": 200, "model": "gpt-4o", "error_rate": 0.5},
            {"at_seconds": 100, "model": "gpt-4o", "quality_factor": 0.9},
            {"at_seconds": 300, "model": "gpt-4o", "quality_factor": 0.9},
        ],
    }
    sim = make_sim(drift=True, raw=raw)
    r = req("chat", 500)
    rew = {t: sim.expected_reward(r, "gpt-4o", t) for t in (0, 100_000, 200_000, 300_000)}
    assert rew[0] > rew[100_000] > rew[200_000] > rew[300_000]
    # error rate 0.01 -> 0.5 with the error reward 0: the reward scales by 0.5 / 0.99
    assert rew[200_000] == pytest.approx(rew[100_000] * 0.5 / 0.99, rel=1e-12)
    q0 = sim.expected_components(r, "gpt-4o", 0)["quality"]
    assert sim.expected_components(r, "gpt-4o", 300_000)["quality"] == pytest.approx(q0 * 0.81)
    assert sim.phase(0) == 0 and sim.phase(250_000) == 2 and sim.phase(10**9) == 3


# ---------------------------------------------------------------------- regret


def test_regret_best_is_zero_and_worst_is_sum_of_gaps():
    best_sim, worst_sim = make_sim(seed=21), make_sim(seed=21)
    gaps = 0.0
    for i in range(500):
        now = i * 1000
        r = best_sim.next_request(now)
        assert r == worst_sim.next_request(now)
        er = worst_sim.expected_rewards(r, None, now)
        worst = min(er, key=er.__getitem__)
        gaps += max(er.values()) - er[worst]
        assert best_sim.record_choice(r, best_sim.best_arm(r, None, now), now) == 0.0
        inst = worst_sim.record_choice(r, worst, now)
        assert inst == max(er.values()) - er[worst] > 0
    assert best_sim.regret == 0.0 and best_sim.rounds == 500
    assert worst_sim.regret == pytest.approx(gaps, rel=1e-12) and gaps > 10
    s = worst_sim.summary()
    assert s["rounds"] == 500 and s["regret"] == worst_sim.regret
    assert s["mean_regret"] == pytest.approx(gaps / 500)
    assert sum(s["choices"].values()) == 500 == sum(worst_sim.choices.values())
    assert sum(s["arm_shares"].values()) == pytest.approx(1.0)
    assert s["best_arm"] == "claude-haiku"
    assert best_sim.summary()["arm_shares"]["claude-haiku"] > 0.4


def test_regret_respects_candidates():
    sim = make_sim()
    r = req("code", 900)
    r.candidates = ["gpt-4o-mini", "llama-70b"]
    assert sim.best_arm(r, None, 0) in r.candidates
    assert sim.record_choice(r, sim.best_arm(r, None, 0), 0) == 0.0
    with pytest.raises(ValueError, match="not among the candidates"):
        sim.record_choice(r, "claude-sonnet", 0)


# --------------------------------------------------------------- daily pattern


def test_daily_pattern_averages_one():
    sim = make_sim()
    day0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000
    vals = [sim.rate_multiplier(day0 + m * 60_000) for m in range(1440)]
    assert sum(vals) / len(vals) == pytest.approx(1.0, abs=1e-9)
    assert max(vals) > 1.4 and min(vals) < 0.4  # the pattern actually varies
    assert sim.rate_multiplier(day0 + 3 * 3_600_000) == sim.rate_multiplier(
        day0 + 86_400_000 + 3 * 3_600_000
    )


def test_arrivals_follow_rate():
    sim = make_sim(seed=4)
    now = 12 * 3_600_000  # noon UTC
    rate = sim.config.base_rate_per_second * sim.rate_multiplier(now)
    gaps = [sim.next_arrival_ms(now) - now for _ in range(20_000)]
    assert abs(sum(gaps) / len(gaps) / (1000 / rate) - 1) < 0.05


# ------------------------------------------------------------------ validation


def _bad(mutate) -> dict:
    raw = copy.deepcopy(raw_scenario())
    mutate(raw)
    return raw


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda d: d["drift"]["events"][0].update(model="gpt-5"),
            r"drift\.events\[0\]\.model: unknown model 'gpt-5'",
        ),
        (
            lambda d: d["traffic"].update(base_rate_per_second=-1),
            r"traffic\.base_rate_per_second: must be in",
        ),
        (
            lambda d: d["traffic"].update(task_weights={t: 0 for t in d["tasks"]}),
            r"traffic\.task_weights: weights must sum to more than 0",
        ),
        (
            lambda d: d["traffic"]["task_weights"].update(code=-1),
            r"traffic\.task_weights\.code: must be in",
        ),
        (
            lambda d: d["traffic"]["task_weights"].update(poetry=1),
            r"traffic\.task_weights\.poetry: unknown task type 'poetry'",
        ),
        (
            lambda d: d["traffic"].update(daily_pattern=[1.0] * 23),
            r"traffic\.daily_pattern: must have exactly 24 values",
        ),
        (
            lambda d: d["traffic"].update(priority_weights=[0] * 11),
            r"traffic\.priority_weights: weights must sum",
        ),
        (
            lambda d: d["models"]["gpt-4o"]["quality"].pop("chat"),
            r"models\.gpt-4o\.quality: missing task type\(s\) \['chat'\]",
        ),
        (
            lambda d: d["models"]["gpt-4o"].update(error_rate=1.5),
            r"models\.gpt-4o\.error_rate: must be in",
        ),
        (
            lambda d: d["models"]["gpt-4o"].update(price_per_1k_input_usd=-0.1),
            r"models\.gpt-4o\.price_per_1k_input_usd",
        ),
        (
            lambda d: d["drift"]["events"][0].update(latency_factor=0),
            r"drift\.events\[0\]\.latency_factor",
        ),
        (lambda d: d.update(typo_key=1), r"typo_key: unknown key 'typo_key'"),
        (
            lambda d: d["traffic"]["tenants"].append({"name": "acme", "weight": 1}),
            r"tenant names must be unique",
        ),
        (lambda d: d["drift"].update(enabled="yes"), r"drift\.enabled: must be true or false"),
    ],
)
def test_config_validation_errors(mutate, match):
    with pytest.raises(ValueError, match=match):
        SimulatorConfig.from_dict(_bad(mutate))


def test_simulator_validation_errors():
    cfg = SimulatorConfig.from_dict(raw_scenario())
    with pytest.raises(ValueError, match="uses model 'gpt-5'"):
        TrafficSimulator(cfg, [Arm("x", "gpt-5", {})], RewardSpec(), start_ms=0)
    with pytest.raises(ValueError, match="arm names must be unique"):
        TrafficSimulator(
            cfg, [Arm("x", "gpt-4o"), Arm("x", "gpt-4o-mini")], RewardSpec(), start_ms=0
        )
    with pytest.raises(ValueError, match="max_tokens must be a positive integer"):
        TrafficSimulator(cfg, [Arm("x", "gpt-4o", {"max_tokens": 0})], RewardSpec())
    sim = make_sim()
    with pytest.raises(ValueError, match="unknown task type 'poetry'"):
        sim.expected_reward(req("poetry"), "gpt-4o", 0)
    with pytest.raises(ValueError, match="unknown arm 'nope'"):
        sim.outcome(req("qa"), "nope", 0)
