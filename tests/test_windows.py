"""Windowed aggregates against a brute-force recomputation over the same
events — out of order, late within the grace period, and too late."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from app.features.quantile_sketch import QuantileSketch
from app.features.store import FeatureStore, pane_key
from app.features.windows import Window, WindowedAggregates

WINDOWS = (Window("1m", 60_000), Window("5m", 300_000, 60_000), Window("90s", 90_000, 30_000))
GRACE = 7_000


def events(seed: int, n: int = 6_000) -> list[dict]:
    """Mostly in order (≈ 5/s), with jitter, some late within grace and some beyond."""
    rng = random.Random(seed)
    out, t = [], 1_700_000_000_000
    for _ in range(n):
        t += rng.randint(0, 400)
        r = rng.random()
        ts = (
            t - rng.randint(0, GRACE)
            if r < 0.15
            else t - rng.randint(GRACE + 1, 60_000)
            if r < 0.2
            else t
        )
        if rng.random() < 0.5:
            out.append({"k": "r", "t": ts, "input_tokens": rng.randint(0, 5_000)})
        else:
            obs = {"k": "o", "t": ts, "reward": rng.random()}
            if rng.random() < 0.8:
                obs["latency_ms"] = rng.lognormvariate(6.5, 0.8)
            if rng.random() < 0.7:
                obs["cost_usd"] = rng.random() / 100
            if rng.random() < 0.9:
                obs["error"] = rng.random() < 0.1
            out.append(obs)
    return out


def accepted(evs: list[dict], grace: int) -> tuple[list[dict], int]:
    """The brute-force lateness rule: accept when t ≥ (max t so far) − grace."""
    wm, keep = -math.inf, []
    for e in evs:
        if e["t"] >= wm - grace:
            keep.append(e)
            wm = max(wm, e["t"])
    return keep, int(wm)


def brute(evs: list[dict], start: int, end: int, size_s: float) -> dict:
    inside = [e for e in evs if start <= e["t"] < end]
    req = [e for e in inside if e["k"] == "r"]
    out = [e for e in inside if e["k"] == "o"]
    costs = [e["cost_usd"] for e in out if "cost_usd" in e]
    lat = sorted(e["latency_ms"] for e in out if "latency_ms" in e)
    return {
        "request_count": float(len(req)),
        "request_rate": len(req) / size_s,
        "mean_input_tokens": sum(e["input_tokens"] for e in req) / len(req) if req else None,
        "outcome_count": float(len(out)),
        "mean_reward": sum(e["reward"] for e in out) / len(out) if out else None,
        "mean_cost_usd": sum(costs) / len(costs) if costs else None,
        "cost_usd": sum(costs),
        "error_rate": sum(bool(e.get("error")) for e in out) / len(out) if out else None,
        "latency_p50_ms": lat[int(0.5 * (len(lat) - 1))] if lat else None,
        "latency_p95_ms": lat[int(0.95 * (len(lat) - 1))] if lat else None,
    }


def assert_metrics_equal(got: dict, want: dict, where: str) -> None:
    for k, v in want.items():
        if v is None:
            assert got[k] is None, f"{where} {k}"
        elif k.startswith("latency"):  # the sketch's guarantee: 1 % relative
            assert abs(got[k] - v) <= 0.01 * v * (1 + 1e-9), f"{where} {k}: {got[k]} vs {v}"
        else:
            assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-12), f"{where} {k}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_final_window_equals_brute_force_including_late_events(seed: int) -> None:
    evs = events(seed)
    w = WindowedAggregates(WINDOWS, grace_ms=GRACE, retention_ms=10**12)
    results = [w.add(dict(e)) for e in evs]
    keep, wm = accepted(evs, GRACE)
    assert w.watermark == wm
    assert w.late == len(evs) - len(keep) > 0, "the run must contain too-late events"
    assert sum(r is not None for r in results) == len(keep)
    late_within_grace = sum(1 for a, b in itertools.pairwise(keep) if b["t"] < a["t"])
    assert late_within_grace > 50, "and out-of-order events within grace"
    first = min(e["t"] for e in evs)
    checked = 0
    for win in WINDOWS:
        rows = w.history(win, first, wm)
        assert rows, win.name
        for row in rows:
            assert row["window_end"] - row["window_start"] == win.size_ms
            assert row["window_end"] % win.hop_ms == win.size_ms % win.hop_ms
            assert row["window_end"] + GRACE <= wm, "only final windows"
            want = brute(keep, row["window_start"], row["window_end"], win.size_ms / 1000)
            assert_metrics_equal(row, want, f"{win.name}@{row['window_end']}")
            checked += 1
        # Online: the latest final window.
        start, end, m = w.online(win)
        assert end == rows[-1]["window_end"] and end + GRACE <= wm < end + GRACE + win.hop_ms
        assert_metrics_equal(m, brute(keep, start, end, win.size_ms / 1000), "online")
    assert checked > 60


def test_a_late_event_within_grace_changes_its_window_and_a_later_one_does_not() -> None:
    win = Window("10s", 10_000)
    w = WindowedAggregates((win,), grace_ms=2_000, retention_ms=60_000)
    for t in (1_000, 9_000, 11_000):
        w.add({"k": "r", "t": t, "input_tokens": 1})
    assert w.add({"k": "r", "t": 9_500, "input_tokens": 1}) == 0  # pane [0, 10 s)
    assert w.add({"k": "r", "t": 8_999, "input_tokens": 1}) is None  # < 9 000: dropped
    w.add({"k": "r", "t": 12_000, "input_tokens": 1})  # [0, 10 s) final at 12 s
    assert w.online(win)[2]["request_count"] == 3.0
    assert w.late == 1


def test_panes_expire_after_retention_and_windows_then_read_empty() -> None:
    win = Window("1m", 60_000)
    w = WindowedAggregates((win,), grace_ms=0, retention_ms=120_000)
    for t in range(0, 600_000, 1_000):
        w.add({"k": "r", "t": t, "input_tokens": 1})
    assert w.expire() == [s for s in range(0, 480_000, 60_000) if s + 60_000 <= 599_000 - 120_000]
    assert min(w.pane_starts()) == 420_000
    assert w.window(win, 60_000).requests == 0
    assert w.window(win, 540_000).requests == 60


def test_tumbling_and_hopping_share_panes_of_the_gcd() -> None:
    w = WindowedAggregates(WINDOWS, grace_ms=0, retention_ms=10**9)
    assert w.pane_ms == 30_000


def test_windows_reject_bad_definitions() -> None:
    with pytest.raises(ValueError):
        Window("x", 90_000, 60_000)  # size not a multiple of hop
    with pytest.raises(ValueError):
        WindowedAggregates((Window("1m", 60_000),), grace_ms=5_000, retention_ms=60_000)


def test_store_rebuilt_from_its_persisted_panes_answers_the_same() -> None:
    evs = events(5, 2_000)
    a = FeatureStore(WINDOWS, grace_ms=GRACE, retention_ms=10**12)
    table: dict[bytes, bytes] = {}
    for e in evs:
        start = a.observe("tenant=x", dict(e))
        if start is not None:
            table[pane_key("tenant=x", start)] = a.pane_value("tenant=x", start)
    b = FeatureStore(WINDOWS, grace_ms=GRACE, retention_ms=10**12)
    for k, v in table.items():
        b.load(k, v)
    assert b.get_features("tenant=x") == a.get_features("tenant=x")
    lo, hi = evs[0]["t"], evs[-1]["t"]
    assert b.get_historical_features("tenant=x", lo, hi) == a.get_historical_features(
        "tenant=x", lo, hi
    )


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.95, 0.99, 1.0])
def test_quantile_sketch_is_within_its_relative_accuracy_and_merges_exactly(q: float) -> None:
    rng = random.Random(3)
    xs = [rng.lognormvariate(5, 1.5) for _ in range(5_000)] + [0.0] * 50
    whole, a, b = QuantileSketch(0.01), QuantileSketch(0.01), QuantileSketch(0.01)
    for i, x in enumerate(xs):
        whole.add(x)
        (a if i % 2 else b).add(x)
    a.merge(b)
    exact = sorted(xs)[int(q * (len(xs) - 1))]
    got = whole.quantile(q)
    assert got is not None and abs(got - exact) <= 0.01 * exact * (1 + 1e-9)
    assert a.quantile(q) == got
    assert QuantileSketch.from_list(whole.to_list()).quantile(q) == got


def test_redelivered_observations_are_not_counted_twice() -> None:
    evs = events(9, 1_000)
    once = FeatureStore(WINDOWS, grace_ms=GRACE, retention_ms=10**12)
    twice = FeatureStore(WINDOWS, grace_ms=GRACE, retention_ms=10**12)
    for pos, e in enumerate(evs):
        once.observe("tenant=x", dict(e), pos)
    for pos, e in [*enumerate(evs[:600]), *enumerate(evs)]:  # a crash after 600, replayed
        twice.observe("tenant=x", dict(e), pos)
    assert twice.get_features("tenant=x") == once.get_features("tenant=x")


def test_an_entity_that_goes_quiet_expires_against_the_latest_event_of_any() -> None:
    store = FeatureStore((Window("1m", 60_000),), grace_ms=0, retention_ms=120_000)
    store.observe("tenant=quiet", {"k": "r", "t": 1_000, "input_tokens": 5})
    for t in range(0, 600_000, 10_000):
        store.observe("tenant=busy", {"k": "r", "t": t, "input_tokens": 5})
    gone = store.expire()
    assert pane_key("tenant=quiet", 0) in gone
    assert store.entities() == ["tenant=busy"]
    assert store.get_feature("tenant=quiet", "request_count_1m") is None
    # The busy entity keeps what is within the retention of its own latest event.
    assert store.get_feature("tenant=busy", "request_count_1m") == 6.0


def test_a_dropped_pane_leaves_the_copy_and_its_last_pane_the_entity() -> None:
    store = FeatureStore((Window("1m", 60_000),), grace_ms=0, retention_ms=600_000)
    store.observe("tenant=a", {"k": "r", "t": 1_000, "input_tokens": 5})
    store.observe("tenant=a", {"k": "r", "t": 61_000, "input_tokens": 5})
    store.drop(pane_key("tenant=a", 0))
    assert store.entities() == ["tenant=a"]
    store.drop(pane_key("tenant=a", 60_000))
    store.drop(pane_key("tenant=a", 60_000))  # a tombstone read twice
    assert store.entities() == []
