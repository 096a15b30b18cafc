"""Circuit breakers (app/circuit_breaker.py): closed → open after N failures
in a row (exceptions, slow calls, timeouts) → half-open after the cool-down,
one trial at a time; the state on ``llmopt_circuit_state``. And where they
guard: a user's reward function (the weighted sum stands in), the decider's
window-feature reads (the defaults stand in, counted ``unavailable``) and the
read of published snapshot versions (bounded by a timeout)."""

from __future__ import annotations

import asyncio
import sys
import time
import types
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.circuit_breaker import CircuitBreaker, CircuitOpen
from app.features.extraction import FeatureExtractor
from app.features.spec import FeatureSpec
from app.records import Request
from app.rewards import REWARD_FUNCTION_FAILURES, RewardSpec
from app.stream import snapshot_log


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("llmopt_circuit_state", {"name": name})


def skipped(name: str) -> float:
    return REGISTRY.get_sample_value("llmopt_circuit_skipped_total", {"name": name}) or 0.0


def fail() -> int:
    raise OSError("down")


# -- the breaker -------------------------------------------------------------------------------
def test_it_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    b = CircuitBreaker("t-consecutive", failures=3, reset_seconds=5, clock=clock)
    for _ in range(2):
        assert b.call(fail, fallback=lambda: -1) == -1
    assert b.call(lambda: 1, fallback=lambda: -1) == 1  # a success resets the count
    for _ in range(2):
        b.call(fail, fallback=lambda: -1)
    assert b.state == "closed" and gauge("t-consecutive") == 0
    b.call(fail, fallback=lambda: -1)
    assert b.state == "open" and gauge("t-consecutive") == 2
    calls: list[int] = []

    def counted() -> int:
        calls.append(1)
        return 1

    assert b.call(counted, fallback=lambda: -1) == -1
    assert calls == [] and skipped("t-consecutive") == 1


def test_half_open_lets_one_trial_through_and_its_result_decides() -> None:
    clock = Clock()
    b = CircuitBreaker("t-half-open", failures=1, reset_seconds=5, clock=clock)
    b.call(fail, fallback=lambda: -1)
    clock.now = 4.9
    assert b.state == "open"
    clock.now = 5.0
    assert b.state == "half_open"
    assert b.allow() and gauge("t-half-open") == 1
    assert not b.allow()  # one trial at a time
    b.failed()  # the trial failed: open for another cool-down
    assert b.state == "open"
    clock.now = 9.9
    assert not b.allow()
    clock.now = 10.0
    assert b.call(lambda: 7, fallback=lambda: -1) == 7
    assert b.state == "closed" and gauge("t-half-open") == 0


def test_a_slow_call_counts_as_a_failure_but_keeps_its_result() -> None:
    clock = Clock()
    b = CircuitBreaker("t-slow", failures=2, reset_seconds=5, slow_seconds=0.1, clock=clock)

    def slow() -> int:
        clock.now += 0.2
        return 3

    assert b.call(slow, fallback=lambda: -1) == 3
    assert b.call(slow, fallback=lambda: -1) == 3
    assert b.state == "open"


async def test_an_async_call_is_bounded_by_its_timeout() -> None:
    b = CircuitBreaker("t-async", failures=2, reset_seconds=60)

    async def hang() -> int:
        await asyncio.sleep(60)
        return 1

    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await b.call_async(hang, timeout_seconds=0.05)
        assert time.monotonic() - started < 5
    with pytest.raises(CircuitOpen):
        await b.call_async(hang, timeout_seconds=0.05)


async def test_a_cancelled_trial_does_not_hold_the_breaker_half_open() -> None:
    clock = Clock()
    b = CircuitBreaker("t-cancel", failures=1, reset_seconds=1, clock=clock)
    b.failed()
    clock.now = 1.0
    task = asyncio.ensure_future(b.call_async(lambda: asyncio.sleep(60), timeout_seconds=60))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    clock.now = 2.0
    assert b.allow()  # a new trial once the cool-down has passed again


# -- a user's reward function ------------------------------------------------------------------
@pytest.fixture
def reward_module() -> Iterator[SimpleNamespace]:
    """``flaky_reward:score``, a reward function whose model is unreachable
    while ``broken``; ``calls`` counts its calls."""
    state = SimpleNamespace(calls=0, broken=True)

    def score(components: Any, context: Any) -> float:
        state.calls += 1
        if state.broken:
            raise ConnectionError("reward model unreachable")
        return 0.9

    module = types.ModuleType("flaky_reward")
    module.score = score  # type: ignore[attr-defined]
    sys.modules["flaky_reward"] = module
    yield state
    del sys.modules["flaky_reward"]


def test_a_failing_reward_function_is_not_called_while_its_circuit_is_open(
    reward_module: Any,
) -> None:
    spec = RewardSpec(function="flaky_reward:score")
    clock = Clock()
    breaker = spec._breaker
    assert breaker is not None
    breaker.clock = clock
    components = {"quality": 0.5}
    for _ in range(REWARD_FUNCTION_FAILURES):
        value, terms = spec.score(components, 0, {})
        assert value == spec.scalar(quality=0.5) and terms["function_error"].startswith(
            "ConnectionError"
        )
    assert reward_module.calls == REWARD_FUNCTION_FAILURES
    value, terms = spec.score(components, 0, {})
    assert reward_module.calls == REWARD_FUNCTION_FAILURES  # not called
    assert value == spec.scalar(quality=0.5) and terms["function_error"].startswith("CircuitOpen")
    assert gauge("reward_function:flaky_reward:score") == 2
    reward_module.broken = False
    clock.now = breaker.reset_seconds
    assert spec.score(components, 0, {})[0] == 0.9  # the trial call succeeds
    assert breaker.state == "closed"


# -- the decider's window-feature reads --------------------------------------------------------
def test_failing_window_reads_give_the_default_counted_unavailable() -> None:
    spec = FeatureSpec.from_dict(
        {
            "name": "breaker-spec",
            "version": 1,
            "features": [
                {"name": "reward_5m", "source": "window.tenant.mean_reward_5m", "default": 0.5}
            ],
        }
    )
    reads: list[str] = []

    def lookup(entity: str, name: str) -> float | None:
        reads.append(entity)
        raise OSError("store gone")

    x = FeatureExtractor(spec, lookup=lookup)
    x.breaker.clock = Clock()
    r = Request(request_id="r", tenant_id="t", task_type="qa", created_at=0)
    for _ in range(10):
        assert x.values(r) == [0.5]
    assert len(reads) == x.breaker.failures  # then no more reads
    assert x.defaults[("reward_5m", "unavailable")] == 10
    assert x.breaker.state == "open"
    labels = {"spec": "breaker-spec", "feature": "reward_5m", "reason": "unavailable"}
    assert REGISTRY.get_sample_value("llmopt_feature_defaults_total", labels) == 10


# -- the published snapshot versions -----------------------------------------------------------
async def test_reading_the_published_versions_is_bounded_and_guarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def never(runtime: Any, topic: str) -> dict[str, int]:
        await asyncio.sleep(60)
        return {}

    monkeypatch.setattr(snapshot_log, "_read_versions", never)
    breaker = snapshot_log.PUBLISHED_VERSIONS
    monkeypatch.setattr(breaker, "clock", Clock())
    breaker.succeeded()
    runtime = SimpleNamespace(settings=None)
    for _ in range(breaker.failures):
        with pytest.raises(TimeoutError):
            await snapshot_log.published_versions(runtime, "snapshots", timeout_seconds=0.05)
    with pytest.raises(CircuitOpen):
        await snapshot_log.published_versions(runtime, "snapshots", timeout_seconds=0.05)
    breaker.succeeded()
