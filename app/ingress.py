"""What the worker accepts from clients beyond the schemas: whose tenant an
event speaks for, which request it names, where a decision may be sent.

- Request ids are scoped per tenant: ``join_key`` and ``decision_id`` include
  the tenant, so another tenant's request with the same id never collides.
- A reward is accepted only for its own tenant's request; where the
  deployment vouches for the sender (a trusted header set by the gateway), the
  tenant comes from that header and a payload naming another is refused; with
  a reward token secret, a reward must echo its decision's token (as Azure
  Personalizer's event id), so knowing a request id is not enough.
- ``reply_to`` is confined to a prefix, so no client can make the worker write
  into another topic.

Pure: the agents pass message keys and headers in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Any

from app.records import InvalidEvent, Request, decode, now_ms
from app.settings import Settings

# Kafka's legal topic characters; 249 is its length limit.
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
# How far a request's created_at may be ahead of the worker's clock.
MAX_FUTURE_MS = 5 * 60_000
Headers = Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None


def _pair(tenant_id: str, request_id: str) -> bytes:
    # Length-prefixed: ids may hold any character (NUL included), and
    # ("a", "b:c") must not meet ("a:b", "c").
    tenant = tenant_id.encode("utf-8", "surrogatepass")
    return b"%d:" % len(tenant) + tenant + request_id.encode("utf-8", "surrogatepass")


def decision_id(tenant_id: str, request_id: str) -> str:
    """Stable per (tenant, request id), whatever their length: a redecided
    request (at-least-once) gets the same id."""
    return "d-" + hashlib.blake2b(_pair(tenant_id, request_id), digest_size=16).hexdigest()


def join_key(tenant_id: str, request_id: str) -> bytes:
    """The join's table key: a request id is unique only within its tenant."""
    return _pair(tenant_id, request_id)


def reward_token(secret: str, tenant_id: str, request_id: str) -> str:
    mac = hmac.new(secret.encode(), _pair(tenant_id, request_id), hashlib.sha256)
    return mac.hexdigest()[:32]


def accept_request(
    value: bytes | None,
    key: bytes | None,
    headers: Headers,
    *,
    max_bytes: int,
    tenant_header: str,
    reply_prefix: str,
    now: int,
) -> Request:
    """A request as the worker may act on it (decide, featurize): valid, its
    tenant vouched for, its reply topic under the prefix, created no later
    than MAX_FUTURE_MS from now (a far-future time would make every later
    observation of its tenant's feature windows count as late)."""
    req = Request.from_dict(decode(value, max_bytes))
    check_tenant(req.tenant_id, headers, tenant_header, key=key)
    check_reply_to(req.reply_to, reply_prefix)
    if req.created_at > now + MAX_FUTURE_MS:
        raise InvalidEvent("invalid_value", "'created_at' is in the future")
    return req


def check_reward_token(secret: str, tenant_id: str, request_id: str, token: str | None) -> None:
    if not secret:
        return
    if token is None or not hmac.compare_digest(token, reward_token(secret, tenant_id, request_id)):
        raise InvalidEvent(
            "invalid_reward_token", "the reward does not carry its decision's reward_token"
        )


def check_reply_to(reply_to: str | None, prefix: str) -> None:
    if reply_to is None:
        return
    if not reply_to.startswith(prefix) or len(reply_to) == len(prefix):
        raise InvalidEvent(
            "invalid_reply_to", f"reply_to must name a topic under the prefix {prefix!r}"
        )
    if not _TOPIC.fullmatch(reply_to):
        raise InvalidEvent(
            "invalid_reply_to", "reply_to must be a legal topic name ([A-Za-z0-9._-], ≤ 249)"
        )


def header(headers: Headers, name: str) -> str | None:
    """The last value of header ``name`` (None when absent or not UTF-8)."""
    found = None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for k, v in items or ():
        if k == name and v is not None:
            try:
                found = v.decode()
            except UnicodeDecodeError:
                found = None
    return found


def check_tenant(
    tenant_id: str,
    headers: Headers,
    tenant_header: str,
    key: bytes | None = None,
) -> None:
    """The payload's tenant must be the one the trusted header vouches for
    (when the deployment sets one) and, for requests (``key`` given), the
    message key when there is one (requests are keyed by tenant)."""
    if tenant_header:
        vouched = header(headers, tenant_header)
        if vouched is None:
            raise InvalidEvent(
                "tenant_mismatch", f"no {tenant_header!r} header: the sender is not vouched for"
            )
        if vouched != tenant_id:
            raise InvalidEvent(
                "tenant_mismatch", f"tenant_id differs from the {tenant_header!r} header"
            )
    if key is not None and key != tenant_id.encode():
        raise InvalidEvent("tenant_mismatch", "message key is not the request's tenant_id")


def accept_request_message(msg: Any, settings: Settings) -> Request:
    """:func:`accept_request` for a consumed message (``value``, ``key``,
    ``headers``) under a worker's settings, now."""
    return accept_request(
        msg.value,
        msg.key,
        msg.headers,
        max_bytes=settings.max_event_bytes,
        tenant_header=settings.tenant_header,
        reply_prefix=settings.reply_topic_prefix,
        now=now_ms(),
    )
