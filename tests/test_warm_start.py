"""Warm start from logs (docs/warm-start.md#warm-start-from-logs): logged
outcomes replayed into a fresh policy with clipped importance weights, from
the Parquet archive and from an external file; `llmopt policy warm-start`
writes the policy to the registry as a version in development (integration,
on the test broker), from which it can go to shadow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from app.cli import main
from app.evaluation.logged_data import LoggedData
from app.features.archive import OutcomeArchive
from app.features.request_vector import RequestVectorizer
from app.policies.epsilon_greedy import EpsilonGreedy
from app.policies.per_task_type import PerTaskType
from app.policies.thompson_sampling import ThompsonSampling
from app.records import Request
from app.warm_start import WarmStartError, warm_start
from tests.conftest import ROOT, TEST_POLICIES, Deployment

ARMS = ("gpt-4o", "claude-haiku")
T0 = 1_700_000_000_000


def skewed_log(n: int = 1000, seed: int = 0) -> LoggedData:
    """A logger that played gpt-4o with probability 0.9; claude-haiku is better."""
    rng = np.random.default_rng(seed)
    actions = (rng.random(n) < 0.1).astype(int)
    means = np.array([0.5, 0.8])
    rewards = np.clip(means[actions] + rng.normal(0, 0.1, n), 0, 1)
    return LoggedData(
        actions=actions,
        rewards=rewards,
        propensities=np.where(actions == 0, 0.9, 0.1),
        arm_names=ARMS,
        timestamps=T0 + np.arange(n),
    )


# -- the replay ------------------------------------------------------------------------------
def test_weights_make_the_log_look_collected_by_the_new_policy() -> None:
    """A uniform target (ε = 1) on a 90/10 log: each arm gets about half the
    updates, and the weights average about 1."""
    policy = EpsilonGreedy(list(ARMS), seed=0, epsilon=1.0)
    done = warm_start(policy, skewed_log(), clip=10.0)
    pulls = {a: s["pulls"] for a, s in policy.stats().items()}
    assert pulls["gpt-4o"] == pytest.approx(pulls["claude-haiku"], rel=0.25), pulls
    assert done.updates == sum(pulls.values())
    assert done.to_dict()["weights"]["mean"] == pytest.approx(1.0, abs=0.1)


def test_clipping_bounds_a_rows_weight() -> None:
    policy = EpsilonGreedy(list(ARMS), seed=0, epsilon=1.0)
    done = warm_start(policy, skewed_log(), clip=2.0)
    assert done.weight_max == 2.0
    assert done.clipped == int((skewed_log().actions == 1).sum())  # 0.5 / 0.1 = 5 > 2


def test_same_log_policy_and_seed_give_the_same_state() -> None:
    states = []
    for _ in range(2):
        ts = ThompsonSampling(list(ARMS), seed=1)
        warm_start(ts, skewed_log(), seed=7)
        states.append(ts.snapshot())
    assert states[0] == states[1]
    assert ThompsonSampling(list(ARMS), seed=1).select(explore=False).arm == "gpt-4o"
    assert ThompsonSampling.restore(states[0]).select(explore=False).arm == "claude-haiku"


def test_rows_the_policy_cannot_use_are_skipped_or_refused() -> None:
    log = skewed_log(50)
    done = warm_start(ThompsonSampling(["claude-haiku"], seed=0), log)
    assert done.skipped == {"arm_not_in_policy": int((log.actions == 0).sum())}
    with pytest.raises(WarmStartError, match="none of the 50 logged rows"):
        warm_start(ThompsonSampling(["other"], seed=0), log)
    bad = LoggedData(
        actions=np.array([0]), rewards=np.array([3.0]), propensities=np.array([0.5]), arm_names=ARMS
    )
    with pytest.raises(WarmStartError, match="row 0 cannot be learnt"):
        warm_start(ThompsonSampling(list(ARMS), seed=0), bad)
    from app.policies.lin_ucb import LinUCB

    with pytest.raises(WarmStartError, match="context of 13 values and the log has none"):
        warm_start(LinUCB(list(ARMS), seed=0, context_dim=13), log)


def test_a_per_task_type_policy_learns_each_task_type_from_the_rows_features() -> None:
    docs = outcome_docs(200)
    data = LoggedData.from_outcomes(docs)
    policy = PerTaskType(list(ARMS), seed=0)
    warm_start(policy, data)
    assert set(policy.segment_stats()) == {"qa"}
    qa = np.asarray(docs[0]["features"])
    assert policy.select(qa, explore=False).arm == "claude-haiku"


# -- the command, from the archive and from a file ---------------------------------------------
def outcome_docs(n: int, policy_id: str = "default") -> list[dict[str, Any]]:
    """Outcomes of a logger that favoured gpt-4o, with their request vectors."""
    rng = np.random.default_rng(3)
    vectorizer = RequestVectorizer()
    docs = []
    for i in range(n):
        arm = ARMS[int(rng.random() < 0.2)]
        req = Request(
            request_id=f"r{i}", tenant_id="t", task_type="qa", created_at=T0 + i, input_tokens=500
        )
        docs.append(
            {
                "request_id": req.request_id,
                "tenant_id": "t",
                "policy_id": policy_id,
                "policy_version": 1,
                "arm": arm,
                "available_arms": list(ARMS),
                "propensity": 0.8 if arm == "gpt-4o" else 0.2,
                "explored": arm != "gpt-4o",
                "reward": 0.9 if arm == "claude-haiku" else 0.4,
                "defaulted": False,
                "decided_at": T0 + i,
                "outcome_at": T0 + i + 5,
                "components": {"quality": 0.9},
                "features": vectorizer.row(req),
            }
        )
    return docs


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["policy", "warm-start", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True)
def _test_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPT_POLICIES_PATH", str(TEST_POLICIES))


def test_warm_start_from_the_parquet_archive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = OutcomeArchive(tmp_path / "archive")
    archive.write(outcome_docs(300))
    archive.write(outcome_docs(40, policy_id="other"))
    code, out, err = run(
        ["default", "--archive", str(tmp_path / "archive"), "--dry-run", "--json"], capsys
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["rows"] == 300 and doc["used"] == 300  # only the policy's own outcomes
    assert doc["source"]["kind"] == "archive" and doc["source"]["policy_id"] == "default"
    assert doc["arms"]["claude-haiku"]["mean_reward"] == pytest.approx(0.9)
    assert "version" not in doc


def test_warm_start_from_an_external_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = skewed_log(400)
    path = tmp_path / "log.csv"
    pcsv.write_csv(
        pa.table(
            {
                "model": [ARMS[a] for a in log.actions],
                "score": log.rewards,
                "p": log.propensities,
            }
        ),
        path,
    )
    argv = ["default", "--file", str(path), "--action", "model", "--reward", "score"]
    code, out, err = run([*argv, "--propensity", "p", "--dry-run"], capsys)
    assert code == 0, err
    assert "learnt from 400 of 400 logged outcomes of file" in out
    # Bad input: one line, exit 2.
    for bad, message in (
        ([*argv, "--propensity", "prob"], "prob"),
        (["nope", "--file", str(path)], "policy 'nope' is not in the policies file"),
        (["default", "--file", str(path), "--archive", str(tmp_path)], "name one source"),
        ([*argv, "--propensity", "p", "--clip", "0"], "--clip must be above 0"),
    ):
        code, out, err = run([*bad, "--dry-run"], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


# -- the registry ------------------------------------------------------------------------------
def cli(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=d.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.integration
def test_a_warm_started_policy_is_a_registry_version_that_can_shadow(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    OutcomeArchive(tmp_path / "archive").write(outcome_docs(200))
    made = cli(d, "policy", "warm-start", "default", "--archive", str(tmp_path / "archive"))
    assert made.returncode == 0, made.stderr
    listed = cli(d, "registry", "list", "default", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["status"] == "development" and row["algorithm"] == "thompson_sampling"
    assert f"registered as version {row['version']}" in made.stdout
    shown = cli(d, "registry", "show", "default", str(row["version"]), "--json")
    version = json.loads(shown.stdout)
    lineage = version["lineage"]["warm_start"]
    assert lineage["kind"] == "archive" and lineage["from"] == str(tmp_path / "archive")
    assert lineage["used"] == 200 and lineage["clip"] == 10.0
    assert version["arms"]["claude-haiku"]["mean_reward"] == pytest.approx(0.9)
    shadow = cli(d, "registry", "promote", "default", str(row["version"]), "--to", "shadow")
    assert shadow.returncode == 0, shadow.stderr
    (row,) = json.loads(cli(d, "registry", "list", "default", "--json").stdout)
    assert row["status"] == "shadow"
