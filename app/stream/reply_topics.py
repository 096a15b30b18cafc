"""Which reply topics exist, for decisions sent to a client's own topic."""

from __future__ import annotations

import logging
import time

from aiokafka.admin import AIOKafkaAdminClient

from app.kafka_security import kafka_security

log = logging.getLogger(__name__)


class ReplyTopics:
    """Which reply topics exist. Producing to a missing topic would create it
    on a cluster that auto-creates topics, so replies go only to topics that
    are listed; the list is re-read at most every REFRESH_S on a miss."""

    REFRESH_S = 2.0

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.known: set[str] = set()
        self._read_at = -self.REFRESH_S

    async def start(self) -> None:
        self.admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id="llmopt-replies",
            **kafka_security(),
        )
        await self.admin.start()

    async def stop(self) -> None:
        await self.admin.close()

    async def exists(self, topic: str) -> bool:
        if topic in self.known:
            return True
        if time.monotonic() - self._read_at >= self.REFRESH_S:
            self._read_at = time.monotonic()
            try:
                self.known = set(await self.admin.list_topics())
            except Exception as exc:
                log.warning("could not list topics for replies: %s", exc)
        return topic in self.known
