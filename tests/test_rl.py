"""RL agents and the multi-step LLM workflow environment (seeded, broker-free).

The generic policy contract is checked for every agent by tests/test_policies.py;
here: the replay buffer, that each agent learns what it should (a chain MDP
with known optimal values for tabular Q-learning; the LLM workflow
environment for the neural agents, against the best fixed arm and a random
policy), the DQN training-step time, multi-step snapshot/restore, and the
environment's own rules.

Torch runs single-threaded in this module (restored afterwards): the networks
are tiny, and on a busy 2-core machine intra-op threads only add contention.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
import torch

from app.evaluation.environment import Environment, average_return, run_episode
from app.evaluation.workflow_env import ACCEPT, LLMWorkflowEnv
from app.policies import InvalidRewardError, PolicyError, UnknownArmError
from app.policies._agent import Agent
from app.policies.actor_critic import ActorCritic
from app.policies.base import ContextError
from app.policies.dqn import DQN
from app.policies.q_learning import QLearning
from app.policies.reinforce import Reinforce
from app.policies.replay_buffer import ReplayBuffer

EVAL_SEED = 999
EVAL_EPISODES = 1000


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def env() -> LLMWorkflowEnv:
    return LLMWorkflowEnv(seed=0)


@pytest.fixture(scope="module")
def baselines(env: LLMWorkflowEnv) -> dict[str, float]:
    return {
        "best_fixed": env.best_fixed_policy_value(EVAL_EPISODES, EVAL_SEED),
        "random": env.random_policy_value(EVAL_EPISODES, EVAL_SEED),
    }


def train(agent: Any, episodes: int, seed: int) -> Any:
    env = LLMWorkflowEnv(seed=seed)
    for i in range(episodes):
        run_episode(env, agent, seed=seed if i == 0 else None)
    return agent


def evaluate(env: LLMWorkflowEnv, agent: Any, explore: bool = False) -> float:
    return average_return(env.copy(), agent, EVAL_EPISODES, seed=EVAL_SEED, explore=explore)


# -- replay buffer -----------------------------------------------------------------------------


def fill(buf: ReplayBuffer, n: int, start: int = 0) -> None:
    """Transition ``t`` has state ``[t, ...]``, action ``t % 3``, reward ``t``."""
    for t in range(start, start + n):
        buf.push(
            np.full(buf.state_dim, t), t % 3, float(t), np.full(buf.state_dim, t + 1), t % 7 == 0
        )


def test_replay_buffer_holds_100k_transitions_and_overwrites_the_oldest() -> None:
    buf = ReplayBuffer(capacity=100_000, state_dim=12, seed=0)
    # 12 float32 features: 2 * 48 (states) + 4 (reward) + 8 (action) + 1 (done) bytes each.
    assert buf.nbytes == 100_000 * 109
    fill(buf, 100_000)
    assert len(buf) == 100_000
    fill(buf, 10, start=100_000)
    assert len(buf) == 100_000
    states, actions, rewards, next_states, dones = buf.transitions()
    assert rewards[0] == 10.0 and rewards[-1] == 100_009.0
    assert np.array_equal(rewards, np.arange(10, 100_010, dtype=np.float32))
    assert np.array_equal(actions, np.arange(10, 100_010) % 3)
    assert np.array_equal(next_states[:, 0], states[:, 0] + 1)
    assert np.array_equal(dones, np.arange(10, 100_010) % 7 == 0)


def test_replay_buffer_wraps_around() -> None:
    buf = ReplayBuffer(capacity=5, state_dim=2, seed=0)
    fill(buf, 3)
    assert len(buf) == 3
    assert buf.transitions()[2].tolist() == [0.0, 1.0, 2.0]
    fill(buf, 9, start=3)
    assert len(buf) == 5
    assert buf.transitions()[2].tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]


def test_replay_buffer_samples_uniformly_and_reproducibly() -> None:
    buf = ReplayBuffer(capacity=10, state_dim=1, seed=42)
    fill(buf, 14)  # holds rewards 4..13
    draws = np.concatenate([buf.sample(64)[2] for _ in range(500)])
    counts = np.bincount(draws.astype(int) - 4, minlength=10)
    assert counts.sum() == 32_000 and len(counts) == 10
    expected = 3_200
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 33.7, counts  # 99.99th percentile of chi-square, 9 degrees of freedom
    # Same seed, same batches; another seed, others.
    a, b, c = (ReplayBuffer(10, 1, seed=s) for s in (1, 1, 2))
    for x in (a, b, c):
        fill(x, 10)
    assert a.sample(32)[2].tolist() == b.sample(32)[2].tolist() != c.sample(32)[2].tolist()
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, 1).sample(1)


def test_replay_buffer_round_trips_through_json() -> None:
    buf = ReplayBuffer(capacity=8, state_dim=3, seed=5)
    fill(buf, 11)  # wrapped: the write position is in the middle
    copy = ReplayBuffer.from_dict(orjson.loads(orjson.dumps(buf.to_dict())))
    for x, y in zip(copy.transitions(), buf.transitions(), strict=True):
        assert np.array_equal(x, y)
    fill(buf, 3, start=11)
    fill(copy, 3, start=11)
    for x, y in zip(copy.sample(16), buf.sample(16), strict=True):
        assert np.array_equal(x, y)
    # Truncated: only the most recent transitions, in order.
    small = ReplayBuffer.from_dict(buf.to_dict(max_items=3))
    assert small.capacity == 8 and len(small) == 3
    assert small.transitions()[2].tolist() == [11.0, 12.0, 13.0]
    with pytest.raises(ValueError, match="does not fit"):
        ReplayBuffer(4, 3).load_dict(buf.to_dict())


def test_replay_buffer_forgets_a_removed_action() -> None:
    buf = ReplayBuffer(capacity=6, state_dim=1, seed=0)
    fill(buf, 8)  # rewards 2..7, actions 2, 0, 1, 2, 0, 1
    buf.remove_action(1)
    _, actions, rewards, _, _ = buf.transitions()
    assert rewards.tolist() == [2.0, 3.0, 5.0, 6.0]
    assert actions.tolist() == [1, 0, 1, 0]  # 2 became 1
    fill(buf, 3, start=8)
    assert len(buf) == 6 and buf.transitions()[2].tolist() == [3.0, 5.0, 6.0, 8.0, 9.0, 10.0]


def test_full_replay_buffer_snapshot_size() -> None:
    buf = ReplayBuffer(capacity=100_000, state_dim=12, seed=0)
    fill(buf, 100_000)
    size = len(orjson.dumps(buf.to_dict()))
    # Base64 of the 10.9 MB of arrays: 4/3 of it.
    assert size == pytest.approx(100_000 * 109 * 4 / 3, rel=0.01), size
    assert len(orjson.dumps(buf.to_dict(max_items=10_000))) == pytest.approx(size / 10, rel=0.01)


# -- tabular Q-learning on a chain ---------------------------------------------------------------


class Chain(Environment):
    """States 0..N-1 in a row, start at 0. "right" moves one step right and
    "left" one step left (staying at 0); entering N-1 pays 1 and ends the
    episode. With discount g, Q*(s, right) = g^(N-2-s) and Q*(s, left) =
    g * V*(max(s-1, 0)) where V*(s) = g^(N-2-s)."""

    actions = ["left", "right"]

    def __init__(self, n: int = 5, max_len: int = 30) -> None:
        self.n, self.max_len = n, max_len
        self.state_dim = n
        self._s = self._t = 0

    def _x(self) -> np.ndarray:
        return np.eye(self.n)[self._s]

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._s = self._t = 0
        return self._x()

    def step(self, action: int | str) -> tuple[np.ndarray, float, bool, dict[str, Any]]:
        a = self.action_index(action)
        self._s = min(self._s + 1, self.n - 1) if a == 1 else max(self._s - 1, 0)
        self._t += 1
        goal = self._s == self.n - 1
        return self._x(), float(goal), goal or self._t >= self.max_len, {}


def test_q_learning_finds_the_optimal_values_of_a_chain() -> None:
    n, gamma = 5, 0.9
    chain = Chain(n)
    agent = QLearning(
        chain.actions,
        seed=0,
        context_dim=n,
        bins=2,
        gamma=gamma,
        epsilon=0.3,
        learning_rate=0.2,
        replay_steps=8,
        buffer_size=1_000,
    )
    for _ in range(300):
        run_episode(chain, agent)
    v = [gamma ** (n - 2 - s) for s in range(n - 1)]
    for s in range(n - 1):
        x = np.eye(n)[s]
        q_left, q_right = agent.scores(None, x)
        assert q_right == pytest.approx(v[s], abs=0.02), s
        assert q_left == pytest.approx(gamma * v[max(s - 1, 0)], abs=0.02), s
        assert agent.select(x, explore=False).arm == "right"
    # One table entry per visited state; the terminal state is never updated.
    assert len(agent._table) == n - 1


def test_q_learning_discretises_each_feature_into_bins() -> None:
    q = QLearning(["a"], seed=0, context_dim=3, bins=4, low=-1.0, high=1.0)
    assert q.state_key([-1.0, 0.0, 0.99]) == "0,2,3"
    assert q.state_key([-5.0, 0.49, 1.0]) == "0,2,3"  # clipped to the first / last bin
    assert q.state_key([-0.5, -0.01, 0.5]) == "1,1,3"


# -- neural agents on the LLM workflow environment ------------------------------------------

DQN_SETTINGS: dict[str, Any] = {
    "hidden": (32, 32),
    "gamma": 1.0,
    "learning_starts": 200,
    "epsilon_decay_steps": 2_000,
    "target_update": 100,
    "train_every": 2,
}


@pytest.mark.parametrize("double", [False, True], ids=["dqn", "double-dqn"])
def test_dqn_beats_the_best_fixed_arm_on_the_workflow(
    env: LLMWorkflowEnv, baselines: dict[str, float], double: bool
) -> None:
    agent = DQN(env.actions, seed=1, context_dim=env.state_dim, double=double, **DQN_SETTINGS)
    train(agent, 1_500, seed=1)
    value = evaluate(env, agent)
    print(
        f"\n{'double-' if double else ''}dqn {value:.4f} vs best fixed "
        f"{baselines['best_fixed']:.4f}, random {baselines['random']:.4f}"
    )
    # Seeds 0-4 all clear the best fixed arm by 0.02 or more (0.823-0.833 vs 0.799).
    assert value > baselines["best_fixed"] + 0.01, (value, baselines)


@pytest.mark.parametrize(
    ("cls", "params", "episodes"),
    [
        (Reinforce, {"hidden": (32,), "learning_rate": 0.01}, 600),
        (ActorCritic, {"hidden": (32,), "learning_rate": 0.003, "gamma": 1.0}, 400),
    ],
    ids=["reinforce", "actor_critic"],
)
def test_policy_gradient_agents_improve_over_a_random_policy(
    env: LLMWorkflowEnv,
    baselines: dict[str, float],
    cls: type[Agent],
    params: dict[str, Any],
    episodes: int,
) -> None:
    # Seeds 0-5 all pass (REINFORCE: 0.68-0.80 greedy; actor-critic: 0.69-0.81).
    agent = cls(env.actions, seed=0, context_dim=env.state_dim, **params)
    before = evaluate(env, agent, explore=True)
    train(agent, episodes, seed=0)
    stochastic, greedy = evaluate(env, agent, explore=True), evaluate(env, agent)
    print(
        f"\n{cls.algorithm}: {before:.4f} untrained -> {stochastic:.4f} (policy), "
        f"{greedy:.4f} (greedy); random {baselines['random']:.4f}"
    )
    assert stochastic > baselines["random"] + 0.08
    assert stochastic > before + 0.05
    assert greedy > baselines["random"] + 0.1


def test_dqn_training_step_on_a_batch_of_64_is_fast(env: LLMWorkflowEnv) -> None:
    agent = DQN(env.actions, seed=0, context_dim=env.state_dim, learning_starts=10**9)
    assert (agent.batch_size, agent.hidden) == (64, (64, 64))
    rng = np.random.default_rng(0)
    for _ in range(1_000):
        agent.observe(
            rng.random(env.state_dim),
            env.actions[int(rng.integers(7))],
            0.5,
            rng.random(env.state_dim),
            bool(rng.random() < 0.3),
        )
    for _ in range(5):  # warm-up
        agent.train_step()
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        agent.train_step()
        times.append(time.perf_counter() - t0)
    median_ms = statistics.median(times) * 1000
    print(f"\nDQN train step, batch 64, 12-64-64-7 MLP: median {median_ms:.2f} ms")
    assert median_ms <= 100.0


# -- snapshots mid-run ---------------------------------------------------------------------------


def make_agents(env: LLMWorkflowEnv) -> list[Agent]:
    common = {"context_dim": env.state_dim, "seed": 3}
    return [
        DQN(
            env.actions,
            hidden=(16,),
            learning_starts=32,
            batch_size=16,
            buffer_size=2_000,
            epsilon_decay_steps=500,
            target_update=50,
            double=True,
            **common,
        ),
        Reinforce(env.actions, hidden=(16,), **common),
        ActorCritic(env.actions, hidden=(16,), **common),
        QLearning(env.actions, bins=3, buffer_size=2_000, **common),
    ]


def play_steps(
    env: LLMWorkflowEnv, agent: Agent, steps: int, state: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """``steps`` learning steps from ``state``; resets at the ends of episodes."""
    arms = []
    for _ in range(steps):
        arm = agent.select(state).arm
        nxt, r, done, _ = env.step(arm)
        agent.observe(state, arm, r, nxt, done)
        arms.append(arm)
        state = env.reset() if done else nxt
    return arms, state


@pytest.mark.parametrize("index", range(4), ids=["dqn", "reinforce", "actor_critic", "q_learning"])
def test_restored_agent_continues_identically_mid_episode(env: LLMWorkflowEnv, index: int) -> None:
    agent = make_agents(env)[index]
    run_env = LLMWorkflowEnv(seed=7)
    state = run_env.reset(7)
    _, state = play_steps(run_env, agent, 301, state)  # 301: most likely mid-episode
    data = agent.snapshot()
    restored = type(agent).restore(data)
    assert isinstance(restored, Agent) and restored.snapshot() == data
    twin_env = LLMWorkflowEnv(seed=7)  # replays the same run to the same point
    twin_state = twin_env.reset(7)
    _, twin_state = play_steps(twin_env, make_agents(env)[index], 301, twin_state)
    assert np.array_equal(twin_state, state)
    a, _ = play_steps(run_env, agent, 200, state)
    b, _ = play_steps(twin_env, restored, 200, twin_state)
    assert a == b
    assert agent.snapshot() == restored.snapshot()
    print(f"\n{agent.algorithm} snapshot after 301 steps: {len(data):,} bytes")


def test_dqn_snapshot_keeps_only_the_recent_part_of_a_big_buffer(env: LLMWorkflowEnv) -> None:
    agent = DQN(
        env.actions,
        seed=0,
        context_dim=env.state_dim,
        learning_starts=10**9,
        snapshot_buffer_max=1_000,
    )
    rng = np.random.default_rng(0)
    for _ in range(5_000):
        agent.observe(rng.random(env.state_dim), ACCEPT, 0.5, rng.random(env.state_dim), True)
    data = agent.snapshot()
    restored = DQN.restore(data)
    assert isinstance(restored, DQN) and len(restored._buffer) == 1_000
    # ~150 bytes a transition plus the weights (12-64-64-7: 5.4k floats, twice, and Adam's).
    assert len(data) < 1_000 * 150 + 250_000, len(data)
    np.testing.assert_array_equal(
        restored._buffer.transitions()[0], agent._buffer.transitions()[0][-1_000:]
    )


def test_agents_never_touch_the_global_torch_generator(env: LLMWorkflowEnv) -> None:
    before = torch.random.get_rng_state()
    for agent in make_agents(env):
        train(agent, 30, seed=0)
        agent.add_arm("extra")
        agent.add_arm("clone", prior_from=ACCEPT)
        agent.remove_arm("extra")
        type(agent).restore(agent.snapshot())
    assert torch.equal(torch.random.get_rng_state(), before)


# -- agent rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(4), ids=["dqn", "reinforce", "actor_critic", "q_learning"])
def test_observe_refuses_bad_input_and_changes_nothing(env: LLMWorkflowEnv, index: int) -> None:
    agent = make_agents(env)[index]
    train(agent, 5, seed=0)
    x = np.linspace(0, 1, env.state_dim)
    before = agent.snapshot()
    with pytest.raises(UnknownArmError, match="'gpt-5'"):
        agent.observe(x, "gpt-5", 0.5, x, False)
    for reward in (math.nan, math.inf, "1", None):
        with pytest.raises(InvalidRewardError):
            agent.observe(x, ACCEPT, reward, x, False)  # type: ignore[arg-type]
    with pytest.raises(ContextError):
        agent.observe(x[:-1], ACCEPT, 0.5, x, False)
    with pytest.raises(ContextError):
        agent.observe(x, ACCEPT, 0.5, np.full(env.state_dim, np.nan), False)
    with pytest.raises(ContextError):
        agent.select(None)
    assert agent.snapshot() == before


def test_structural_hyperparameters_cannot_change_live(env: LLMWorkflowEnv) -> None:
    agent = DQN(env.actions, seed=0, context_dim=env.state_dim, hidden=(8,))
    with pytest.raises(PolicyError, match="hidden"):
        agent.set_params(hidden=(16,))
    assert agent.hidden == (8,)
    agent.set_params(learning_rate=0.05, epsilon=0.2)
    assert agent._optimizer.param_groups[0]["lr"] == 0.05
    with pytest.raises(PolicyError, match="bins"):
        QLearning(["a"], context_dim=2).set_params(bins=9)


def test_removing_an_arm_drops_its_transitions_from_the_buffer(env: LLMWorkflowEnv) -> None:
    agent = make_agents(env)[0]
    assert isinstance(agent, DQN)
    train(agent, 50, seed=0)
    actions = agent._buffer.transitions()[1]
    gone = int(np.bincount(actions, minlength=len(env.actions))[2])
    agent.remove_arm(env.actions[2])
    after = agent._buffer.transitions()[1]
    assert len(after) == len(actions) - gone
    assert after.max() <= len(env.actions) - 2
    assert agent.scores(None, np.zeros(env.state_dim)).shape == (len(env.actions) - 1,)
    state = LLMWorkflowEnv(seed=0).reset(0)
    agent.observe(state, ACCEPT, 0.0, state, True)
    with pytest.raises(UnknownArmError):
        agent.observe(state, env.actions[2], 0.0, state, True)


def test_reinforce_learns_at_the_end_of_an_episode_only(env: LLMWorkflowEnv) -> None:
    agent = Reinforce(env.actions, seed=0, context_dim=env.state_dim)
    x = np.linspace(0, 1, env.state_dim)
    p0 = agent.probabilities(None, x).copy()
    agent.observe(x, env.actions[0], 0.0, x, False)
    agent.observe(x, env.actions[1], 0.0, x, False)
    np.testing.assert_array_equal(agent.probabilities(None, x), p0)
    # A one-step update is an episode of its own and leaves the open one alone.
    agent.update(env.actions[2], 1.0, x)
    p1 = agent.probabilities(None, x).copy()
    assert not np.array_equal(p1, p0)
    assert len(agent._ep_actions) == 2
    agent.observe(x, ACCEPT, 1.0, x, True)  # done: learn
    assert len(agent._ep_actions) == 0
    assert not np.array_equal(agent.probabilities(None, x), p1)
    agent.end_episode()  # nothing open: a no-op
    assert agent.stats()[ACCEPT]["pulls"] == 1


# -- the environment -----------------------------------------------------------------------------


def test_workflow_env_is_deterministic_given_the_seed() -> None:
    def run(seed: int) -> list[Any]:
        env = LLMWorkflowEnv(seed=123)
        rng = np.random.default_rng(0)
        out = []
        for i in range(30):
            out.append(env.reset(seed if i == 0 else None).tolist())
            done = False
            while not done:
                s, r, done, _ = env.step(int(rng.integers(len(env.actions))))
                out.append((s.tolist(), r, done))
        return out

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_workflow_env_reward_of_one_call_is_the_reward_spec_scalar(env: LLMWorkflowEnv) -> None:
    e = env.copy()
    spec = e.simulator.reward_spec
    e.reset(seed=1)
    for _ in range(50):
        _, r0, done, info = e.step("gpt-4o")
        assert (r0, done) == (0.0, False)
        s, r, done, _ = e.step(ACCEPT)
        assert done
        assert r == pytest.approx(
            spec.scalar(info["quality"], info["cost_usd"], info["latency_ms"], info["error"]),
            abs=1e-12,
        )
        n = len(e.tasks)
        if not info["error"]:
            assert s[n + 3] == pytest.approx(info["quality"])
        assert s[n + 5] == pytest.approx(info["cost_usd"] / spec.cost_scale_usd)
        assert s[n + 6] == pytest.approx(info["latency_ms"] / spec.latency_scale_ms)
        e.reset()


def test_workflow_env_episode_rules(env: LLMWorkflowEnv) -> None:
    e = LLMWorkflowEnv(env.simulator, max_steps=2)
    s = e.reset(seed=0)
    n = len(e.tasks)
    assert s[:n].sum() == 1.0 and s[n + 2 :].tolist() == [0.0] * 5
    s, r, done, _ = e.step(ACCEPT)  # nothing to accept yet
    assert (r, done) == (e.simulator.reward_spec.error_reward, True)
    with pytest.raises(RuntimeError, match="reset"):
        e.step(0)
    e.reset()
    e.step("gpt-4o-mini")
    s, r, done, info = e.step("claude-sonnet")  # the second of max_steps=2 calls ends it
    assert done and r > 0.0 and info["attempts"] == 2 and s[n + 2] == 1.0
    with pytest.raises(KeyError, match="gpt-5"):
        e.reset()
        e.step("gpt-5")
    with pytest.raises(IndexError):
        e.step(len(e.actions))


def test_workflow_env_accepts_the_last_successful_answer() -> None:
    e = LLMWorkflowEnv(max_steps=50)
    e.reset(seed=4)
    spec = e.simulator.reward_spec
    cost = latency = 0.0
    quality = None
    for _ in range(40):  # llama-70b fails 2% of the time: some calls error
        _, _, _, info = e.step("llama-70b")
        cost += info["cost_usd"]
        latency += info["latency_ms"]
        if not info["error"]:
            quality = info["quality"]
    _, r, _, _ = e.step(ACCEPT)
    assert quality is not None
    w = spec.quality_weight + spec.cost_weight + spec.latency_weight
    expected = (
        spec.quality_weight * quality
        + spec.cost_weight * max(0.0, 1 - cost / spec.cost_scale_usd)
        + spec.latency_weight * max(0.0, 1 - latency / spec.latency_scale_ms)
    ) / w
    assert r == pytest.approx(expected, abs=1e-12)


def test_fixed_policies_are_the_arms_and_random_is_worse(
    env: LLMWorkflowEnv, baselines: dict[str, float]
) -> None:
    values = env.fixed_policy_values(EVAL_EPISODES, EVAL_SEED)
    assert set(values) == set(env.actions) - {ACCEPT}
    assert baselines["best_fixed"] == max(values.values())
    assert max(values, key=values.__getitem__) == "claude-haiku"  # the simulator's best arm
    assert baselines["random"] < min(values.values())
    # Deterministic: the same seed gives the same episodes.
    assert env.fixed_policy_values(EVAL_EPISODES, EVAL_SEED) == values
