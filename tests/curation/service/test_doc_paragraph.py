"""Why is this line gone, on the service: a paragraph_dedup_v1 run's drops page lists its boilerplate_only drop
with the units, and a document's page lists the units removed from it (hash, copies, holders) with a link to the
document that kept each one. The corpus of tests/curation/stages/dedup/test_paragraph_dedup.py: a site's
navigation bar is held first by site-0, a footer shared with a blog first by blog-0; site-empty is all template."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from curation.service.app import create_app
from curation.stages.dedup.paragraph import unit_hash
from tests.curation.executors.runs import run_pipeline
from tests.curation.service.conftest import make_settings, serving
from tests.curation.stages.dedup.test_paragraph_dedup import FOOT, NAV, corpus, pipeline


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("paradoc")
    run_pipeline(pipeline(corpus(root), root / "runs" / "para", max_source_removal_fraction=None))
    with serving(create_app(make_settings(root / "runs", tmp_path_factory.mktemp("svc")))) as base:
        yield base


def get(url: str, path: str, **params: Any) -> httpx.Response:
    r = httpx.get(f"{url}{path}", params=params, timeout=60)
    assert r.status_code == 200, r.text
    return r


NAV_H, FOOT_H = f"{unit_hash(NAV):016x}", f"{unit_hash(FOOT):016x}"


def test_the_drops_page_lists_the_boilerplate_only_drop_with_its_units(url: str) -> None:
    d = get(url, "/api/runs/para/drops", stage="paragraph_dedup_v1").json()
    assert d["total"] == 1 and d["samples"][0]["id"] == "site-empty"
    det = d["samples"][0]["details"]
    assert det["units_total"] == 2 and {(u["hash"], u["kept_in"]) for u in det["units"]} == {
        (NAV_H, "site-0"), (FOOT_H, "blog-0")}
    assert "site-empty" in get(url, "/runs/para/drops", stage="paragraph_dedup_v1").text


def test_a_kept_document_s_page_says_which_units_went_and_where_they_stayed(url: str) -> None:
    doc = get(url, "/api/runs/para/docs/site-3").json()
    assert doc["outcome"] == "kept" and doc["kept"]["para_dedup_chars"] == 87  # nav and footer, with separators
    assert [(u["hash"], u["kept_in"], u["n"]) for u in doc["kept"]["para_dedup_units"]] == [
        (FOOT_H, "blog-0", 1), (NAV_H, "site-0", 1)]  # the footer is in 10 documents, the nav in 6
    html = get(url, "/runs/para/docs/site-3").text
    assert 'id="paragraph-units"' in html and "87 characters removed" in html
    for h, keeper, docs in ((FOOT_H, "blog-0", 10), (NAV_H, "site-0", 6)):
        assert (f'<code>{h}</code></td><td class=""><a href="/runs/para/docs/{keeper}">{keeper}</a></td>'
                f'<td class="num">1</td><td class="num">{docs}</td>') in html
    dropped = get(url, "/runs/para/docs/site-empty").text  # the drop's units, from its details
    assert 'id="paragraph-units"' in dropped and '<a href="/runs/para/docs/site-0">site-0</a>' in dropped
    # blog-0 keeps the footer and lost nothing: no such section
    assert 'id="paragraph-units"' not in get(url, "/runs/para/docs/blog-0").text
