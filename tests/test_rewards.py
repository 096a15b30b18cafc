"""RewardSpec.scalar: weights, renormalisation over the components present,
errors, clipping; and the validation of the spec itself."""

from __future__ import annotations

import math
from typing import Any

import pytest

from app.rewards import RewardSpec

SPEC = RewardSpec(
    quality_weight=0.5,
    cost_weight=0.3,
    latency_weight=0.2,
    feedback_weight=0.0,
    cost_scale_usd=0.02,
    latency_scale_ms=8000.0,
    error_reward=0.1,
    default_reward=0.4,
)


def test_all_components_weighted() -> None:
    # quality 0.8; cost 0.005 of 0.02 → 0.75; latency 2000 of 8000 → 0.75
    expected = 0.5 * 0.8 + 0.3 * 0.75 + 0.2 * 0.75
    assert SPEC.scalar(quality=0.8, cost_usd=0.005, latency_ms=2000) == pytest.approx(expected)


def test_missing_components_renormalise_the_remaining_weights() -> None:
    assert SPEC.scalar(quality=0.8) == pytest.approx(0.8)
    assert SPEC.scalar(cost_usd=0.01) == pytest.approx(0.5)
    assert SPEC.scalar(quality=1.0, latency_ms=8000) == pytest.approx(0.5 / 0.7)
    assert SPEC.scalar(cost_usd=0.0, latency_ms=4000) == pytest.approx((0.3 + 0.2 * 0.5) / 0.5)


def test_feedback_maps_minus_one_to_one_onto_unit_interval() -> None:
    spec = RewardSpec(quality_weight=0.5, cost_weight=0.0, latency_weight=0.0, feedback_weight=0.5)
    assert spec.scalar(feedback=1.0) == pytest.approx(1.0)
    assert spec.scalar(feedback=-1.0) == pytest.approx(0.0)
    assert spec.scalar(feedback=0.0) == pytest.approx(0.5)
    assert spec.scalar(quality=1.0, feedback=-1.0) == pytest.approx(0.5)


def test_no_weighted_component_gives_the_default_reward() -> None:
    assert SPEC.scalar() == 0.4
    # Feedback has weight 0 in SPEC: a feedback-only reward carries nothing.
    assert SPEC.scalar(feedback=1.0) == 0.4


def test_an_error_gives_the_error_reward_whatever_else() -> None:
    assert SPEC.scalar(error=True) == 0.1
    assert SPEC.scalar(quality=1.0, cost_usd=0.0, latency_ms=0.0, error=True) == 0.1
    assert SPEC.scalar(quality=1.0, error=False) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"cost_usd": 5.0}, 0.0),  # far over the cost scale: term floors at 0
        ({"latency_ms": 1e9}, 0.0),
        ({"quality": 1.7}, 1.0),  # out-of-range inputs are clipped at the end
        ({"quality": -0.3}, 0.0),
        ({"cost_usd": -0.02}, 1.0),
    ],
)
def test_result_is_clipped_to_unit_interval(kwargs: dict[str, float], expected: float) -> None:
    assert SPEC.scalar(**kwargs) == expected


def test_scalar_stays_in_unit_interval_over_a_grid() -> None:
    spec = RewardSpec()
    for q in (None, 0.0, 0.5, 1.0):
        for c in (None, 0.0, 0.01, 0.05):
            for lat in (None, 0.0, 4000.0, 20_000.0):
                for fb in (None, -1.0, 1.0):
                    r = spec.scalar(q, c, lat, None, fb)
                    assert 0.0 <= r <= 1.0 and math.isfinite(r)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quality_weight": -0.1}, "non-negative"),
        ({"quality_weight": 0, "cost_weight": 0, "latency_weight": 0}, "not all zero"),
        ({"cost_scale_usd": 0.0}, "cost_scale_usd"),
        ({"latency_scale_ms": -5.0}, "latency_scale_ms"),
        ({"error_reward": 1.01}, "error_reward"),
        ({"default_reward": -0.5}, "default_reward"),
        ({"wait_seconds": 0.0}, "wait_seconds"),
        ({"quality_weight": math.nan}, "quality_weight must be a finite"),
        ({"cost_scale_usd": math.nan}, "cost_scale_usd must be a finite"),
        ({"wait_seconds": math.inf}, "wait_seconds must be a finite"),
    ],
)
def test_invalid_specs_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RewardSpec(**kwargs)


def test_defaults_are_valid_and_frozen() -> None:
    spec = RewardSpec()
    assert spec.quality_weight + spec.cost_weight + spec.latency_weight == pytest.approx(1.0)
    with pytest.raises(AttributeError):
        spec.quality_weight = 1.0  # type: ignore[misc]
