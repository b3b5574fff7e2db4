"""Property tests: the hashed index agrees with a plain set of word tuples, and remove_spans
output never contains an eval n-gram."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.stages.decontam.evalsets import EvalFileSpec
from curation.stages.decontam.ngrams import words, words_with_spans
from curation.stages.decontam.stage import Decontaminate, DecontaminateConfig
from tests.curation.stages.filters.helpers import batch_of

VOCAB = ["a", "b", "c", "d"]  # few words so that random documents often hit eval n-grams
N = 3
word = st.sampled_from(VOCAB).flatmap(lambda w: st.sampled_from([w, w.upper(), w + ",", "(" + w + ")", w + "!"]))
sep = st.sampled_from([" ", "  ", "\n", " - ", "\t"])
doc = st.lists(st.tuples(word, sep), min_size=0, max_size=25).map(lambda ps: "".join(w + s for w, s in ps))
items = st.lists(st.lists(st.sampled_from(VOCAB), min_size=2, max_size=5).map(" ".join), min_size=1, max_size=4)


def oracle(eval_items: list[str]) -> set[tuple[str, ...]]:
    """Eval n-grams as word tuples: n-grams of long items, whole items of 2..n-1 words."""
    out: set[tuple[str, ...]] = set()
    for it in eval_items:
        ws = words(it)
        k = min(len(ws), N)
        out.update(tuple(ws[i : i + k]) for i in range(len(ws) - k + 1))
    return out


def contains(text: str, grams: set[tuple[str, ...]]) -> bool:
    ws = words(text)
    return any(tuple(ws[i : i + len(g)]) == g for g in grams for i in range(len(ws) - len(g) + 1))


def stage_for(tmp: Path, eval_items: list[str], mode: str) -> Decontaminate:
    path = tmp / f"eval-{abs(hash(tuple(eval_items)))}.jsonl"
    path.write_text("".join(json.dumps({"q": q}) + "\n" for q in eval_items))
    return Decontaminate(DecontaminateConfig(eval_files=[EvalFileSpec(path=str(path), fields=["q"])], n=N,
                                             min_item_words=2, mode=mode, min_remaining_chars=0))


@settings(max_examples=60, deadline=None)
@given(eval_items=items, docs=st.lists(doc, min_size=1, max_size=6))
def test_drop_agrees_with_a_plain_set_of_tuples(tmp_path_factory: pytest.TempPathFactory, eval_items: list[str],
                                                docs: list[str]) -> None:
    stage = stage_for(tmp_path_factory.getbasetemp(), eval_items, "drop")
    res = stage.process(batch_of(docs))
    dropped = set(res.dropped.column("id").to_pylist())
    grams = oracle(eval_items)
    assert dropped == {f"d{i}" for i, t in enumerate(docs) if contains(t, grams)}


@settings(max_examples=60, deadline=None)
@given(eval_items=items, docs=st.lists(doc, min_size=1, max_size=6))
def test_remove_spans_output_contains_no_eval_ngram(tmp_path_factory: pytest.TempPathFactory, eval_items: list[str],
                                                    docs: list[str]) -> None:
    stage = stage_for(tmp_path_factory.getbasetemp(), eval_items, "remove_spans")
    res = stage.process(batch_of(docs))
    grams = oracle(eval_items)
    for text in res.kept.column("text").to_pylist():
        assert not contains(text, grams), text
    # Documents without a match are untouched.
    for i, t in enumerate(docs):
        if not contains(t, grams):
            assert f"d{i}" in res.kept.column("id").to_pylist()


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_span_tokeniser_gives_the_same_words(text: str) -> None:
    ws, spans = words_with_spans(text)
    assert ws == words(text)
    assert all(text[a:b].strip() == text[a:b] and b > a for a, b in spans)
