"""A change whose changelog send fails, or is in flight when the process is
killed, is already in the local database; it goes out again with the
partition's next write (also after a restart), so a member that recovers
from the changelog holds what the writer holds
(app/stream/changelog_store.py). On the test broker, with a producer whose
next record batch fails or never leaves."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from app.stream.changelog_store import SCAN_TURN_EVERY, UNSENT_PREFIX, ChangelogStore
from tests.conftest import Broker
from tests.kafka_io import create_topic

pytestmark = pytest.mark.integration


class RefusingProducer:
    """A real producer, but the next ``refuse`` record batches fail as a
    send that ran out of retries does, or (``hold``) never leave, as the
    sends in flight when a process is killed."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer, self.refuse, self.hold = producer, 0, False

    def create_batch(self) -> Any:
        return self.producer.create_batch()

    async def send_batch(self, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        if self.refuse > 0:
            self.refuse -= 1
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if not self.hold:
                future.set_exception(KafkaTimeoutError())
            return future
        return await self.producer.send_batch(batch, topic, partition=partition)


def _store(bootstrap: str, changelog: str, directory: Path) -> ChangelogStore:
    return ChangelogStore(bootstrap, changelog, directory, embedded=True)


async def _settled(futures: list[asyncio.Future[Any]]) -> list[Any]:
    results = await asyncio.gather(*futures, return_exceptions=True)
    await asyncio.sleep(0)  # the stores' callbacks on them
    return results


async def _recovered(bootstrap: str, changelog: str, directory: Path) -> dict[bytes, bytes]:
    """What a member with no local copy recovers from the changelog."""
    other = _store(bootstrap, changelog, directory)
    await other.assign({0})
    try:
        return dict(other.items(0))
    finally:
        other.destroy()


async def _run(bootstrap: str, tmp: Path, case: str) -> None:
    changelog = f"store-{uuid.uuid4().hex[:8]}-changelog"
    await create_topic(bootstrap, changelog)
    real = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await real.start()
    producer = RefusingProducer(real)
    store = _store(bootstrap, changelog, tmp / "writer")
    try:
        await store.assign({0})
        first = await store.write(producer, {0: {b"k1": b"v1", b"k2": b"v2"}})
        assert all(r is not None for r in await _settled(first))
        producer.refuse, producer.hold = 1, case == "killed-in-flight"
        refused = await store.write(
            producer,
            {0: {b"k2": b"v2-new", b"k3": b"v3", b"k4": b"v4"}},
        )
        if producer.hold:
            await asyncio.sleep(0)
            assert not any(f.done() for f in refused)
        else:
            assert any(isinstance(r, KafkaTimeoutError) for r in await _settled(refused))
        # The writer holds the refused changes; the changelog does not.
        assert store.get(0, b"k3") == b"v3"
        assert await _recovered(bootstrap, changelog, tmp / "before") == {
            b"k1": b"v1",
            b"k2": b"v2",
        }
        if case != "refused":  # the process goes, its sends with it
            store.close()
            store = _store(bootstrap, changelog, tmp / "writer")
            await store.assign({0})
        # The next write carries them, with their current values.
        later = await store.write(producer, {0: {b"k4": None, b"k5": b"v5"}})
        assert all(not isinstance(r, BaseException) for r in await _settled(later))
        holds = dict(store.items(0))
        assert holds == {b"k1": b"v1", b"k2": b"v2-new", b"k3": b"v3", b"k5": b"v5"}
        assert await _recovered(bootstrap, changelog, tmp / "after") == holds
        sends = store.local_keys(0, UNSENT_PREFIX, UNSENT_PREFIX + b"\xff", 100)
        assert sends == [], "a send's record goes once the broker has it"
        # Nothing is sent again once acknowledged: a write of nothing sends nothing.
        assert await store.write(producer, {}) == []
    finally:
        store.destroy()
        await real.stop()


@pytest.mark.parametrize("case", ["refused", "refused-then-restarted", "killed-in-flight"])
def test_a_changelog_send_refused_or_cut_short_goes_out_with_the_next_write(
    broker: Broker, tmp_path: Path, case: str
) -> None:
    asyncio.run(_run(broker.bootstrap, tmp_path, case))


async def _scan_with_a_neighbour(bootstrap: str, tmp: Path) -> tuple[int, int, int]:
    changelog = f"store-{uuid.uuid4().hex[:8]}-changelog"
    await create_topic(bootstrap, changelog)
    store = _store(bootstrap, changelog, tmp / "scan")
    try:
        await store.assign({0})
        n = 25 * SCAN_TURN_EVERY
        store.apply(0, [SimpleNamespace(key=b"k%06d" % i, value=b"v", offset=i) for i in range(n)])
        turns = 0
        done = asyncio.Event()

        async def neighbour() -> None:  # another task of the loop: a heartbeat
            nonlocal turns
            while not done.is_set():
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(neighbour())
        await asyncio.sleep(0)
        start, seen = turns, 0
        async for _ in store.scan(0):
            seen += 1
        done.set()
        await task
        return n, seen, turns - start
    finally:
        store.destroy()


def test_a_scan_of_a_large_store_gives_the_loop_turns(broker: Broker, tmp_path: Path) -> None:
    """Rebalance callbacks scan whole stores: the loop's other tasks (the
    group's heartbeats) get a turn every SCAN_TURN_EVERY items."""
    n, seen, turns = asyncio.run(_scan_with_a_neighbour(broker.bootstrap, tmp_path))
    assert seen == n
    assert turns >= n // SCAN_TURN_EVERY - 1, f"{turns} turns for {n} items"
