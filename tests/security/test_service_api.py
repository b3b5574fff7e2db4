"""The service's JSON API: a pooled query connection carries no random state from one request to the next."""

from __future__ import annotations

from pathlib import Path

import duckdb
import httpx

from curation.query_sandbox import Limits, Sandbox
from curation.service.app import create_app
from tests.curation.service.conftest import make_settings, serving


def _after_setseed(seed: float, n: int) -> list[float]:
    """The first ``n`` values of ``random()`` after ``setseed(seed)`` on a fresh connection."""
    con = duckdb.connect()
    con.execute("SELECT setseed(?)", [seed])
    return [con.execute("SELECT random()").fetchone()[0] for _ in range(n)]


def test_a_sandbox_session_does_not_continue_the_previous_sessions_random_sequence(tmp_path: Path) -> None:
    box = Sandbox(tmp_path, Limits(timeout_s=30))
    try:
        with box.session() as con:  # request A
            con.execute("SELECT setseed(0.5)")
            first = con.execute("SELECT random()").fetchone()[0]
        seq = _after_setseed(0.5, 3)
        assert first == seq[0]  # A's own setseed works within its request
        with box.session() as con:  # request B, same connection
            b = con.execute("SELECT random()").fetchone()[0]
        assert b not in seq, "request B's random() continued request A's seeded sequence"
    finally:
        box.close()


def test_pooled_query_requests_do_not_share_random_state(tiny_run: Path, tmp_path: Path) -> None:
    app = create_app(make_settings(tiny_run.parent, tmp_path))
    pool = app.state.pool
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/api/runs/run/query", json={"sql": "SELECT setseed(0.5) AS s"})
        assert r.status_code == 200, r.text
        b = c.post("/api/runs/run/query", json={"sql": "SELECT random() AS r"}).json()["rows"][0][0]
        assert pool.opened == 1 and pool.reused >= 1  # B ran on A's pooled connection
        assert b not in _after_setseed(0.5, 3), "request B's random() continued request A's seeded sequence"


def test_openapi_schema_needs_a_read_token_when_tokens_are_configured(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from tests.curation.service.conftest import READ_TOKEN

    (tmp_path / "runs").mkdir()
    with TestClient(create_app(make_settings(tmp_path / "runs", tmp_path, tokens=True))) as c:
        r = c.get("/api/openapi.json")
        assert r.status_code == 401 and "token" in r.json()["detail"]
        for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):  # no docs pages at all
            assert c.get(page, headers={"authorization": f"Bearer {READ_TOKEN}"}).status_code in (401, 404)
        r = c.get("/api/openapi.json", headers={"authorization": f"Bearer {READ_TOKEN}"})
        assert r.status_code == 200 and "/api/runs/{run_id}/query" in r.json()["paths"]
        assert "/api/openapi.json" not in r.json()["paths"]
    with TestClient(create_app(make_settings(tmp_path / "runs", tmp_path / "open"))) as c:  # loopback, no tokens
        assert c.get("/api/openapi.json").status_code == 200
