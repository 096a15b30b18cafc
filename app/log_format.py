"""How log lines look (``LLMOPT_LOG_FORMAT``): ``text``, the logging
library's lines as they always were, or ``json``, one JSON object per line
with ``ts``, ``level``, ``logger``, ``message`` and, for a logged exception,
``exc``.

>>> import logging
>>> record = logging.LogRecord("app.join", logging.WARNING, __file__, 1, "late %s", ("r1",), None)
>>> record.created = 0.0
>>> JsonFormatter().format(record)
'{"ts":"1970-01-01T00:00:00.000Z","level":"WARNING","logger":"app.join","message":"late r1"}'
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import orjson

from app.settings import PREFIX, Settings, SettingsError

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC)
        doc: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def log_format(settings: Settings) -> str:
    """The configured format; any other value is a :class:`SettingsError`."""
    if settings.log_format not in LOG_FORMATS:
        raise SettingsError(
            f"{PREFIX}LOG_FORMAT: {settings.log_format!r} is not a log format; "
            f"set {' or '.join(LOG_FORMATS)}"
        )
    return settings.log_format


def log_level(settings: Settings) -> int:
    """The configured level's number; an unknown name is a :class:`SettingsError`."""
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        raise SettingsError(
            f"{PREFIX}LOG_LEVEL: {settings.log_level!r} is not a log level; "
            "set debug, info, warning or error"
        )
    return level


def configure_cli_logging(settings: Settings) -> None:
    """JSON: every log record of the command, one object per line on stderr,
    from ``LLMOPT_LOG_LEVEL`` up. Text: logging stays as the library sets it
    up (warnings and errors on stderr)."""
    level = log_level(settings)
    if log_format(settings) == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level)


def worker_logging_config(settings: Settings) -> dict[str, Any] | None:
    """The ``logging.config.dictConfig`` document a worker starts with
    (``None``: the worker's own text setup)."""
    level = log_level(settings)
    if log_format(settings) == "text":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }
