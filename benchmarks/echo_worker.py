"""The pipe's Python limit: a bare aiokafka consume → produce echo.

It runs as its own process with the consumer and producer settings of
``agents/select_arm.py`` (batched ``getmany`` of up to 2000 records, 2 ms
fetch wait, 1 ms producer linger, 512 KiB producer batches, ``acks=1``,
offsets committed once a batch's sends are acknowledged) and does, per
record, only ``orjson.loads`` → ``orjson.dumps`` and one send keyed by the
request id. Whatever the decision pipeline costs beyond this is the cost of
deciding (parsing, validation, the decider, metrics) and of the Faust worker
around it.

    python -m benchmarks.echo_worker --bootstrap HOST:PORT --input TOPIC --output TOPIC \
        --group GROUP [--ready-file PATH]

It writes ``--ready-file`` (if given) once its consumer holds partitions and
stops cleanly on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.kafka_security import kafka_security

# The settings of agents/select_arm.py with app.settings defaults and the
# embedded-broker group profile (app.settings.Settings.broker_profile).
BATCH_MAX = 2000
FETCH_WAIT_MS = 2
LINGER_MS = 1
MAX_BATCH_BYTES = 512 * 1024
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
REBALANCE_TIMEOUT_MS = 10000


class Echo:
    def __init__(
        self,
        bootstrap: str,
        input_topic: str,
        output_topic: str,
        group: str,
        ready_file: Path | None,
    ) -> None:
        self.bootstrap = bootstrap
        self.input_topic = input_topic
        self.output_topic = output_topic
        self.group = group
        self.ready_file = ready_file
        self.stopping = asyncio.Event()
        self.pending: asyncio.Queue[tuple[asyncio.Future[Any], dict[TopicPartition, int]]]
        self.pending = asyncio.Queue(maxsize=64)

    async def run(self) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.group}-echo",
            linger_ms=LINGER_MS,
            max_batch_size=MAX_BATCH_BYTES,
            acks=1,
            **kafka_security(),
        )
        self.consumer = AIOKafkaConsumer(
            self.input_topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=f"{self.group}-echo",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_WAIT_MS,
            max_poll_records=BATCH_MAX,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
            **kafka_security(),
        )
        await self.producer.start()
        await self.consumer.start()
        tasks = [asyncio.create_task(self._echo()), asyncio.create_task(self._commit())]
        try:
            await self.stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            with contextlib.suppress(Exception):
                await self.producer.stop()

    async def _echo(self) -> None:
        ready = False
        send = self.producer.send
        out = self.output_topic
        loads, dumps = orjson.loads, orjson.dumps
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=BATCH_MAX)
            if not ready and self.consumer.assignment():
                ready = True
                if self.ready_file is not None:
                    self.ready_file.write_text("ready\n")
                print("echo ready", flush=True)
            if not batch:
                continue
            futures: list[asyncio.Future[Any]] = []
            offsets: dict[TopicPartition, int] = {}
            for tp, msgs in batch.items():
                offsets[tp] = msgs[-1].offset + 1
                for m in msgs:
                    d = loads(m.value)
                    futures.append(await send(out, dumps(d), key=d["request_id"].encode()))
            await self.pending.put((asyncio.gather(*futures), offsets))

    async def _commit(self) -> None:
        """As select_arm: commit each batch's offsets once its sends are acked."""
        while True:
            done, offsets = await self.pending.get()
            await done
            latest = dict(offsets)
            while not self.pending.empty():
                done, offsets = self.pending.get_nowait()
                await done
                latest.update(offsets)
            try:
                await self.consumer.commit(latest)
            except Exception as exc:
                print(f"echo: commit failed: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.echo_worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--input", required=True, help="topic to consume (request JSON)")
    p.add_argument("--output", required=True, help="topic to produce the echoes to")
    p.add_argument("--group", required=True, help="consumer group id")
    p.add_argument("--ready-file", type=Path, default=None)
    args = p.parse_args(argv)

    async def run() -> None:
        echo = Echo(args.bootstrap, args.input, args.output, args.group, args.ready_file)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, echo.stopping.set)
        await echo.run()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
