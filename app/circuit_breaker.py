"""A circuit breaker: stop calling what keeps failing, try again later.

Closed, calls go through. After ``failures`` consecutive failures (an
exception, or a call slower than ``slow_seconds``: it did answer, but a
dependency that answers that late holds up every event behind it) the
breaker opens: calls are skipped and the caller uses its fallback. After
``reset_seconds`` it is half-open: one trial call goes through; its success
closes the breaker, its failure opens it for another ``reset_seconds``.
``llmopt_circuit_state{name}`` shows the state (0 closed, 1 half-open,
2 open) and ``llmopt_circuit_skipped_total{name}`` the calls skipped.

Written here rather than taken from pybreaker: the calls it guards are
mostly synchronous and on the event loop (a reward function in the join, a
feature read in the decider), where a slow call must count as a failure,
and one is a coroutine that needs a timeout; pybreaker counts exceptions
only and its asynchronous support is Tornado's. Time comes from ``clock``
(monotonic seconds), so tests step it.

>>> now = [0.0]
>>> b = CircuitBreaker("demo", failures=2, reset_seconds=10, clock=lambda: now[0])
>>> def boom() -> int:
...     raise OSError("down")
>>> for _ in range(2):
...     b.call(boom, fallback=lambda: -1)
-1
-1
>>> b.state, b.call(lambda: 1, fallback=lambda: -1)  # open: not called
('open', -1)
>>> now[0] = 10.0
>>> b.state, b.call(lambda: 1, fallback=lambda: -1)  # half-open: one trial, it works
('half_open', 1)
>>> b.state
'closed'
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from app import metrics

T = TypeVar("T")
STATES = {"closed": 0, "half_open": 1, "open": 2}


class CircuitOpen(RuntimeError):
    """A call skipped because its breaker is open."""


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failures: int = 5,
        reset_seconds: float = 30.0,
        slow_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or reset_seconds <= 0:
            raise ValueError("a circuit breaker needs failures >= 1 and reset_seconds > 0")
        self.name = name
        self.failures = failures
        self.reset_seconds = reset_seconds
        self.slow_seconds = slow_seconds
        self.clock = clock
        self._failed = 0  # consecutive failures
        self._opened_at: float | None = None
        self._trial = False  # a half-open trial call is under way
        self._gauge = metrics.CIRCUIT_STATE.labels(name)
        self._skipped = metrics.CIRCUIT_SKIPPED.labels(name)
        self._gauge.set(0)

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go through now (half-open: one at a time)."""
        if self._opened_at is None:  # closed: the common case, kept cheap
            return True
        state = self.state
        self._gauge.set(STATES[state])
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        self._skipped.inc()
        return False

    def succeeded(self) -> None:
        if self._opened_at is None and not self._failed:
            return
        self._failed, self._opened_at, self._trial = 0, None, False
        self._gauge.set(0)

    def failed(self) -> None:
        self._failed += 1
        self._trial = False
        if self._opened_at is not None or self._failed >= self.failures:
            self._opened_at = self.clock()
            self._gauge.set(2)

    def finished(self, started: float) -> None:
        """A call that returned, started at ``started`` (``clock()``): a
        success, or a failure when slower than ``slow_seconds``."""
        if self.slow_seconds is not None and self.clock() - started > self.slow_seconds:
            self.failed()
        elif self._failed or self._opened_at is not None:
            self.succeeded()

    def call(self, fn: Callable[[], T], fallback: Callable[[], T]) -> T:
        """``fn()``, or ``fallback()`` when it raises or the breaker is open.
        A call slower than ``slow_seconds`` counts as a failure, its result kept."""
        if not self.allow():
            return fallback()
        started = self.clock()
        try:
            result = fn()
        except Exception:
            self.failed()
            return fallback()
        self.finished(started)
        return result

    async def call_async(self, fn: Callable[[], Awaitable[T]], timeout_seconds: float) -> T:
        """``await fn()`` within ``timeout_seconds``; :class:`CircuitOpen`
        when the breaker is open, the call's exception (``TimeoutError``
        for a timeout) when it fails. The caller chooses its fallback."""
        if not self.allow():
            raise CircuitOpen(f"circuit {self.name!r} is open")
        started = self.clock()
        try:
            result = await asyncio.wait_for(fn(), timeout_seconds)
        except BaseException:  # a cancelled trial too: it must not hold the breaker half-open
            self.failed()
            raise
        self.finished(started)
        return result
