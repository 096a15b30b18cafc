"""DriftHold: a drift waits until the learner has processed the outcomes it
was detected on, at most the bound; the position is per partition and
starts afresh after a rebalance or a new cluster."""

from __future__ import annotations

from app.drift import DriftHold


def test_a_drift_ahead_of_the_outcomes_waits_for_them() -> None:
    hold = DriftHold(max_hold_s=30.0)
    hold.reached(1, 40)
    assert hold.admit(1, drift_offset=7, outcome_offset=41, now=0.0) == "hold"
    assert hold.held() == [1]
    hold.reached(1, 40)
    assert hold.released(now=5.0) == []
    hold.reached(2, 100)  # another partition's outcomes do not count
    assert hold.released(now=5.0) == []
    hold.reached(1, 41)
    assert hold.released(now=6.0) == [(1, False)]
    assert hold.held() == []
    assert hold.admit(1, drift_offset=7, outcome_offset=41, now=6.0) == "apply"


def test_a_drift_behind_the_outcomes_and_old_events_go_at_once() -> None:
    hold = DriftHold(max_hold_s=30.0)
    hold.reached(0, 500)
    assert hold.admit(0, drift_offset=1, outcome_offset=500, now=0.0) == "apply"
    assert hold.admit(0, drift_offset=2, outcome_offset=None, now=0.0) == "apply"
    assert hold.admit(3, drift_offset=0, outcome_offset=None, now=0.0) == "apply"
    # an unknown position is none processed yet
    assert hold.admit(3, drift_offset=1, outcome_offset=1, now=0.0) == "hold"


def test_no_bound_means_no_hold() -> None:
    hold = DriftHold(max_hold_s=0.0)
    assert hold.admit(0, drift_offset=0, outcome_offset=10**9, now=0.0) == "apply"
    assert hold.held() == []


def test_past_the_bound_the_held_drift_goes_and_only_that_one() -> None:
    hold = DriftHold(max_hold_s=30.0)
    hold.reached(0, 10)
    assert hold.admit(0, drift_offset=4, outcome_offset=10**6, now=100.0) == "hold"
    # read again while held (a redone batch): the wait still counts from the first time
    assert hold.admit(0, drift_offset=4, outcome_offset=10**6, now=120.0) == "hold"
    assert hold.released(now=129.9) == []
    assert hold.released(now=130.0) == [(0, True)]
    assert hold.admit(0, drift_offset=4, outcome_offset=10**6, now=131.0) == "apply"
    # the next drift of that partition waits for its own outcomes again
    assert hold.admit(0, drift_offset=5, outcome_offset=10**6, now=131.0) == "hold"
    assert hold.released(now=140.0) == []


def test_forget_starts_afresh_and_names_the_partitions_held() -> None:
    hold = DriftHold(max_hold_s=30.0)
    hold.reached(0, 10)
    hold.reached(2, 10)
    assert hold.admit(0, drift_offset=1, outcome_offset=20, now=0.0) == "hold"
    assert hold.admit(2, drift_offset=1, outcome_offset=5, now=0.0) == "apply"
    assert hold.forget() == [0]
    assert hold.held() == [] and hold.done(2) is None
    # the positions are those of the new assignment now
    assert hold.admit(2, drift_offset=1, outcome_offset=5, now=1.0) == "hold"
