"""Replay a time range of historical requests through a candidate policies
config, on isolated topics, without touching the live ones.

:class:`PipelineReplay` copies the requests written to the live requests
topic in ``[start, end)`` into ``<requests topic>.replay.<run-id>`` (keys,
values and record times kept), starts a worker whose settings point every
topic at the ``replay.<run-id>`` namespace, with its own application id
(hence its own consumer group and changelog topics) and data directory, and
the candidate policies file; then collects the decisions it makes.

A request's ``reply_to`` names a live client's reply topic: it is removed
from the copies, so the replay worker never answers a live client. The worker
writes only to ``*.replay.<run-id>`` topics and its own internal ones.

No rewards are replayed: a candidate that picks another arm than the one
logged has no reward to learn from, and a default reward would mislead it.
Compare candidates' values with ``llmopt backtest``; use a replay to see
what a candidate config decides on real traffic (arm shares, agreement with
the live decisions, rejects).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import orjson

from app.evaluation.logged_data import LoggedDataError
from app.kafka_security import kafka_security
from app.settings import PREFIX, Settings
from app.stream.broker import free_port
from app.stream.kafka_io import assign_from_start, partitions_of, read_topic_range
from app.stream.worker_process import WorkerProcess
from app.topics import TopicCatalog, apply_topics

__all__ = ["PipelineReplay", "ReplaySummary", "replay_namespace"]

_RUN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


def replay_namespace(live_namespace: str, run_id: str) -> str:
    """The topic namespace of a replay: topics become ``<live topic>.replay.<run-id>``.

    >>> replay_namespace("", "cand-1"), replay_namespace("eu", "cand-1")
    ('replay.cand-1', 'eu.replay.cand-1')
    """
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"run id {run_id!r} must be 1-40 lower-case letters, digits or '-', "
            "starting with a letter or digit"
        )
    return f"{live_namespace}.replay.{run_id}" if live_namespace else f"replay.{run_id}"


@dataclass
class ReplaySummary:
    """What a replay did and what the candidate decided."""

    run_id: str
    requests_topic: str
    decisions_topic: str
    requests: int = 0
    decisions: int = 0
    dead_letters: int = 0
    arm_shares: dict[str, float] = field(default_factory=dict)
    live_arm_shares: dict[str, float] = field(default_factory=dict)
    agreement: float | None = None  # share of replayed requests given the live arm
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def text(self) -> str:
        shares = "  ".join(f"{a} {v:.0%}" for a, v in self.arm_shares.items())
        live = "  ".join(f"{a} {v:.0%}" for a, v in self.live_arm_shares.items())
        agree = "-" if self.agreement is None else f"{self.agreement:.1%}"
        return (
            f"replay {self.run_id}: {self.requests} requests → {self.requests_topic}, "
            f"{self.decisions} decisions on {self.decisions_topic}, "
            f"{self.dead_letters} dead letters, {self.seconds:.1f}s\n"
            f"  candidate arm shares: {shares or '-'}\n"
            f"  live arm shares:      {live or '-'}\n"
            f"  agreement with live decisions: {agree}"
        )


def _env(settings: Settings) -> dict[str, str]:
    env = {}
    for f in fields(settings):
        v = getattr(settings, f.name)
        env[PREFIX + f.name.upper()] = ("1" if v else "0") if isinstance(v, bool) else str(v)
    return env


def _strip_reply_to(value: bytes | None, policy_id: str | None) -> bytes | None:
    """The request without ``reply_to`` (a live client's topic), with the
    candidate's ``policy_id`` when one is forced. Unparseable values are
    copied as they are: the worker dead-letters them, as live."""
    if value is None:
        return value
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    if not isinstance(doc, dict):
        return value
    doc.pop("reply_to", None)
    if policy_id is not None:
        doc["policy_id"] = policy_id
    return orjson.dumps(doc)


class PipelineReplay:
    """Replay ``[start_ms, end_ms)`` of the live requests through a worker
    running ``policies_path``.

    >>> s = Settings(kafka_bootstrap="localhost:9092", topic_namespace="eu")
    >>> r = PipelineReplay(s, "cand-1", Path("config/policies.yaml"), 0, 1)
    >>> r.replay_catalog.name("requests")
    'llmopt.requests.v1.eu.replay.cand-1'
    """

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        policies_path: Path,
        start_ms: int,
        end_ms: int,
        policy_id: str | None = None,
        wait_seconds: float = 60.0,
        web_port: int | None = None,
    ) -> None:
        if end_ms <= start_ms:
            raise ValueError(f"empty time range: end {end_ms} is not after start {start_ms}")
        self.settings = settings
        self.run_id = run_id
        self.policies_path = Path(policies_path)
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.policy_id = policy_id
        self.wait_seconds = wait_seconds
        self.live_catalog = TopicCatalog.for_settings(settings)
        namespace = replay_namespace(settings.topic_namespace, run_id)
        self.replay_settings = replace(
            settings,
            topic_namespace=namespace,
            app_id=f"{settings.app_id}-replay-{run_id}",
            data_dir=Path(settings.data_dir) / "replay" / run_id,
            policies_path=self.policies_path,
            web_port=web_port if web_port is not None else free_port(),
        )
        self.replay_catalog = TopicCatalog.for_settings(self.replay_settings)
        live = {t.name for t in self.live_catalog.topics.values()}
        clash = live & {t.name for t in self.replay_catalog.topics.values()}
        if clash:  # cannot happen with a non-empty namespace; kept as the guarantee
            raise ValueError(f"replay topics would be live topics: {sorted(clash)}")

    # -- steps ---------------------------------------------------------------------------------
    async def copy_requests(self, on_progress: Callable[[int], None] | None = None) -> int:
        """Copy the requests in range into the replay requests topic."""
        from aiokafka import AIOKafkaProducer

        bs = self.settings.bootstrap
        messages = await read_topic_range(
            bs, self.live_catalog.name("requests"), self.start_ms, self.end_ms
        )
        target = self.replay_catalog.name("requests")
        producer = AIOKafkaProducer(
            bootstrap_servers=bs, linger_ms=5, **kafka_security(self.settings)
        )
        await producer.start()
        try:
            for i, m in enumerate(messages):
                await producer.send(
                    target,
                    _strip_reply_to(m.value, self.policy_id),
                    key=m.key,
                    timestamp_ms=m.timestamp,
                )
                if on_progress is not None and i % 500 == 0:
                    on_progress(i + 1)
            await producer.flush()
        finally:
            await producer.stop()
        if on_progress is not None:
            on_progress(len(messages))
        return len(messages)

    def start_worker(self, timeout: float = 90.0) -> WorkerProcess:
        """The replay worker, ready (:class:`~app.stream.worker_process.WorkerNotReady`
        if it is not within ``timeout``; it is stopped then)."""
        s = self.replay_settings
        env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
        env.update(_env(s))
        url = f"http://{s.web_host}:{s.web_port}/health"
        worker = WorkerProcess(Path(s.data_dir) / "worker.log", url, env=env)
        try:
            worker.wait_ready(timeout)
        except BaseException:
            worker.stop()
            raise
        return worker

    async def collect(self, expected: int) -> ReplaySummary:
        """Read the replay's decisions until every request has one (or
        ``wait_seconds`` pass) and compare them with the live decisions."""
        from aiokafka import AIOKafkaConsumer

        bs = self.settings.bootstrap
        summary = ReplaySummary(
            self.run_id,
            self.replay_catalog.name("requests"),
            self.replay_catalog.name("decisions"),
            requests=expected,
        )
        decisions: dict[str, dict[str, Any]] = {}
        dead = 0
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bs, enable_auto_commit=False, **kafka_security(self.settings)
        )
        await consumer.start()
        try:
            topics = [
                self.replay_catalog.name("decisions"),
                self.replay_catalog.name("dead_letter"),
            ]
            assign_from_start(consumer, partitions_of(consumer, *topics))
            deadline = time.monotonic() + self.wait_seconds
            while len(decisions) + dead < expected and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, msgs in batch.items():
                    for m in msgs:
                        if tp.topic == topics[1]:
                            dead += 1
                            continue
                        doc = orjson.loads(m.value)
                        decisions.setdefault(doc["request_id"], doc)
        finally:
            await consumer.stop()
        summary.decisions, summary.dead_letters = len(decisions), dead
        summary.arm_shares = _shares(d["arm"] for d in decisions.values())
        try:  # live decisions for the same requests, if the cluster still has them
            live_msgs = await read_topic_range(
                bs, self.live_catalog.name("decisions"), self.start_ms, self.end_ms + 600_000, 2.0
            )
        except LoggedDataError:
            live_msgs = []
        live: dict[str, str] = {}
        for m in live_msgs:
            try:
                doc = orjson.loads(m.value or b"")  # a record without a value is skipped
                live.setdefault(doc["request_id"], doc["arm"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
        common = [rid for rid in decisions if rid in live]
        summary.live_arm_shares = _shares(live[r] for r in common)
        if common:
            summary.agreement = sum(decisions[r]["arm"] == live[r] for r in common) / len(common)
        return summary

    # -- all of it -----------------------------------------------------------------------------
    def run(self, on_progress: Callable[[int], None] | None = None) -> ReplaySummary:
        started = time.monotonic()
        asyncio.run(apply_topics(self.settings.bootstrap, self.replay_catalog))
        # Copied first: the worker reads its topics from the earliest offset.
        n = asyncio.run(self.copy_requests(on_progress))
        if n == 0:
            raise LoggedDataError(
                f"no requests on {self.live_catalog.name('requests')} between "
                f"{self.start_ms} and {self.end_ms}"
            )
        with self.start_worker():
            summary = asyncio.run(self.collect(n))
        summary.seconds = time.monotonic() - started
        return summary


def _shares(arms: Any) -> dict[str, float]:
    c = Counter(arms)
    total = sum(c.values())
    return {a: n / total for a, n in c.most_common()} if total else {}
