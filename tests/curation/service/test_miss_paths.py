"""Cheaper misses give the same answers. Drops pages are slices of one ordered read per run and filter: every
page equals what the sorted SQL (``ORDER BY stage, reason, id LIMIT OFFSET``) returns, and further pages of a
filter do not read the order again. A what-if answered by binary search over per-domain sorted values equals the
per-document count at every threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from curation.query_sandbox import Limits
from curation.service import views
from curation.service.app import create_app
from curation.stats import open_run
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.service.conftest import make_settings, serving

LIMITS = Limits(timeout_s=30.0, memory_limit="512MB")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 documents kept, 12 too short (text_length_v1), 12 exact duplicates (exact_dedup_v1), two domains."""
    tmp = tmp_path_factory.mktemp("drops")
    docs = []
    for i in range(24):
        docs.append({"id": f"k{i:02d}", "domain": "web" if i % 2 else "books", "text": f"{PROSE[i % 3]} unique {i}"})
    for i in range(12):
        docs.append({"id": f"s{i:02d}", "domain": "web" if i % 3 else "books", "text": f"short {i}"})
        docs.append({"id": f"x{i:02d}", "domain": "books" if i % 2 else "web", "text": f"{PROSE[i % 3]} unique {i}"})
    write_jsonl(tmp / "in" / "a.jsonl", docs)
    out = tmp / "runs" / "r"
    run_pipeline(pipeline_dict([str(tmp / "in" / "*.jsonl")], out))
    return out


def _expected(run: Path, stage: str | None, reason: str | None, domain: str | None, offset: int,
              limit: int) -> list[dict[str, Any]]:
    """The page as one sorted query returns it (how drops were read before)."""
    where, params = views._filters(stage, reason, domain, None)
    with open_run(run, LIMITS) as (con, _):
        rows = views._rows(con, f"SELECT id, stage, reason, details, domain, source, url, n_chars, "
                                f"left(text, {views.TEXT_PREVIEW}) AS text FROM decisions{where} "
                                "ORDER BY stage, reason, id LIMIT ? OFFSET ?", params + [limit, offset])
    for r in rows:
        r["details"] = views._details(r["details"])
    return rows


@pytest.mark.parametrize("stage,reason,domain", [(None, None, None), ("text_length_v1", None, None),
                                                 (None, None, "books"), ("exact_dedup_v1", None, "web")])
def test_every_page_equals_the_sorted_query(run: Path, stage: str | None, reason: str | None,
                                            domain: str | None) -> None:
    order = views.drop_order(run, LIMITS, stage, reason, domain, None)
    total = len(order["keys"])
    assert len(order["files"]) > 1  # pages span files: a row number of one file must not select another's
    assert total == {(None, None): 24, ("text_length_v1", None): 12, (None, "books"): 10,
                     ("exact_dedup_v1", "web"): 6}[(stage, domain)]
    for offset in range(0, total + 7, 5):
        page = views.drops(run, LIMITS, stage, reason, domain, None, offset, 5, order=order)
        assert page["samples"] == _expected(run, stage, reason, domain, offset, 5)
        assert page["total"] == total and len(page["samples"]) == max(0, min(5, total - offset))
    # Without a kept order the page is read the same.
    assert views.drops(run, LIMITS, stage, reason, domain, None, 3, 4) == \
        views.drops(run, LIMITS, stage, reason, domain, None, 3, 4, order=order)


def test_pages_of_one_filter_read_the_order_once(run: Path, tmp_path: Path) -> None:
    app = create_app(make_settings(run.parent, tmp_path))
    cache = app.state.cache
    with serving(app) as url:
        for offset in (0, 5, 10, 0):
            got = httpx.get(url + "/api/runs/r/drops", params={"stage": "text_length_v1", "offset": offset,
                                                                "limit": 5}, timeout=30).json()
            assert got["total"] == 12
            assert got["samples"] == _expected(run, "text_length_v1", None, None, offset, 5)
        page = httpx.get(url + "/runs/r/drops", params={"stage": "text_length_v1", "offset": 20}, timeout=30)
        assert page.status_code == 200 and "12 documents" in page.text
    orders = [k for k in cache._data if k[0] == "drop_order"]
    assert len(orders) == 1 and cache.misses == 1 + 4  # one order; pages 0, 5, 10 and the HTML page's


def test_whatif_by_binary_search_equals_counting_every_document(run: Path) -> None:
    pool = views.whatif_pool(run, LIMITS, "n_chars")
    with open_run(run, LIMITS) as (con, m):
        sql, params, _ = views._pool(m, "n_chars")
        rows = con.execute(f"SELECT domain, n_chars, v, kept FROM ({sql})", params).fetchall()
    dom = np.array([r[0] for r in rows], dtype=object)
    chars, v = np.array([r[1] for r in rows]), np.array([r[2] for r in rows], dtype=float)
    kept = np.array([r[3] for r in rows]) == 1
    assert kept.sum() == 24 and (~kept).sum() == 12  # the pool: kept documents and text_length_v1's drops
    values = sorted(set(v.tolist()))
    thresholds = [values[0] - 1, values[-1] + 1] + values + [(a + b) / 2 for a, b in zip(values, values[1:])]
    for thr in thresholds:
        for direction in ("keep_above", "keep_below"):
            got = {d["domain"]: d for d in views.whatif_at(pool, thr, direction)["domains"]}
            passes = v >= thr if direction == "keep_above" else v <= thr
            lost, gained = kept & ~passes, ~kept & passes
            for d in ("web", "books"):
                sel = dom == d
                want_docs = int((kept & sel).sum() - (lost & sel).sum() + (gained & sel).sum())
                want_chars = int(chars[kept & sel].sum() - chars[lost & sel].sum() + chars[gained & sel].sum())
                assert (got[d]["lost_docs"], got[d]["gained_docs"]) == (int((lost & sel).sum()),
                                                                        int((gained & sel).sum()))
                assert (got[d]["new_docs"], got[d]["new_chars"]) == (want_docs, want_chars)
