"""app/stream/current_event.py sets a Faust internal (there is no public
setter): these tests fail if Faust changes what it relies on."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

import faust
import faust.stores.rocksdb
import faust.tables.base
from faust import streams

from app.stream.current_event import set_current_event


@dataclass
class _Message:
    topic: str
    partition: int


@dataclass
class _Event:  # weakly referenced, as Faust's events are
    message: _Message


def test_faust_keeps_the_current_event_in_a_context_variable() -> None:
    assert isinstance(streams._current_event, contextvars.ContextVar)


def test_tables_and_stores_read_the_event_that_was_set() -> None:
    # Table writes pick their changelog partition, and the RocksDB store its
    # partition database, from this function.
    assert faust.tables.base.current_event is streams.current_event
    assert faust.stores.rocksdb.current_event is streams.current_event
    assert faust.current_event is streams.current_event
    event = _Event(_Message("t", 3))

    def write() -> None:
        assert faust.current_event() is None
        set_current_event(event)
        assert faust.current_event() is event
        other = _Event(_Message("t", 1))
        set_current_event(other)
        assert faust.current_event() is other

    contextvars.copy_context().run(write)
    assert faust.current_event() is None  # set inside that context only
