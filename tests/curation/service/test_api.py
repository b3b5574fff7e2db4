"""The read API over real quickstart runs, values cross-checked against `curate query` on the same run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from curation.cli import app as cli

pytestmark = pytest.mark.slow  # builds the quickstart runs once per session (about 30 s)


def curate_query(run: Path, sql: str, limit: int = 100_000) -> list[dict[str, Any]]:
    """Rows of ``curate query RUN SQL --format json`` (the CLI, in process)."""
    res = CliRunner().invoke(cli, ["query", str(run), sql, "--format", "json", "--limit", str(limit)])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def get(url: str, **kw: Any) -> httpx.Response:
    return httpx.get(url, timeout=60, **kw)


def post(url: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(url, json=body, timeout=60, **kw)


def test_run_list_states_and_totals(open_server: str, runs_root: Path) -> None:
    r = get(f"{open_server}/api/runs")
    assert r.status_code == 200
    runs = {x["id"]: x for x in r.json()["runs"]}
    assert set(runs) == {"qs", "qs-lang50", "crashed"}  # .trash and notes/ are not runs
    assert runs["qs"]["state"] == "finished" and runs["qs-lang50"]["state"] == "finished"
    assert runs["crashed"]["state"] in ("running", "resumable")
    kept = curate_query(runs_root / "qs", "SELECT count(*) AS n FROM docs")[0]["n"]
    assert runs["qs"]["totals"]["docs_out"] == kept
    manifest = json.loads((runs_root / "qs" / "manifest.json").read_text())
    assert [f["stage"] for f in runs["qs"]["funnel"]] == [s["name"] for s in manifest["stages"]]
    assert runs["qs"]["shard_bytes"] == sum(s["bytes"] for s in manifest["shards"])


def test_run_detail_matches_curate_query(open_server: str, runs_root: Path) -> None:
    d = get(f"{open_server}/api/runs/qs").json()
    reasons = curate_query(runs_root / "qs", "SELECT stage, reason, count(*) AS docs, sum(n_chars) AS chars "
                                             "FROM decisions GROUP BY ALL ORDER BY docs DESC, stage, reason")
    assert d["reasons"] == reasons
    domains = curate_query(runs_root / "qs", "SELECT domain, count(*) AS docs FROM docs GROUP BY 1 ORDER BY 2 DESC, 1")
    assert [(x["domain"], x["docs"]) for x in d["domains"]] == [(x["domain"], x["docs"]) for x in domains]
    assert "lang_score" in d["histograms"] and "n_chars" in d["histograms"]
    h = d["histograms"]["lang_score"]
    in_pool = curate_query(runs_root / "qs", "SELECT (SELECT count(*) FROM docs) + (SELECT count(*) FROM decisions "
                                             "WHERE stage = 'language_id_v1' AND json_extract_string(details, "
                                             "'$.lang') = 'en') AS n")[0]["n"]
    assert sum(b["docs"] for b in h["bins"]) == in_pool
    assert sum(b["kept"] for b in h["bins"]) == d["totals"]["docs_out"]


def test_progress_of_finished_and_crashed_runs(open_server: str, runs_root: Path) -> None:
    p = get(f"{open_server}/api/runs/qs/progress").json()
    assert p["state"] == "finished" and p["tasks_done"] == p["tasks_total"] == 15  # 5 inputs x 3 passes
    assert p["passes"][0]["docs"] == 1265 and p["input_bytes_done"] == p["input_bytes"] and p["eta_s"] == 0.0
    c = get(f"{open_server}/api/runs/crashed/progress").json()
    assert c["passes"][0]["tasks_done"] == 5 and c["passes"][0]["docs"] == 1265
    assert c["tasks_total"] == 15 and 5 <= c["tasks_done"] < 15 and c["eta_s"] is not None and c["eta_s"] > 0
    # The crashed run has no manifest: its data endpoints say why they cannot answer.
    r = get(f"{open_server}/api/runs/crashed")
    assert r.status_code == 409 and "progress" in r.json()["detail"]


def test_crashed_run_is_resumable_once_quiet(runs_root: Path, tmp_path: Path) -> None:
    from curation.io.runs import run_state

    assert run_state(runs_root / "crashed") == "running"  # files written seconds ago
    old = time.time() - 3600
    for dirpath, _, files in os.walk(runs_root / "crashed"):
        for f in files:
            os.utime(os.path.join(dirpath, f), (old, old))
    try:
        assert run_state(runs_root / "crashed") == "resumable"
        assert run_state(runs_root / "crashed", failed=lambda rid: rid == "crashed") == "failed"
        assert run_state(runs_root / "qs", failed=lambda rid: True) == "finished"
        assert run_state(runs_root / "notes") is None
    finally:
        now = time.time()
        for dirpath, _, files in os.walk(runs_root / "crashed"):
            for f in files:
                os.utime(os.path.join(dirpath, f), (now, now))


def test_query_json_csv_and_paging(open_server: str, runs_root: Path) -> None:
    sql = "SELECT id, stage, reason FROM decisions ORDER BY id"
    want = curate_query(runs_root / "qs", sql)
    r = post(f"{open_server}/api/runs/qs/query", {"sql": sql, "offset": 10, "limit": 25})
    assert r.status_code == 200
    body = r.json()
    assert body["columns"] == ["id", "stage", "reason"] and body["more"] is True
    assert [dict(zip(body["columns"], row)) for row in body["rows"]] == want[10:35]
    last = post(f"{open_server}/api/runs/qs/query", {"sql": sql, "offset": len(want) - 3, "limit": 25}).json()
    assert len(last["rows"]) == 3 and last["more"] is False
    csv_r = post(f"{open_server}/api/runs/qs/query", {"sql": sql, "limit": 2, "format": "csv"})
    assert csv_r.headers["content-type"].startswith("text/csv")
    assert csv_r.text.splitlines() == ["id,stage,reason"] + [f"{w['id']},{w['stage']},{w['reason']}" for w in want[:2]]


@pytest.mark.parametrize("sql,needle", [
    ("DELETE FROM docs", "only SELECT"),
    ("SELECT 1; SELECT 2", "exactly one"),
    ("SELECT * FROM read_csv('/etc/passwd')", "refused"),
    ("SELEC nonsense", "does not parse"),
    ("SELECT * FROM no_such_view", "no_such_view"),
])
def test_query_refusals_are_400_json(open_server: str, sql: str, needle: str) -> None:
    r = post(f"{open_server}/api/runs/qs/query", {"sql": sql})
    assert r.status_code == 400 and needle in r.json()["detail"], r.text


def test_query_row_cap(open_server: str) -> None:
    r = post(f"{open_server}/api/runs/qs/query", {"sql": "SELECT * FROM docs", "offset": 9_990, "limit": 20})
    assert r.status_code == 400 and "10000" in r.json()["detail"]


def test_drops_counts_samples_and_filters(open_server: str, runs_root: Path) -> None:
    run = runs_root / "qs"
    d = get(f"{open_server}/api/runs/qs/drops", params={"stage": "language_id_v1", "reason": "language",
                                                         "limit": 5}).json()
    lang = curate_query(run, "SELECT id, details FROM decisions WHERE stage = 'language_id_v1' ORDER BY id")
    assert d["total"] == len(lang) == 156
    assert [s["id"] for s in d["samples"]] == [x["id"] for x in lang[:5]]
    assert d["samples"][0]["details"] == json.loads(lang[0]["details"]) and "score" in d["samples"][0]["details"]
    assert d["samples"][0]["text"]
    page2 = get(f"{open_server}/api/runs/qs/drops", params={"stage": "language_id_v1", "offset": 5,
                                                             "limit": 5}).json()
    assert [s["id"] for s in page2["samples"]] == [x["id"] for x in lang[5:10]]
    lic = get(f"{open_server}/api/runs/qs/drops", params={"domain": "license"}).json()
    want = curate_query(run, "SELECT stage, reason, count(*) AS docs, sum(n_chars) AS chars FROM decisions "
                             "WHERE domain = 'license' GROUP BY ALL ORDER BY docs DESC, stage, reason")
    assert lic["reasons"] == want and all(s["domain"] == "license" for s in lic["samples"])


def test_document_path_dropped_and_kept(open_server: str, runs_root: Path) -> None:
    run = runs_root / "qs"
    dup = curate_query(run, "SELECT id, details FROM decisions WHERE stage = 'near_dedup_v1' ORDER BY id LIMIT 1")[0]
    keeper = json.loads(dup["details"])["dup_of"]
    r = get(f"{open_server}/api/runs/qs/docs/{dup['id']}")  # ids hold '/' and ':'
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["outcome"] == "dropped" and d["dropped"][0]["stage"] == "near_dedup_v1"
    assert d["duplicates"]["kept_member"] == keeper
    assert dup["id"] in [m["id"] for m in d["duplicates"]["dropped_members"]]
    k = get(f"{open_server}/api/runs/qs/docs/{keeper}").json()
    want = curate_query(run, f"SELECT lang_score, dup_cluster FROM docs WHERE id = '{keeper}'")
    assert k["outcome"] == "kept" and k["kept"]["dup_cluster"] == keeper
    assert k["kept"]["lang_score"] == pytest.approx(want[0]["lang_score"])
    assert dup["id"] in [m["id"] for m in k["duplicates"]["dropped_members"]]
    missing = get(f"{open_server}/api/runs/qs/docs/no-such-doc")
    assert missing.status_code == 404 and "no-such-doc" in missing.json()["detail"]


def test_whatif_identity_tighten_and_loosen(open_server: str, runs_root: Path) -> None:
    run = runs_root / "qs"
    same = post(f"{open_server}/api/runs/qs/whatif", {"column": "lang_score", "threshold": 0.65}).json()
    assert same["current_threshold"] == 0.65
    assert all(x["new_docs"] == x["kept_docs"] and x["new_tokens"] == x["kept_tokens"] for x in same["domains"])
    tight = post(f"{open_server}/api/runs/qs/whatif", {"column": "lang_score", "threshold": 0.9}).json()
    want = {x["domain"]: x["n"] for x in curate_query(run, "SELECT domain, count(*) AS n FROM docs WHERE lang_score "
                                                            ">= CAST(0.9 AS DOUBLE) GROUP BY 1")}
    assert {x["domain"]: x["new_docs"] for x in tight["domains"] if x["new_docs"]} == want
    loose = post(f"{open_server}/api/runs/qs/whatif", {"column": "lang_score", "threshold": 0.5}).json()
    back = curate_query(run, "SELECT count(*) AS n FROM decisions WHERE stage = 'language_id_v1' AND "
                             "json_extract_string(details, '$.lang') = 'en' AND "
                             "CAST(json_extract_string(details, '$.score') AS DOUBLE) >= 0.5")[0]["n"]
    assert back > 0 and loose["totals"]["new_docs"] == loose["totals"]["kept_docs"] + back
    # The real run at min_score 0.5 keeps at most the preview (later stages drop some that came back).
    real = json.loads((runs_root / "qs-lang50" / "manifest.json").read_text())["totals"]["docs_out"]
    assert loose["totals"]["kept_docs"] < real <= loose["totals"]["new_docs"]
    assert loose["not_previewed"]["dropped_elsewhere"] > 0 and loose["not_previewed"]["notes"]


def test_whatif_refusals(open_server: str) -> None:
    r = post(f"{open_server}/api/runs/qs/whatif", {"column": "text", "threshold": 1})
    assert r.status_code == 400 and "lang_score" in r.json()["detail"]  # names the columns that can be previewed
    r = post(f"{open_server}/api/runs/qs/whatif", {"column": "lang_score", "threshold": 1, "direction": "up"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "body.direction"
    r = post(f"{open_server}/api/runs/qs/whatif", {"column": "lang_score"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "body.threshold"


def test_compare_runs(open_server: str, runs_root: Path) -> None:
    c = get(f"{open_server}/api/compare", params={"a": "qs", "b": "qs-lang50", "limit": 1000}).json()

    def fates(run: Path) -> dict[str, str]:
        rows = curate_query(run, "SELECT id, 'kept' AS f FROM docs UNION ALL SELECT id, 'dropped: ' || stage || '/' "
                                 "|| reason FROM decisions")
        return {x["id"]: x["f"] for x in rows}

    fa, fb = fates(runs_root / "qs"), fates(runs_root / "qs-lang50")
    changed = sorted(i for i in set(fa) | set(fb) if fa.get(i) != fb.get(i))
    assert c["changed_total"] == len(changed) > 0
    assert [x["id"] for x in c["changed"]] == changed[:1000]
    lang = next(f for f in c["funnel"] if f["stage"] == "language_id_v1")
    assert lang["b"]["out"] > lang["a"]["out"]
    ma = json.loads((runs_root / "qs" / "manifest.json").read_text())["domains"]
    mb = json.loads((runs_root / "qs-lang50" / "manifest.json").read_text())["domains"]
    for d in c["domains"]:
        assert d["delta"] == mb.get(d["domain"], {}).get("tokens", 0) - ma.get(d["domain"], {}).get("tokens", 0)
    page = get(f"{open_server}/api/compare", params={"a": "qs", "b": "qs-lang50", "offset": 2, "limit": 3}).json()
    assert [x["id"] for x in page["changed"]] == changed[2:5]


def test_malformed_requests_are_json_4xx(open_server: str) -> None:
    r = httpx.post(f"{open_server}/api/runs/qs/query", content=b"{not json", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 422 and isinstance(r.json()["detail"], list)
    r = post(f"{open_server}/api/runs/qs/query", {"sql": "SELECT 1", "bogus": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "body.bogus"
    r = get(f"{open_server}/api/runs/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = get(f"{open_server}/api/runs/qs/drops", params={"limit": -1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "query.limit"
    r = get(f"{open_server}/api/compare", params={"a": "qs"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == "query.b"
    r = get(f"{open_server}/api/no-such-endpoint")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    # The server is still up and answering after all of that.
    assert get(f"{open_server}/api/runs").status_code == 200


def test_security_headers(open_server: str) -> None:
    r = get(f"{open_server}/")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"


def test_a_documents_duplicate_cluster_is_listed_up_to_a_cap_with_its_total(
        open_server: str, runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster may hold every copy of a boilerplate page: the answer lists the first members by id and counts all."""
    from curation.service import views

    run = runs_root / "qs"
    big = curate_query(run, "SELECT json_extract_string(details, '$.dup_of') AS k, count(*) AS n FROM decisions "
                            "WHERE stage = 'near_dedup_v1' AND k IN (SELECT id FROM docs) GROUP BY k "
                            "ORDER BY n DESC, k LIMIT 1")[0]
    assert big["n"] >= 3
    monkeypatch.setattr(views, "MAX_CLUSTER_MEMBERS", 2)
    d = get(f"{open_server}/api/runs/qs/docs/{big['k']}").json()["duplicates"]
    want = curate_query(run, "SELECT id FROM decisions WHERE json_extract_string(details, '$.dup_of') = "
                             f"'{big['k']}' ORDER BY id LIMIT 2")
    assert [m["id"] for m in d["dropped_members"]] == [w["id"] for w in want] and d["dropped_total"] == big["n"]
    page = get(f"{open_server}/runs/qs/docs/{big['k']}").text
    assert f"and {big['n'] - 2:,} more" in page or f"and {big['n'] - 2} more" in page
