"""What the worker accepts from clients beyond the schemas (app/ingress.py)."""

from __future__ import annotations

import orjson
import pytest

from app.decider import Decider
from app.ingress import (
    MAX_FUTURE_MS,
    accept_request,
    check_reply_to,
    check_reward_token,
    check_tenant,
    decision_id,
    header,
    join_key,
    reward_token,
)
from app.policies.config import PoliciesConfig, PolicyConfigError
from app.records import Decision, InvalidEvent, Request

PREFIX = "llmopt.replies."


def code(fn, *args, **kwargs) -> str | None:  # type: ignore[no-untyped-def]
    try:
        fn(*args, **kwargs)
    except InvalidEvent as exc:
        return exc.code
    return None


# -- per-tenant ids ------------------------------------------------------------------------
def test_decision_ids_are_scoped_per_tenant_stable_and_bounded() -> None:
    long_id = "Q" * 256  # the longest valid request id
    assert decision_id("a", "r1") == decision_id("a", "r1")
    assert decision_id("a", "r1") != decision_id("b", "r1")
    assert len(decision_id("t" * 256, long_id)) <= 256
    # Ids may hold any character: no split of one pair may meet another.
    assert join_key("a", "bc") != join_key("ab", "c")
    assert join_key("a", "b\0c") != join_key("a\0b", "c")
    assert decision_id("a", "1:b") != decision_id("a1:", "b")
    assert reward_token("k", "a", "b\0c") != reward_token("k", "a\0b", "c")


def test_a_longest_request_id_gives_a_valid_decision() -> None:
    cfg = PoliciesConfig.from_dict(
        {"policies": {"p": {"algorithm": "ucb1", "arms": [{"name": "a", "model": "m"}]}}}
    )
    req = Request(request_id="Q" * 256, tenant_id="t" * 256, task_type="qa", created_at=0)
    doc = Decider(cfg, seed=0).decide([req], 1)[0]
    assert isinstance(doc, dict)
    Decision.from_dict(doc)  # the join would dead-letter an invalid one


# -- reward tokens -------------------------------------------------------------------------
def test_reward_tokens_bind_tenant_and_request() -> None:
    tok = reward_token("s3cret", "a", "r1")
    assert code(check_reward_token, "s3cret", "a", "r1", tok) is None
    assert code(check_reward_token, "s3cret", "b", "r1", tok) == "invalid_reward_token"
    assert code(check_reward_token, "s3cret", "a", "r2", tok) == "invalid_reward_token"
    assert code(check_reward_token, "s3cret", "a", "r1", None) == "invalid_reward_token"
    assert code(check_reward_token, "other", "a", "r1", tok) == "invalid_reward_token"
    # Without a secret, tokens are not asked for.
    assert code(check_reward_token, "", "a", "r1", None) is None


def test_decisions_carry_the_token_when_a_secret_is_set() -> None:
    cfg = PoliciesConfig.from_dict(
        {"policies": {"p": {"algorithm": "ucb1", "arms": [{"name": "a", "model": "m"}]}}}
    )
    req = Request(request_id="r1", tenant_id="acme", task_type="qa", created_at=0)
    plain = Decider(cfg, seed=0).decide([req], 1)[0]
    signed = Decider(cfg, seed=0, reward_token_secret="k").decide([req], 1)[0]
    assert isinstance(plain, dict) and "reward_token" not in plain
    assert isinstance(signed, dict)
    assert signed["reward_token"] == reward_token("k", "acme", "r1")
    assert Decision.from_dict(signed).reward_token == signed["reward_token"]


# -- reply_to ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target",
    [
        "llmopt.policy-snapshots.v1",
        "llmopt-join-pending-changelog",
        "llmopt.dead-letter.v1",
        "x",
        "attacker.created.topic",
        PREFIX,  # the prefix alone names no client's topic
        PREFIX + "a/b",
        PREFIX + "a b",
        PREFIX + "é",
        PREFIX + "x" * 249,
        "llmopt.replies",
    ],
)
def test_reply_to_outside_the_prefix_is_refused(target: str) -> None:
    assert code(check_reply_to, target, PREFIX) == "invalid_reply_to"


def test_reply_to_under_the_prefix_is_accepted() -> None:
    assert code(check_reply_to, PREFIX + "client-1_a.b", PREFIX) is None
    assert code(check_reply_to, None, PREFIX) is None


# -- tenant identity -----------------------------------------------------------------------
def test_request_key_must_be_its_tenant() -> None:
    assert code(check_tenant, "a", None, "", key=b"a") is None
    assert code(check_tenant, "a", None, "", key=None) is None
    assert code(check_tenant, "a", None, "", key=b"b") == "tenant_mismatch"


def test_trusted_header_decides_the_tenant() -> None:
    h = "x-tenant"
    assert code(check_tenant, "a", [(h, b"a")], h) is None
    assert code(check_tenant, "a", [(h, b"b")], h) == "tenant_mismatch"
    assert code(check_tenant, "a", [], h) == "tenant_mismatch"  # not vouched for
    assert code(check_tenant, "a", [(h, b"\xff")], h) == "tenant_mismatch"
    # The last value wins (a gateway appends after the client's own header).
    assert code(check_tenant, "a", [(h, b"a"), (h, b"b")], h) == "tenant_mismatch"
    assert header({h: b"a"}, h) == "a"
    # Without a configured header, any header is ignored.
    assert code(check_tenant, "a", [(h, b"b")], "") is None


# -- policies restricted to tenants --------------------------------------------------------
def test_policy_tenants_restrict_who_may_use_it() -> None:
    cfg = PoliciesConfig.from_dict(
        {
            "policies": {
                "p": {"algorithm": "ucb1", "arms": [{"name": "a", "model": "m"}]},
                "private": {
                    "algorithm": "ucb1",
                    "tenants": ["acme"],
                    "arms": [{"name": "a", "model": "m"}],
                },
            }
        }
    )
    d = Decider(cfg, seed=0)
    mine = Request(request_id="r1", tenant_id="acme", task_type="qa", created_at=0)
    theirs = Request(request_id="r1", tenant_id="evil", task_type="qa", created_at=0)
    mine.policy_id = theirs.policy_id = "private"
    ok, refused = d.decide([mine, theirs], 1)
    assert isinstance(ok, dict)
    assert isinstance(refused, InvalidEvent) and refused.code == "unauthorized_policy"
    for bad in ([], "acme", [""]):
        with pytest.raises(PolicyConfigError, match="tenants"):
            PoliciesConfig.from_dict(
                {
                    "policies": {
                        "p": {
                            "algorithm": "ucb1",
                            "tenants": bad,
                            "arms": [{"name": "a", "model": "m"}],
                        }
                    }
                }
            )


def test_accept_request_applies_every_ingress_rule() -> None:
    now = 1_700_000_000_000
    doc = Request(request_id="r", tenant_id="a", task_type="qa", created_at=now).to_dict()

    def accept(key: bytes | None = b"a", headers: object = None, **changes: object) -> str | None:
        raw = orjson.dumps({**doc, **changes})
        return code(
            accept_request,
            raw,
            key,
            headers,
            max_bytes=65536,
            tenant_header="x-tenant" if headers is not None else "",
            reply_prefix=PREFIX,
            now=now,
        )

    assert accept() is None
    assert accept(key=b"b") == "tenant_mismatch"
    assert accept(headers=[("x-tenant", b"b")]) == "tenant_mismatch"
    assert accept(headers=[("x-tenant", b"a")]) is None
    assert accept(reply_to="llmopt.outcomes.v1") == "invalid_reply_to"
    assert accept(created_at=now + MAX_FUTURE_MS + 1) == "invalid_value"
    assert accept(created_at=now + MAX_FUTURE_MS) is None
