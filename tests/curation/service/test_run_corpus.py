"""A run deduplicated against earlier runs (``against``) says so on its page and in its API answer: per dedup
stage and earlier run, the documents that reached the stage and how many the earlier run's documents removed,
with a link to the earlier run when this service lists it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from curation.service.app import create_app
from curation.service.pages import corpus_view
from tests.conftest import pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.service.conftest import make_settings, serving

A = "the quick brown fox jumps over the lazy dog near the river bank on a sunny afternoon in june"
B = "a completely different sentence about cooking pasta with garlic olive oil and fresh basil leaves"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("corpus")
    runs = root / "runs"
    write_jsonl(root / "s1.jsonl", [{"id": "old-a", "text": A}, {"id": "old-b", "text": B}])
    write_jsonl(root / "s2.jsonl", [{"id": "new-a", "text": A}, {"id": "new-c", "text": B + " and pepper"},
                                    {"id": "new-d", "text": "something else entirely, about trains and stations"}])
    run_pipeline(pipeline_dict([str(root / "s1.jsonl")], runs / "snap1",
                               stages=[{"stage": "exact_dedup_v1"}]))
    run_pipeline(pipeline_dict([str(root / "s2.jsonl")], runs / "snap2",
                               stages=[{"stage": "exact_dedup_v1", "against": [str(runs / "snap1")]}]))
    with serving(create_app(make_settings(runs, tmp_path_factory.mktemp("svc")))) as url:
        yield url, runs


def test_the_run_page_and_api_name_the_earlier_run_and_what_it_removed(served: tuple[str, Path]) -> None:
    url, runs = served
    api = httpx.get(f"{url}/api/runs/snap2", timeout=60).json()
    assert api["corpus"][0]["stage"] == "exact_dedup_v1"
    assert api["corpus"][0]["against"] == [{"run": str(runs / "snap1"), "removed": 1, "share": pytest.approx(1 / 3,
                                                                                                           abs=1e-4)}]
    html = httpx.get(f"{url}/runs/snap2", timeout=60).text
    assert "Deduplicated against earlier runs" in html
    assert f'<a href="/runs/snap1">{runs / "snap1"}</a>' in html
    row = html.split('<table class="corpus">')[1].split("</table>")[0]
    assert '<td class="num">3</td><td class="num">1</td><td class="num">33.3%</td>' in row
    # a run deduplicated against nothing has no such section
    assert "Deduplicated against" not in httpx.get(f"{url}/runs/snap1", timeout=60).text


def test_only_runs_this_service_lists_get_a_link() -> None:
    root = Path("/srv/runs")
    corpus = [{"stage": "near_dedup_v1", "docs_in": 5, "against": [
        {"run": "/srv/runs/snap1", "removed": 2, "share": 0.4},            # listed: linked
        {"run": "/srv/runs/../runs/snap1/", "removed": 0, "share": 0.0},   # the same path written otherwise
        {"run": "/srv/runs/other", "removed": 1, "share": 0.2},            # under the root, not listed
        {"run": "/elsewhere/snap1", "removed": 1, "share": 0.2},           # same name, another root
        {"run": "s3://bucket/snap1", "removed": 0, "share": 0.0},
        {"run": ["not", "a", "string"], "removed": "x", "share": None}]}, "garbage", {"against": "nope"}]
    rows = corpus_view(corpus, root, {"snap1"})
    assert [r["href"] for r in rows] == ["/runs/snap1", "/runs/snap1", None, None, None, None]
    assert [r["removed"] for r in rows] == [2, 0, 1, 1, 0, "x"]
    assert corpus_view(None, root, {"snap1"}) == [] and corpus_view(json.loads("{}"), root, set()) == []
