"""POST /decide and POST /reward on the web server of a worker that decides.

``POST /decide`` takes one request event (or a JSON array of them) and
answers with its decision (or an array, in order, of decisions and error
objects), decided by select_arm's own decider from the snapshots it holds
(``runtime.direct_decisions``): no broker round trip before the answer. It
has the effects of a request read from the requests topic: the decision goes
to the decisions topic keyed by its request id (so its reward joins), the
request's feature observations go to the observations topic keyed by route
(no ``featurize_requests`` ever reads it), bad input is dead-lettered with
its reason, and the decision metrics count it (agent ``decide_http``).
Calls that arrive together are decided in one pass of the decider.

- Acceptance is the requests topic's (app/ingress.py): the tenant header
  named by ``LLMOPT_TENANT_HEADER`` is the HTTP header of that name; there
  is no message key. A ``reply_to`` is checked as on Kafka and otherwise
  ignored: the HTTP answer is the reply.
- A caller whose bearer token may act for some tenants only (the tenants
  file, app/tenant_access.py) has an event of another tenant refused: 403
  ``tenant_not_allowed``, dead-lettered and counted as any bad input.
- ``?ack=1``: answer once the broker has acknowledged the decision (a
  worker crash cannot lose a decision the caller acts on). Without it the
  answer does not wait: the decision is queued in the producer, and a crash
  in the next milliseconds loses it, so its reward ends ``unknown_request``
  and the learner misses one update; the caller's answer is unaffected.
- Status: 200 with the decision (a batch: 200 whenever the body is an
  array); 400 ``{"error": <reason>, "detail": ...}`` for bad input, 413 for
  ``oversize``, 403 for ``tenant_not_allowed``, 500 for ``internal_error``;
  503 ``not_ready`` until the
  decider has read the policy snapshots (and ``not_logged`` when ``?ack=1``
  and the send failed), and ``overloaded`` while more than
  MAX_IN_FLIGHT_REQUESTS requests are being decided (backpressure: the
  caller retries or falls back, rather than the worker queueing without
  bound).

``POST /reward`` takes one reward event, checks it as ``join_rewards`` does
(tenant header, reward token), and sends it to the rewards topic keyed by
its request id, with the tenant header copied to the record's headers:
202 (queued), or 200 with ``?ack=1`` (acknowledged); bad input as above.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import faust
import orjson

from app import metrics
from app.features.observations import observation_doc, request_observations
from app.http_ingress import (
    MAX_BATCH_ITEMS,
    body_limit,
    error_doc,
    is_batch,
    split_batch,
    status_for,
)
from app.ingress import accept_request, check_reward_token, check_tenant
from app.records import InvalidEvent, Request, Reward, decode, now_ms
from app.stream.dead_letter import dead_letter, internal_error
from app.stream.runtime import DirectDecisions, Runtime
from app.web_auth import caller_of

log = logging.getLogger(__name__)
DECIDE_AGENT = "decide_http"
REWARD_AGENT = "reward_http"
DECIDE_SOURCE = "http:/decide"
REWARD_SOURCE = "http:/reward"
JSON_TYPE = "application/json"
# Observations wait this long to go out together, one message per route.
OBSERVATIONS_FLUSH_S = 0.01
# Requests of POST /decide calls being decided at once; a call beyond is 503.
MAX_IN_FLIGHT_REQUESTS = 10 * MAX_BATCH_ITEMS
Answer = tuple[int, Any]


def _log_failed_send(fut: asyncio.Future[Any]) -> None:
    """A send not awaited by its request: a failure is logged (and counted
    as an error), never left unretrieved."""
    if not fut.cancelled() and fut.exception() is not None:
        log.error("a send for an HTTP request failed: %s", fut.exception())


def _watch(futures: list[asyncio.Future[Any]]) -> None:
    for fut in futures:
        fut.add_done_callback(_log_failed_send)


async def read_body(request: Any, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` + 1 bytes of the body; whether there were more."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), size > limit


class ObservationBatcher:
    """The feature observations of HTTP requests, sent every
    OBSERVATIONS_FLUSH_S as one message per route (as featurize_requests
    sends a batch's): two sends per request would cost more than deciding
    it. A worker that stops loses the last interval's observations."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._routed: dict[str, list[Any]] = defaultdict(list)
        self._sending: set[asyncio.Task[None]] = set()

    def add(self, producer: Any, requests: list[Request]) -> None:
        if not requests:
            return
        if not self._routed:
            asyncio.get_running_loop().call_later(OBSERVATIONS_FLUSH_S, self._flush, producer)
        for req in requests:
            for route, entity, obs in request_observations(req):
                self._routed[route].append(observation_doc(entity, obs))

    def _flush(self, producer: Any) -> None:
        routed, self._routed = self._routed, defaultdict(list)
        task = asyncio.ensure_future(self._send(producer, routed))
        self._sending.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._sending.discard)

    async def _send(self, producer: Any, routed: dict[str, list[Any]]) -> None:
        sent = [
            await producer.send(self.topic, orjson.dumps(docs), key=route.encode())
            for route, docs in routed.items()
        ]
        _watch(sent)


# Per request: its decision or error, and its send's future (None for an error).
Decided = tuple[list[Any], list[asyncio.Future[Any] | None]]


class DecisionBatcher:
    """The requests of concurrent POST /decide calls, decided together: the
    calls that reach the decider in one turn of the event loop make one
    batch, as the requests of one fetch do for select_arm (one decider pass,
    its vector operations and metrics shared)."""

    def __init__(self) -> None:
        self._waiting: list[tuple[list[Request], asyncio.Future[Decided]]] = []
        self._deciding: set[asyncio.Task[None]] = set()

    async def decide(self, direct: DirectDecisions, requests: list[Request]) -> Decided:
        """Per request: its decision or error, and its send's future."""
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._start, direct)
        fut: asyncio.Future[Decided] = loop.create_future()
        self._waiting.append((requests, fut))
        return await fut

    def _start(self, direct: DirectDecisions) -> None:
        waiting, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._decide(direct, waiting))
        self._deciding.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._deciding.discard)

    async def _decide(
        self, direct: DirectDecisions, waiting: list[tuple[list[Request], asyncio.Future[Decided]]]
    ) -> None:
        everyone = [req for requests, _ in waiting for req in requests]
        try:
            decided, sends = await direct.decide_direct(everyone, DECIDE_AGENT)
        except Exception as exc:  # the decider failed as a whole: each request is answered
            log.exception("POST /decide: deciding %d requests failed", len(everyone))
            decided = [internal_error(exc, DECIDE_AGENT)] * len(everyone)
            sends = [None] * len(everyone)
        start = 0
        for requests, fut in waiting:
            end = start + len(requests)
            if not fut.done():  # not cancelled
                fut.set_result((decided[start:end], sends[start:end]))
            start = end


class DecideEndpoint:
    """The two handlers, as (status, JSON document) for a request."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        t = runtime.topics
        self.dead_letter_topic = t.name("dead_letter")
        self.observations = ObservationBatcher(t.name("feature_observations"))
        self.decisions = DecisionBatcher()
        self.rewards_topic = t.name("rewards")
        self.in_flight = 0

    def _tenant_headers(self, request: Any) -> list[tuple[str, bytes]]:
        name = self.rt.settings.tenant_header
        value = request.headers.get(name) if name else None
        return [(name, value.encode())] if value is not None else []

    async def _dead(
        self, producer: Any, agent: str, source: str, value: bytes, error: InvalidEvent
    ) -> asyncio.Future[Any]:
        metrics.DEAD_LETTERS.labels(agent, error.code).inc()
        metrics.EVENTS.labels(agent, "dead_letter").inc()
        doc = dead_letter(source, -1, -1, None, value, error)
        fut: asyncio.Future[Any] = await producer.send(self.dead_letter_topic, doc)
        return fut

    async def _refuse(
        self, producer: Any, agent: str, source: str, value: bytes, error: InvalidEvent
    ) -> Answer:
        _watch([await self._dead(producer, agent, source, value, error)])
        return status_for(error), error_doc(error)

    async def decide(self, request: Any) -> Answer:
        direct = self.rt.direct_decisions
        if direct is None:
            return 503, {"error": "not_ready", "detail": "policy snapshots not read yet"}
        started = time.perf_counter()
        producer = direct.producer
        s = self.rt.settings
        body, more = await read_body(request, body_limit(s.max_event_bytes))
        if more:
            error = InvalidEvent("oversize", f"more than {len(body) - 1} bytes")
            return await self._refuse(producer, DECIDE_AGENT, DECIDE_SOURCE, body, error)
        batch = is_batch(body)
        try:
            items = split_batch(body, s.max_event_bytes) if batch else [body]
        except InvalidEvent as exc:
            return await self._refuse(producer, DECIDE_AGENT, DECIDE_SOURCE, body, exc)
        if self.in_flight + len(items) > MAX_IN_FLIGHT_REQUESTS:
            metrics.EVENTS.labels(DECIDE_AGENT, "overloaded").inc(len(items))
            return 503, {
                "error": "overloaded",
                "detail": f"more than {MAX_IN_FLIGHT_REQUESTS} requests being decided; retry",
            }
        self.in_flight += len(items)
        try:
            return await self._decide(request, direct, items, batch, started)
        finally:
            self.in_flight -= len(items)

    async def _decide(
        self,
        request: Any,
        direct: DirectDecisions,
        items: list[bytes],
        batch: bool,
        started: float,
    ) -> Answer:
        producer = direct.producer
        s = self.rt.settings
        headers = self._tenant_headers(request)
        caller = caller_of(request)
        answers: list[Any] = [None] * len(items)
        accepted: list[int] = []
        requests: list[Request] = []
        now = now_ms()
        for i, raw in enumerate(items):
            try:
                requests.append(
                    accept_request(
                        raw,
                        None,
                        headers,
                        max_bytes=s.max_event_bytes,
                        tenant_header=s.tenant_header,
                        reply_prefix=s.reply_topic_prefix,
                        now=now,
                        caller=caller,
                    )
                )
                accepted.append(i)
            except InvalidEvent as exc:
                answers[i] = exc
        decided, sends = await self.decisions.decide(direct, requests) if requests else ([], [])
        futures = [f for f in sends if f is not None]
        for i, out in zip(accepted, decided, strict=True):
            answers[i] = out
        errors: dict[int, InvalidEvent] = {}
        others: list[asyncio.Future[Any]] = []
        for i, out in enumerate(answers):
            if isinstance(out, InvalidEvent):
                errors[i] = out
                others.append(
                    await self._dead(producer, DECIDE_AGENT, DECIDE_SOURCE, items[i], out)
                )
                answers[i] = error_doc(out)
        _watch(others)
        self.observations.add(producer, requests)
        metrics.AGENT_PROCESSING_SECONDS.labels(DECIDE_AGENT).observe(time.perf_counter() - started)
        if request.query.get("ack") in ("1", "true"):
            try:
                await asyncio.gather(*futures)
            except Exception as exc:
                return 503, {"error": "not_logged", "detail": f"decision not logged: {exc}"}
        else:
            _watch(futures)
        if batch:
            return 200, answers
        return (status_for(errors[0]) if errors else 200), answers[0]

    async def reward(self, request: Any) -> Answer:
        direct = self.rt.direct_decisions
        if direct is None:
            return 503, {"error": "not_ready", "detail": "the worker is starting"}
        producer = direct.producer
        s = self.rt.settings
        body, more = await read_body(request, s.max_event_bytes)
        headers = self._tenant_headers(request)
        try:
            if more:
                raise InvalidEvent("oversize", f"more than {s.max_event_bytes} bytes")
            r = Reward.from_dict(decode(body, s.max_event_bytes))
            check_tenant(r.tenant_id, headers, s.tenant_header, caller=caller_of(request))
            check_reward_token(s.reward_token_secret, r.tenant_id, r.request_id, r.reward_token)
        except InvalidEvent as exc:
            return await self._refuse(producer, REWARD_AGENT, REWARD_SOURCE, body, exc)
        # The header travels on: join_rewards checks it again.
        fut = await producer.send(
            self.rewards_topic, body, key=r.request_id.encode(), headers=headers or None
        )
        metrics.EVENTS.labels(REWARD_AGENT, "ok").inc()
        if request.query.get("ack") in ("1", "true"):
            try:
                await fut
            except Exception as exc:
                return 503, {"error": "not_logged", "detail": f"reward not sent: {exc}"}
            return 200, {"request_id": r.request_id}
        _watch([fut])
        return 202, {"request_id": r.request_id}


def register(app: faust.App, runtime: Runtime) -> None:
    endpoint = DecideEndpoint(runtime)

    def respond(view: faust.web.View, answer: Answer) -> Any:
        status, doc = answer
        return view.bytes(orjson.dumps(doc), content_type=JSON_TYPE, status=status)

    @app.page("/decide")
    class Decide(faust.web.View):
        async def post(self, request: Any) -> Any:
            return respond(self, await endpoint.decide(request))

    @app.page("/reward")
    class RewardView(faust.web.View):
        async def post(self, request: Any) -> Any:
            return respond(self, await endpoint.reward(request))
