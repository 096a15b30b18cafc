"""Point-in-time correctness: a training row sees only feature values that
were final at its decision time, proven on a case where leakage would change
the answer."""

from __future__ import annotations

from app.features.store import FeatureStore
from app.features.training_set import build_training_set
from app.features.windows import Window

MIN = 60_000
GRACE = 5_000


def outcome(rid: str, decided_at: int, tenant: str = "acme", arm: str = "a") -> dict:
    return {
        "request_id": rid,
        "tenant_id": tenant,
        "arm": arm,
        "decided_at": decided_at,
        "reward": 1.0,
        "policy_id": "p",
    }


def test_rows_take_the_last_final_window_before_the_decision_never_a_later_one() -> None:
    store = FeatureStore((Window("1m", MIN),), grace_ms=GRACE, retention_ms=10**9)
    # Minute 0: rewards 0.2. Minute 1: rewards 0.9 — observed after the first decision.
    for t in range(0, MIN, 1_000):
        store.observe("tenant=acme", {"k": "o", "t": t, "reward": 0.2})
    for t in range(MIN, 2 * MIN, 1_000):
        store.observe("tenant=acme", {"k": "o", "t": t, "reward": 0.9})
    store.observe("tenant=acme", {"k": "o", "t": 3 * MIN, "reward": 0.5})  # closes minute 1
    history = store.get_historical_features("tenant=acme", 1, 3 * MIN, ["mean_reward_1m"])
    assert [
        (r["window_end"], r["available_at"], round(r["mean_reward_1m"], 9)) for r in history[:2]
    ] == [
        (MIN, MIN + GRACE, 0.2),
        (2 * MIN, 2 * MIN + GRACE, 0.9),
    ]
    outcomes = [
        outcome("early", MIN + 2_000),  # minute 0 ended but is not final yet: nothing
        outcome("mid", 2 * MIN + 1_000),  # minute 1 has ended, final only at 2m + 5 s: 0.2
        outcome("late", 2 * MIN + GRACE),  # minute 1 final exactly now: 0.9
        outcome("mid", 2 * MIN + 1_000),  # delivered twice by the archive: counted once
    ]
    t = build_training_set(outcomes, history, ("tenant",))
    got = dict(
        zip(t["request_id"].to_pylist(), t["tenant__mean_reward_1m"].to_pylist(), strict=True)
    )
    assert {k: v if v is None else round(v, 9) for k, v in got.items()} == {
        "early": None,
        "mid": 0.2,
        "late": 0.9,
    }
    # The leaky join (latest window *ending* before the decision) would say 0.9 for "mid".
    leaky = max(
        (r for r in history if r["window_end"] <= 2 * MIN + 1_000), key=lambda r: r["window_end"]
    )
    assert round(leaky["mean_reward_1m"], 9) == 0.9 != round(got["mid"], 9)


def test_entities_are_kept_apart_and_per_arm_features_join_on_tenant_and_arm() -> None:
    history = [
        {"entity": "tenant=acme,arm=a", "window": "1m", "available_at": 10, "mean_reward_1m": 0.1},
        {"entity": "tenant=acme,arm=b", "window": "1m", "available_at": 10, "mean_reward_1m": 0.7},
        {"entity": "tenant=zeta", "window": "1m", "available_at": 10, "mean_reward_1m": 0.3},
    ]
    t = build_training_set(
        [outcome("1", 20, arm="a"), outcome("2", 20, arm="b"), outcome("3", 20, tenant="zeta")],
        history,
    )
    assert t["tenant_arm__mean_reward_1m"].to_pylist() == [0.1, 0.7, None]
    assert t["tenant__mean_reward_1m"].to_pylist() == [None, None, 0.3]
