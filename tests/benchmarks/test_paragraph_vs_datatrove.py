"""paragraph_dedup_v1 in line mode removes the lines datatrove's sentence dedup (line mode) removes, except where a
rule of docs/methods.md ("Against datatrove") differs: benchmarks/paragraph_dedup.py's comparison, on its corpus
with 2 copies (the bundled sample and WARC pages, then a copy with 70% of lines altered: 2,626 documents)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

pytest.importorskip("datatrove")
from benchmarks import paragraph_dedup as bench  # noqa: E402  (after the skip: it needs datatrove to run)


def test_removed_lines_agree_but_for_repeats_inside_one_document() -> None:
    texts = bench.make_corpus(2, 0.3)
    assert len(texts) == 2626
    cfg = {"unit": "line", "min_docs": 2, "min_unit_chars": 0, "normalize_digits": True, "min_chars": 0}
    _, _, ours = bench.run_ours(bench.table_of(texts), **cfg)
    with tempfile.TemporaryDirectory() as tmp:
        _, theirs = bench.run_datatrove(texts, Path(tmp))
    got = bench.agreement(texts, ours, theirs)
    # Every line we remove datatrove removes too; the lines only datatrove removes are second copies of a line
    # inside one document (it counts occurrences, we count documents), nothing unexplained.
    assert (got["removed_both"], got["only_ours"], got["only_datatrove"]) == (80837, 0, 10733)
    assert got["differences"] == {"repeat inside one document": 10733}
