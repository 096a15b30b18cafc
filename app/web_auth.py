"""The bearer token a worker's web endpoints want when ``LLMOPT_WEB_TOKEN`` is
set (required when it binds to a non-loopback address, see
:class:`~app.settings.Settings`).

Every path but ``/health`` (what orchestrators and ``llmopt run`` poll)
wants ``Authorization: Bearer <token>``, compared in constant time; else 401
with a JSON error. A browser cannot set that header when it opens a page, so
``GET /dashboard`` also takes ``?token=<token>``; the page then sends the
header on its own requests.

>>> authorized("Bearer 0123456789abcdef", None, "0123456789abcdef")
True
>>> authorized("Bearer 0123456789abcdeX", None, "0123456789abcdef")
False
>>> authorized(None, "0123456789abcdef", "0123456789abcdef")
True
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

OPEN_PATHS = frozenset({"/health"})
# The page a browser opens: the only path that takes the token as a query parameter.
QUERY_TOKEN_PATHS = frozenset({"/dashboard"})
UNAUTHORIZED = {
    "error": "unauthorized",
    "detail": "this endpoint wants the header Authorization: Bearer <LLMOPT_WEB_TOKEN>",
}


def authorized(header: str | None, query_token: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header (or, where taken, a ``?token=``)
    carries ``token``. The comparison takes the same time wherever the
    values differ, so a caller cannot find the token byte by byte."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        given = query_token or ""
    return hmac.compare_digest(given.strip().encode(), token.encode())


def needs_token(method: str, path: str) -> bool:
    return path.rstrip("/") not in OPEN_PATHS or method not in ("GET", "HEAD")


def bearer_auth(token: str) -> Middleware:
    """An aiohttp middleware that answers 401 to a request without ``token``."""
    if not token:
        raise ValueError("bearer_auth needs a token")

    @web.middleware
    async def check_bearer_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if needs_token(request.method, request.path):
            path = request.path.rstrip("/")
            query_token = request.query.get("token") if path in QUERY_TOKEN_PATHS else None
            if not authorized(request.headers.get("Authorization"), query_token, token):
                return web.json_response(
                    UNAUTHORIZED,
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="llmopt"'},
                )
        return await handler(request)

    return check_bearer_token
