"""Two token roles: ``read`` (browse, query) and ``submit`` (also submit and cancel).

A token travels only in the ``Authorization: Bearer`` header or in an HttpOnly, SameSite=Strict
cookie set by the login form (also ``Secure`` when the request is https, directly or through a proxy that
``--forwarded-allow-ips`` trusts). Requests that change state must also come from the service's own
origin (an ``Origin``/``Referer`` of another site is refused), so a page elsewhere cannot submit
through a logged-in browser.
"""

from __future__ import annotations

import hmac
from typing import Literal
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

COOKIE = "curate_token"
Role = Literal["read", "submit"]
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def token_matches(token: str, allowed: frozenset[str]) -> bool:
    """Whether ``token`` is one of ``allowed`` (compared in constant time against each)."""
    return any(hmac.compare_digest(token.encode(), a.encode()) for a in allowed)


def request_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(COOKIE) or None


def role_of(request: Request) -> Role | None:
    """The strongest role the request's token grants, or None."""
    settings = request.app.state.settings
    if settings.open_access:
        return "submit"
    token = request_token(request)
    if token is None:
        return None
    if token_matches(token, settings.submit_tokens):
        return "submit"
    if token_matches(token, settings.read_tokens):
        return "read"
    return None


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_of(scheme: str, netloc: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) with the scheme's default port filled in, or None if malformed: a proxy may pass
    ``Host: example.org:443`` where the browser's ``Origin`` says ``https://example.org``."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return scheme.lower(), parts.hostname, port if port is not None else DEFAULT_PORTS.get(scheme.lower())


def same_origin(request: Request) -> bool:
    """True unless the browser says the request comes from another origin.

    The request's own origin is its scheme and ``Host`` header. Behind a TLS proxy the scheme is ``https`` only
    when ``curate serve --forwarded-allow-ips`` names the proxy (uvicorn then takes ``X-Forwarded-Proto`` from it);
    otherwise the service sees ``http`` and refuses the browser's ``Origin: https://...``, since any client could
    send that header and only the operator can say which peer is the proxy."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # not a browser cross-site request (curl, scripts): the token decides
    o = urlsplit(origin)
    theirs = _origin_of(o.scheme, o.netloc)
    return theirs is not None and theirs == _origin_of(request.url.scheme, request.url.netloc)


def require(role: Role):  # noqa: ANN201 - a FastAPI dependency factory
    """Dependency: 401 without a valid token, 403 when the token's role is too weak or a state-changing
    request comes from another origin."""

    # async: it only compares strings, and a sync dependency would cost every request a trip through the
    # thread pool before its route even starts.
    async def check(request: Request) -> Role:
        got = role_of(request)
        if got is None:
            raise HTTPException(401, detail="a valid token is required (Authorization: Bearer TOKEN, or log in)")
        if role == "submit" and got != "submit":
            raise HTTPException(403, detail="this token may read but not submit or cancel")
        if request.method in UNSAFE_METHODS and not same_origin(request):
            raise HTTPException(403, detail="cross-site request refused")
        return got

    return check


require_read = require("read")
require_submit = require("submit")
