"""The context-free policies make the same choices, with the same
propensities, from one release to the next: a digest of each configuration's
play pins them.

Each configuration plays 2,000 rounds of a fixed Bernoulli environment on
three seeds: every seventh round from a three-arm subset (the propensity is
then relative to the subset), every thirteenth greedily (``explore=False``),
and from round 1,000 on as a policy restored from a snapshot. The digest
covers every (arm, propensity rounded to 1e-10, explored) and, at the end,
the snapshot's learned state (rounded alike) and its random generator's
state. A faster implementation must give the same digests; a change of
algorithm that changes the choices must say so by changing them.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import orjson
import pytest

from app.policies.registry import algorithms

ARMS = ["a", "b", "c", "d", "e"]
MEANS = [0.8, 0.65, 0.5, 0.45, 0.2]
SUBSETS = [["b", "d", "e"], ["a", "c", "e"], ["c", "d", "a"]]
ROUNDS = 2_000
SEEDS = (0, 1, 2)

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "epsilon_greedy": ("epsilon_greedy", {"epsilon": 0.1}),
    "epsilon_greedy-decay": (
        "epsilon_greedy",
        {"epsilon": 0.3, "decay": "exponential", "decay_rate": 0.002, "min_epsilon": 0.01},
    ),
    "epsilon_greedy-vdbe": ("epsilon_greedy", {"epsilon": 0.2, "adaptive": True}),
    "softmax": ("softmax", {"temperature": 0.1}),
    "softmax-decay": ("softmax", {"temperature": 0.3, "decay_rate": 0.001}),
    "ucb1": ("ucb1", {}),
    "ucb_tuned": ("ucb_tuned", {}),
    "ucb_v": ("ucb_v", {}),
    "discounted_ucb": ("discounted_ucb", {"gamma": 0.99}),
    "sliding_window_ucb": ("sliding_window_ucb", {"window": 100}),
    "exp3": ("exp3", {"gamma": 0.1}),
    "thompson_sampling": ("thompson_sampling", {"propensity_samples": 2000}),
    "discounted_thompson": (
        "thompson_sampling",
        {"propensity_samples": 2000, "discount": 0.99},
    ),
    "gaussian_thompson": ("gaussian_thompson", {"propensity_samples": 2000}),
    "meta_selector": ("meta_selector", algorithms()["meta_selector"].example_params),
}

DIGESTS: dict[str, str] = {
    "discounted_ucb": "1f57be153d37d3b64577ea7817d541cae4f8938f22ed3fdf1009c59e394d5894",
    "epsilon_greedy": "bf05c30480f2c2a8f503e0095254d58107b4ea22e7fe343fe9ccb617bb43553c",
    "epsilon_greedy-decay": "0a86050a45b73ba57a070dfa7d0bdb83503b8527e7fba0ccaeb1742cbcffd0fd",
    "epsilon_greedy-vdbe": "3710742d2414226dbc3c7ce85bbe56349f662236857ac56e2d52e07a252550ec",
    "exp3": "6a11da3ef57a8c4f08d70e0c83fee1dd8d3536ccb0e4ccccb6a668c2f896e25b",
    "gaussian_thompson": "84af5e995048e3cf32477c8b1505c9a3cee9bfa365cd8963dd82447e973b6c34",
    "meta_selector": "6ecef87af2e90441820da22be3617d2420a645bdcf29882c840324c4c22d23dc",
    "sliding_window_ucb": "f5d85e75eb0fd850b5011315e8744fd667763dac2199ed25a3ae00ccfddb055f",
    "softmax": "961af4e467de14373348c0238934eee896a47ce6b67396c0e616fc4cca07b19a",
    "softmax-decay": "b4fa1db837e0d6f587fa7997fa2fb80c47362cbf71c34c3f3e6ad656123a2402",
    "thompson_sampling": "c925e9efa36d78c28a4c435c85a689bc25b1f17d3eead028ecadebf8d990fac5",
    "discounted_thompson": "8b6185c1c08e5db9968df0297520081ca25bf692490fa0dafd709f22b3acf5a1",
    "ucb1": "1cf92c96d7fcba77a39a41f260ae7d0a4a6cffa32348e0515c06ad2643aa79c8",
    "ucb_tuned": "550656f8e158a0d8899cd67cebb46d668b8f921ecdb1166ba4f232af080dd98c",
    "ucb_v": "946a87b5cd95db613504dff72340370e069a981b5d24e21ff9ea71a550fb59c1",
}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 10)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def fingerprint(algorithm: str, params: dict[str, Any], seed: int) -> str:
    cls = algorithms()[algorithm]
    policy = cls(ARMS, seed=seed, **params)
    env = random.Random(10_000 + seed)
    digest = hashlib.sha256()
    for t in range(ROUNDS):
        if t == ROUNDS // 2:
            policy = cls.restore(policy.snapshot())
        allowed = SUBSETS[t % len(SUBSETS)] if t % 7 == 3 else None
        sel = policy.select(allowed=allowed, explore=t % 13 != 5)
        digest.update(f"{sel.arm}:{round(sel.propensity, 10)!r}:{sel.explored:d};".encode())
        reward = 1.0 if env.random() < MEANS[ARMS.index(sel.arm)] else 0.0
        policy.update(sel.arm, reward, propensity=sel.propensity)
    snap = orjson.loads(policy.snapshot())
    end = {"state": _rounded(snap["state"]), "rng": snap["rng"]}
    digest.update(orjson.dumps(end, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


def fingerprints(name: str) -> str:
    """The digest of a configuration's play on every seed, in one."""
    algorithm, params = CONFIGS[name]
    return hashlib.sha256(
        "".join(fingerprint(algorithm, params, s) for s in SEEDS).encode()
    ).hexdigest()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_choices_and_propensities_are_pinned(name: str) -> None:
    assert fingerprints(name) == DIGESTS[name]


def test_every_context_free_policy_is_pinned() -> None:
    context_free = {n for n, cls in algorithms().items() if not cls.contextual}
    pinned = {algorithm for algorithm, _ in CONFIGS.values()}
    assert context_free <= pinned
