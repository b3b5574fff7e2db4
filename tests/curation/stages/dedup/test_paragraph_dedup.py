"""paragraph_dedup_v1: exact texts on tiny corpora, the first-holder rule, the thresholds, the
boilerplate_only drop, the audit, a hypothesis property against a brute-force reference, a resumed crash, and the same
bytes in process and on Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.errors import ShardError
from curation.stages.base import StageResult
from curation.stages.dedup.audit import MassRemovalError
from curation.stages.dedup.paragraph import (
    ParagraphDedup,
    ParagraphDedupConfig,
    rebuild,
    removed_chars,
    split_units,
    unit_hash,
)
from curation.stages.frame import LocalFrame
from curation.stats import query, summary
from tests.conftest import pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline, shard_bytes
from tests.curation.stages.filters.helpers import batch_of

NAV = "Home | Products | Support | Contact us"
FOOT = "Copyright Example Corp. All rights reserved."
BODY = [f"Article {w} talks about its own subject at some length, unlike the others." for w in
        ("one", "two", "three", "four", "five")]


def dedup(texts: list[str], tasks: list[int] | None = None, rows: list[int] | None = None, buckets: int = 4,
          shuffle: int | None = None, **config: Any) -> tuple[ParagraphDedup, StageResult]:
    """Keys, ``run_global`` on a ``LocalFrame`` (rows permuted by ``shuffle``), ``apply``: the stage's whole
    path without an executor. Returns the stage and the result in input order."""
    config.setdefault("max_source_removal_fraction", None)
    stage = ParagraphDedup(ParagraphDedupConfig(num_buckets=buckets, **config))
    n = len(texts)
    b = batch_of(texts)
    b = (b.append_column("_task", pa.array(tasks or [0] * n, pa.int32()))
         .append_column("_row", pa.array(rows or list(range(n)), pa.int64())))
    keyed = stage.add_keys(b)
    frame_rows = keyed if shuffle is None else keyed.take(pa.array(np.random.default_rng(shuffle).permutation(n)))
    marks = stage.run_global(LocalFrame(frame_rows, num_buckets=buckets)).collect()
    return stage, stage.apply(keyed, marks)


def texts_by_id(res: StageResult) -> dict[str, str]:
    return dict(zip(res.kept.column("id").to_pylist(), res.kept.column("text").to_pylist()))


def test_paragraphs_exact_texts() -> None:
    texts = [f"{NAV}\n\n{BODY[0]}\n\n{FOOT}\n",
             f"{NAV}\n\n{BODY[1]}\n\n{FOOT}\n",
             f"  {NAV}  \n \n{BODY[2]}\n\n\n{FOOT.upper()}",  # other whitespace and case: the same units
             f"{BODY[3]}\n\n{NAV}\n\n{BODY[4]}"]
    _, res = dedup(texts, min_chars=10)
    assert texts_by_id(res) == {
        "d0": texts[0],  # the first holder keeps everything
        "d1": BODY[1],  # the removed tail takes the separator before it
        "d2": BODY[2],
        "d3": f"{BODY[3]}\n\n{BODY[4]}",  # a removed unit takes its own separator
    }
    assert res.kept.column("para_dedup_chars").to_pylist() == [0, *(len(t) - len(o) for t, o in zip(
        texts[1:], (BODY[1], BODY[2], f"{BODY[3]}\n\n{BODY[4]}")))]
    nav, foot = f"{unit_hash(NAV):016x}", f"{unit_hash(FOOT):016x}"
    units = res.kept.column("para_dedup_units").to_pylist()
    assert units[0] == [] and units[3] == [{"hash": nav, "n": 1, "docs": 4, "kept_in": "d0"}]
    # most widespread first: NAV is in 4 documents, FOOT in 3
    assert units[1] == [{"hash": nav, "n": 1, "docs": 4, "kept_in": "d0"}, {"hash": foot, "n": 1, "docs": 3,
                                                                           "kept_in": "d0"}]


def test_lines_exact_texts() -> None:
    menu = ["Skip to main content", "Log in or register", "Search this website"]
    texts = ["\n".join([*menu, "Line unique to the first page."]) + "\n",
             "\n".join([menu[0], "Text of page two\r", "", "", menu[1], "More text of page two"]) + "\n",
             "\n".join(["Page three starts here", menu[2], menu[0], "Page three ends here"]),
             "Nothing in common with the rest.\n"]
    _, res = dedup(texts, unit="line", min_docs=3, min_chars=5)
    assert texts_by_id(res) == {
        "d0": texts[0],
        # menu[0] and the blank lines after "page two\r" went with their lines; menu[1] is in only 2 documents
        "d1": "Text of page two\r\n\n\nLog in or register\nMore text of page two\n",
        "d2": "Page three starts here\nSearch this website\nPage three ends here",
        "d3": texts[3],
    }


def test_first_holder_is_the_earliest_input_position_whatever_the_order() -> None:
    # The unit is in every document; input position is (task, row), not the order rows arrive in.
    texts = [f"{BODY[i]}\n\n{NAV}\n\n{NAV}" for i in range(5)]  # repeats in one document count once
    tasks, rows = [2, 0, 1, 0, 1], [0, 7, 3, 2, 9]
    want = None
    for buckets, shuffle in ((1, None), (4, 1), (16, 2)):
        _, res = dedup(texts, tasks, rows, buckets=buckets, shuffle=shuffle, min_chars=10)
        got = texts_by_id(res)
        assert got["d3"] == texts[3]  # (task 0, row 2): both copies stay in the first holder
        assert all(got[f"d{i}"] == BODY[i] for i in (0, 1, 2, 4))  # both copies go everywhere else
        units = res.kept.column("para_dedup_units").to_pylist()
        assert units[0] == [{"hash": f"{unit_hash(NAV):016x}", "n": 2, "docs": 5, "kept_in": "d3"}]
        want = want or got
        assert got == want


def test_min_docs_counts_documents_not_copies() -> None:
    texts = [f"{BODY[0]}\n\n{NAV}\n\n{NAV}\n\n{NAV}", f"{BODY[1]}\n\n{NAV}", BODY[2]]
    _, res = dedup(texts, min_docs=3, min_chars=10)
    assert texts_by_id(res) == dict(zip(["d0", "d1", "d2"], texts))  # 2 documents hold NAV (4 copies)
    _, res = dedup(texts, min_docs=2, min_chars=10)
    assert texts_by_id(res)["d1"] == BODY[1] and texts_by_id(res)["d0"] == texts[0]


def test_min_unit_chars_spares_short_units() -> None:
    texts = [f"{BODY[i]}\nThanks!\nShare this page with friends" for i in range(3)]
    _, res = dedup(texts, unit="line", min_unit_chars=10, min_chars=10)
    assert texts_by_id(res)["d2"] == f"{BODY[2]}\nThanks!"  # "thanks!" (7 chars) is never counted
    _, res = dedup(texts, unit="line", min_unit_chars=0, min_chars=10)
    assert texts_by_id(res)["d2"] == BODY[2]
    assert unit_hash("Thanks!", min_unit_chars=10) == 0 and unit_hash("Thanks!", min_unit_chars=7) != 0


def test_digits_are_normalised_only_when_asked() -> None:
    texts = [f"{BODY[i]}\n\nPage {i + 1} of 12, updated 2024-0{i + 1}-0{i + 1} 12.5" for i in range(3)]
    _, res = dedup(texts, min_chars=10)
    assert texts_by_id(res) == dict(zip(["d0", "d1", "d2"], texts))
    _, res = dedup(texts, min_chars=10, normalize_digits=True)
    assert texts_by_id(res) == {"d0": texts[0], "d1": BODY[1], "d2": BODY[2]}
    assert unit_hash("v1.5 of 3", digits=True) == unit_hash("V22,75 OF 4", digits=True)


def test_unicode_forms_whitespace_and_case_are_one_unit() -> None:
    composed, decomposed = "Caf\u00e9 menu \u2014 opening hours", "CAFE\u0301   MENU\u00a0\u2014\topening hours"
    texts = [f"{BODY[0]}\n\n{composed}", f"{BODY[1]}\n\n{decomposed}", f"{BODY[2]}\n\n{composed.lower()}"]
    _, res = dedup(texts, min_chars=10)
    assert texts_by_id(res) == {"d0": texts[0], "d1": BODY[1], "d2": BODY[2]}
    assert unit_hash(composed) == unit_hash(decomposed) != 0


def test_boilerplate_only_drop_and_its_details() -> None:
    texts = [f"{NAV}\n\n{BODY[0]}\n\n{FOOT}", f"{NAV}\n\n{BODY[1]}\n\n{FOOT}", f"{NAV}\n\nShort.\n\n{FOOT}",
             "Tiny."]  # nothing removed: never dropped here, however short
    _, res = dedup(texts, min_chars=20)
    assert texts_by_id(res) == {"d0": texts[0], "d1": BODY[1], "d3": "Tiny."}
    assert res.dropped.column("id").to_pylist() == ["d2"] and res.reasons == ["boilerplate_only"]
    assert res.dropped.column("text").to_pylist() == [texts[2]]  # the decisions table shows the original
    d = json.loads(res.details[0])
    assert (d["removed_chars"], d["remaining_chars"], d["min_chars"], d["units_total"]) == (
        len(texts[2]) - len("Short."), len("Short."), 20, 2)
    assert {u["hash"] for u in d["units"]} == {f"{unit_hash(NAV):016x}", f"{unit_hash(FOOT):016x}"}
    assert all(u["kept_in"] == "d0" and u["docs"] == 3 and u["n"] == 1 for u in d["units"])


def test_removed_chars_from_lengths_equals_the_rewrite() -> None:
    rng = np.random.default_rng(3)
    for unit in ("line", "paragraph"):
        for _ in range(300):
            pieces = rng.choice(["a", "bb", "", "  ", "\n", "\n\n", " \n \n", "\r\n"], size=rng.integers(1, 12))
            text = "".join(pieces)
            us, ss = split_units(text, unit)
            assert "".join(u + s for u, s in zip(us, ss)) == text
            keep = [bool(k) or not u.strip() for k, u in zip(rng.integers(0, 2, len(us)), us)]
            out = rebuild(us, ss, keep)
            assert removed_chars(np.array([len(u) for u in us]), np.array([len(s) for s in ss]),
                                 np.array(keep)) == len(text) - len(out)


# -- property: against a brute-force reference ----------------------------------------------------

POOL = ["the shared navigation bar", "Cookie notice: we use cookies", "short", "Subscribe to our newsletter",
        "THE SHARED   navigation bar", "unique-ish sentence about cats", "unique-ish sentence about dogs"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(st.lists(st.sampled_from(POOL), min_size=1, max_size=6), min_size=1, max_size=12),
       unit=st.sampled_from(["line", "paragraph"]), min_docs=st.integers(2, 4), buckets=st.integers(1, 5),
       seed=st.integers(0, 3))
def test_property_against_brute_force(docs: list[list[str]], unit: str, min_docs: int, buckets: int,
                                      seed: int) -> None:
    sep = "\n" if unit == "line" else "\n\n"
    texts = [sep.join(d) for d in docs]
    rng = np.random.default_rng(seed)
    tasks = rng.integers(0, 3, len(docs)).tolist()
    rows = rng.permutation(len(docs)).tolist()  # distinct positions, in no particular order
    _, res = dedup(texts, tasks, rows, buckets=buckets, shuffle=seed, unit=unit, min_docs=min_docs,
                   min_unit_chars=6, min_chars=0)
    got = texts_by_id(res)

    def key(u: str) -> str | None:
        k = " ".join(u.split()).lower()
        return k if len(k) >= 6 else None

    holders: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        for k in {key(u) for u in d} - {None}:
            holders.setdefault(k, []).append(i)
    first = {k: min(h, key=lambda i: (tasks[i], rows[i])) for k, h in holders.items()}
    gone = {k for k, h in holders.items() if len(h) >= min_docs}
    for i, d in enumerate(docs):
        want = sep.join(u for u in d if key(u) not in gone or first[key(u)] == i)
        assert got[f"d{i}"] == want
        # The two statements, on the output itself:
        for u in split_units(got[f"d{i}"], unit)[0]:
            k = key(u)
            assert k is None or len(holders[k]) < min_docs or first[k] == i
    assert res.kept.column("para_dedup_chars").to_pylist() == [len(t) - len(got[f"d{i}"]) for i, t in
                                                               enumerate(texts)]


# -- through pipelines: decisions, columns, stats, audit, Ray ----------------------------------------


def corpus(root: Path) -> Path:
    """``site.jsonl``: 6 pages of one templated site (nav + footer around a body; one page is all
    template); ``blog.jsonl``: 4 posts sharing only the footer."""
    site = [{"id": f"site-{i}", "text": f"{NAV}\n\n{BODY[i % 5]} Page {i}.\n\n{FOOT}\n"} for i in range(5)]
    site.append({"id": "site-empty", "text": f"{NAV}\n\n{FOOT}\n"})
    blog = [{"id": f"blog-{i}", "text": f"Post {i}: {BODY[(i + 2) % 5]}\n\nAnother paragraph of post {i}.\n\n{FOOT}"}
            for i in range(4)]
    d = root / "in"
    write_jsonl(d / "blog.jsonl", blog)
    write_jsonl(d / "site.jsonl", site)
    return d


def pipeline(root: Path, out: Path, kind: str = "local", **stage: Any) -> dict[str, Any]:
    data = pipeline_dict([str(root / "*.jsonl")], out, kind=kind, stages=[
        {"stage": "paragraph_dedup_v1", "min_chars": 40, "num_buckets": 4, **stage}])
    if kind == "ray":
        data["executor"]["global_in_driver_mb"] = 0  # every step as Ray Data shuffles
    return data


def test_pipeline_decisions_columns_and_stats(tmp_path: Path) -> None:
    src, out = corpus(tmp_path), tmp_path / "run"
    res = run_pipeline(pipeline(src, out, max_source_removal_fraction=None))
    # blog.jsonl is task 0, so blog-0 holds the footer first; site-0 holds the nav first.
    _, rows = query(out, "SELECT id, reason, details FROM decisions WHERE stage = 'paragraph_dedup_v1'")
    assert [(r[0], r[1]) for r in rows] == [("site-empty", "boilerplate_only")]
    assert {u["kept_in"] for u in json.loads(rows[0][2])["units"]} == {"site-0", "blog-0"}
    _, kept = query(out, "SELECT id, text, para_dedup_chars, para_dedup_units FROM docs ORDER BY id")
    by_id = {r[0]: r for r in kept}
    assert by_id["blog-0"][2] == 0 and by_id["site-0"][1] == f"{NAV}\n\n{BODY[0]} Page 0."  # keeps nav, not footer
    assert by_id["site-3"][1] == f"{BODY[3]} Page 3." and by_id["blog-2"][1].endswith("of post 2.")
    assert [u["kept_in"] for u in by_id["site-3"][3]] == ["blog-0", "site-0"]  # footer in 10 docs, nav in 6
    # why is this line gone: look the line's hash up among the removed units
    _, hit = query(out, f"SELECT count(*) FROM docs, unnest(para_dedup_units) AS u(x) "
                        f"WHERE x.hash = '{unit_hash(NAV):016x}'")
    assert hit == [(4,)]  # site-1..4 (site-0 keeps it, site-empty was dropped)
    s = summary(out)
    assert ("paragraph_dedup_v1", 10, 9, 1) in s["funnel"]
    # site-0 loses the footer (47 chars with its separator), site-1..4 nav and footer (87), blog-1..3 the footer (46)
    assert s["paragraph_dedup"] == [("site.jsonl", 5, 47 + 4 * 87, 1, 85), ("blog.jsonl", 3, 3 * 46, 0, 0)]
    assert any(r[:3] == ("paragraph_dedup_v1", "boilerplate_only", 1) for r in s["reasons"])
    assert run_pipeline(pipeline(src, out, max_source_removal_fraction=None)).nothing_to_do  # resumable
    assert res.manifest["warnings"] == []


def test_audit_fails_or_warns_per_source_share_of_characters(tmp_path: Path) -> None:
    src = corpus(tmp_path)
    with pytest.raises(MassRemovalError) as info:
        run_pipeline(pipeline(src, tmp_path / "fail", max_source_removal_fraction=0.4))
    msg = str(info.value)
    assert "source 'site.jsonl' loses 480 of 934 characters (51.4%)" in msg and "blog.jsonl" not in msg
    assert "e.g. site-1 (-87 chars, its most widespread unit kept in blog-0)" in msg
    assert not (tmp_path / "fail" / "manifest.json").exists()
    res = run_pipeline(pipeline(src, tmp_path / "warn", max_source_removal_fraction=0.4, on_mass_removal="warn"))
    (w,) = res.manifest["warnings"]
    _, rows = query(tmp_path / "warn", "SELECT sum(para_dedup_chars) FROM docs WHERE source = 'site.jsonl'")
    dropped = len(f"{NAV}\n\n{FOOT}\n")
    assert (w["stage"], w["source"], w["chars_removed"]) == ("paragraph_dedup_v1", "site.jsonl", rows[0][0] + dropped)
    assert (w["chars_in"], w["share"]) == (934, 0.5139)
    # the most characters first: site-1..3 lose nav and footer with their separators (87), site-empty 85
    assert w["examples"] == [{"id": f"site-{i}", "removed_chars": 87, "dropped": False, "kept_in": "blog-0"}
                             for i in (1, 2, 3)]
    assert run_pipeline(pipeline(src, tmp_path / "ok", max_source_removal_fraction=0.9)).manifest["warnings"] == []
    from typer.testing import CliRunner

    from curation.cli import app

    shown = CliRunner().invoke(app, ["stats", str(tmp_path / "warn")], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "Paragraph dedup per source" in shown.output
    assert "source 'site.jsonl' lost 480 of 934 characters (51.4%)" in shown.output


def test_a_run_that_failed_after_the_global_step_resumes_to_the_same_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resumable like every stage: a task of the final pass fails after publishing its outputs (before its marker);
    the rerun reuses the resolved rows (no global step again) and redoes only that task."""
    src = corpus(tmp_path)
    clean = tmp_path / "clean"
    run_pipeline(pipeline(src, clean, on_mass_removal="warn"))
    out = tmp_path / "crashed"
    monkeypatch.setenv("CURATION_ENABLE_FAULT_INJECTION", "1")
    monkeypatch.setenv("CURATION_FAULT", "raise_before_marker:1:1")
    with pytest.raises(ShardError, match="injected failure in seg 1 task 1"):
        run_pipeline(pipeline(src, out, on_mass_removal="warn"))
    assert (out / "_markers" / "global-stage0.json").exists() and not (out / "manifest.json").exists()
    monkeypatch.delenv("CURATION_FAULT")

    def again(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the resumed run resolved the corpus again")

    monkeypatch.setattr(ParagraphDedup, "run_global", again)
    res = run_pipeline(pipeline(src, out, on_mass_removal="warn"))
    assert res.tasks_run == 1 and shard_bytes(out) == shard_bytes(clean)
    sql = "SELECT id, reason, details FROM decisions ORDER BY id"
    assert query(out, sql) == query(clean, sql)
    assert res.manifest["warnings"] == json.loads((clean / "manifest.json").read_text())["warnings"] != []


@pytest.mark.ray
@pytest.mark.slow
def test_ray_output_bytes_equal_in_process(ray_cluster: None, tmp_path: Path) -> None:
    src = corpus(tmp_path)
    local = run_pipeline(pipeline(src, tmp_path / "local", on_mass_removal="warn"))
    ray = run_pipeline(pipeline(src, tmp_path / "ray", kind="ray", on_mass_removal="warn"))
    assert shard_bytes(tmp_path / "ray") == shard_bytes(tmp_path / "local")
    sql = "SELECT id, reason, details FROM decisions ORDER BY id"
    assert query(tmp_path / "ray", sql) == query(tmp_path / "local", sql)
    assert ray.manifest["warnings"] == local.manifest["warnings"] != []
