"""The hashed-n-gram Gopher repetition filter decides exactly as datatrove's implementation."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.io.readers import InputConfig, read_documents
from curation.stages.base import Doc
from curation.stages.filters._repetition import NgramStats
from curation.stages.filters.gopher_repetition import GopherRepetition, GopherRepetitionConfig
from tests.conftest import SAMPLE


def test_ngram_stats_match_datatrove_helpers() -> None:
    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate, find_top_duplicate, get_n_grams

    words = "a b a b a b c ab c d ab c d e f a b".split()
    stats = NgramStats(words)
    for n in range(2, 6):
        assert stats.top_ngram_chars(n) == find_top_duplicate(get_n_grams(words, n)), n
        assert stats.duplicated_ngram_chars(n) == find_all_duplicate(words, n), n
    # concatenation without separators makes ["ab","c"] and ["a","bc"] the same 2-gram, as in datatrove
    words = ["ab", "c", "x", "a", "bc", "y"]
    assert NgramStats(words).duplicated_ngram_chars(2) == find_all_duplicate(words, 2) == 3


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.sampled_from(["a", "b", "ab", "c", "bc", "the", "cat"]), min_size=0, max_size=60),
       n=st.integers(1, 8), frac=st.floats(0, 1))
def test_duplicated_ngram_bound_never_changes_a_decision(words: list[str], n: int, frac: float) -> None:
    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate, find_top_duplicate, get_n_grams

    exact = find_all_duplicate(words, n)
    text_chars = max(1, sum(map(len, words)) + len(words))
    stats = NgramStats(words)
    assert stats.duplicated_ngram_chars(n) == exact
    assert stats.duplicated_ngram_exceeds(n, frac, text_chars) == (exact / text_chars > frac)
    top = find_top_duplicate(get_n_grams(words, n)) if len(words) >= n else None
    assert stats.top_ngram_chars(n) == top
    assert stats.top_ngram_exceeds(n, frac, text_chars) == (top is not None and top / text_chars > frac)


@pytest.mark.slow
def test_decisions_equal_datatrove_on_the_sample_corpus() -> None:
    cfg = InputConfig(paths=["-"])
    files = sorted(SAMPLE.glob("*.jsonl.gz"))
    table = pa.concat_tables([b.table for f in files for b in read_documents(str(f), f.name, cfg)])
    fast = GopherRepetition(GopherRepetitionConfig(implementation="fast"))
    ref = GopherRepetition(GopherRepetitionConfig(implementation="datatrove"))
    fast.setup()
    ref.setup()
    mismatches = []
    for doc_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
        a, b = fast.filter(Doc(id=doc_id, text=text)), ref.filter(Doc(id=doc_id, text=text))
        if a != b:
            mismatches.append((doc_id, a, b))
    assert mismatches == []
    assert len(table) == 1265
