"""The labelled pair set of semantic dedup (benchmarks/data/semdedup_pairs.jsonl) is the one docs/benchmarks.md
describes, and its MinHash 0.8 row is what benchmarks/semdedup.py measures on it (the semantic rows need MiniLM over
694 documents, about a CPU-minute: the benchmark itself, not this test)."""

from __future__ import annotations

import csv
from collections import Counter
from typing import Any

import numpy as np
import pytest

from benchmarks import semdedup
from tests.conftest import REPO

LABELS = REPO / "benchmarks" / "data" / "semdedup_pairs_labels.tsv"


@pytest.fixture(scope="module")
def pair_set() -> tuple[list[dict[str, Any]], list[str], np.ndarray]:
    pairs, texts, _ = semdedup.load(semdedup.PAIRS)
    return pairs, texts, np.array([p["label"] == 1 for p in pairs])


def test_sizes_labels_and_categories(pair_set: tuple[list[dict[str, Any]], list[str], np.ndarray]) -> None:
    pairs, texts, gold = pair_set
    assert (len(pairs), int(gold.sum()), len(texts)) == (444, 222, 694)  # docs/benchmarks.md, "Semantic dedup"
    assert {p["label"] for p in pairs} == {0, 1}
    with LABELS.open(encoding="utf-8") as fh:
        rows = [r for r in csv.reader(fh, delimiter="\t") if r and not r[0].startswith("#")]
    # The labels file decides: every pair carries its label, and the one left out (-1) is not in the set.
    assert {r[0]: int(r[1]) for r in rows if r[1] != "-1"} == {p["id"]: p["label"] for p in pairs}
    assert len(rows) == 445 and sum(r[1] == "-1" for r in rows) == 1
    by = Counter((p["category"], p["label"]) for p in pairs)
    # The per-category table's (duplicates / not) counts.
    assert by == {("man_source_rendered", 1): 60, ("man_neighbours", 0): 77, ("man_neighbours", 1): 3,
                  ("man_release_tracks", 1): 25, ("info_html_same", 1): 40, ("info_html_other", 0): 40,
                  ("docstring_rendered", 1): 50, ("docstring_neighbours", 0): 59, ("docstring_neighbours", 1): 1,
                  ("licence_same", 1): 36, ("licence_same", 0): 2, ("licence_different", 0): 43,
                  ("readme_versions", 1): 7, ("readme_versions", 0): 1}


def test_minhash_row_and_templates(pair_set: tuple[list[dict[str, Any]], list[str], np.ndarray]) -> None:
    pairs, _, gold = pair_set
    calls, exact = semdedup.minhash_calls(pairs)
    s = semdedup.scores(calls, gold)
    assert (s["precision"], s["recall"], s["tp"], s["fp"]) == (0.864, 0.545, 121, 19)  # "MinHash 0.8 alone"
    e = semdedup.scores(exact, gold)
    assert (e["precision"], e["recall"]) == (0.859, 0.55)  # exact Jaccard >= 0.8, the rule MinHash estimates
    tmpl = semdedup.templates(pairs, gold)
    assert int(tmpl.sum()) == 90  # the template negatives
    assert semdedup.scores(calls[~tmpl], gold[~tmpl])["precision"] == 1.0  # every MinHash error is a template
    share = {c: float(np.mean([k for k, p in zip(calls, pairs) if p["category"] == c]))
             for c in ("docstring_rendered", "man_source_rendered", "man_release_tracks", "licence_different")}
    assert {c: round(v, 2) for c, v in share.items()} == {"docstring_rendered": 1.0, "man_source_rendered": 0.0,
                                                          "man_release_tracks": 0.2, "licence_different": 0.0}
