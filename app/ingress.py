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
- Who may act for a tenant (:mod:`app.tenant_access`): over HTTP the caller
  its bearer token names; on Kafka, where a consumer is not told who
  produced a record, the principal a gateway that authenticated the producer
  forwards in the ``LLMOPT_PRINCIPAL_HEADER`` header. An event whose caller
  may not act for its tenant is ``tenant_not_allowed``.

Pure: the agents pass message keys and headers in.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Any

from app.records import InvalidEvent, Request, decode, now_ms
from app.settings import WEB_TOKEN_MIN_CHARS, Settings
from app.tenant_access import Caller, TenantAccess, check_caller

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
    caller: Caller | None = None,
) -> Request:
    """A request as the worker may act on it (decide, featurize): valid, its
    tenant vouched for (and one ``caller``, when known, may act for), its
    reply topic under the prefix, created no later than MAX_FUTURE_MS from
    now (a far-future time would make every later observation of its
    tenant's feature windows count as late)."""
    req = Request.from_dict(decode(value, max_bytes))
    check_tenant(req.tenant_id, headers, tenant_header, key=key, caller=caller)
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
    caller: Caller | None = None,
) -> None:
    """The payload's tenant must be the one the trusted header vouches for
    (when the deployment sets one), one ``caller`` may act for (when one is
    known: :func:`message_caller`, or a web token's) and, for requests
    (``key`` given), the message key when there is one (requests are keyed
    by tenant)."""
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
    check_caller(caller, tenant_id)


@functools.lru_cache(maxsize=8)
def _load_access(path: str) -> TenantAccess:
    return TenantAccess.load(path, WEB_TOKEN_MIN_CHARS)


def tenant_access(settings: Settings) -> TenantAccess | None:
    """The tenants file of ``settings`` (None: not set), read once: the
    settings checked it when they were made."""
    return _load_access(settings.web_tokens_file) if settings.web_tokens_file else None


def message_caller(headers: Headers, settings: Settings) -> Caller | None:
    """The caller of a consumed event: the principal its gateway forwarded
    in the ``principal_header`` header, looked up in the tenants file (None:
    the deployment names no principal header). A principal missing, or
    not in the file, is ``tenant_not_allowed``."""
    name = settings.principal_header
    if not name:
        return None
    principal = header(headers, name)
    if principal is None:
        raise InvalidEvent(
            "tenant_not_allowed", f"no {name!r} header: the producer's principal is not known"
        )
    access = tenant_access(settings)
    caller = access.by_principal(principal) if access is not None else None
    if caller is None:
        raise InvalidEvent(
            "tenant_not_allowed", f"principal {principal[:256]!r} is not in the tenants file"
        )
    return caller


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
        caller=message_caller(msg.headers, settings),
    )


def check_reward_message(tenant_id: str, msg: Any, settings: Settings) -> None:
    """A consumed reward's tenant checks (:func:`check_tenant`) under a
    worker's settings, the forwarded principal's included."""
    check_tenant(
        tenant_id, msg.headers, settings.tenant_header, caller=message_caller(msg.headers, settings)
    )
