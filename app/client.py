"""Client SDK: ask for a decision and await it; report the reward.

Two transports:

- ``kafka`` (the default): requests and rewards go to their topics; each
  client reads its decisions from a reply topic of its own
  (``llmopt.replies.<client id>``: the worker replies only under the
  configured ``reply_topic_prefix``), named in the request's ``reply_to``, so
  a client never has to read every tenant's decisions.
- ``http``: ``POST /decide`` and ``POST /reward`` on a worker that decides
  (``url=``, e.g. ``http://127.0.0.1:6066``), over keep-alive connections
  (docs/decide-http.md), with ``Authorization: Bearer <token>`` when the
  worker wants one (``token=``, else ``LLMOPT_WEB_TOKEN``). A refused event
  raises :class:`InvalidEvent` with the worker's reason, a refused token
  :class:`PermissionError`; a worker that does not answer in time, or cannot
  decide yet, gives the fallback arm as the kafka transport does.

Example (a running worker is needed)::

    async with AsyncClient("127.0.0.1:9092") as c:
        d = await c.decide("tenant-a", "code", input_tokens=800)
        await c.reward(d, quality=0.9, cost_usd=0.002, latency_ms=850)

    async with AsyncClient(transport="http", url="http://127.0.0.1:6066") as c:
        d = await c.decide("tenant-a", "code", input_tokens=800)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.decider import Decider
from app.kafka_security import kafka_security
from app.policies.config import PoliciesConfig
from app.records import Decision, InvalidEvent, Request, Reward, now_ms
from app.settings import Settings
from app.stream.kafka_io import assign_from_start
from app.topics import TopicCatalog

T = TypeVar("T")
TRANSPORTS = ("kafka", "http")
JSON_HEADERS = {"Content-Type": "application/json"}


class AsyncClient:
    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        settings: Settings | None = None,
        client_id: str | None = None,
        transport: str = "kafka",
        url: str | None = None,
        connections: int = 32,
        token: str | None = None,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        if transport == "http" and not url:
            raise ValueError("transport='http' needs url=, e.g. 'http://127.0.0.1:6066'")
        self.transport = transport
        self.url = (url or "").rstrip("/")
        self.connections = connections  # http: keep-alive connections at most
        self._http: aiohttp.ClientSession | None = None
        self.settings = settings or Settings.from_env()
        self._token = self.settings.web_bearer_token() if token is None else token
        self.bootstrap = bootstrap or self.settings.bootstrap
        self.client_id = client_id or uuid.uuid4().hex[:12]
        self.reply_topic = f"{self.settings.reply_topic_prefix}{self.client_id}"
        self.topics = TopicCatalog.for_settings(self.settings)
        self.policies = PoliciesConfig.load(self.settings.policies_path)
        self._fallbacks = Decider(self.policies)
        self._waiting: dict[str, asyncio.Future[Decision]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.transport == "http":
            connector = aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=60)
            self._http = aiohttp.ClientSession(connector=connector)
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, **kafka_security(self.settings)
        )
        await admin.start()
        try:
            if self.reply_topic not in await admin.list_topics():
                await admin.create_topics(
                    [
                        NewTopic(
                            self.reply_topic,
                            1,
                            1,
                            topic_configs={"retention.ms": "3600000", "cleanup.policy": "delete"},
                        )
                    ]
                )
        finally:
            await admin.close()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=0, **kafka_security(self.settings)
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            fetch_max_wait_ms=5,
            enable_auto_commit=False,
            **kafka_security(self.settings),
        )
        await self._producer.start()
        await self._consumer.start()
        # A new topic: everything in it is ours.
        assign_from_start(self._consumer, [TopicPartition(self.reply_topic, 0)])
        self._reader = asyncio.create_task(self._read_replies())

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            return
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._consumer.stop()
        await self._producer.stop()
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, **kafka_security(self.settings)
        )
        await admin.start()
        with contextlib.suppress(Exception):
            await admin.delete_topics([self.reply_topic])
        await admin.close()

    async def _read_replies(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                for m in msgs:
                    try:
                        d = Decision.loads(m.value)
                    except InvalidEvent:
                        continue
                    fut = self._waiting.pop(d.request_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(d)

    async def decide(
        self,
        tenant_id: str,
        task_type: str,
        *,
        input_tokens: int = 0,
        priority: int = 5,
        policy_id: str | None = None,
        candidates: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        timeout: float = 1.0,
    ) -> Decision:
        """The decision for one request; after ``timeout`` seconds, the
        policy's fallback arm with ``fallback=True``."""
        req = Request(
            request_id=uuid.uuid4().hex,
            tenant_id=tenant_id,
            task_type=task_type,
            created_at=now_ms(),
            input_tokens=input_tokens,
            priority=priority,
            policy_id=policy_id,
            candidates=candidates,
            reply_to=self.reply_topic if self._http is None else None,
            metadata=metadata,
        )
        Request.from_dict(req.to_dict())  # the same checks the worker makes, before sending
        if self._http is not None:
            return await self._decide_http(req, timeout)
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting[req.request_id] = fut
        await self._producer.send(self.topics.name("requests"), req.dumps(), key=tenant_id.encode())
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._waiting.pop(req.request_id, None)
            return Decision.from_dict(self._fallbacks.fallback(req, now_ms()))

    async def reward(
        self,
        decision: Decision | str,
        *,
        tenant_id: str | None = None,
        reward_token: str | None = None,
        quality: float | None = None,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
        error: bool | None = None,
        feedback: float | None = None,
    ) -> None:
        """Report what happened after ``decision`` (a Decision, or a request id
        with the ``tenant_id`` that owns it and the decision's ``reward_token``
        when the deployment issues them)."""
        if isinstance(decision, Decision):
            request_id, tenant_id = decision.request_id, decision.tenant_id
            reward_token = decision.reward_token
        else:
            request_id = decision
            if tenant_id is None:
                raise ValueError("reward(request_id) needs the tenant_id that owns the request")
        r = Reward(
            request_id=request_id,
            tenant_id=tenant_id,
            sent_at=now_ms(),
            quality=quality,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
            error=error,
            feedback=feedback,
            reward_token=reward_token,
        )
        Reward.from_dict(r.to_dict())  # reject NaN / out-of-range values here, with the reason
        if self._http is not None:
            # ack=1: sent once the broker has it, as send_and_wait below.
            status, body = await self._post("/reward?ack=1", r.dumps(), tenant_id)
            if status in (400, 413):
                raise InvalidEvent(*_refusal(body))
            if status not in (200, 202):
                raise RuntimeError(f"POST /reward answered {status}: {_refusal(body)[1]}")
            return
        await self._producer.send_and_wait(
            self.topics.name("rewards"), r.dumps(), key=request_id.encode()
        )

    async def _decide_http(self, req: Request, timeout: float) -> Decision:
        try:
            status, body = await self._post("/decide", req.dumps(), req.tenant_id, timeout)
        except (TimeoutError, aiohttp.ClientError):
            status, body = 0, b""
        if status == 200:
            return Decision.loads(body)
        if status in (400, 413):
            raise InvalidEvent(*_refusal(body))
        if status == 401:  # a setup mistake, not a passing failure: no fallback hides it
            raise PermissionError(
                "POST /decide answered 401: the worker wants its bearer token "
                "(token=, or LLMOPT_WEB_TOKEN)"
            )
        # No answer in time, or the worker cannot decide now (503, 500).
        return Decision.from_dict(self._fallbacks.fallback(req, now_ms()))

    async def _post(
        self, path: str, body: bytes, tenant_id: str, timeout: float | None = None
    ) -> tuple[int, bytes]:
        """POST ``body``; the tenant header, when the deployment names one,
        as the gateway this client runs in vouches for its tenant."""
        assert self._http is not None
        headers = dict(JSON_HEADERS)
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self.settings.tenant_header:
            headers[self.settings.tenant_header] = tenant_id
        limit = aiohttp.ClientTimeout(total=timeout)
        async with self._http.post(self.url + path, data=body, headers=headers, timeout=limit) as r:
            return r.status, await r.read()


def _refusal(body: bytes) -> tuple[str, str]:
    """(reason, detail) of a worker's error answer."""
    try:
        doc = orjson.loads(body)
        return str(doc["error"]), str(doc.get("detail", ""))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "internal_error", body[:200].decode(errors="replace")


class Client:
    """The same, for synchronous code: runs an event loop on a background thread."""

    def __init__(self, bootstrap: str | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._async = AsyncClient(bootstrap, **kwargs)
        self._call(self._async.start())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def decide(self, tenant_id: str, task_type: str, **kwargs: Any) -> Decision:
        return self._call(self._async.decide(tenant_id, task_type, **kwargs))

    def reward(self, decision: Decision | str, **kwargs: Any) -> None:
        self._call(self._async.reward(decision, **kwargs))

    def close(self) -> None:
        self._call(self._async.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
