"""The mixture view (GET /api/runs/{id}/mixture and the run page's Mixture section) on real runs: a tiny run
whose kept documents carry a ``skill`` column, the skill-ordered run ``curate skill-order`` makes of it, and a
CMR fit file stored with the run. Every number is worked out by hand below."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.service.app import create_app
from curation.skill_order import skill_order
from tests.conftest import write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.service.conftest import make_settings, serving

# id, domain, text, skill. Whitespace tokens: web 4 + 2 = 6 over 18 + 8 = 26 chars; code 3 over 16 chars.
DOCS = [("a1", "web", "one two three four", "algebra"), ("a2", "web", "five six", "geometry"),
        ("c1", "code", "alpha beta gamma", "algebra")]
SKILLS = {d[0]: d[3] for d in DOCS}
GRAPH = {"train_skills": ["algebra", "geometry"], "eval_skills": ["algebra", "geometry"], "A": [[1.0, 0.0],
                                                                                                [0.0, 1.0]]}
LOSSES = {"algebra": 2.0, "geometry": 1.0}
FIT = {"ratios": [0.25, 0.5], "dom": [], "gen": [], "cmr": [0.5, -0.5, 0.1], "eps": 0.02, "token_unit": 1e6,
       "t_max": 4.0, "grid": [[1.0, 0.6], [4.0, 0.35]], "general": "python_docs", "domain": "license"}


def _tag_skills(run: Path) -> None:
    """Add a ``skill`` column to the run's shard and schema (what skill_tag_v1 would have written)."""
    m = json.loads((run / "manifest.json").read_text())
    for s in m["shards"]:
        t = pq.read_table(run / s["path"])
        t = t.append_column("skill", pa.array([SKILLS[i] for i in t.column("id").to_pylist()], pa.string()))
        pq.write_table(t, run / s["path"])
    m["schema"].append({"name": "skill", "type": "string"})
    (run / "manifest.json").write_text(json.dumps(m))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("mix")
    root = tmp / "runs"
    write_jsonl(tmp / "in" / "docs.jsonl", [{"id": i, "domain": d, "text": t} for i, d, t, _ in DOCS])
    run_pipeline({"name": "mix", "input": {"paths": [str(tmp / "in" / "*.jsonl")]}, "stages": [],
                  "output": {"dir": str(root / "tagged"), "token_counter": "whitespace"},
                  "executor": {"kind": "local"}})
    _tag_skills(root / "tagged")
    skill_order(root / "tagged", root / "ordered", GRAPH, LOSSES, rounds=2, chars_per_round=20)
    shutil.copytree(root / "tagged", root / "with-cmr")
    (root / "with-cmr" / "mixture").mkdir()
    (root / "with-cmr" / "mixture" / "cmr_fit.json").write_text(json.dumps(FIT))
    return root


@pytest.fixture(scope="module")
def url(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(create_app(make_settings(root, tmp_path_factory.mktemp("state")))) as u:
        yield u


def _get(url: str, path: str) -> httpx.Response:
    return httpx.get(url + path, timeout=30)


def test_domains_and_skills_of_a_tagged_run(url: str) -> None:
    mx = _get(url, "/api/runs/tagged/mixture").json()
    assert mx["share_of"] == "tokens"
    assert mx["domains"] == [
        {"domain": "web", "docs": 2, "chars": 26, "tokens": 6, "share": pytest.approx(6 / 9)},
        {"domain": "code", "docs": 1, "chars": 16, "tokens": 3, "share": pytest.approx(3 / 9)}]
    # algebra: 18 web chars at 6/26 tokens per char + 16 code chars at 3/16 = 4.1538 + 3 = 7.1538
    # geometry: 8 web chars at 6/26 = 1.8462; the estimates add up to the run's 9 tokens.
    algebra, geometry = 18 * 6 / 26 + 3, 8 * 6 / 26
    assert mx["skills"] == [
        {"skill": "algebra", "docs": 2, "chars": 34, "tokens_est": 7, "share": pytest.approx(algebra / 9)},
        {"skill": "geometry", "docs": 1, "chars": 8, "tokens_est": 2, "share": pytest.approx(geometry / 9)}]
    assert mx["schedule"] is None and mx["cmr"] is None


def test_schedule_of_a_skill_ordered_run(url: str) -> None:
    mx = _get(url, "/api/runs/ordered/mixture").json()
    sch = mx["schedule"]
    assert sch["skills"] == ["algebra", "geometry"] and sch["method"] == "skill-it-offline"
    # Round 0: softmax(0.5 * A @ [2, 1]) = (e^1, e^0.5) / sum = (0.6225, 0.3775).
    p0 = math.e / (math.e + math.exp(0.5))
    r0 = sch["rounds"][0]
    assert r0["planned"] == {"algebra": pytest.approx(p0, abs=1e-12), "geometry": pytest.approx(1 - p0, abs=1e-12)}
    # 20 chars per round: algebra's budget 12.45 takes one 18- or 16-char document (closer than none);
    # geometry's 7.55 takes the 8-char one.
    assert r0["chars"]["geometry"] == 8 and r0["chars"]["algebra"] in (16, 18)
    assert r0["realised"]["geometry"] == pytest.approx(8 / (8 + r0["chars"]["algebra"]))
    assert mx["skills"] is None  # its manifest has no schema: the per-skill counts are the schedule's
    page = _get(url, "/runs/ordered")
    assert page.status_code == 200 and 'id="schedule-plot"' in page.text
    assert page.text.count('class="seg"') == 2 * len(sch["rounds"])
    assert "62.2%" in page.text  # round 0's planned algebra share
    index = _get(url, "/")
    assert index.status_code == 200 and 'href="/runs/ordered"' in index.text  # listed with the other runs


def test_cmr_fit_stored_with_the_run(url: str) -> None:
    cmr = _get(url, "/api/runs/with-cmr/mixture").json()["cmr"]
    assert cmr["params"] == {"a4": 0.5, "s4": -0.5, "b3": 0.1}
    assert cmr["grid"] == [{"t": 1.0, "r": 0.6}, {"t": 4.0, "r": 0.35}]
    assert len(cmr["curve"]) == 25
    # R(1) = 0.5 * 1 + 0.1 = 0.6; R(4) = 0.5 / 2 + 0.1 = 0.35; R(2.5) = 0.5 / sqrt(2.5) + 0.1.
    assert cmr["curve"][0] == {"t": 1.0, "r": pytest.approx(0.6)}
    assert cmr["curve"][-1] == {"t": 4.0, "r": pytest.approx(0.35)}
    assert cmr["curve"][12] == {"t": pytest.approx(2.5), "r": pytest.approx(0.5 / math.sqrt(2.5) + 0.1)}
    page = _get(url, "/runs/with-cmr").text
    assert 'id="cmr-plot"' in page and page.count('class="cmr-pt"') == 2 and "<polyline" in page
    assert 'table class="mixture-skills"' in page and 'table class="mixture-domains"' in page


def test_a_broken_cmr_fit_is_a_400_naming_the_file_and_field(url: str, root: Path) -> None:
    bad = root / "bad-cmr"
    shutil.copytree(root / "with-cmr", bad)
    (bad / "mixture" / "cmr_fit.json").write_text(json.dumps({**FIT, "cmr": [0.5, "x"]}))
    r = _get(url, "/api/runs/bad-cmr/mixture")
    assert r.status_code == 400 and "mixture/cmr_fit.json: field 'cmr' must be [a4, s4, b3]" in r.json()["detail"]
    (bad / "mixture" / "cmr_fit.json").write_text(json.dumps({k: v for k, v in FIT.items() if k != "grid"}))
    assert "needs the fields" in _get(url, "/api/runs/bad-cmr/mixture").json()["detail"]


def test_a_manifest_the_typed_record_refuses_is_named_and_the_page_still_shown(url: str, root: Path) -> None:
    """The mixture reads the manifest typed: a hand-edited value it refuses is a 400 naming the file and the field,
    and the run page, which shows such values as found, keeps its other sections with the refusal as its Mixture."""
    odd = root / "odd-totals"
    shutil.copytree(root / "tagged", odd)
    m = json.loads((odd / "manifest.json").read_text())
    m["totals"]["docs_out"] = "many"
    (odd / "manifest.json").write_text(json.dumps(m))
    r = _get(url, "/api/runs/odd-totals/mixture")
    assert r.status_code == 400
    assert r.json()["detail"].endswith("odd-totals/manifest.json: not a valid manifest (TypeError: 'docs_out' must "
                                       "be an integer, got 'many')")
    page = _get(url, "/runs/odd-totals")
    assert page.status_code == 200 and 'table class="domains"' in page.text
    assert "&#39;docs_out&#39; must be an integer" in page.text and 'table class="mixture-domains"' not in page.text
