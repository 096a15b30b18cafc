"""Key → bytes state per source partition for a batched service
(:mod:`app.stream.batched_service`): a local RocksDB per partition, and
every change also written to a compacted changelog topic, partition for
partition, from which a member that takes the partition over recovers.

The layout is a Faust table's (raw keys and values, a tombstone for a
deleted key, changelog partition = source partition), so a changelog
written by a Faust table is read as it is.

Each local database keeps, under :data:`OFFSET_KEY`, the offset after the
last changelog record it is known to hold (set once the broker has
acknowledged the record). Recovery reads the changelog from there to its
end; a changelog that ends below that offset belongs to a cluster that
lost its logs, so the local copy is kept and recovery starts from the new
log's beginning.

Keys below :data:`LOCAL_BELOW` are the local database's own (the offset,
the keys whose changelog send failed, and indexes a user keeps beside its
values, :meth:`ChangelogStore.write`'s ``local``): never sent to the
changelog, not among :meth:`items`, and rebuilt by their user after a
recovery.

A change is in the local database before the broker has it in the
changelog. If the send fails, or the process is killed before the broker
has it, the local copy is ahead of the changelog; a redone batch may find
its change already made and write nothing (the learner skips an outcome its
state has seen), and a member recovering from the changelog would never see
it. So each send is recorded locally, in the same database write as its
values (the keys it carries, under :data:`UNSENT_PREFIX`), and the record
is deleted once the broker acknowledges the send. Keys of a send that
failed, or that was in flight when the process stopped (records found at
the next opening), go out again, with their current values, with the
partition's next write.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from aiokafka import AIOKafkaProducer, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from app.stream.partition_ends import PartitionEnds, RangeReader, fetched_end_offsets

log = logging.getLogger(__name__)
# The keys a user of the store writes start with a printable byte; those below are local.
LOCAL_BELOW = b" "
OFFSET_KEY = b"\x00changelog-offset"
# :meth:`ChangelogStore.scan` gives the event loop a turn this often.
SCAN_TURN_EVERY = 2_000
UNSENT_PREFIX = b"\x00unsent:"


_UNSENT_END = UNSENT_PREFIX[:-1] + bytes([UNSENT_PREFIX[-1] + 1])
_sends = itertools.count()


def _send_record_key() -> bytes:
    return UNSENT_PREFIX + time.time_ns().to_bytes(8, "big") + next(_sends).to_bytes(8, "big")


def _pack(keys: list[bytes]) -> bytes:
    return b"".join(len(k).to_bytes(4, "big") + k for k in keys)


def _unpack(raw: bytes) -> list[bytes]:
    keys, i = [], 0
    while i < len(raw):
        n = int.from_bytes(raw[i : i + 4], "big")
        keys.append(raw[i + 4 : i + 4 + n])
        i += 4 + n
    return keys


class PartitionNotHeld(Exception):
    """A write to a partition whose local database is closed."""


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


class ChangelogStore:
    """``changelog``: the topic (it must exist, with as many partitions as
    the source); ``directory``: where the local databases live, one per
    partition."""

    def __init__(self, bootstrap: str, changelog: str, directory: Path, embedded: bool) -> None:
        self.bootstrap, self.changelog, self.directory = bootstrap, changelog, directory
        self.embedded = embedded
        self._dbs: dict[int, Rdict] = {}
        # partition → keys whose send failed or was cut short: their
        # current values go out again; and the records of those sends,
        # deleted once that is acknowledged
        self._unsent: dict[int, set[bytes]] = {}
        self._unsent_records: dict[int, list[bytes]] = {}

    async def ensure_topic(self, partitions: int, replication_factor: int) -> bool:
        """Create the changelog (compacted) if the cluster lacks it: at the
        start, and after a cluster lost its logs. Whether it was created."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        from app.kafka_security import kafka_security

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.changelog}-admin",
            **kafka_security(),
        )
        await admin.start()
        try:
            if self.changelog in set(await admin.list_topics()):
                return False
            topic = NewTopic(
                self.changelog,
                partitions,
                replication_factor,
                topic_configs={"cleanup.policy": "compact"},
            )
            await admin.create_topics([topic])
        except TopicAlreadyExistsError:
            return False
        finally:
            await admin.close()
        log.warning("changelog %s created (%d partitions)", self.changelog, partitions)
        return True

    @property
    def partitions(self) -> set[int]:
        return set(self._dbs)

    def _open(self, partition: int) -> Rdict:
        path = self.directory / f"p{partition}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return Rdict(str(path), Options(raw_mode=True))

    async def assign(self, partitions: set[int]) -> dict[int, int]:
        """Open and recover the newly assigned ``partitions`` (the others
        are closed); how many changelog records each recovery applied."""
        for p in self.partitions - partitions:
            self._dbs.pop(p).close()
            # Recorded on its disk; its batches are redone by its new owner.
            self._unsent.pop(p, None)
            self._unsent_records.pop(p, None)
        new = sorted(partitions - self.partitions)
        if not new:
            return {}
        for p in new:
            self._dbs[p] = self._open(p)
            db = self._dbs[p]
            for record in self.local_keys(p, UNSENT_PREFIX, _UNSENT_END, 1 << 62):
                self._unsent.setdefault(p, set()).update(_unpack(cast(bytes, db[record])))
                self._unsent_records.setdefault(p, []).append(record)
        tps = [TopicPartition(self.changelog, p) for p in new]
        # The embedded broker's ListOffsets is short of the end
        # (app/stream/partition_ends.py).
        if self.embedded:
            ends = await fetched_end_offsets(self.bootstrap, tps)
        else:
            listed = PartitionEnds(self.bootstrap, f"{self.changelog}-ends", fetch=False)
            await listed.start()
            try:
                ends = await listed.refresh(tps)
            finally:
                await listed.stop()
        applied: dict[int, int] = {}
        reader = RangeReader(self.bootstrap, f"{self.changelog}-recovery")
        try:
            for p in new:
                applied[p] = await self._recover(reader, p, ends[(self.changelog, p)])
        finally:
            await reader.stop()
        return applied

    async def _recover(self, reader: RangeReader, p: int, end: int) -> int:
        start = self.offset(p)
        if start > end:
            log.warning(
                "changelog %s[%d] ends at %d, below the %d the local copy holds: the "
                "cluster lost it; the local copy is kept and the new log read from its start",
                self.changelog,
                p,
                end,
                start,
            )
            start = 0
        n = 0
        async for records in reader.read(self.changelog, p, start, end):
            self.apply(p, records)
            n += len(records)
        return n

    def apply(self, partition: int, records: list[Any]) -> None:
        """Write changelog ``records`` (consumed, in offset order) of a held
        partition to its local database, with the offset after the last."""
        wb = WriteBatch(raw_mode=True)
        for m in records:
            if m.key is None:
                continue
            if m.value is None:
                wb.delete(m.key)
            else:
                wb.put(m.key, m.value)
        wb.put(OFFSET_KEY, str(records[-1].offset + 1).encode())
        self._dbs[partition].write(wb)

    def offset(self, partition: int) -> int:
        raw = self._dbs[partition].get(OFFSET_KEY)
        return int(raw) if raw is not None else 0

    def forget_offsets(self) -> None:
        """The cluster lost its logs: the local copies are kept, and their
        changelog offsets start again from the new logs' beginnings."""
        for db in self._dbs.values():
            db.put(OFFSET_KEY, b"0")

    def get(self, partition: int, key: bytes) -> bytes | None:
        db = self._dbs.get(partition)
        return db.get(key) if db is not None else None

    def items(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._dbs[partition].items(from_key=LOCAL_BELOW):
            yield cast(bytes, key), cast(bytes, value)

    async def scan(
        self, partition: int, every: int = SCAN_TURN_EVERY
    ) -> AsyncIterator[tuple[bytes, bytes]]:
        """:meth:`items`, giving the event loop a turn every ``every`` items:
        a store can hold millions, and a rebalance callback that kept the
        loop for seconds would miss the group's heartbeats and be expelled,
        to scan again at the next assignment."""
        for n, item in enumerate(self.items(partition), 1):
            yield item
            if n % every == 0:
                await asyncio.sleep(0)

    def local_keys(self, partition: int, start: bytes, stop: bytes, limit: int) -> list[bytes]:
        """Local keys from ``start`` (included) to ``stop`` (excluded), in
        order, at most ``limit`` (none for a partition not held)."""
        db = self._dbs.get(partition)
        if db is None:
            return []
        assert stop <= LOCAL_BELOW
        keys: list[bytes] = []
        for found in db.keys(from_key=start):
            key = cast(bytes, found)
            if key >= stop or len(keys) >= limit:
                break
            keys.append(key)
        return keys

    def write_local(self, partition: int, keys: Mapping[bytes, bytes | None]) -> None:
        """Local keys (below :data:`LOCAL_BELOW`; None: delete) of a held partition."""
        db = self._dbs.get(partition)
        if db is not None and keys:
            wb = WriteBatch(raw_mode=True)
            self._put_local(wb, keys)
            db.write(wb)

    @staticmethod
    def _put_local(wb: WriteBatch, keys: Mapping[bytes, bytes | None]) -> None:
        for key, value in keys.items():
            if key >= LOCAL_BELOW:
                raise ValueError(f"local key {key!r} is not below {LOCAL_BELOW!r}")
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)

    async def write(
        self,
        producer: AIOKafkaProducer,
        changes: Mapping[int, Mapping[bytes, bytes | None]],
        local: Mapping[int, Mapping[bytes, bytes | None]] | None = None,
    ) -> list[asyncio.Future[Any]]:
        """Apply ``changes`` (partition → key → value, None: delete) to the
        local databases now, and send them to the changelog (one record
        batch per partition), with the current values of the partition's
        keys whose earlier send failed; the futures of the sends.
        ``local``: local keys written in the same database write as the
        partition's changes (an index never disagrees with the values it
        indexes). A partition no longer held is not written, and its future
        fails: the batch is not committed, and is redone here or by the
        partition's new owner."""
        futures: list[asyncio.Future[Any]] = []
        local = local or {}
        for p in local.keys() - changes.keys():
            self.write_local(p, local[p])
        for p in [*changes, *(p for p in self._unsent if p not in changes)]:
            db = self._dbs.get(p)
            if db is None:
                # Not held any more (closed under the batch): the batch must
                # not be committed as if its state were written.
                futures.append(_failed(PartitionNotHeld(f"{self.changelog}[{p}] is not held")))
                continue
            again = self._unsent.pop(p, set())
            carried = self._unsent_records.pop(p, [])  # settled by this write's sends
            values = changes.get(p, {})
            if not values and not again:
                self.write_local(p, local.get(p, {}))
                continue
            records = values
            if again:
                records = {**values, **{k: db.get(k) for k in again - values.keys()}}
            wb = WriteBatch(raw_mode=True)
            self._put_local(wb, local.get(p, {}))
            sends: list[tuple[Any, list[bytes], bytes]] = []
            b, sent = producer.create_batch(), list[bytes]()
            for key, value in records.items():
                if b.append(key=key, value=value, timestamp=None) is None:  # full
                    sends.append((b, sent, _send_record_key()))
                    b, sent = producer.create_batch(), []
                    b.append(key=key, value=value, timestamp=None)
                sent.append(key)
            sends.append((b, sent, _send_record_key()))
            for key, value in values.items():
                if value is None:
                    wb.delete(key)
                else:
                    wb.put(key, value)
            for _, sent, record in sends:
                wb.put(record, _pack(sent))
            db.write(wb)
            for i, (b, sent, record) in enumerate(sends):
                settles = [record, *carried] if i == len(sends) - 1 else [record]
                futures.append(await self._send(producer, b, p, sent, settles))
        return futures

    async def _send(
        self,
        producer: AIOKafkaProducer,
        batch: Any,
        p: int,
        keys: list[bytes],
        records: list[bytes],
    ) -> asyncio.Future[Any]:
        """Send ``batch`` (``keys``' values) to the changelog; ``records``:
        the local send records its acknowledgement settles."""
        count = batch.record_count()
        try:
            future = await producer.send_batch(batch, self.changelog, partition=p)
        except BaseException:
            self._unsent_again(p, keys, records)
            raise
        future.add_done_callback(lambda f: self._acknowledged(p, f, count, keys, records))
        return future

    def _acknowledged(
        self,
        p: int,
        future: asyncio.Future[Any],
        count: int,
        keys: list[bytes],
        records: list[bytes],
    ) -> None:
        """A batch is in the changelog: the local copy holds up to its end
        (the metadata's offset is the batch's first), and the records of the
        sends it settles go. A batch refused: its keys go out again."""
        db = self._dbs.get(p)
        if db is None:
            return  # not held: recorded on its disk, redone by its new owner
        if future.cancelled() or future.exception() is not None:
            log.warning(
                "changelog %s[%d]: a send of %d records failed; they go with the next write",
                self.changelog,
                p,
                count,
            )
            self._unsent_again(p, keys, records)
            return
        end = future.result().offset + count
        wb = WriteBatch(raw_mode=True)
        for record in records:
            wb.delete(record)
        if end > self.offset(p):
            wb.put(OFFSET_KEY, str(end).encode())
        db.write(wb)

    def _unsent_again(self, p: int, keys: list[bytes], records: list[bytes]) -> None:
        if p in self._dbs:
            self._unsent.setdefault(p, set()).update(keys)
            self._unsent_records.setdefault(p, []).extend(records)

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()
        self._unsent.clear()
        self._unsent_records.clear()

    def destroy(self) -> None:
        """Close and delete every local database (tests)."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
