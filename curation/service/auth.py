"""Two token roles: ``read`` (browse, query) and ``submit`` (also submit and cancel).

A token travels only in the ``Authorization: Bearer`` header or in an HttpOnly, SameSite=Strict
cookie set by the login form. Requests that change state must also come from the service's own
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


def _matches(token: str, allowed: frozenset[str]) -> bool:
    # Constant-time comparison against each allowed token.
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
    if _matches(token, settings.submit_tokens):
        return "submit"
    if _matches(token, settings.read_tokens):
        return "read"
    return None


def same_origin(request: Request) -> bool:
    """True unless the browser says the request comes from another origin."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # not a browser cross-site request (curl, scripts): the token decides
    o = urlsplit(origin)
    return (o.scheme, o.netloc) == (request.url.scheme, request.url.netloc)


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
