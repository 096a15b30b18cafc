"""Records sent and acknowledged by the broker before their source events are.

A producer's failed send only reaches the future it returned: Faust logs it
and commits the source offsets all the same, so an outcome the broker
refused (a topic that was just re-created, a leader moving) would be lost
for good. :func:`deliver` waits for every acknowledgement and sends the
refused records again, with a growing pause, until the broker takes them;
the caller acknowledges its source events after it returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app import metrics

log = logging.getLogger(__name__)
Record = tuple[str, bytes | None, bytes]  # topic, key, value
Send = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[Any]]]
FIRST_PAUSE_S = 0.05
LONGEST_PAUSE_S = 2.0


async def deliver(send: Send, records: Sequence[Record], agent: str) -> None:
    """Send ``records`` (their order kept on every partition while none
    fails) and return once the broker has acknowledged each one."""
    pending = list(records)
    pause = FIRST_PAUSE_S
    while pending:
        futures = [await send(topic, key, value) for topic, key, value in pending]
        results = await asyncio.gather(*futures, return_exceptions=True)
        refused = [r for r, res in zip(pending, results, strict=True) if isinstance(res, Exception)]
        if not refused:
            return
        error = next(res for res in results if isinstance(res, Exception))
        metrics.SENDS_RETRIED.labels(agent).inc(len(refused))
        log.warning(
            "%s: the broker refused %d of %d records (%s: %s); sending them again in %.2f s",
            agent,
            len(refused),
            len(pending),
            type(error).__name__,
            error,
            pause,
        )
        await asyncio.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE_S)
        pending = refused
