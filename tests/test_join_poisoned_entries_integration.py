"""A join entry the worker cannot read, or cannot resolve, goes to the
dead-letter topic with the reason and out of the join's store (a tombstone
in its changelog), and the join goes on: kept, such an entry would never
resolve nor expire."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from agents.join_rewards import changelog_name
from app.ingress import join_key
from app.records import DeadLetter
from tests.conftest import Deployment
from tests.kafka_io import TopicReader, create_topic
from tests.test_bad_input_integration import _decide, _reward, outcomes_for, reward, run

UNREADABLE = b"not a join entry"
# Readable, but a waiting request without its decision: its resolution raises.
UNRESOLVABLE = orjson.dumps({"state": "pending", "due": 0, "partition": 0})


async def _plant(d: Deployment, changelog: str) -> None:
    await create_topic(d.broker.bootstrap, changelog, d.topics["decisions"].partitions)
    producer = AIOKafkaProducer(bootstrap_servers=d.broker.bootstrap)
    await producer.start()
    try:
        for rid, value in (("unreadable", UNREADABLE), ("unresolvable", UNRESOLVABLE)):
            await producer.send_and_wait(changelog, value, key=join_key("acme", rid), partition=0)
    finally:
        await producer.stop()


async def _dead_letters(d: Deployment, changelog: str, n: int) -> list[DeadLetter]:
    async with TopicReader(d.broker.bootstrap, d.topics.name("dead_letter")) as reader:

        def ours(msgs: list[Any]) -> list[DeadLetter]:
            docs = [DeadLetter.loads(m.value, 1 << 20) for m in msgs]
            return [x for x in docs if x.source_topic == changelog]

        await reader.until(lambda msgs: len(ours(msgs)) >= n, 60, f"{n} dead letters")
        return ours(reader.messages)


async def _latest(d: Deployment, changelog: str) -> dict[bytes, bytes | None]:
    async with TopicReader(d.broker.bootstrap, changelog) as reader:
        await reader.settle(2.0)
        return {m.key: m.value for m in reader.messages}


def test_an_entry_that_cannot_be_read_or_resolved_is_dead_lettered_and_removed(
    deployment: Deployment,
) -> None:
    d = deployment
    changelog = changelog_name(d.settings.app_id)
    run(_plant(d, changelog))
    d.start_worker()
    letters = run(_dead_letters(d, changelog, 2))
    by_value = {x.original_value_b64: x for x in letters}
    assert len(letters) == 2, letters
    unreadable = by_value[base64.b64encode(UNREADABLE).decode()]
    unresolvable = by_value[base64.b64encode(UNRESOLVABLE).decode()]
    assert unreadable.reason == "schema_violation"
    assert unresolvable.reason == "internal_error" and "KeyError" in unresolvable.detail
    assert unreadable.source_partition == unresolvable.source_partition == 0
    latest = run(_latest(d, changelog))
    for rid in ("unreadable", "unresolvable"):
        assert latest[join_key("acme", rid)] is None, f"{rid}: a tombstone in the changelog"
    # The join goes on.
    decision = run(_decide(d))
    run(_reward(d, decision.request_id, reward(decision.request_id, quality=0.7)))
    assert len(run(outcomes_for(d, decision.request_id))) == 1
