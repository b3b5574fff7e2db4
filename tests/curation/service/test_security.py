"""Auth (tokens, roles, cookie login, cross-origin refusal), the body limit and run-id traversal, over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import Depends
from typer.testing import CliRunner

from curation.cli import app as cli
from curation.service.auth import require_submit
from tests.curation.service.conftest import READ_TOKEN, SUBMIT_TOKEN, serving

pytestmark = pytest.mark.slow  # shares the session's quickstart runs


@pytest.fixture(scope="module")
def token_server(token_app_factory) -> Iterator[str]:  # noqa: ANN001 - fixture
    app = token_app_factory()

    # A state-changing route behind require_submit (the job routes use the same dependency).
    @app.post("/api/test-submit", dependencies=[Depends(require_submit)])
    def submit_probe() -> dict[str, bool]:
        return {"ok": True}

    with serving(app) as url:
        yield url


def bearer(tok: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tok}"}


def test_tokens_and_roles(token_server: str) -> None:
    r = httpx.get(f"{token_server}/api/runs")
    assert r.status_code == 401 and "token" in r.json()["detail"]
    assert httpx.get(f"{token_server}/api/runs", headers=bearer("wrong-token-0123456789")).status_code == 401
    assert httpx.get(f"{token_server}/api/runs", headers=bearer(READ_TOKEN)).status_code == 200
    r = httpx.post(f"{token_server}/api/test-submit", headers=bearer(READ_TOKEN))
    assert r.status_code == 403 and "may read" in r.json()["detail"]
    assert httpx.post(f"{token_server}/api/test-submit", headers=bearer(SUBMIT_TOKEN)).json() == {"ok": True}
    # A read token may still query (a POST that changes nothing).
    q = httpx.post(f"{token_server}/api/runs/qs/query", json={"sql": "SELECT 1 AS x"}, headers=bearer(READ_TOKEN),
                   timeout=60)
    assert q.status_code == 200 and q.json()["rows"] == [[1]]


def test_cross_origin_post_refused(token_server: str) -> None:
    evil = {**bearer(SUBMIT_TOKEN), "origin": "http://evil.example"}
    r = httpx.post(f"{token_server}/api/test-submit", headers=evil)
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    r = httpx.post(f"{token_server}/api/runs/qs/query", json={"sql": "SELECT 1"}, headers=evil)
    assert r.status_code == 403
    same = {**bearer(SUBMIT_TOKEN), "origin": token_server}
    assert httpx.post(f"{token_server}/api/test-submit", headers=same).status_code == 200
    r = httpx.post(f"{token_server}/login", data={"token": SUBMIT_TOKEN}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_cookie_login_and_logout(token_server: str) -> None:
    with httpx.Client(base_url=token_server) as c:
        page = c.get("/")
        assert page.status_code == 401 and 'action="/login"' in page.text
        bad = c.post("/login", data={"token": "not-a-valid-token-at-all"})
        assert bad.status_code == 401 and "not valid" in bad.text and not c.cookies
        r = c.post("/login", data={"token": READ_TOKEN})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"].lower()
        assert "curate_token=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert c.get("/api/runs").status_code == 200
        assert c.get("/").status_code == 200
        assert c.post("/api/test-submit").status_code == 403  # the cookie carries the read role only
        out = c.post("/logout")
        assert out.status_code == 303 and 'curate_token=""' in out.headers["set-cookie"]
        assert c.get("/api/runs").status_code == 401


def test_body_limit_413(token_server: str) -> None:
    big = json.dumps({"sql": "SELECT 1 -- " + "x" * 100_000})
    r = httpx.post(f"{token_server}/api/runs/qs/query", content=big, headers={**bearer(READ_TOKEN),
                   "content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        yield b'{"sql": "SELECT 1 -- '
        for _ in range(40):
            yield b"x" * 4096
        yield b'"}'

    r = httpx.post(f"{token_server}/api/runs/qs/query", content=chunks(), headers={**bearer(READ_TOKEN),
                   "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"].startswith("request body over")
    ok = httpx.post(f"{token_server}/api/runs/qs/query", json={"sql": "SELECT 1"}, headers=bearer(READ_TOKEN),
                    timeout=60)
    assert ok.status_code == 200


def raw_get(base: str, path: str) -> tuple[int, dict]:
    """GET with the path sent byte for byte (httpx would normalise '..')."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.putheader("authorization", f"Bearer {READ_TOKEN}")
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, json.loads(body) if body.startswith(b"{") else {"raw": body[:200]}


@pytest.mark.parametrize("path", ["/api/runs/..", "/api/runs/%2e%2e", "/api/runs/%2e%2e/progress",
                                  "/api/runs/.trash", "/api/runs/..%2f..%2fetc", "/api/runs/a%00b",
                                  "/api/runs/" + "a" * 129, "/api/runs/qs%2f..%2f..%2f/drops",
                                  "/api/compare?a=..&b=qs"])
def test_traversal_refused(token_server: str, path: str) -> None:
    status, body = raw_get(token_server, path)
    assert status in (400, 404, 422), (status, body)
    assert "detail" in body
    assert "root" not in json.dumps(body).lower() or "runs root" in json.dumps(body)


def test_symlink_escape_refused(runs_root: Path, tmp_path: Path, token_server: str) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(runs_root / "qs", outside / "stolen")
    link = runs_root / "escape"
    os.symlink(outside / "stolen", link)
    try:
        r = httpx.get(f"{token_server}/api/runs/escape", headers=bearer(READ_TOKEN))
        assert r.status_code == 400 and "outside the runs root" in r.json()["detail"]
        ids = [x["id"] for x in httpx.get(f"{token_server}/api/runs", headers=bearer(READ_TOKEN)).json()["runs"]]
        assert "escape" not in ids
    finally:
        link.unlink()


def test_serve_refuses_public_bind_without_tokens(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATE_SERVE_")}
    res = CliRunner().invoke(cli, ["serve", "--runs-root", str(tmp_path), "--host", "0.0.0.0",
                                   "--state-dir", str(tmp_path / "s")], env=env)
    assert res.exit_code == 2 and "without tokens" in res.output
