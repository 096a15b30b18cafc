"""Faults injected on purpose, for the chaos checks (``LLMOPT_FAULTS``).

A comma-separated list of faults, each ``kind:args``::

    kill_mid_batch:join_rewards:3          SIGKILL the worker after the 3rd
                                           batch of join_rewards was handled,
                                           before its offsets are committed
    crash_policy_update:0.001              raise inside the learner's update
                                           for this fraction of the requests
    slow_consumer:learn_from_outcomes:200ms  wait this long after each batch
                                           of the service (before its commit)

Services are the batched services (:data:`SERVICES`). Off by default: the
hooks then cost one attribute read (``faults.ACTIVE is None``). The spec is
parsed strictly when the settings are read, so a typo stops the worker at
start with one line saying what is wrong, rather than running the chaos
check without its fault.

The crash is decided by a hash of the request id, not by a draw: every copy
of an outcome (a redelivery, the join sending it twice) meets the same fault,
as a message that crashes its handler would, so the checks can tell which
requests the learner was meant to refuse. A kill counts batches since the
process started: a worker restarted with the same spec is killed again at
its Nth batch, so a supervisor restarting it should drop the fault.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

SERVICES = (
    "select_arm",
    "join_rewards",
    "learn_from_outcomes",
    "aggregate_features",
    "featurize_requests",
    "featurize_outcomes",
    "detect_drift",
)
KINDS = ("kill_mid_batch", "crash_policy_update", "slow_consumer")
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)$")
log = logging.getLogger(__name__)


class FaultSpecError(ValueError):
    """An ``LLMOPT_FAULTS`` that cannot be parsed; the message says which part and why."""


class InjectedFault(RuntimeError):
    """The exception ``crash_policy_update`` raises."""


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Faults:
    """``kill_after``: service → the batch after which the process is
    killed; ``crash_fraction``: of requests whose policy update raises;
    ``delay_seconds``: service → the wait after each of its batches;
    ``kill``: what a kill does (tests raise instead)."""

    kill_after: dict[str, int] = field(default_factory=dict)
    crash_fraction: float = 0.0
    delay_seconds: dict[str, float] = field(default_factory=dict)
    kill: Callable[[], None] = _kill_self
    _batches: Counter[str] = field(default_factory=Counter)

    async def after_batch(self, service: str) -> None:
        """Between a batch's handling and its commit."""
        self._batches[service] += 1
        n = self._batches[service]
        if n == self.kill_after.get(service):
            log.warning("fault injected: kill_mid_batch after batch %d of %s", n, service)
            self.kill()
        delay = self.delay_seconds.get(service)
        if delay:
            await asyncio.sleep(delay)

    def crashes(self, request_id: str) -> bool:
        """Whether the policy update for ``request_id`` is to raise."""
        if self.crash_fraction <= 0.0:
            return False
        digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") < self.crash_fraction * 2**64

    def policy_update(self, request_id: str) -> None:
        if self.crashes(request_id):
            raise InjectedFault(f"crash_policy_update for request {request_id!r}")


def parse(spec: str) -> Faults | None:
    """The faults of ``spec`` (None for an empty one); raises
    :class:`FaultSpecError`."""
    faults = Faults()
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    for part in parts:
        kind, *args = part.split(":")
        if kind not in KINDS:
            raise FaultSpecError(f"{part!r}: unknown fault {kind!r}; use one of {', '.join(KINDS)}")
        if kind == "crash_policy_update":
            faults.crash_fraction = _fraction(part, args)
            continue
        if len(args) != 2:
            raise FaultSpecError(f"{part!r}: {kind} takes SERVICE:{_ARG[kind]}")
        service, value = args
        if service not in SERVICES:
            raise FaultSpecError(
                f"{part!r}: unknown service {service!r}; use one of {', '.join(SERVICES)}"
            )
        if kind == "kill_mid_batch":
            if not value.isdigit() or int(value) < 1:
                raise FaultSpecError(f"{part!r}: the batch number must be an integer from 1")
            faults.kill_after[service] = int(value)
        else:
            faults.delay_seconds[service] = _delay(part, value)
    return faults if parts else None


_ARG = {"kill_mid_batch": "BATCH_NUMBER", "slow_consumer": "DELAY (e.g. 200ms or 1.5s)"}


def _fraction(part: str, args: list[str]) -> float:
    if len(args) == 1:
        try:
            value = float(args[0])
        except ValueError:
            value = -1.0
        if 0.0 < value <= 1.0:
            return value
    raise FaultSpecError(f"{part!r}: crash_policy_update takes a fraction in (0, 1]")


def _delay(part: str, value: str) -> float:
    match = _DELAY.match(value)
    if match is None:
        raise FaultSpecError(f"{part!r}: the delay must be a number with ms or s, e.g. 200ms")
    number, unit = float(match[1]), match[2]
    return number / 1000.0 if unit == "ms" else number


# The faults of this process (None: none), set once at start by :func:`install`.
ACTIVE: Faults | None = None


def install(spec: str) -> None:
    """Make ``spec``'s faults those of this process."""
    global ACTIVE
    ACTIVE = parse(spec)
