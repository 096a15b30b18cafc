"""A running experiment survives a broker that lost everything: the new
cluster's experiments topic gets the experiment back from the evaluator,
with the statistics it had, and the outcomes of the new logs are counted
on top of them, each once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from app.stream.broker import EmbeddedBroker
from tests.conftest import Deployment
from tests.test_broker_loss_integration import own_broker, own_deployment, wait_health
from tests.test_experiments_integration import create, events, rollout, traffic, units

__all__ = ["own_broker", "own_deployment"]  # the fixtures this module uses


def counted(n: int) -> Any:
    return lambda es: any(e.kind == "result" and units(e) >= n for e in es)


def test_an_experiment_carries_over_to_a_new_cluster(
    own_deployment: Deployment, own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    d, broker = own_deployment, own_broker
    d.env["LLMOPT_EXPERIMENT_RESULT_SECONDS"] = "1"
    worker = d.start_worker()
    # Never decided (min_samples above the traffic): the counts are what is checked.
    create(d, tmp_path, rollout("carried", min_samples=100_000))
    asyncio.run(events(d, lambda es: any(e.kind == "result" for e in es), "a first result"))
    same = {"champion": 0.7, "challenger": 0.7}
    asyncio.run(traffic(d, 120, same))
    asyncio.run(events(d, counted(120), "120 outcomes counted"))

    assert broker.proc is not None
    broker.proc.kill()  # SIGKILL: the broker and every log it held are gone
    broker.stop()
    wait_health(worker, 503, 10)
    broker.start()  # same port, empty, another cluster id
    wait_health(worker, 200, 60)

    # The experiment is back on the new topic, with its 120 outcomes.
    found = asyncio.run(
        events(d, lambda es: any(e.kind == "created" for e in es), "the definition", 60)
    )
    assert {e.experiment_id for e in found} == {"carried"}
    asyncio.run(events(d, counted(120), "the carried statistics", 60))
    # Requests on the new cluster are split by it, and their outcomes counted.
    decided = asyncio.run(traffic(d, 120, same))
    assert {x.experiment_id for x in decided} == {"carried"}
    found = asyncio.run(events(d, counted(240), "240 outcomes counted", 90))
    assert max(units(e) for e in found if e.kind == "result") == 240  # none twice
