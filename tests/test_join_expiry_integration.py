"""A finished request is forgotten once its retention runs out, by a worker
that joined it or one that recovered it (the store's expiry index is
rebuilt from the entries at an assignment).

Within the retention a second reward is a ``duplicate_reward``; after it the
join no longer knows the request, so the same reward is held as an orphan
and given up as ``unknown_request``. Finished requests wait for their
retention on disk, not among the decisions waiting in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.records import now_ms
from tests.conftest import Broker, Deployment, deploy
from tests.test_bad_input_integration import (
    _decide,
    _reward,
    dead_letter_for,
    outcomes_for,
    reward,
    run,
)

RETENTION_S = 10


@pytest.fixture
def dep(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    gen = deploy(broker, tmp_path_factory.mktemp("join-expiry"))
    d = next(gen)
    d.env["LLMOPT_JOIN_DONE_RETENTION_SECONDS"] = str(RETENTION_S)
    yield d
    gen.close()


def _joined(dep: Deployment) -> tuple[str, float]:
    """A request decided and rewarded; its id and when its outcome was seen."""
    decision = run(_decide(dep, policy_id="short-wait"))
    run(_reward(dep, decision.request_id, reward(decision.request_id, quality=0.8)))
    assert len(run(outcomes_for(dep, decision.request_id))) == 1
    return decision.request_id, now_ms() / 1000


def test_a_finished_request_is_forgotten_after_its_retention(dep: Deployment) -> None:
    worker = dep.start_worker()
    rid, joined_at = _joined(dep)
    dup = reward(rid, quality=0.1)
    run(_reward(dep, rid, dup))
    assert run(dead_letter_for(dep, dup)).reason == "duplicate_reward"
    # Once the request's wait (2 s) is over, nothing of it waits in memory,
    # while it is kept as finished (a duplicate is still recognised).
    while _pending(worker.metrics()) > 0:
        assert now_ms() / 1000 < joined_at + RETENTION_S / 2, "the finished request waits in memory"
        run(_sleep(0.2))

    rid2, joined_at = _joined(dep)
    late = reward(rid2, quality=0.2)
    # Past the retention and a few resolving rounds.
    wait = joined_at + RETENTION_S + 3 - now_ms() / 1000
    if wait > 0:
        run(_sleep(wait))
    run(_reward(dep, rid2, late))
    assert run(dead_letter_for(dep, late, timeout=40)).reason == "unknown_request"


def test_a_restarted_worker_forgets_what_the_last_one_finished(dep: Deployment) -> None:
    first = dep.start_worker()
    rid, joined_at = _joined(dep)
    first.stop()
    dep.start_worker()
    wait = joined_at + RETENTION_S + 3 - now_ms() / 1000
    if wait > 0:
        run(_sleep(wait))
    late = reward(rid, quality=0.2)
    run(_reward(dep, rid, late))
    assert run(dead_letter_for(dep, late, timeout=40)).reason == "unknown_request"


def _pending(metrics: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "llmopt_join_pending_decisions":
                return sample.value
    raise AssertionError("no llmopt_join_pending_decisions gauge")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
