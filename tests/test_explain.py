"""Explanations of decisions (app/explain.py) against known truths, through
the decider (app/decider.py), the worker's GET /explain page
(app/stream/explain_endpoint.py) and ``llmopt explain`` (app/explain_cli.py)."""

from __future__ import annotations

import base64
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from agents.select_arm import SelectArm
from app.cli import main
from app.decider import Decider
from app.explain import GuardrailNote, arm_estimates, explain_decision, explain_policy
from app.features.request_vector import FEATURE_NAMES, RequestVectorizer
from app.policies import (
    UCB1,
    UCBV,
    EpsilonGreedy,
    GaussianThompson,
    HybridLinUCB,
    LinearThompson,
    LinUCB,
    NeuralArmValue,
    ThompsonSampling,
)
from app.policies.config import PoliciesConfig
from app.policies.guardrails import ArmEstimates
from app.policies.registry import algorithms
from app.records import Decision, PolicySnapshot, Request
from app.settings import Settings
from app.stream.explain_endpoint import explain_answer
from app.stream.runtime import Runtime

POLICIES = Path(__file__).parent / "fixtures" / "policies.yaml"
ARMS = [{"name": "a", "model": "m-a"}, {"name": "b", "model": "m-b"}, {"name": "c", "model": "m-c"}]


def request(i: int = 0, **fields: Any) -> Request:
    return Request(
        request_id=f"r{i}",
        tenant_id="t",
        task_type="code",
        created_at=0,
        input_tokens=800,
        **fields,
    )


def decider(algorithm: str, **policy: Any) -> Decider:
    doc = {"algorithm": algorithm, "arms": ARMS, **policy}
    return Decider(PoliciesConfig.from_dict({"policies": {"p": doc}}), seed=0)


def snapshot_of(policy: Any, arm_stats: dict[str, Any] | None = None) -> PolicySnapshot:
    return PolicySnapshot(
        policy_id="p",
        version=1,
        algorithm=policy.algorithm,
        state=base64.b64encode(policy.snapshot()).decode(),
        updates=1,
        arm_stats=arm_stats or {},
        created_at=1,
    )


# -- linear models: exact contributions --------------------------------------------------------


def trained_lin_ucb() -> LinUCB:
    """Arm a's reward is exactly 0.5·x0 + 0.2·x1 - 0.3·x2; arm b's a constant 0.3."""
    policy = LinUCB(["a", "b"], seed=0, context_dim=3, alpha=0.1, ridge=1e-6)
    rng = np.random.default_rng(1)
    for _ in range(400):
        x = np.array([1.0, rng.normal(0.0, 2.0), rng.normal(0.0, 0.5)])
        policy.update("a", float(0.5 * x[0] + 0.2 * x[1] - 0.3 * x[2]), x)
        policy.update("b", 0.3, x)
    return policy


def test_lin_ucb_contributions_are_theta_times_x_and_sum_to_the_mean() -> None:
    policy = trained_lin_ucb()
    x = np.array([1.0, 2.0, -1.0])
    doc = explain_decision(
        policy,
        arms=["a", "b"],
        chosen="a",
        explored=False,
        fallback=False,
        probabilities={"a": 1.0},
        context=x.tolist(),
        feature_names=["bias", "size", "load"],
    )
    features = doc["features"]
    assert features["method"] == "exact"
    by_name = {f["name"]: f["contribution"] for f in features["top"]}
    # The known truth: θ = (0.5, 0.2, -0.3), so θ·x = (0.5, 0.4, 0.3) at this context.
    assert by_name == pytest.approx({"bias": 0.5, "size": 0.4, "load": 0.3}, abs=1e-5)
    theta = policy.coefficients()["a"]
    assert by_name == {
        n: round(float(t * v), 6)
        for n, t, v in zip(("bias", "size", "load"), theta, x, strict=True)
    }
    assert [f["name"] for f in features["top"]] == ["bias", "size", "load"]  # by |contribution|
    a = doc["arms"]["a"]
    assert (
        a["mean"] == pytest.approx(sum(by_name.values()), abs=1e-5) == pytest.approx(1.2, abs=1e-5)
    )
    ainv, _ = policy.ridge_model()
    sd = math.sqrt(x @ ainv[0] @ x)
    assert (a["sd"], a["bonus"]) == (round(sd, 6), round(0.1 * sd, 6))
    assert a["score"] == round(float(policy.scores(["a"], x)[0]), 6)  # mean + bonus: what ranks
    assert doc["rule"] == "exploit" and doc["greedy_arm"] == "a"


def test_linear_thompson_sd_is_v_times_the_ridge_spread() -> None:
    policy = LinearThompson(["a", "b"], seed=0, context_dim=2, v=0.5, propensity_samples=1000)
    for k in range(50):
        policy.update("a", 0.7, np.array([1.0, k / 50]))
    x = np.array([1.0, 0.5])
    est = arm_estimates(policy, ["a", "b"], x)
    ainv, theta = policy.ridge_model()
    assert est["a"]["mean"] == round(float(theta[0] @ x), 6)
    assert est["a"]["sd"] == round(0.5 * math.sqrt(x @ ainv[0] @ x), 6)
    assert est["b"]["sd"] == round(0.5 * math.sqrt(x @ x), 6)  # the prior: A⁻¹ = I
    assert est["a"]["bonus"] is None  # it explores by drawing, not by a bonus


def test_hybrid_lin_ucb_splits_its_score_into_mean_and_bonus() -> None:
    policy = HybridLinUCB(["a", "b"], seed=0, context_dim=3, shared_dim=1, alpha=0.2)
    rng = np.random.default_rng(0)
    for _ in range(200):
        z, x1 = rng.normal(), rng.normal()
        c = np.array([z, 1.0, x1])
        policy.update("a", 0.8 * z + 0.5 + 0.3 * x1, c)
        policy.update("b", 0.8 * z + 0.5 - 0.3 * x1, c)
    c = np.array([0.5, 1.0, 1.0])
    est = arm_estimates(policy, ["a", "b"], c)
    beta, theta = policy.shared_coefficients(), policy.coefficients()["a"]
    mean = float(beta @ c[:1] + theta @ c[1:])
    assert est["a"]["mean"] == pytest.approx(mean, abs=1e-6)
    assert est["a"]["mean"] + est["a"]["bonus"] == pytest.approx(est["a"]["score"], abs=2e-6)
    assert est["a"]["sd"] == pytest.approx(est["a"]["bonus"] / 0.2, abs=1e-5)


def test_a_non_linear_value_policy_gets_an_occlusion_importance() -> None:
    policy = NeuralArmValue(["a", "b"], seed=0, context_dim=3)
    x = np.array([1.0, 0.0, 2.0])
    doc = explain_decision(
        policy,
        arms=["a", "b"],
        chosen="a",
        explored=False,
        fallback=False,
        probabilities={"a": 1.0},
        context=x.tolist(),
        feature_names=["bias", "zero", "big"],
    )
    features = doc["features"]
    assert features["method"] == "occlusion"
    names = {f["name"] for f in features["top"]}
    assert "zero" not in names  # a feature at 0 cannot be occluded
    base = float(policy.scores(["a"], x)[0])
    for f in features["top"]:
        occluded = x.copy()
        occluded[["bias", "zero", "big"].index(f["name"])] = 0.0
        assert f["contribution"] == round(base - float(policy.scores(["a"], occluded)[0]), 6)


# -- context-free policies: the estimates are the policy's ---------------------------------


def test_means_and_spreads_are_the_policies_own_estimates() -> None:
    rewards = {"a": [0.9, 0.7, 0.8, 1.0], "b": [0.2, 0.4], "c": [0.5]}
    policies = [
        ThompsonSampling(["a", "b", "c"], seed=0),
        UCB1(["a", "b", "c"], seed=0),
        UCBV(["a", "b", "c"], seed=0),
        EpsilonGreedy(["a", "b", "c"], seed=0),
        GaussianThompson(["a", "b", "c"], seed=0),
    ]
    for policy in policies:
        for arm, rs in rewards.items():
            for r in rs:
                policy.update(arm, r)
        est = arm_estimates(policy, ["a", "b", "c"], None)
        stats = policy.stats()
        for arm in rewards:
            s = stats[arm]
            assert est[arm]["mean"] == round(s.get("posterior_mean", s.get("value", 0.0)), 6)
            assert est[arm]["pulls"] == len(rewards[arm])
    ts = policies[0]
    a, b = ts.stats()["a"]["alpha"], ts.stats()["a"]["beta"]
    assert arm_estimates(ts, ["a"], None)["a"]["sd"] == round(
        math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))), 6
    )
    ucbv = policies[2]
    s = ucbv.stats()["a"]
    assert arm_estimates(ucbv, ["a"], None)["a"]["sd"] == round(math.sqrt(s["variance"] / 4), 6)
    ucb1 = policies[1]
    assert isinstance(ucb1, UCB1)
    bonus = ucb1.upper_bounds(["a", "b"]) - ucb1.scores(["a", "b"])
    est = arm_estimates(ucb1, ["a", "b"], None)
    assert [est["a"]["bonus"], est["b"]["bonus"]] == [round(float(v), 6) for v in bonus]
    assert est["a"]["sd"] is None  # UCB1 keeps no spread


# -- guardrails through the decider ----------------------------------------------------------


def test_a_guardrail_that_removes_the_best_arm_is_named_with_the_arm_it_displaced() -> None:
    d = decider("thompson_sampling", hyperparameters={"propensity_samples": 2000})
    trained = ThompsonSampling(["a", "b", "c"], seed=0, propensity_samples=2000)
    for _ in range(200):
        trained.update("a", 0.95)
        trained.update("b", 0.3)
        trained.update("c", 0.2)
    stats = {"a": {"cost_usd_mean": 0.05, "cost_usd_count": 200},
             "b": {"cost_usd_mean": 0.001, "cost_usd_count": 200}}  # fmt: skip
    assert d.apply_snapshot(snapshot_of(trained, stats))
    doc = d.decide([request(explain=True, metadata={"max_cost_usd": 0.01})], now_ms=5)[0]
    assert isinstance(doc, dict) and doc["arm"] in ("b", "c")
    g = doc["explanation"]["guardrail"]
    assert g["name"] == "constraints" and g["acted"] == ["constraints"]
    assert g["dropped"] == ["a"] and "max_cost_usd=0.01" in g["reason"]
    assert (g["without"], g["changed"]) == ("a", True)
    arms = doc["explanation"]["arms"]
    assert arms["a"]["probability"] == 0.0 and arms["a"]["cost_usd"] == {"mean": 0.05, "n": 200}
    assert arms["a"]["mean"] == round(trained.stats()["a"]["posterior_mean"], 6)
    assert Decision.from_dict(doc).explanation == doc["explanation"]  # valid on the topic


def test_the_vectorised_paths_priority_rule_is_named() -> None:
    d = decider("thompson_sampling", guardrails={"max_explore_priority": 8}, explain=True)
    low, high = d.decide([request(0, priority=5), request(1, priority=9)], now_ms=5)
    assert isinstance(low, dict) and isinstance(high, dict)
    assert low["explanation"]["guardrail"] is None
    probs = {a: e["probability"] for a, e in low["explanation"]["arms"].items()}
    assert probs == pytest.approx({a: 1 / 3 for a in "abc"}, abs=0.02)
    g = high["explanation"]["guardrail"]
    assert g["name"] == "priority" and g["reason"].startswith("priority 9 >= 8")
    assert high["explanation"]["rule"] == "exploit"


def test_explanations_only_when_asked() -> None:
    quiet = decider("ucb1")
    off, on = quiet.decide([request(0), request(1, explain=True)], now_ms=5)
    assert isinstance(off, dict) and isinstance(on, dict)
    assert "explanation" not in off and on["explanation"]["algorithm"] == "ucb1"
    loud = decider("ucb1", explain=True)
    (doc,) = loud.decide([request(0, explain=False)], now_ms=5)
    assert isinstance(doc, dict) and doc["explanation"]["rule"] == "exploit"


def test_a_contextual_decision_names_the_request_vectors_features() -> None:
    d = decider("lin_ucb", explain=True, hyperparameters={"alpha": 0.0})  # greedy on the mean
    trained = LinUCB(["a", "b", "c"], seed=0, context_dim=RequestVectorizer.dim, alpha=0.0)
    for i in range(20):
        x = np.array(RequestVectorizer().row(request(i, priority=i % 10)))
        trained.update("a", 0.2 + 0.5 * x[FEATURE_NAMES.index("priority")], x)
    assert d.apply_snapshot(snapshot_of(trained))
    (doc,) = d.decide([request(0, priority=8)], now_ms=5)
    assert isinstance(doc, dict) and doc["arm"] == "a"
    x = np.array(doc["features"])
    assert doc["features"] == RequestVectorizer().row(request(0, priority=8))
    top = doc["explanation"]["features"]["top"]
    theta = trained.coefficients()["a"]
    assert top and all(
        f["contribution"]
        == round(
            float(theta[FEATURE_NAMES.index(f["name"])] * x[FEATURE_NAMES.index(f["name"])]), 6
        )
        for f in top
    )


# -- the global report -------------------------------------------------------------------------


def test_global_importance_is_theta_scaled_by_the_recovered_spread() -> None:
    policy = trained_lin_ucb()
    report = explain_policy(
        policy, policy_id="p", version=3, feature_names=["bias", "size", "load"]
    )
    rows = {f["name"]: f for f in report["features"]["features"]}
    rng = np.random.default_rng(1)
    contexts = np.array([[1.0, rng.normal(0.0, 2.0), rng.normal(0.0, 0.5)] for _ in range(400)])
    # Each context was learnt twice (arms a and b): the spread is the contexts'.
    assert report["features"]["contexts"] == pytest.approx(800, rel=1e-6)
    assert rows["size"]["sd"] == pytest.approx(contexts[:, 1].std(), rel=1e-5)
    assert rows["load"]["sd"] == pytest.approx(contexts[:, 2].std(), rel=1e-5)
    assert rows["bias"]["sd"] == pytest.approx(0.0, abs=1e-4)  # a constant explains no variation
    # Half the pulls are a's (|θ| 0.2 and 0.3), half b's (θ ≈ 0 on them).
    assert rows["size"]["importance"] == pytest.approx(0.5 * 0.2 * contexts[:, 1].std(), rel=1e-3)
    assert report["features"]["features"][0]["name"] == "size"
    assert report["arms"]["a"]["mean"] == pytest.approx(
        0.5 + 0.2 * contexts[:, 1].mean() - 0.3 * contexts[:, 2].mean(), abs=1e-4
    )


# -- GET /explain/{policy_id} and llmopt explain ------------------------------------------------


@pytest.fixture
def runtime() -> Runtime:
    s = Settings.from_env(
        {"LLMOPT_KAFKA_BOOTSTRAP": "127.0.0.1:1", "LLMOPT_POLICIES_PATH": str(POLICIES)}
    )
    return Runtime.for_settings(s)


def test_the_page_answers_from_select_arms_decider(runtime: Runtime) -> None:
    assert explain_answer(runtime, "default")[0] == 503  # snapshots not read yet
    handler = SelectArm(runtime, lambda: None)
    runtime.direct_decisions = handler
    status, doc = explain_answer(runtime, "default")
    assert status == 200 and doc["policy_id"] == "default" and doc["version"] == 0
    policy = PoliciesConfig.load(POLICIES).policies["default"].build()  # the prior: no snapshot
    assert {a: e["mean"] for a, e in doc["arms"].items()} == {
        a: round(s["posterior_mean"], 6) for a, s in policy.stats().items()
    }
    status, doc = explain_answer(runtime, "nope")
    assert status == 404 and doc["error"] == "unknown_policy" and "default" in doc["detail"]


@pytest.fixture
def worker(runtime: Runtime) -> Iterator[str]:
    """An HTTP server answering GET /explain/{policy} as the worker's page does."""
    runtime.direct_decisions = SelectArm(runtime, lambda: None)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, doc = explain_answer(runtime, self.path.removeprefix("/explain/"))
            body = orjson.dumps(doc)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_cli_prints_the_report(worker: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "default", "--url", worker]) == 0
    out = capsys.readouterr().out
    assert "policy default (version 0, thompson_sampling)" in out and "gpt-4o-mini" in out
    assert main(["explain", "default", "--url", worker, "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["algorithm"] == "thompson_sampling" and len(doc["arms"]) == 6


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["explain", "nope", "--url", "{worker}"], "404 unknown_policy"),
        (["explain", "default", "--url", "ftp://x"], "--url must be an http(s) URL"),
        (["explain", "default", "--url", "http://127.0.0.1:1"], "cannot reach a worker"),
        (["explain"], "required: POLICY"),
    ],
)
def test_the_cli_refuses_bad_input_in_one_line(
    worker: str, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    assert main([a.format(worker=worker) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("llmopt: error:") and words in err


def test_a_guardrail_note_without_a_context_names_no_features() -> None:
    policy = UCB1(["a", "b"], seed=0)
    doc = explain_decision(
        policy,
        arms=["a", "b"],
        chosen="b",
        explored=False,
        fallback=True,
        probabilities={"b": 1.0},
        estimates=ArmEstimates(),
        guardrail=GuardrailNote("constraints_fallback", ["constraints_fallback"], "why", ["b"]),
    )
    assert doc["rule"] == "fallback" and doc["features"] is None
    assert doc["guardrail"]["dropped"] == ["a"] and doc["guardrail"]["changed"] is True


@pytest.mark.parametrize("algorithm", sorted(algorithms()))
def test_explaining_draws_nothing_the_decisions_are_made_with(algorithm: str) -> None:
    """Every policy: an explanation (and the global report) leaves the
    policy's later choices as they would have been."""
    cls = algorithms()[algorithm]
    policy = cls(["a", "b", "c"], seed=3, **cls.example_params)
    dim = getattr(policy, "context_dim", None)
    x = None if dim is None else np.linspace(0.1, 1.0, dim)
    twin = cls.restore(policy.snapshot())
    doc = explain_decision(
        policy,
        arms=["a", "b", "c"],
        chosen="a",
        explored=False,
        fallback=False,
        probabilities={"a": 1.0},
        context=None if x is None else x.tolist(),
        guardrail=GuardrailNote("warm_up", ["warm_up"], "why", ["a", "b"]),
    )
    assert set(doc["arms"]) == {"a", "b", "c"} and doc["algorithm"] == algorithm
    explain_policy(policy, policy_id="p", version=0)
    assert [policy.select(x, ["a", "b", "c"]).arm for _ in range(20)] == [
        twin.select(x, ["a", "b", "c"]).arm for _ in range(20)
    ]
