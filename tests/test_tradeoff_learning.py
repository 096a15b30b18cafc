"""Trade-off decisions learned on the simulator, over seeds: each preset's
choice per task type lies on the true Pareto front (or within its learned
uncertainty), and the learned objectives approach the true ones."""

from __future__ import annotations

import numpy as np
import pytest

from app.evaluation.simulator import TrafficSimulator
from app.evaluation.tradeoff_loop import greedy_arm, loop_config, run_loop, true_objectives
from app.policies.config import PoliciesConfig
from app.policies.tradeoff import PRESETS, dominates, oriented, scales_of
from app.settings import POLICIES_PATH

CONFIG = loop_config(PoliciesConfig.load(POLICIES_PATH))
POLICY = CONFIG.policies[CONFIG.default_policy]
SCALES = scales_of(POLICY.reward.cost_scale_usd, POLICY.reward.latency_scale_ms)
ARMS = list(POLICY.arm_names)


@pytest.fixture(scope="module")
def truth() -> dict[str, dict[str, np.ndarray]]:
    return true_objectives(TrafficSimulator.default(seed=0, start_ms=0), 0, requests=8_000)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_presets_choice_is_within_the_true_front(
    seed: int, truth: dict[str, dict[str, np.ndarray]]
) -> None:
    res = run_loop(CONFIG, TrafficSimulator.default(seed=seed, start_ms=0), 6_000, seed=seed)
    front = res.decider.front(res.policy_id)
    for task, t_truth in truth.items():
        points = oriented(np.array([t_truth[a] for a in ARMS]), SCALES)
        rows = {r.arm: r for r in front[task]}
        for preset in PRESETS:
            arm = greedy_arm(res.decider, res.policy_id, task, preset, ARMS)
            hi = (
                oriented(np.array(rows[arm].means), SCALES)
                + 2 * np.array(rows[arm].stderrs) / SCALES
            )
            beaten = [ARMS[i] for i, p in enumerate(points) if dominates(p, hi)]
            assert not beaten, f"seed {seed}, {task}, {preset}: {arm} is dominated by {beaten}"
        # The arm the trade-offs use most is learned to within a few standard errors.
        most = max(rows.values(), key=lambda r: r.outcomes)
        err = np.abs(np.array(most.means) - t_truth[most.arm]) / np.array(most.stderrs)
        assert most.outcomes > 100 and err.max() < 4.5, (task, most)
    # The second half's decisions go to true-front arms, but for exploration.
    on = total = 0
    for (_, task), counts in res.chosen.items():
        points = oriented(np.array([truth[task][a] for a in ARMS]), SCALES)
        for arm, n in counts.items():
            mine = points[ARMS.index(arm)]
            on += n * (not any(dominates(p, mine) for p in points))
            total += n
    assert on / total > 0.9
