"""Which event a Faust table write belongs to.

A table write goes to the changelog partition, and the RocksDB partition, of
Faust's *current event* (``faust.current_event()``). Batch processing
(``stream.take_events``) leaves the batch's last event there, which may be on
another partition than the key being written; Faust has no public way to
say which event a write belongs to, so :func:`set_current_event` sets the
context variable Faust reads. It is the only place that touches it, and
tests/test_current_event.py fails if Faust changes it.
"""

from __future__ import annotations

import weakref
from typing import Any

from faust import streams


def set_current_event(event: Any) -> None:
    """Make ``event`` the one ``faust.current_event()`` returns, so that
    table writes made now go to its partition."""
    # Faust's private context variable (faust/streams.py): no public setter.
    streams._current_event.set(weakref.ref(event))
