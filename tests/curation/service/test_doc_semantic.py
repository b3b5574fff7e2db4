"""A document's page and API answer show its semantic_dedup_v1 group: kept or dropped, the k-means cluster, the
kept member, the members dropped as its semantic duplicates with their cosine; apart from near-dedup's cluster.

One real run (the bundled MiniLM): near_dedup_v1 then semantic_dedup_v1 at eps 0.1, as pipelines/semantic.yaml.
MiniLM cosines (recorded by the run): web-1 ~ web-2 0.996 and web-3 ~ web-2 0.909 (one group, web-2 kept), news-1 ~
news-2 0.983 (news-2 kept); news-7 and news-8 are exact copies of news-1 and news-2, which near-dedup drops first.
So news-2 keeps a near cluster and a semantic group, and news-1 is a near keeper that semantic dedup dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from curation.service import views
from curation.service.app import create_app
from curation.stats import query
from tests.conftest import pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.service.conftest import make_settings, serving

CAT = "The cat sat on the mat and looked out of the window at the birds in the garden."
NEWS = "Stock markets fell sharply on Monday as investors worried about rising interest rates."
NEWS2 = "On Monday, stock markets fell sharply as investors worried about rising interest rates."
DOCS = {
    "web": [("web-1", CAT),
            ("web-2", "The cat sat on the mat and looked out the window at the birds in the garden."),
            ("web-3", "A cat was sitting on a mat, watching the birds in the garden through the window."),
            ("web-4", "To install the package, run pip install followed by the name of the package."),
            ("web-5", "Bake the bread at 220 degrees for thirty minutes until the crust is golden brown.")],
    "news": [("news-1", NEWS), ("news-2", NEWS2),
             ("news-3", "Bond yields climbed on Tuesday after the central bank signalled further rate increases."),
             ("news-4", "The committee will meet next Thursday to review the annual budget proposal."),
             ("news-5", "Photosynthesis converts light energy into chemical energy stored in glucose."),
             ("news-7", NEWS), ("news-8", NEWS2)],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    import torch

    torch.set_num_threads(1)  # the machine's cores are shared (as in the stage's own tests)
    root = tmp_path_factory.mktemp("semdoc")
    for dom, docs in DOCS.items():
        write_jsonl(root / "in" / f"{dom}.jsonl", [{"id": i, "text": t, "domain": dom} for i, t in docs])
    run = root / "runs" / "sem"
    run_pipeline(pipeline_dict([str(root / "in" / "*.jsonl")], run, stages=[
        {"stage": "near_dedup_v1", "threshold": 0.8, "num_buckets": 4, "max_source_removal_fraction": None},
        {"stage": "semantic_dedup_v1", "eps": 0.1, "num_buckets": 4, "max_source_removal_fraction": None}]))
    with serving(create_app(make_settings(root / "runs", tmp_path_factory.mktemp("svc")))) as url:
        yield url, run


def recorded(run: Path) -> dict[str, dict[str, Any]]:
    """What each drop's decision records, read with SQL (not through the service)."""
    return {i: {"stage": s, **json.loads(d)} for i, s, d in query(run, "SELECT id, stage, details FROM decisions")[1]}


def doc(url: str, doc_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/runs/sem/docs/{doc_id}", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def page(url: str, doc_id: str) -> str:
    r = httpx.get(f"{url}/runs/sem/docs/{doc_id}", timeout=60)
    assert r.status_code == 200, r.text
    return r.text


def test_the_run_groups_as_the_module_says(server: tuple[str, Path]) -> None:
    rec = recorded(server[1])
    assert {i: (r["stage"], r["dup_of"]) for i, r in rec.items()} == {
        "news-7": ("near_dedup_v1", "news-1"), "news-8": ("near_dedup_v1", "news-2"),
        "news-1": ("semantic_dedup_v1", "news-2"), "web-1": ("semantic_dedup_v1", "web-2"),
        "web-3": ("semantic_dedup_v1", "web-2")}
    assert 0.99 < rec["web-1"]["cosine"] < 1.0 and 0.9 < rec["web-3"]["cosine"] < 0.95


def test_a_kept_document_s_answer_holds_its_semantic_group(server: tuple[str, Path]) -> None:
    url, run = server
    rec = recorded(run)
    d = doc(url, "web-2")
    assert d["outcome"] == "kept"
    assert d["semantic"] == {
        "kept_member": "web-2", "cluster": rec["web-1"]["cluster"], "group_size": 3, "cosine": None,
        "dropped_members": [{"id": "web-1", "cosine": rec["web-1"]["cosine"]},  # closest first
                            {"id": "web-3", "cosine": rec["web-3"]["cosine"]}],
        "dropped_total": 2}
    # Its near-dedup cluster is itself alone: the semantic drops are not listed there.
    assert d["duplicates"] == {"kept_member": "web-2", "dropped_members": [], "dropped_total": 0}
    n2 = doc(url, "news-2")  # kept by both stages: each lists its own drops
    near8 = {"id": "news-8", "stage": "near_dedup_v1", "reason": "near_duplicate"}
    assert n2["duplicates"] == {"kept_member": "news-2", "dropped_members": [near8], "dropped_total": 1}
    assert n2["semantic"]["dropped_members"] == [{"id": "news-1", "cosine": rec["news-1"]["cosine"]}]
    assert (n2["semantic"]["cluster"], n2["semantic"]["group_size"]) == (rec["news-1"]["cluster"], 2)
    for alone in ("web-4", "news-3"):  # in no semantic group
        assert doc(url, alone)["semantic"] is None


def test_a_dropped_document_s_answer_names_its_keeper_and_cosine(server: tuple[str, Path]) -> None:
    url, run = server
    rec = recorded(run)
    d = doc(url, "web-3")
    assert d["outcome"] == "dropped" and d["dropped"][0]["details"] == {k: v for k, v in rec["web-3"].items()
                                                                         if k != "stage"}
    assert (d["semantic"]["kept_member"], d["semantic"]["cosine"]) == ("web-2", rec["web-3"]["cosine"])
    assert [m["id"] for m in d["semantic"]["dropped_members"]] == ["web-1", "web-3"] and d["duplicates"] is None
    # news-1 was near-dedup's keeper of news-7 before semantic dedup dropped it: both are shown.
    n1 = doc(url, "news-1")
    assert n1["semantic"]["kept_member"] == "news-2" and n1["semantic"]["cosine"] == rec["news-1"]["cosine"]
    near7 = {"id": "news-7", "stage": "near_dedup_v1", "reason": "near_duplicate"}
    assert n1["duplicates"] == {"kept_member": "news-1", "dropped_members": [near7], "dropped_total": 1}
    n7 = doc(url, "news-7")  # a near drop: its cluster, and no semantic group
    assert n7["duplicates"]["kept_member"] == "news-1" and n7["semantic"] is None


def test_the_page_shows_the_group_apart_from_the_near_cluster(server: tuple[str, Path]) -> None:
    url, run = server
    rec = recorded(run)
    kept = page(url, "web-2")
    assert 'id="semantic"' in kept and "Semantic duplicate group" in kept and "Duplicate cluster" not in kept
    assert f"k-means cluster {rec['web-1']['cluster']} · 3 documents in the group" in kept
    assert "Kept member: this document" in kept
    assert (f'<a href="/runs/sem/docs/web-1">web-1</a> (cosine {rec["web-1"]["cosine"]:.4f})</li>'
            f'<li><a href="/runs/sem/docs/web-3">web-3</a> (cosine {rec["web-3"]["cosine"]:.4f})') in kept
    dropped = page(url, "web-1")
    assert ('Kept member: <a href="/runs/sem/docs/web-2">web-2</a> (this document\'s cosine to it: '
            f'{rec["web-1"]["cosine"]:.4f})') in dropped
    both = page(url, "news-2")
    near, sem = both.split('id="semantic"')
    assert "Duplicate cluster" in near and "news-8" in near and "news-1" not in near
    assert "news-1" in sem and "news-8" not in sem
    assert 'id="semantic"' not in page(url, "web-4")
    # news-1 kept news-7's near cluster, then semantic dedup dropped it: its page says both
    n1 = page(url, "news-1")
    assert "Kept member: this document (a later stage dropped it)" in n1 and "/runs/sem/docs/news-7" in n1


def test_a_large_group_is_listed_up_to_the_cap_with_its_total(server: tuple[str, Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = server
    monkeypatch.setattr(views, "MAX_CLUSTER_MEMBERS", 1)
    sem = doc(url, "web-2")["semantic"]
    assert [m["id"] for m in sem["dropped_members"]] == ["web-1"] and sem["dropped_total"] == 2
    assert "and 1 more (<code>curate query</code> lists them all)" in page(url, "web-2")
