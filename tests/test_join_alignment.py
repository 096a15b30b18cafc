"""The join's reading order: a rewards partition read too far ahead of its
decisions is held back until they catch up or are all read (pure)."""

from __future__ import annotations

from app.join_alignment import RewardsAlignment


def test_rewards_ahead_of_unread_decisions_are_paused_then_resumed() -> None:
    a = RewardsAlignment(ahead_ms=1_000)
    a.saw("decisions", 0, 1_000)
    a.saw("rewards", 0, 2_500)
    a.saw("decisions", 1, 1_000)
    a.saw("rewards", 1, 1_900)  # within the allowance
    assert a.changes([0, 1], lambda p: True) == ([0], [])
    assert a.changes([0, 1], lambda p: True) == ([], []), "a pause is reported once"
    a.saw("decisions", 0, 1_600)
    assert a.changes([0, 1], lambda p: True) == ([], [0])


def test_decisions_read_to_their_end_never_hold_rewards_back() -> None:
    a = RewardsAlignment(ahead_ms=1_000)
    a.saw("decisions", 0, 1_000)
    a.saw("rewards", 0, 60_000)  # late rewards of old decisions
    assert a.changes([0], lambda p: False) == ([], [])
    assert a.changes([0], lambda p: True) == ([0], [])
    assert a.changes([0], lambda p: False) == ([], [0])


def test_nothing_is_held_back_before_both_kinds_were_seen() -> None:
    a = RewardsAlignment()
    a.saw("rewards", 0, 10_000_000)
    assert a.changes([0], lambda p: True) == ([], [])


def test_timestamps_going_back_keep_the_newest() -> None:
    a = RewardsAlignment(ahead_ms=1_000)
    a.saw("decisions", 0, 5_000)
    a.saw("decisions", 0, 1_000)
    a.saw("rewards", 0, 5_500)
    assert a.changes([0], lambda p: True) == ([], [])


def test_reset_names_the_paused_partitions() -> None:
    a = RewardsAlignment(ahead_ms=0)
    a.saw("decisions", 2, 0)
    a.saw("rewards", 2, 10)
    a.changes([2], lambda p: True)
    assert a.reset() == [2]
    assert a.changes([2], lambda p: True) == ([], [])
