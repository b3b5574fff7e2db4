"""The what-if moves the heuristic filters' thresholds through their ``metrics: true`` columns.

On a real run: the columns are offered, the run's own threshold changes nothing, tightening gives exactly what a
rerun with that threshold keeps, loosening at least what it keeps (an upper bound), and a two-sided rule (Gopher's
word count) brings back only the drops of the side that moved. The run page starts a maximum at keep_below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from curation.query_sandbox import Limits
from curation.service import views
from curation.service.app import create_app
from curation.stats import open_run
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.service.conftest import make_settings, serving

LIMITS = Limits(timeout_s=30.0, memory_limit="512MB")
GOPHER = {"stage": "gopher_quality_v1", "min_doc_words": 20, "max_doc_words": 250, "metrics": True}
REPETITION = {"stage": "gopher_repetition_v1", "metrics": True}


def _docs() -> list[dict[str, Any]]:
    """18 kept (PROSE: 5, 6 and 8 distinct stop words), 6 short, 4 long, 4 without stop words, 3 repeated lines."""
    docs = [{"id": f"k{i:02d}", "domain": "web" if i % 2 else "books", "text": f"{PROSE[i % 3]} note {i}"}
            for i in range(18)]
    docs += [{"id": f"s{i}", "domain": "web", "text": f"the cat sat on the mat number {i}"} for i in range(6)]
    docs += [{"id": f"l{i}", "domain": "books" if i % 2 else "web", "text": " ".join(PROSE) + f" {i}"}
             for i in range(4)]
    docs += [{"id": f"n{i}", "domain": "books", "text": " ".join(f"bird{i}x{j}" for j in range(30))} for i in range(4)]
    docs += [{"id": f"r{i}", "domain": "web", "text": "\n".join([PROSE[1][:200]] * 4) + f" {i}"} for i in range(3)]
    return docs


def _run(tmp: Path, name: str, **gopher: Any) -> Path:
    """Gopher quality first: a short text's every 2-gram is a large share of it (repetition would drop it)."""
    out = tmp / "runs" / name
    run_pipeline(pipeline_dict([str(tmp / "in" / "*.jsonl")], out, stages=[{**GOPHER, **gopher}, REPETITION]))
    return out


def _kept(run: Path) -> dict[str, tuple[int, int]]:
    with open_run(run, LIMITS) as (con, _):
        return {d: (int(n), int(c)) for d, n, c in
                con.execute("SELECT domain, count(*), sum(n_chars) FROM docs GROUP BY ALL").fetchall()}


def _new(answer: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {d["domain"]: (d["new_docs"], d["new_chars"]) for d in answer["domains"] if d["new_docs"]}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("whatif_metrics")
    write_jsonl(tmp / "in" / "a.jsonl", _docs())
    _run(tmp, "r")
    return tmp


def test_the_metric_columns_are_offered_with_the_run_s_thresholds(tmp: Path) -> None:
    with open_run(tmp / "runs" / "r", LIMITS) as (_, m):
        cols = views.numeric_columns(m)
        assert {"gopher_n_words", "gopher_n_stop_words", "gopher_rep_dup_line_frac",
                "gopher_rep_top_2_gram_char_frac", "gopher_rep_dup_10_gram_char_frac"} <= set(cols)
        assert (views._current_threshold(m, "gopher_n_words"), views.default_direction(m, "gopher_n_words")) == \
            (20, "keep_above")  # two-sided: its minimum first
        assert (views._current_threshold(m, "gopher_rep_dup_line_frac"),
                views.default_direction(m, "gopher_rep_dup_line_frac")) == (0.3, "keep_below")
        assert views._current_threshold(m, "gopher_rep_top_3_gram_char_frac") == 0.18


def test_the_run_s_threshold_changes_nothing_and_tightening_is_what_a_rerun_keeps(tmp: Path) -> None:
    run = tmp / "runs" / "r"
    now = _kept(run)
    assert sum(n for n, _ in now.values()) == 18
    pool = views.whatif_pool(run, LIMITS, "gopher_n_stop_words")
    assert _new(views.whatif_at(pool, 2, "keep_above")) == now
    for stop_words in (6, 7):  # PROSE[0] (5 stop words), then PROSE[1] (6) lost
        answer = views.whatif_at(pool, stop_words, "keep_above")
        assert _new(answer) == _kept(_run(tmp, f"stop{stop_words}", min_stop_words=stop_words)), stop_words
        assert answer["totals"]["new_docs"] == 18 - 6 * (stop_words - 5)
    # Loosened to 0, the 4 documents without stop words come back: an upper bound of what a rerun keeps.
    loose = views.whatif_at(pool, 0, "keep_above")
    assert loose["totals"]["new_docs"] == 22 >= sum(n for n, _ in _kept(_run(tmp, "stop0", min_stop_words=0)).values())
    pool = views.whatif_pool(run, LIMITS, "gopher_rep_dup_line_frac")
    assert views.whatif_at(pool, 0.3, "keep_below")["totals"]["new_docs"] == 18
    assert views.whatif_at(pool, 1.0, "keep_below")["previewed"]["dropped_with_value"] == 3


def test_a_two_sided_rule_brings_back_only_the_side_that_moved(tmp: Path) -> None:
    pool = views.whatif_pool(tmp / "runs" / "r", LIMITS, "gopher_n_words")
    lower = views.whatif_at(pool, 0, "keep_above")  # no minimum: the 6 short ones, not the 4 long ones
    assert (lower["totals"]["new_docs"], lower["previewed"]["dropped_with_value"]) == (18 + 6, 6)
    upper = views.whatif_at(pool, 10**6, "keep_below")  # no maximum: the 4 long ones only
    assert (upper["totals"]["new_docs"], upper["previewed"]["dropped_with_value"]) == (18 + 4, 4)
    assert _new(upper) == _kept(_run(tmp, "long", max_doc_words=10**6))  # nothing after gopher: exact here


def test_the_run_page_starts_a_maximum_at_keep_below(tmp: Path) -> None:
    with serving(create_app(make_settings(tmp / "runs", tmp / "svc"))) as url:
        page = httpx.get(url + "/runs/r", timeout=60).text
    sections = page.split('class="card whatif"')[1:]
    by_column = {s.split('data-column="')[1].split('"')[0]: s for s in sections}
    assert '<option value="keep_below" selected>' in by_column["gopher_rep_dup_line_frac"]
    assert "selected" not in by_column["gopher_n_stop_words"] and "selected" not in by_column["n_chars"]
