"""The login form's routes: ``POST /login`` sets the token cookie (HttpOnly, SameSite=Strict, ``Secure`` over
https), ``POST /logout`` clears it. Both refuse a request from another origin (403), so that a page elsewhere
cannot log a browser in with a token of its choosing, nor out. See ``curation/service/auth.py`` for the roles.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from curation.service import pages
from curation.service.auth import COOKIE, same_origin, token_matches
from curation.service.deps import SettingsDep

router = APIRouter()


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body (the login form); the body limit middleware bounds its size."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


@router.post("/login")
async def login(request: Request, s: SettingsDep) -> Response:
    if not same_origin(request):
        raise HTTPException(403, detail="cross-site request refused")
    token = (await _form(request)).get("token", "").strip()
    if not token or not (token_matches(token, s.read_tokens) or token_matches(token, s.submit_tokens)):
        return pages.login_page(request, error="That token is not valid here.", status=401)
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    if not same_origin(request):
        raise HTTPException(403, detail="cross-site request refused")
    resp = RedirectResponse("/", status_code=303)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return resp
