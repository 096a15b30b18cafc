"""A request → its engineered feature vector, for contextual policies.

Layout (``FEATURE_NAMES``): bias; log input length scaled to about [0, 1];
priority / 10; hour of day and day of week as sin/cos pairs (UTC, from the
request's ``created_at``); one-hot task type (unknown types share ``other``).
"""

from __future__ import annotations

import math

from app.records import Request

TASK_TYPES = ("code", "qa", "summarization", "creative", "chat", "other")
FEATURE_NAMES = (
    "bias",
    "log_input_tokens",
    "priority",
    "hour_sin",
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
    *(f"task_{t}" for t in TASK_TYPES),
)
_TASK_INDEX = {t: 7 + i for i, t in enumerate(TASK_TYPES)}
_LOG_SCALE = 1.0 / math.log1p(200_000)  # 200k tokens → 1.0
_TWO_PI = 2.0 * math.pi
_DAY_MS = 86_400_000
_WEEK_MS = 7 * _DAY_MS
# 1970-01-01 was a Thursday: shift so that the weekday phase starts on Monday.
_MONDAY_OFFSET_MS = 3 * _DAY_MS


class RequestVectorizer:
    """Deterministic and cheap (a few µs): plain Python floats into a
    preallocated row, no per-call numpy small-array work.

    >>> v = RequestVectorizer()
    >>> r = Request(request_id="r", tenant_id="t", task_type="code", created_at=0,
    ...             input_tokens=1000, priority=5)
    >>> x = v.row(r)
    >>> len(x) == len(FEATURE_NAMES), x[0], x[2], x[FEATURE_NAMES.index("task_code")]
    (True, 1.0, 0.5, 1.0)
    """

    dim = len(FEATURE_NAMES)

    def row(self, r: Request) -> list[float]:
        x = [0.0] * self.dim
        x[0] = 1.0
        x[1] = math.log1p(r.input_tokens) * _LOG_SCALE
        x[2] = r.priority / 10.0
        day = (r.created_at % _DAY_MS) / _DAY_MS * _TWO_PI
        week = ((r.created_at + _MONDAY_OFFSET_MS) % _WEEK_MS) / _WEEK_MS * _TWO_PI
        x[3], x[4] = math.sin(day), math.cos(day)
        x[5], x[6] = math.sin(week), math.cos(week)
        x[_TASK_INDEX.get(r.task_type, _TASK_INDEX["other"])] = 1.0
        return x
