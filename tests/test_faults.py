"""Faults injected for the chaos checks (app/faults.py): the spec is parsed
strictly, and each hook acts where it says — a kill between a batch's
handling and its commit, a delay per batch, a crash inside the learner's
update that the learner turns into an error of that message alone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app import faults
from app.faults import Faults, FaultSpecError, InjectedFault, parse
from app.learner import Learner
from app.settings import Settings, SettingsError
from app.stream.batched_service import Batch, BatchedService
from tests.test_learner import T0, config, outcome


def test_an_empty_spec_is_no_faults() -> None:
    assert parse("") is None
    assert parse(" , ") is None


def test_a_full_spec_parses() -> None:
    got = parse(
        "kill_mid_batch:join_rewards:3, crash_policy_update:0.001,"
        "slow_consumer:learn_from_outcomes:200ms,slow_consumer:select_arm:1.5s"
    )
    assert got is not None
    assert got.kill_after == {"join_rewards": 3}
    assert got.crash_fraction == 0.001
    assert got.delay_seconds == {"learn_from_outcomes": 0.2, "select_arm": 1.5}


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("kill_midbatch:join_rewards:3", "unknown fault 'kill_midbatch'"),
        ("kill_mid_batch:join_reward:3", "unknown service 'join_reward'"),
        ("kill_mid_batch:join_rewards:0", "integer from 1"),
        ("kill_mid_batch:join_rewards:x", "integer from 1"),
        ("kill_mid_batch:join_rewards", "takes SERVICE:BATCH_NUMBER"),
        ("crash_policy_update:1.5", "fraction in (0, 1]"),
        ("crash_policy_update:often", "fraction in (0, 1]"),
        ("crash_policy_update", "fraction in (0, 1]"),
        ("slow_consumer:learn_from_outcomes:200", "number with ms or s"),
        ("slow_consumer:learn_from_outcomes:-1s", "number with ms or s"),
    ],
)
def test_a_bad_spec_says_which_part_and_why(spec: str, says: str) -> None:
    with pytest.raises(FaultSpecError, match=None) as err:
        parse(spec)
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_the_settings_refuse_a_bad_spec_at_start() -> None:
    with pytest.raises(SettingsError, match=r"^LLMOPT_FAULTS: 'slow_consumer:x:1s': unknown"):
        Settings.from_env({"LLMOPT_FAULTS": "slow_consumer:x:1s"})
    assert Settings.from_env({"LLMOPT_FAULTS": "crash_policy_update:0.5"}).faults


def test_the_crash_is_decided_by_the_request_and_hits_its_fraction() -> None:
    f = Faults(crash_fraction=0.1)
    ids = [f"r{i}" for i in range(20_000)]
    hit = [r for r in ids if f.crashes(r)]
    assert 0.09 < len(hit) / len(ids) < 0.11
    assert hit == [r for r in ids if f.crashes(r)]  # every copy of an outcome alike
    with pytest.raises(InjectedFault):
        f.policy_update(hit[0])
    f.policy_update(next(r for r in ids if r not in hit))
    assert not Faults().crashes("r1")


class Killed(Exception):
    pass


def _kill() -> None:
    raise Killed


class Handler:
    def __init__(self) -> None:
        self.handled = 0

    async def start(self, service: BatchedService) -> None:
        pass

    async def background(self, service: BatchedService) -> None:
        pass

    async def handle(self, service: BatchedService, batch: Batch) -> list[asyncio.Future[Any]]:
        self.handled += 1
        return []

    async def stop(self) -> None:
        pass


def _service(name: str, handler: Handler) -> BatchedService:
    return BatchedService(
        Settings(kafka_bootstrap="k:9092"),
        name,
        source="in",
        source_role="requests",
        dead_letter_topic="dead",
        handler=handler,
        fetch_wait_ms=2,
        batch_max=100,
    )


@pytest.fixture
def active() -> Any:
    yield
    faults.ACTIVE = None


async def test_the_kill_comes_after_the_nth_batch_is_handled_before_its_commit(
    active: Any,
) -> None:
    faults.ACTIVE = Faults(kill_after={"join_rewards": 3}, kill=_kill)
    handler = Handler()
    service = _service("join_rewards", handler)
    batch: Batch = {}
    await service._process(batch)
    await service._process(batch)
    with pytest.raises(Killed):
        await service._process(batch)
    assert handler.handled == 3
    # Handed to the commit task: the first two batches only.
    assert service._pending_commits.qsize() == 2
    other = _service("select_arm", Handler())
    for _ in range(5):
        await other._process(batch)  # another service's batches are not counted


async def test_a_slow_consumer_waits_after_each_batch(active: Any) -> None:
    faults.ACTIVE = Faults(delay_seconds={"learn_from_outcomes": 0.05})
    service = _service("learn_from_outcomes", Handler())
    t0 = time.perf_counter()
    await service._process({})
    await service._process({})
    assert time.perf_counter() - t0 >= 0.1


def test_a_crashing_update_raises_out_of_the_learner_and_applies_nothing(active: Any) -> None:
    learner = Learner(config())
    learner.load("p", None, T0)
    faults.ACTIVE = Faults(crash_fraction=0.5)
    applied = 0
    for n in range(40):
        if faults.ACTIVE.crashes(f"r{n}"):
            with pytest.raises(InjectedFault):
                learner.apply(outcome(n=n), 0, n)
        else:
            assert learner.apply(outcome(n=n), 0, n) == "applied"
            applied += 1
    assert 0 < applied < 40
    assert learner.state("p")["updates"] == applied
