"""Counts logged errors into ``llmopt_errors_total{logger}``."""

from __future__ import annotations

import logging

from app import metrics


class ErrorLogCounter(logging.Handler):
    """A logging handler that counts ERROR and CRITICAL records by logger.

    The label is the logger name cut to its first two parts
    (``faust.agents``, ``agents.join_rewards``, ``aiokafka.consumer``), so
    the label set stays small whatever the code logs.

    >>> counter = ErrorLogCounter()
    >>> before = metrics.ERRORS.labels("demo.module")._value.get()
    >>> counter.handle(logging.makeLogRecord(
    ...     {"name": "demo.module.deep", "levelno": logging.ERROR, "msg": "x"}))
    True
    >>> metrics.ERRORS.labels("demo.module")._value.get() - before
    1.0
    """

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        metrics.ERRORS.labels(".".join(record.name.split(".")[:2])).inc()

    @classmethod
    def install(cls, logger: logging.Logger | None = None) -> None:
        """Add one counter to ``logger`` (the root logger by default), once."""
        logger = logger or logging.getLogger()
        if not any(isinstance(h, cls) for h in logger.handlers):
            logger.addHandler(cls())
