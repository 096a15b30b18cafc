"""The bearer tokens a worker's web endpoints want when ``LLMOPT_WEB_TOKEN``
or ``LLMOPT_WEB_TOKENS_FILE`` is set (one is required when it binds to a
non-loopback address, see :class:`~app.settings.Settings`).

Every path but ``/health`` (what orchestrators and ``llmopt run`` poll)
wants ``Authorization: Bearer <token>``, compared in constant time; else 401
with a JSON error. A browser cannot set that header when it opens a page, so
``GET /dashboard`` also takes ``?token=<token>``; the page then sends the
header on its own requests.

``LLMOPT_WEB_TOKEN`` is an operator's token, for every tenant. Each token of
the tenants file (:mod:`app.tenant_access`) is a caller with the tenants it
may act for: the middleware puts the caller on the request
(:func:`caller_of`), and ``POST /decide`` and ``POST /reward`` refuse an
event of another tenant (403 ``tenant_not_allowed``). A caller limited to
some tenants may use only those two endpoints (403 ``forbidden`` elsewhere:
metrics, features and explanations span every tenant).

>>> authorized("Bearer 0123456789abcdef", None, "0123456789abcdef")
True
>>> authorized("Bearer 0123456789abcdeX", None, "0123456789abcdef")
False
>>> authorized(None, "0123456789abcdef", "0123456789abcdef")
True
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from app import metrics
from app.ingress import tenant_access
from app.settings import Settings
from app.tenant_access import ADMIN, Caller, TenantAccess

OPEN_PATHS = frozenset({"/health"})
# The page a browser opens: the only path that takes the token as a query parameter.
QUERY_TOKEN_PATHS = frozenset({"/dashboard"})
# The only paths a caller limited to some tenants may use.
TENANT_SCOPED_PATHS = frozenset({"/decide", "/reward"})
# Where the middleware leaves the caller on an aiohttp request.
CALLER_KEY = web.RequestKey("llmopt_caller", Caller)
UNAUTHORIZED = {
    "error": "unauthorized",
    "detail": "this endpoint wants the header Authorization: Bearer <LLMOPT_WEB_TOKEN>",
}
# A refusal is logged at most once per REFUSAL_LOG_SECONDS (a flood of them
# must not flood the log); llmopt_web_auth_refused_total counts every one.
REFUSAL_LOG_SECONDS = 10.0
log = logging.getLogger(__name__)
FORBIDDEN = {
    "error": "forbidden",
    "detail": "this token may act for some tenants only: POST /decide and POST /reward",
}


def authorized(header: str | None, query_token: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header (or, where taken, a ``?token=``)
    carries ``token``. The comparison takes the same time wherever the
    values differ, so a caller cannot find the token byte by byte."""
    return hmac.compare_digest(given_token(header, query_token).encode(), token.encode())


def given_token(header: str | None, query_token: str | None) -> str:
    """The token a request carries: its ``Authorization: Bearer`` value, else
    the ``?token=`` where one is taken."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        given = query_token or ""
    return given.strip()


def identify(
    header: str | None, query_token: str | None, token: str, access: TenantAccess | None
) -> Caller | None:
    """The caller a request's token names (None: no known token). Every
    token is compared, each in constant time."""
    given = given_token(header, query_token)
    found = access.by_token(given) if access is not None else None
    if token and hmac.compare_digest(given.encode(), token.encode()):
        found = ADMIN
    return found


def caller_of(request: Any) -> Caller | None:
    """The caller the middleware identified (None: the worker wants no token)."""
    return request.get(CALLER_KEY) if isinstance(request, Mapping) else None


class RefusalLog:
    """Refused requests: counted, and logged (never with their token) at
    most once per ``every_seconds`` with how many went unlogged since."""

    def __init__(self, every_seconds: float = REFUSAL_LOG_SECONDS) -> None:
        self.every_seconds = every_seconds
        self._logged_at = -math.inf
        self._unlogged = 0

    def refused(self, reason: str, request: web.Request, caller: Caller | None) -> None:
        metrics.WEB_AUTH_REFUSED.labels(reason).inc()
        now = time.monotonic()
        if now - self._logged_at < self.every_seconds:
            self._unlogged += 1
            return
        since = f"; {self._unlogged} more since the last report" if self._unlogged else ""
        log.warning(
            "web: %s %s refused (%s) for %s from %s%s",
            request.method,
            request.path[:200],
            reason,
            f"caller {caller.name!r}" if caller is not None else "an unknown token",
            request.remote,
            since,
        )
        self._logged_at, self._unlogged = now, 0


def needs_token(method: str, path: str) -> bool:
    return path.rstrip("/") not in OPEN_PATHS or method not in ("GET", "HEAD")


def bearer_auth(token: str = "", access: TenantAccess | None = None) -> Middleware:
    """An aiohttp middleware that answers 401 to a request without ``token``
    or a token of ``access``, and 403 to a caller limited to some tenants
    outside :data:`TENANT_SCOPED_PATHS`."""
    if not token and not (access is not None and access.has_tokens):
        raise ValueError("bearer_auth needs a token")
    refusals = RefusalLog()

    @web.middleware
    async def check_bearer_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if needs_token(request.method, request.path):
            path = request.path.rstrip("/")
            query_token = request.query.get("token") if path in QUERY_TOKEN_PATHS else None
            caller = identify(request.headers.get("Authorization"), query_token, token, access)
            if caller is None:
                refusals.refused("unauthorized", request, None)
                return web.json_response(
                    UNAUTHORIZED,
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="llmopt"'},
                )
            if caller.tenants is not None and path not in TENANT_SCOPED_PATHS:
                refusals.refused("forbidden", request, caller)
                return web.json_response(FORBIDDEN, status=403)
            request[CALLER_KEY] = caller
        return await handler(request)

    return check_bearer_token


def web_middlewares(settings: Settings) -> list[Middleware]:
    """The worker's web middlewares: the token check when any token is set."""
    token, access = settings.web_bearer_token(), tenant_access(settings)
    if not token and not (access is not None and access.has_tokens):
        return []
    return [bearer_auth(token, access)]
