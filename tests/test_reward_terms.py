"""Rewards users write (app/rewards.py): weights that change with the time of
day in the tenant's time zone, a reward function named in the policies file,
both checked at load with an error naming the key, and the outcome saying
how its reward was made."""

from __future__ import annotations

import datetime as dt
import importlib
import math
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from app.join import Joiner
from app.policies.config import PoliciesConfig, PolicyConfigError
from app.records import Decision, Outcome, Reward
from app.rewards import RewardSpec

NEW_YORK = ZoneInfo("America/New_York")
CALLS: list[tuple[dict[str, Any], dict[str, Any]]] = []


def quality_squared(components: Mapping[str, Any], context: Mapping[str, Any]) -> float:
    """A reward function of the kind a user writes (named in the tests' configs)."""
    CALLS.append((dict(components), dict(context)))
    return float(components.get("quality", 0.0)) ** 2


def broken(components: Mapping[str, Any], context: Mapping[str, Any]) -> float:
    raise RuntimeError("the metrics service is down")


def out_of_range(components: Mapping[str, Any], context: Mapping[str, Any]) -> float:
    return 1.5


NOT_CALLABLE = 3


def config(reward: dict[str, Any]) -> PoliciesConfig:
    return PoliciesConfig.from_dict(
        {
            "policies": {
                "p": {
                    "algorithm": "thompson_sampling",
                    "arms": [{"name": "big", "model": "gpt-4o"}, {"name": "small", "model": "m"}],
                    "reward": reward,
                }
            }
        },
        source="policies.yaml",
    )


BUSINESS_HOURS = {
    "weights": {"quality": 0.6, "cost": 0.25, "latency": 0.15},
    "timezone": "Europe/London",
    "tenant_timezones": {"acme": "America/New_York"},
    "schedule": [
        {
            "component": "cost",
            "factor": 1.5,
            "from": "09:00",
            "to": "17:00",
            "days": ["mon", "tue", "wed", "thu", "fri"],
        },
        {"component": "latency", "factor": 0, "from": "22:00", "to": "06:00", "days": ["fri"]},
    ],
}


def ms(local: dt.datetime) -> int:
    return int(local.timestamp() * 1000)


def test_cost_weighs_more_in_the_tenants_business_hours() -> None:
    spec = config(BUSINESS_HOURS).policies["p"].reward
    tuesday_10_ny = ms(dt.datetime(2026, 12, 1, 10, 0, tzinfo=NEW_YORK))
    assert spec.weights_at(tuesday_10_ny, "acme")["cost"] == pytest.approx(0.375)
    # The same instant is 15:00 in London: business hours there too.
    assert spec.weights_at(tuesday_10_ny, "other")["cost"] == pytest.approx(0.375)
    # 06:00 in New York is 11:00 in London: only the London tenant pays more.
    tuesday_6_ny = ms(dt.datetime(2026, 12, 1, 6, 0, tzinfo=NEW_YORK))
    assert spec.weights_at(tuesday_6_ny, "acme")["cost"] == 0.25
    assert spec.weights_at(tuesday_6_ny, "other")["cost"] == pytest.approx(0.375)
    saturday_10_ny = ms(dt.datetime(2026, 12, 5, 10, 0, tzinfo=NEW_YORK))
    assert spec.weights_at(saturday_10_ny, "acme")["cost"] == 0.25
    # A window past midnight belongs to the day it starts on: Friday 22:00
    # to Saturday 06:00.
    saturday_3_ny = ms(dt.datetime(2026, 12, 5, 3, 0, tzinfo=NEW_YORK))
    sunday_3_ny = ms(dt.datetime(2026, 12, 6, 3, 0, tzinfo=NEW_YORK))
    assert spec.weights_at(saturday_3_ny, "acme")["latency"] == 0
    assert spec.weights_at(sunday_3_ny, "acme")["latency"] == 0.15


def test_the_outcome_says_which_weights_made_its_reward() -> None:
    joiner = Joiner(config(BUSINESS_HOURS), 1000, 3_600_000, 900_000, 0)
    decided = ms(dt.datetime(2026, 12, 1, 10, 0, tzinfo=NEW_YORK))
    d = decision(decided)
    reward = Reward(
        request_id="r1",
        tenant_id="acme",
        sent_at=decided + 1,
        quality=0.9,
        cost_usd=0.01,
        latency_ms=2000,
    )
    step = joiner.on_decision(None, d, ["decisions", 0, 1], decided)
    step = joiner.on_reward(step.entry, reward, reward.dumps(), ["rewards", 0, 1], decided + 5)
    assert step.outcome is not None
    out = Outcome.loads(orjson.dumps(step.outcome))
    assert out.reward_terms is not None
    weights = out.reward_terms["weights"]
    assert weights["cost"] == pytest.approx(0.375)
    # Recomputed from the logged terms, as a backtest would.
    plain = RewardSpec(**{f"{k}_weight": v for k, v in weights.items()})
    assert out.reward == pytest.approx(plain.scalar(0.9, 0.01, 2000))
    assert out.reward != pytest.approx(RewardSpec().scalar(0.9, 0.01, 2000))


def test_a_plain_spec_logs_no_terms() -> None:
    joiner = Joiner(config({}), 1000, 3_600_000, 900_000, 0)
    reward = Reward(request_id="r1", tenant_id="acme", sent_at=1, quality=0.9)
    step = joiner.on_decision(None, decision(0), ["decisions", 0, 1], 0)
    step = joiner.on_reward(step.entry, reward, reward.dumps(), ["rewards", 0, 1], 5)
    assert step.outcome is not None and "reward_terms" not in step.outcome


def test_a_named_function_makes_the_reward_from_components_and_context() -> None:
    spec = config({"function": "tests.test_reward_terms:quality_squared"}).policies["p"].reward
    # The module the policies file names (pytest may have imported this file
    # under another name).
    calls = importlib.import_module("tests.test_reward_terms").CALLS
    calls.clear()
    value, terms = spec.score({"quality": 0.5, "cost_usd": 0.001}, 0, {"tenant_id": "acme"})
    assert value == 0.25
    assert terms["function"] == "tests.test_reward_terms:quality_squared"
    assert "function_error" not in terms
    [(components, context)] = calls
    assert components == {"quality": 0.5, "cost_usd": 0.001}
    assert context["tenant_id"] == "acme"
    assert context["weighted"] == pytest.approx(spec.scalar(quality=0.5, cost_usd=0.001))


@pytest.mark.parametrize("name", ["broken", "out_of_range"])
def test_a_failing_function_falls_back_to_the_weights_and_says_so(name: str) -> None:
    spec = config({"function": f"tests.test_reward_terms:{name}"}).policies["p"].reward
    value, terms = spec.score({"quality": 0.8}, 0, {})
    assert value == pytest.approx(spec.scalar(quality=0.8))
    assert terms["function_error"]
    assert math.isfinite(value)


@pytest.mark.parametrize(
    ("reward", "where", "says"),
    [
        ({"function": "no_such_module_x:f"}, "policies.p.reward.function", "cannot import"),
        ({"function": "tests.test_reward_terms:nope"}, "reward.function", "has no 'nope'"),
        ({"function": "tests.test_reward_terms:NOT_CALLABLE"}, "reward.function", "not a func"),
        ({"function": "unregistered"}, "reward.function", "llmopt.rewards"),
        ({"timezone": "Mars/Base"}, "reward.timezone", "unknown time zone"),
        ({"tenant_timezones": {"acme": "EST5"}}, "tenant_timezones.acme", "unknown time zone"),
        (
            {"schedule": [{"component": "cost", "factor": 2, "from": "9am", "to": "17:00"}]},
            "schedule[0].from",
            '"HH:MM"',
        ),
        (
            {"schedule": [{"component": "costs", "factor": 2, "from": "09:00", "to": "17:00"}]},
            "schedule[0].component",
            "cost",
        ),
        (
            {"schedule": [{"component": "cost", "factor": -1, "from": "09:00", "to": "17:00"}]},
            "schedule[0].factor",
            "",
        ),
        (
            {"schedule": [{"component": "cost", "factor": 2, "from": "09:00", "to": "17:00",
                           "day": ["mon"]}]},
            "schedule[0]",
            "day",
        ),
        (
            {"schedule": [{"component": "cost", "factor": 2, "from": "09:00", "to": "17:00",
                           "days": ["monday"]}]},
            "schedule[0].days",
            "mon, tue",
        ),
    ],
)  # fmt: skip
def test_bad_reward_specs_are_refused_naming_the_key(
    reward: dict[str, Any], where: str, says: str
) -> None:
    with pytest.raises(PolicyConfigError) as exc:
        config(reward)
    assert where in str(exc.value) and says in str(exc.value)


def decision(decided_at: int) -> dict[str, Any]:
    return Decision.from_dict(
        {
            "decision_id": "d-r1",
            "request_id": "r1",
            "tenant_id": "acme",
            "policy_id": "p",
            "policy_version": 1,
            "arm": "big",
            "model": "gpt-4o",
            "parameters": {},
            "available_arms": ["big", "small"],
            "propensity": 0.5,
            "scores": {"big": 0.5, "small": 0.5},
            "explored": False,
            "fallback": False,
            "requested_at": decided_at,
            "decided_at": decided_at,
            "schema_version": 1,
        }
    ).to_dict()
