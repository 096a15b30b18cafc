"""Telling when a stream skipped records (app/stream/offset_sequence.py)."""

from __future__ import annotations

from app.stream.offset_sequence import OffsetSequence


def test_consecutive_offsets_are_next_and_redeliveries_behind() -> None:
    s = OffsetSequence()
    assert [s.check("p", o) for o in (10, 11, 12)] == ["first", "next", "next"]
    assert s.check("p", 11) == "behind"
    assert s.check("q", 0) == "first"  # partitions are apart


def test_a_gap_names_the_skipped_range_until_it_is_handled() -> None:
    s = OffsetSequence()
    s.check("p", 600)
    assert s.check("p", 603) == "gap"
    assert s.expected("p") == 601  # 601 and 602 were skipped
    s.advance("p", 603)
    assert s.check("p", 604) == "next"
    assert s.check("p", 602) == "behind"  # a skipped record that comes after all


def test_the_head_of_a_new_assignment_is_checked_against_the_commit() -> None:
    s = OffsetSequence()
    s.check("p", 5)
    s.forget()
    s.expect("p", 40)
    assert s.check("p", 41) == "gap"  # offset 40 was skipped
    assert s.expected("p") == 40
    s.forget()
    assert s.check("p", 7) == "first"  # nothing committed: taken as it comes
